"""What a diagnosis measures: an implementation's outputs on rounded random inputs next to the expected
operator ``A R(p theta) x`` (exactly reduced angles) and next to the same operator under one changed
assumption (float64 angles reduced mod 2 pi), entry by entry in units of the dtype's floor."""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.layouts import plane_pairs
from . import exact_cos_sin
from .frameworks import DTYPES, positions_to_framework, to_framework, to_numpy
from ..core.errors import BadValue

__all__ = ["Finding", "Run", "rotate", "row_cos_sin", "call_impl", "planes", "nearest_dtype"]


@dataclasses.dataclass(frozen=True)
class Finding:
    cls: str
    kind: str
    detail: str


def rotate(X: np.ndarray, c: np.ndarray, s: np.ndarray, layout: str) -> np.ndarray:
    """``X (..., n, d)`` rotated by per-row tables ``c, s (n, P)`` (float64)."""
    a, b = plane_pairs(X, layout)
    ya, yb = c * a - s * b, s * a + c * b
    if layout == "half":
        return np.concatenate([ya, yb], axis=-1)
    return np.stack([ya, yb], axis=-1).reshape(X.shape)


def row_cos_sin(thetas: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tables for one frequency vector per row ``thetas (n, P)`` (any sign of position): float64 angles
    reduced mod 2 pi, good to ``p theta 2^-53`` rad, below the float32 floor to position 2^29 and far below
    any error an alternative has to explain in float64."""
    ang = np.mod(pos[:, None].astype(np.float64) * thetas, 2 * math.pi)
    return np.cos(ang), np.sin(ang)


@dataclasses.dataclass(frozen=True)
class Run:
    X: np.ndarray            # (v, n, d) the inputs, as rounded to the dtype
    Y: np.ndarray            # (v, n, d) the implementation's outputs
    pos: np.ndarray
    theta: np.ndarray
    att: float
    layout: str
    dtype: str
    floor: np.ndarray        # (v, n, d) the floor of each entry for gain ``att``

    def ratio(self, Y: np.ndarray, ref: np.ndarray) -> np.ndarray:
        r = np.abs(Y - ref) / self.floor
        return np.where(np.isfinite(r), r, np.inf)

    @functools.cached_property
    def reference(self) -> np.ndarray:
        """The expected output ``A R(p theta) x`` from exactly reduced angles."""
        c, s = exact_cos_sin(self.theta, self.pos)
        return self.att * rotate(self.X, c, s, self.layout)

    def exact(self, theta: np.ndarray | None = None, pos: np.ndarray | None = None,
              layout: str | None = None) -> np.ndarray:
        """The expected output under one changed assumption (float64 angles: ``_row_cos_sin``)."""
        pos = self.pos if pos is None else pos
        th = np.broadcast_to(self.theta if theta is None else theta, (pos.size, self.theta.size))
        return self.att * rotate(self.X, *row_cos_sin(th, pos), layout or self.layout)


def call_impl(fn: Callable[..., Any], X: np.ndarray, pos: np.ndarray, name: str, framework: str,
              call: str) -> np.ndarray:
    xf, pf = to_framework(X, name, framework), positions_to_framework(pos, framework)
    out = fn(xf, pf) if call == "x" else fn(xf, to_framework(X[::-1].copy(), name, framework), pf)[0]
    Y = to_numpy(out)
    if Y.shape != X.shape:
        raise BadValue(f"the implementation returned shape {Y.shape}, expected {X.shape} (n, head_dim)")
    return Y


def planes(A: np.ndarray, layout: str) -> np.ndarray:
    a, b = plane_pairs(A, layout)
    return a + 1j * b


def nearest_dtype(u: float) -> str:
    """The dtype whose unit roundoff is nearest ``u`` on a log scale."""
    return min(DTYPES, key=lambda k: abs(math.log2(max(u, 1e-300)) + DTYPES[k][0]))
