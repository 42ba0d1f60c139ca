import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # tests are CPU-only (CI has no GPU)
os.environ.setdefault("MPLBACKEND", "Agg")     # no screen; the library itself never picks a backend

import ropetheory  # noqa: E402,F401  (enables jax_enable_x64 before any test builds arrays)
