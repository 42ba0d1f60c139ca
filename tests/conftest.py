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

from hypothesis import HealthCheck, settings  # noqa: E402

#: hypothesis profiles. ``ci`` (selected when ``CI`` is set): derandomized, so every run draws the same
#: examples, no example database, the example counts each test states. ``explore`` (``HYPOTHESIS_PROFILE=
#: explore``, run before a stop): random draws, :data:`strategies.EXPLORE_FACTOR` times the examples;
#: what it finds becomes an ``@example`` case. ``dev`` (otherwise): random draws, the stated counts.
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, **_COMMON)
settings.register_profile("explore", derandomize=False, print_blob=True, **_COMMON)
settings.register_profile("dev", **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)

import jax  # noqa: E402

import ropetheory  # noqa: E402,F401  (enables jax_enable_x64 before any test builds arrays)
from ropetheory.core.devices import CACHE_MAX_BYTES  # noqa: E402
from ropetheory.core.devices import drop_untimed_cache_entries  # noqa: E402

#: a size bound turns on JAX's file lock around every read and write of the folder: test runs that share it
#: (the commands a test starts, other checkouts' runs) never read a half-written entry (one segfaulted). The
#: commands' bound, for them (the environment) and for this process (importing compiled nothing yet)
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(CACHE_MAX_BYTES))
jax.config.update("jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"]))

#: entries an unbounded run left (a checkout older than the bound shares the folder) fail every bounded write
drop_untimed_cache_entries(os.environ["JAX_COMPILATION_CACHE_DIR"])
