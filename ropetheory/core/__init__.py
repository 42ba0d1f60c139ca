"""The bottom layer: exact angles, channel layouts and the validation every public function uses.

Modules: ``.angles`` (fixed-point turns, reduced angles at any int64 position, exact pair
frequencies, resonance and NoPE planes), ``.layouts`` (interleaved / half channel layouts and
the plane rotation), ``.checks`` (argument conversion and checks: types, finiteness, ranges,
shapes), ``.devices`` (the platform a computation runs on, for backend-dependent choices;
JAX's compilation cache folder). May import numpy, jax and mpmath only (and what jax itself uses:
threadpoolctl, filelock); every other part of the package imports it.
"""
