"""ropetheory: rotary position embeddings on long inputs, exact and checked.

The public API in one namespace (``import ropetheory as rt``): schedules (``rt.Schedule``, the one
value every way of making a schedule returns: ``rt.schedule`` by registry name, ``rt.from_config``
for any Hugging Face ``rope_type``), the operator (``rt.apply_rope``), the
spectral engine (``rt.rank1_curve``, ``rt.rank1_curves_batch``, ``rt.rank1_stream_curve``,
``rt.log_grid``), the theory (``rt.predicted_limit``, ``rt.certified_eps``, ``rt.certified_curve``,
``rt.check_rank1_claims``, ``rt.criteria``, ``rt.search_feasible_bases``). Folders, bottom to top:
``core`` (exact angles, layouts, checks) -> ``schedules``, ``rope`` -> ``spectra`` -> ``theory`` ->
``studies``, ``models`` (each may import only what is left of it; ``store`` and ``cli`` serve the
studies).

One global side effect, on purpose: importing the package turns on JAX's float64 mode
(``jax_enable_x64``). Every verification path is float64 and positions are int64; JAX fixes dtypes
when a function is traced and documents the flag as a start-up setting, so a scoped switch would
leave arrays a user creates (and jitted functions traced) outside the scope in float32 and int32,
which is exactly the silent precision loss the package exists to avoid. Nothing else is global:
plots pick no matplotlib backend and Arb/mpmath precision is set in scoped contexts.
"""
from typing import TYPE_CHECKING, Any

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from .core.schedule import Schedule  # noqa: E402
from .schedules import (SCHEDULES, schedule, schedule_from_spec, partial,  # noqa: E402
                        high_frequency, rope_id, nope, length_temperature)
from .schedules.hf import frequencies_from_config as from_config  # noqa: E402
from .rope import apply_rope  # noqa: E402
from .core.angles import turn_chunks  # noqa: E402
from .spectra import (AffineWeights, TrigWeights, log_grid, rank1_curve, rank1_curves_batch,  # noqa: E402
                      rank1_gram, rank1_stream_curve, rope_matrix_curve, top_eigenvalue)
from . import data  # noqa: E402

if TYPE_CHECKING:
    from .theory.theorems import (predicted_limit, certified_eps, certified_bound, check_rank1_claims,
                                  limit_lambdas, convergence_rate)
    from .theory.curve import certified_curve
    from .theory.criteria import criteria
    from .theory.base_search import search_feasible_bases

#: the theory's public names, imported at their first use (PEP 562): the theory pulls in mpmath and the
#: base search, which a command that only computes a curve or prints a schedule never needs (70 ms of a
#: start-up of about 1.6 s)
_LAZY = {**dict.fromkeys(("predicted_limit", "certified_eps", "certified_bound", "check_rank1_claims",
                          "limit_lambdas", "convergence_rate"), ".theory.theorems"),
         "certified_curve": ".theory.curve", "criteria": ".theory.criteria",
         "search_feasible_bases": ".theory.base_search"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value                  # found once: later lookups do not reach __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.3.0"
__all__ = [
    "Schedule",
    "SCHEDULES",
    "schedule",
    "schedule_from_spec",
    "partial",
    "high_frequency",
    "rope_id",
    "nope",
    "length_temperature",
    "from_config",
    "apply_rope",
    "turn_chunks",
    "AffineWeights",
    "TrigWeights",
    "log_grid",
    "rank1_curve",
    "rank1_curves_batch",
    "rank1_gram",
    "rank1_stream_curve",
    "rope_matrix_curve",
    "top_eigenvalue",
    "predicted_limit",
    "certified_eps",
    "certified_bound",
    "check_rank1_claims",
    "limit_lambdas",
    "convergence_rate",
    "certified_curve",
    "criteria",
    "search_feasible_bases",
    "data",
]
