import os
import pathlib
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # tests are CPU-only (CI has no GPU)
os.environ.setdefault("MPLBACKEND", "Agg")     # no screen; the library itself never picks a backend
#: JAX's persistent compilation cache, for this process and every command the tests start: a program
#: compiled once (here or in a subprocess) is read back by the next process that needs it (compiling is
#: most of a small run's time); it never changes a result. One folder per user, outside the checkout.
JAX_CACHE = pathlib.Path(tempfile.gettempdir()) / f"ropetheory-tests-jax-cache-{os.getuid()}"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(JAX_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.05")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import ropetheory  # noqa: E402,F401  (enables jax_enable_x64 before any test builds arrays)
