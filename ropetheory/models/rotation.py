"""The one rotation check of the real-model path: a model's post-RoPE vectors against the package's exact
rotation of its pre-RoPE ones, within one derived bound (docs/conventions.md, "The rotation check").

transformers rotates in the model's floating type with unit roundoff ``u`` (``2^-24`` for float32): it
computes ``inv_freq_j = base^(-x_j)`` (``x_j = 2j/d``) by ``pow`` in that type, the angle ``p * inv_freq_j``
by one product, ``cos, sin`` of it, scales both by the attention factor ``a`` and forms
``x cos + rotate_half(x) sin``. The package rotates the same ``x`` by the exact float64 angle
``p theta_j``. Per position ``p``, with ``x`` the pre-RoPE vector:

* angle: ``inv_freq_j`` is off by at most ``(ln(base) x_j + 3) u`` relative (the rounded exponent moves
  ``base^(-x)`` by ``ln(base) x_j u``, ``pow`` and the rounding of ``x_j`` by ~2 ulps more), and the
  product by ``u``; for bases up to ``10^12`` (``ln = 27.7``) that is ``< ANGLE_ULPS u`` relative, so
  ``|delta_j| <= ANGLE_ULPS u p theta_j``;
* a plane rotated by ``alpha + delta`` instead of ``alpha`` moves by ``|delta| ||x_plane||``;
* rounding: ``cos`` and ``sin`` (1 ulp each), the factor ``a`` (1), the two products and the sum (3,
  times ``sqrt 2`` for the two terms), the captured pre- and post-RoPE vectors (1 each): under
  ``ROUNDING_ULPS u ||x||``.

So every entry of plane ``j`` obeys
``|exact - captured| <= a u (ANGLE_ULPS p theta_j ||x_plane_j|| + ROUNDING_ULPS ||x||)`` (``rotation_bound``).
``check_rotation`` measures the difference against it and says which positions it checked; a result that
ran no check says so (``None``), never a default True. A chunked capture checks its first and last chunk
(``chunk_is_checked``): the bound grows with the position, so the last chunk is the most demanding one,
and the first holds the positions where the bound is tightest relative to the rounding.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..core.errors import BadValue

__all__ = ["hf_to_interleaved", "rotate_like_hf", "rotation_bound", "check_rotation", "RotationCheck",
           "FLOAT32_UNIT_ROUNDOFF", "ANGLE_ULPS", "ROUNDING_ULPS", "unit_roundoff_of",
           "chunk_is_checked", "report_fields"]

#: unit roundoff of float32, the type transformers computes RoPE in for a float32 model
FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24
#: relative error of transformers' angle ``p * inv_freq_j`` in ulps: ``ln(base) x_j + 3`` for the ``pow`` that
#: makes ``inv_freq_j`` plus 1 for the product, ``< 32`` for every base up to ``10^12``
ANGLE_ULPS = 32.0
#: rounding of one rotated entry in ulps of ``||x||``: cos, sin, the attention factor, two products and a sum
#: (``(1 + 1 + 1 + 3) sqrt 2 < 9``), the captured pre- and post-RoPE vectors (2), rounded up to a power of two
ROUNDING_ULPS = 16.0


def hf_to_interleaved(v: np.ndarray, rotary_dim: int) -> np.ndarray:
    """Channels in transformers' order (rotate_half on the first ``rotary_dim``) -> ropetheory interleaved."""
    r = rotary_dim
    out = np.empty_like(v)
    out[0:r:2], out[1:r:2] = v[: r // 2], v[r // 2: r]
    out[r:] = v[r:]
    return out


def rotate_like_hf(X: np.ndarray, theta: np.ndarray, rotary_dim: int, positions: np.ndarray,
                   scale: float = 1.0) -> np.ndarray:
    """Exact RoPE as transformers lays it out: ``rotate_half`` on the first ``rotary_dim`` channels, times
    ``scale`` (the attention factor); the other channels pass through. float64."""
    from ..rope import apply_rope
    r = rotary_dim
    out = np.array(X, dtype=np.float64)
    rot = np.asarray(apply_rope(theta[: r // 2], out[..., :r], positions=positions, layout="half"))
    out[..., :r] = rot * scale
    return out


def rotation_bound(pre: np.ndarray, theta: np.ndarray, rotary_dim: int, positions: np.ndarray,
                   scale: float = 1.0, unit_roundoff: float = FLOAT32_UNIT_ROUNDOFF) -> np.ndarray:
    """The most a correct rotation's entry may differ from the exact one (module docstring), for
    ``pre (..., n, d)`` at ``positions (n,)``, shape ``(..., n, d)``: in plane ``j`` (channels ``j`` and
    ``j + r/2``) ``a u (ANGLE_ULPS p theta_j ||x_plane_j|| + ROUNDING_ULPS ||x||)``, in a pass-through
    channel ``a u ROUNDING_ULPS ||x||``."""
    x = np.asarray(pre, dtype=np.float64)
    half = rotary_dim // 2
    p = np.asarray(positions, dtype=np.float64)[:, None]
    rounding = ROUNDING_ULPS * np.linalg.norm(x, axis=-1, keepdims=True)
    plane = np.hypot(x[..., :half], x[..., half:rotary_dim])
    angle = ANGLE_ULPS * p * np.asarray(theta, dtype=np.float64)[:half] * plane
    per_channel = np.concatenate([angle, angle, np.zeros(x.shape[:-1] + (x.shape[-1] - rotary_dim,))], axis=-1)
    return abs(scale) * unit_roundoff * (per_channel + rounding)


@dataclasses.dataclass(frozen=True)
class RotationCheck:
    """What a rotation check measured: ``max_abs_diff = max |exact - captured|`` over the entries checked,
    ``worst_ratio = max |exact - captured| / rotation_bound`` (``<= 1``: within the bound), the number
    of positions checked and the last of them (the bound grows with the position)."""
    max_abs_diff: float
    worst_ratio: float
    positions_checked: int
    last_position: int
    unit_roundoff: float = FLOAT32_UNIT_ROUNDOFF

    @property
    def within_bound(self) -> bool:
        return self.worst_ratio <= 1.0

    def merged(self, other: RotationCheck | None) -> RotationCheck:
        """The check of both sets of positions (``other`` None: this one)."""
        if other is None:
            return self
        return RotationCheck(max(self.max_abs_diff, other.max_abs_diff), max(self.worst_ratio, other.worst_ratio),
                             self.positions_checked + other.positions_checked,
                             max(self.last_position, other.last_position),
                             max(self.unit_roundoff, other.unit_roundoff))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "within_bound": self.within_bound}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RotationCheck | None:
        """The check ``to_dict`` wrote (None: not checked)."""
        if d is None:
            return None
        return cls(float(d["max_abs_diff"]), float(d["worst_ratio"]), int(d["positions_checked"]),
                   int(d["last_position"]), float(d["unit_roundoff"]))


def check_rotation(pairs, theta: np.ndarray, rotary_dim: int, positions: np.ndarray, scale: float = 1.0,
                   unit_roundoff: float = FLOAT32_UNIT_ROUNDOFF) -> RotationCheck:
    """Check ``(pre, post)`` pairs (``(..., n, d)`` each, channels in transformers' order, at ``positions``):
    ``post`` against ``rotate_like_hf(pre)`` within ``rotation_bound``."""
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
        raise BadValue("check_rotation needs at least one position")
    worst, ratio = 0.0, 0.0
    for pre, post in pairs:
        if np.shape(pre) != np.shape(post) or np.shape(pre)[-2] != positions.size:
            raise BadValue(f"pre {np.shape(pre)} and post {np.shape(post)} must match, with {positions.size} "
                           "positions")
        diff = np.abs(rotate_like_hf(pre, theta, rotary_dim, positions, scale) - np.asarray(post, dtype=np.float64))
        bound = rotation_bound(pre, theta, rotary_dim, positions, scale, unit_roundoff)
        worst = max(worst, float(diff.max(initial=0.0)))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(diff == 0, 0.0, diff / bound)
        ratio = max(ratio, float(r.max(initial=0.0)))
    return RotationCheck(worst, ratio, int(positions.size), int(positions.max()), float(unit_roundoff))


def report_fields(check: RotationCheck | None) -> dict[str, Any]:
    """A head's rotation fields for an analysis: what was checked and the outcome; all None with 0
    positions when nothing was checked."""
    if check is None:
        return {"rotation_within_bound": None, "rotation_max_abs_diff": None, "rotation_worst_ratio": None,
                "rotation_positions_checked": 0}
    return {"rotation_within_bound": check.within_bound, "rotation_max_abs_diff": check.max_abs_diff,
            "rotation_worst_ratio": check.worst_ratio, "rotation_positions_checked": check.positions_checked}


def chunk_is_checked(start: int, end: int, n: int) -> bool:
    """Whether a capture over ``n`` positions checks the chunk ``[start, end)``: the first and the last
    (module docstring; the package's exact rotation costs ~0.3 s per ``(9, 2048, 64)`` chunk of keys and
    queries on a CPU, so checking every chunk of every layer would add minutes to a long capture)."""
    return start == 0 or end == n


def unit_roundoff_of(dtype) -> float:
    """Unit roundoff of a torch or numpy floating type (``eps / 2``)."""
    try:
        import torch
        if isinstance(dtype, torch.dtype):
            return float(torch.finfo(dtype).eps) / 2
    except ImportError:                                      # numpy dtypes need no torch
        pass
    return float(np.finfo(dtype).eps) / 2
