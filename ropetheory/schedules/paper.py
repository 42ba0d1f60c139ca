"""The paper's frequency schedules (Section 4 and Appendix): the formulas, each once.

For a head of width ``d = 2P`` each returns a ``Schedule`` (``ropetheory.core.schedule``) whose
``theta`` holds ``P`` angular frequencies (radians per position); ``theta_j = 0`` marks a NoPE plane:

- ``rope(d, base)``: ``theta_j = base^(-2j/d)`` (``rope_frequencies``, the one formula Hugging Face's
  rope types build on too).
- ``partial(d, base, fraction)``: the first ``r = fraction * P`` planes rotate with
  ``theta_j = base^(-2j/(2r))`` (Hugging Face ``partial_rotary_factor``); the rest are NoPE.
- ``high_frequency(d, train_len, cycles=1)``: ``rope`` with ``base = (L / (2 pi cycles))^(d/(d-2))``,
  so the slowest plane turns ``cycles`` times within ``L``.
- ``rope_id(d, train_len, fraction=1/2, min_wavelength=32, cycles=2)``: ``r`` rotating planes,
  ``theta_j = theta_hi (theta_lo/theta_hi)^(j/(r-1))`` with ``theta_hi = 2 pi / min_wavelength`` and
  ``theta_lo = 2 pi cycles / L`` (both endpoints included), the rest NoPE.
- ``nope(d)``: every ``theta_j = 0``.

May import numpy and ``ropetheory.core`` only.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from ..core.checks import check_base, check_head_dim, check_number, check_positive, is_bool, real_array
from ..core.schedule import Schedule
from ..core.errors import BadValue, BadType

__all__ = ["rope", "partial", "high_frequency", "rope_id", "nope", "rope_frequencies", "planes_from_fraction",
           "length_temperature", "DEFAULT_HEAD_DIM", "FRACTION_ATOL", "MIN_WAVELENGTH"]


#: the head width a spec that names none gets where a command needs one (the paper's models: d = 128)
DEFAULT_HEAD_DIM = 128
#: a float fraction may miss a whole number of planes by float rounding only (1/3 * 3)
FRACTION_ATOL = 1e-12
#: shortest wavelength (tokens) a rotating plane may have: below 2 a frequency aliases a slower one,
#: and at exactly 1 the plane turns by 2 pi per token, i.e. does not rotate at all
MIN_WAVELENGTH = 2.0


def planes_from_fraction(d: int, fraction: Any, what: str = "fraction") -> int:
    """Number of rotating planes ``r = fraction * P``; must be a whole number in [1, P].

    Exact inputs (``int``, ``Fraction``) must give an integer ``r`` exactly; a
    float fraction may miss by float rounding (``1/3`` of 3 planes is
    ``0.9999999999999999``), so ``|r - round(r)| <= FRACTION_ATOL * P`` is accepted.
    """
    P = check_head_dim(d) // 2
    fraction = fraction.item() if isinstance(fraction, np.ndarray) and fraction.ndim == 0 else fraction
    if is_bool(fraction) or not isinstance(fraction, (int, float, Fraction, np.integer, np.floating)):
        raise BadType(f"{what} must be a number, got {fraction!r}")
    if not (0 < fraction <= 1) or (isinstance(fraction, float) and not math.isfinite(fraction)):
        raise BadValue(f"{what} must lie in (0, 1], got {fraction!r}")
    r = fraction * P
    if isinstance(fraction, (int, Fraction, np.integer)):
        ok = Fraction(r).denominator == 1  # type: ignore[arg-type]  # an exact int, Fraction or numpy integer
    else:
        ok = abs(r - round(r)) <= FRACTION_ATOL * P
    if not ok or round(r) < 1:
        raise BadValue(
            f"{what}={fraction!r} gives {float(r)} rotating planes for head_dim={d} "
            f"(P={P}); it must be a whole number of planes (a multiple of 1/{P})")
    return int(round(r))


# --------------------------------------------------------------------------
# the schedules
# --------------------------------------------------------------------------
def rope_frequencies(dim: int, base: float) -> np.ndarray:
    """``theta_k = base^(-2k/dim)``, ``k = 0..ceil(dim/2)-1`` (float64; ``2k/dim`` from the exact even
    integers ``2k``): the one RoPE formula, used by ``rope`` and by every Hugging Face rope type.
    Trusts its (validated) arguments."""
    return base ** -(np.arange(0, dim, 2, dtype=np.float64) / dim)


def rope(head_dim: int, base: float = 10000.0) -> Schedule:
    """Standard RoPE: ``theta_j = base^(-2j/d)``, ``j = 0..P-1`` (float64)."""
    d = check_head_dim(head_dim)
    b = check_base(base)
    return Schedule(rope_frequencies(d, b), "rope", {"base": b})


def partial(head_dim: int, base: float = 10000.0, fraction: float = 0.5) -> Schedule:
    """Partial RoPE: first ``r = fraction P`` planes get ``theta_j = base^(-2j/(2r))``, rest NoPE."""
    d = check_head_dim(head_dim)
    b = check_base(base)
    r = planes_from_fraction(d, fraction)
    theta = np.zeros(d // 2, dtype=np.float64)
    theta[:r] = rope_frequencies(2 * r, b)           # the rotating planes: RoPE of width 2r
    return Schedule(theta, "partial", {"base": b, "fraction": float(fraction)})


def high_frequency(head_dim: int, train_len: float = 4096, cycles: float = 1.0) -> Schedule:
    """RoPE whose slowest plane turns ``cycles`` times within ``L``.

    ``base = (L / (2 pi cycles))^(d/(d-2))`` so ``theta_{P-1} = 2 pi cycles / L``.
    Needs ``d >= 4`` (with one plane the base is undefined).
    """
    d = check_head_dim(head_dim)
    if d < 4:
        raise BadValue(f"high_frequency needs head_dim >= 4 (one plane has no base), got {d}")
    L = check_positive("train_len", train_len)
    cycles = check_positive("cycles", cycles)
    if 2 * math.pi * cycles >= L:
        raise BadValue(f"high_frequency needs train_len > 2 pi cycles (a slowest plane slower than 1 rad/token), "
                         f"got train_len={train_len!r}, cycles={cycles!r}")
    try:
        base = (L / (2 * math.pi * cycles)) ** (d / (d - 2))
    except OverflowError:
        base = math.inf
    if not math.isfinite(base):
        raise BadValue(f"high_frequency: train_len / cycles = {train_len!r} / {cycles!r} gives a base "
                       f"(train_len / (2 pi cycles))^(d/(d-2)) beyond the float64 maximum")
    return Schedule(rope_frequencies(d, base), "high_frequency", {"train_len": L, "cycles": cycles})


def rope_id(head_dim: int, train_len: float = 4096, fraction: float = 0.5,
            min_wavelength: float = 32.0, cycles: float = 2.0) -> Schedule:
    """RoPE-ID: ``r = fraction P`` planes geometric from ``2pi/min_wavelength`` to ``2pi cycles/L``.

    ``theta_j = theta_hi (theta_lo/theta_hi)^(j/(r-1))``, ``j = 0..r-1`` (both
    endpoints included; with ``r = 1`` the single plane gets ``theta_hi``), the
    remaining ``P - r`` planes are NoPE.
    """
    d = check_head_dim(head_dim)
    L = check_positive("train_len", train_len)
    lam = check_positive("min_wavelength", min_wavelength)
    cycles = check_positive("cycles", cycles)
    r = planes_from_fraction(d, fraction)
    if lam < MIN_WAVELENGTH:
        raise BadValue(
            f"min_wavelength must be >= {MIN_WAVELENGTH:g} tokens (MIN_WAVELENGTH), got {min_wavelength!r}"
        )
    theta_hi = 2 * math.pi / lam
    theta_lo = 2 * math.pi * cycles / L
    if r > 1 and not theta_lo < theta_hi:
        raise BadValue(f"rope_id needs train_len / cycles > min_wavelength so the planes decrease from "
                         f"2 pi/min_wavelength to 2 pi cycles/train_len; got train_len={train_len!r}, "
                         f"cycles={cycles!r}, min_wavelength={min_wavelength!r}")
    theta = np.zeros(d // 2, dtype=np.float64)
    if r == 1:
        theta[0] = theta_hi
    else:
        j = np.arange(r, dtype=np.float64)
        theta[:r] = theta_hi * (theta_lo / theta_hi) ** (j / (r - 1))
    return Schedule(theta, "rope_id", {"train_len": L, "fraction": float(fraction), "min_wavelength": lam,
                                       "cycles": cycles})


def nope(head_dim: int) -> Schedule:
    """No rotation (NoPE): every ``theta_j = 0``."""
    return Schedule(np.zeros(check_head_dim(head_dim) // 2), "nope", {})


def length_temperature(n: Any, train_len: float, power: float = 2.0) -> np.ndarray:
    """RoPE-ID's logit temperature ``(1 + 0.1 ln(max(1, n/L)))^p`` (YaRN's ``sqrt(1/t)``)."""
    L = check_positive("train_len", train_len)
    power = check_number("power", power, lo=0.0)
    n = real_array("n", n)
    if not np.all(np.isfinite(n)) or np.any(n < 0):
        raise BadValue(f"n must be finite lengths >= 0, got {n!r}")
    with np.errstate(over="ignore"):
        t = (1.0 + 0.1 * np.log(np.maximum(1.0, n / L))) ** power
    if not np.all(np.isfinite(t)):
        raise BadValue(f"the temperature overflows float64 for power={power!r} at n = {float(np.max(n)):g}")
    return t


