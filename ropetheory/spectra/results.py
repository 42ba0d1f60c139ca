"""One result type per kind: a curve of the FSV ratio over lengths, and a matrix's norms.

Every function that returns a curve returns a ``Curve`` with the same field names (``n``, ``rho``,
``rho2``, ``srank``, ``frob_ratio`` and, where a function computes them, ``srank_before`` and
``weight_sum``); a batch of curves is the same type with a leading axis (one row per cloud) on every
field but ``n``. ``curve["rho"]`` reads a field like ``curve.rho``; ``to_dict()`` is JSON-ready.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["Curve", "MatrixMetrics"]


def _jsonable(x: Any) -> Any:
    return x.tolist() if isinstance(x, np.ndarray) else x


@dataclasses.dataclass(frozen=True, eq=False)
class Curve:
    """The FSV ratio and stable rank of ``Rope(X_:n)`` at each length ``n``.

    Attributes
    ----------
    n : numpy.ndarray
        ``(len,)`` int64 lengths.
    rho : numpy.ndarray
        ``rho_n = ||Rope(X_:n)||_2 / ||X_:n||_2`` (for a rank-1 cloud ``sqrt(lambda_max(G_n) / W_n)``).
    rho2 : numpy.ndarray or None
        ``rho_n^2``.
    srank : numpy.ndarray or None
        Stable rank ``||Rope(X_:n)||_F^2 / ||Rope(X_:n)||_2^2``.
    frob_ratio : numpy.ndarray or None
        ``||Rope(X_:n)||_F / ||X_:n||_F`` (1 by Lemma 2).
    srank_before : numpy.ndarray or None
        The stable rank of ``X_:n`` itself (general clouds).
    weight_sum : numpy.ndarray or None
        ``W_n = sum_{i<n} w_i`` (the streamed weights).
    certified : numpy.ndarray or None
        Which points are Theorem 1's certified limit rather than a computed Gram
        (``ropetheory.theory.curve.certified_curve``).
    eps : numpy.ndarray or None
        The certified radius on ``rho2`` at each length (NaN where no bound applies).
    """

    n: np.ndarray
    rho: np.ndarray
    rho2: np.ndarray | None = None
    srank: np.ndarray | None = None
    frob_ratio: np.ndarray | None = None
    srank_before: np.ndarray | None = None
    weight_sum: np.ndarray | None = None
    certified: np.ndarray | None = None
    eps: np.ndarray | None = None

    def fields(self) -> dict[str, np.ndarray]:
        """The fields this curve has (those not None), by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field it has, as lists."""
        return {k: _jsonable(v) for k, v in self.fields().items()}

    def __getitem__(self, key: str) -> np.ndarray:
        value = getattr(self, key, None) if isinstance(key, str) else None
        if value is None:
            raise KeyError(f"{key!r}: a Curve has {sorted(self.fields())}")
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and getattr(self, key, None) is not None


@dataclasses.dataclass(frozen=True)
class MatrixMetrics:
    """Norms of one ``n x d`` matrix: first singular value ``fsv = ||X||_2``, Frobenius norm ``frob`` and
    stable rank ``srank = frob^2 / fsv^2``."""

    fsv: float
    frob: float
    srank: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def __getitem__(self, key: str) -> float:
        if key not in ("fsv", "frob", "srank"):
            raise KeyError(f"{key!r}: MatrixMetrics has fsv, frob, srank")
        return float(getattr(self, key))
