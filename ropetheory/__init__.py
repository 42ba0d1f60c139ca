"""ropetheory: rotary position embeddings on long inputs, exact and checked.

Importing the package turns on JAX's float64 mode (``jax_enable_x64``): every
verification path in ropetheory is float64, and positions are int64.
"""
import jax as _jax

_jax.config.update("jax_enable_x64", True)

from .schedules import (SCHEDULES, schedule, schedule_from_spec, rope, partial,  # noqa: E402
                        high_frequency, rope_id, length_temperature)
from .rope import apply_rope, turn_chunks  # noqa: E402

__version__ = "0.1.0"
__all__ = ["SCHEDULES", "schedule", "schedule_from_spec", "rope", "partial", "high_frequency",
           "rope_id", "length_temperature", "apply_rope", "turn_chunks"]
