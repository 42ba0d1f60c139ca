"""The bottom layer: exact angles, channel layouts and the validation every public function uses.

Modules: :mod:`.angles` (fixed-point turns, reduced angles at any int64 position, exact pair
frequencies, resonance and NoPE planes), :mod:`.layouts` (interleaved / half channel layouts and
the plane rotation), :mod:`.checks` (argument conversion and checks: types, finiteness, ranges,
shapes). May import numpy, jax and mpmath only; every other part of the package imports it.
"""
