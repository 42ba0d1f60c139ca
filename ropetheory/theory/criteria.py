"""The paper's Section 4 criteria, in one place: C1 (a non-trivial floor) and C2 (reached within L).

For a unit rank-1 cloud ``v`` with plane energies ``e_j`` the FSV ratio tends to the floor
``rho_inf = sqrt(lambda)`` (Theorem 1, ``ropetheory.theory.theorems.limit_lambdas``); with every
plane rotating (no NoPE plane, no resonance) the floor would be ``sqrt(max_j e_j / 2)``.

- **C1** the floor is non-trivial: ``rho_inf > (1 + C1_MARGIN) sqrt(max_j e_j / 2)``;
- **C2** it is reached within the horizon ``H``: ``|rho_H - rho_inf| / rho_inf < C2_RTOL``.

Section 5's statement on context extension: for the planes that do not complete a turn within
``L`` (``theta_j L < 2 pi``), the extended schedule ``theta'`` at ``s L`` turns no further than the
original at ``L``: ``theta'_j s L <= theta_j L`` (``low_frequency_drift``).

Every study, the report and the real-model analysis judge C1 and C2 through these functions.
"""
from __future__ import annotations

from typing import Any

import math

import numpy as np

from ..core.checks import MAX_HEAD_DIM, check_finite_array

from . import theorems
from ..core.errors import BadValue

__all__ = [
    "C1_MARGIN",
    "C2_RTOL",
    "floors",
    "meets_c1",
    "within_floor",
    "reach_length",
    "criteria",
    "DRIFT_RTOL",
    "low_frequency_drift",
]

#: Section 4, C1: a floor is non-trivial if it exceeds the all-planes-rotating floor of the same
#: cloud, sqrt(max_j e_j / 2), by 10% (relative)
C1_MARGIN = 0.10
#: Section 4, C2: the floor counts as reached when rho is within 1% of it (the issue's definition)
C2_RTOL = 0.01
#: the drift statement allows float64 rounding in theta' s L / (theta L)
DRIFT_RTOL = 1e-9


def floors(theta: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cloud: the predicted floor ``sqrt(lambda)`` and the all-planes-rotating floor ``sqrt(max e_j/2)``."""
    lam, emax = theorems.limit_lambdas(theta, V)
    return np.sqrt(lam), np.sqrt(emax / 2)


def meets_c1(floor: Any, allrot: Any) -> np.ndarray:
    """C1 per cloud: ``floor > (1 + C1_MARGIN) allrot``."""
    return np.asarray(floor) > np.asarray(allrot) * (1 + C1_MARGIN)


def within_floor(rho: Any, floor: Any) -> np.ndarray:
    """C2's test per entry: ``|rho - floor| / floor < C2_RTOL`` (``floor`` broadcasts against ``rho``)."""
    rho, floor = np.asarray(rho), np.asarray(floor)
    return np.abs(rho - floor) / floor < C2_RTOL


def reach_length(grid: Any, rho: Any, floor: float) -> int | None:
    """The first length of ``grid`` at which ``rho`` is within C2's tolerance of ``floor`` (None: never).

    Resolution: the grid's own spacing (the true first length lies between this point and the one
    before it)."""
    w = within_floor(rho, floor)
    return int(np.asarray(grid)[np.argmax(w)]) if w.any() else None


#: the range of an FSV ratio: ||Rope(X)||_2 <= ||Rope(X)||_F = ||X||_F <= sqrt(d) ||X||_2, d <= MAX_HEAD_DIM
MAX_RHO = math.sqrt(MAX_HEAD_DIM)
#: the range of a floor: a limit sqrt(lambda) of a rank-1 cloud lies in [1/sqrt(d), 1] (Lemma 1)
MIN_FLOOR = 1.0 / math.sqrt(MAX_HEAD_DIM)


def _positive_values(name: str, x: Any, shape=None, lo: float = 0.0, hi: float = MAX_RHO) -> np.ndarray:
    a = np.atleast_1d(check_finite_array(name, x, min_ndim=0))
    if a.ndim != 1 or a.size == 0:
        raise BadValue(f"{name} must be a number or a non-empty 1-D array (one per cloud), got shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise BadValue(f"{name} has shape {a.shape}, the FSV ratios have {shape}")
    bad = (a <= 0) | (a < lo) | (a > hi)
    if np.any(bad):
        k = int(np.argmax(bad))
        raise BadValue(f"{name} must lie in ({lo:g}, {hi:g}] (the range of an FSV ratio or a floor); "
                         f"{name}[{k}] = {a[k]!r}")
    return a


def criteria(rho_L: np.ndarray, floor: np.ndarray, allrot: np.ndarray) -> dict[str, Any]:
    """C1/C2 per cloud and their median-cloud verdicts.

    ``rho_L``: FSV ratios at the training length, one per cloud; ``floor``: their predicted limits;
    ``allrot``: the limits with every plane rotating (the trivial floor C1 compares against). Each a
    number or a 1-D array of the same length, finite and > 0.
    """
    rho_L = _positive_values("rho_L", rho_L)
    floor = _positive_values("floor", floor, rho_L.shape, lo=MIN_FLOOR, hi=1.0 + 1e-12)
    allrot = _positive_values("allrot", allrot, rho_L.shape, lo=MIN_FLOOR, hi=1.0 + 1e-12)
    rel = np.abs(rho_L - floor) / floor
    c1 = meets_c1(floor, allrot)
    c2 = rel < C2_RTOL
    return {"floor_median": float(np.median(floor)), "allrot_floor_median": float(np.median(allrot)),
            "rel_dist_L_median": float(np.median(rel)), "rel_dist_L_q95": float(np.quantile(rel, 0.95)),
            "C1": bool(np.median(floor / allrot) > 1 + C1_MARGIN), "C2": bool(np.median(rel) < C2_RTOL),
            "C1_share": float(c1.mean()), "C2_share": float(c2.mean())}


def low_frequency_drift(theta_base: np.ndarray, theta_ext: np.ndarray, s: int, L: int) -> dict[str, Any]:
    """Max over planes with ``theta_j L < 2 pi`` of ``theta'_j s L / (theta_j L)`` (training length ``L``).

    A schedule with no such plane (every plane completes a turn within ``L``, or none rotates) has no
    low-frequency drift to bound: ``max_drift_ratio``, ``worst_plane`` and ``holds`` are None."""
    low = (theta_base > 0) & (theta_base * L < 2 * math.pi)
    if not low.any():
        return {"low_freq_planes": 0, "max_drift_ratio": None, "worst_plane": None, "holds": None}
    ratio = theta_ext[low] * s / theta_base[low]
    return {"low_freq_planes": int(low.sum()), "max_drift_ratio": float(ratio.max()),
            "worst_plane": int(np.flatnonzero(low)[np.argmax(ratio)]),
            "holds": bool(ratio.max() <= 1 + DRIFT_RTOL)}
