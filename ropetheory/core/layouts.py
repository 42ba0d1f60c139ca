"""Channel layouts: ``interleaved`` (planes ``(x_0, x_1), (x_2, x_3), ...``) and ``half``
(Hugging Face ``rotate_half``: planes ``(x_j, x_{j+P})``), and the plane rotation itself.
"""
from __future__ import annotations

from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from .errors import BadValue


LAYOUTS = ("interleaved", "half")
#: a numpy array or a JAX array: the layout permutations keep the kind they are given
ArrayT = TypeVar("ArrayT", np.ndarray, jax.Array)


def to_interleaved(X: ArrayT, layout: str) -> ArrayT:
    """Permute channels so plane ``j`` sits at ``(2j, 2j+1)``; ``half`` has it at ``(j, j+P)``. A numpy
    array stays one (permuted on the host: no device program for a permutation)."""
    if check_layout(layout) == "interleaved":
        return X
    P = X.shape[-1] // 2
    xp = np if isinstance(X, np.ndarray) else jnp
    return xp.stack([X[..., :P], X[..., P:]], axis=-1).reshape(X.shape)


def from_interleaved(X: ArrayT, layout: str) -> ArrayT:
    """Inverse of ``to_interleaved`` (a numpy array stays one)."""
    if check_layout(layout) == "interleaved":
        return X
    P = X.shape[-1] // 2
    Y = X.reshape(X.shape[:-1] + (P, 2))
    xp = np if isinstance(X, np.ndarray) else jnp
    return xp.concatenate([Y[..., 0], Y[..., 1]], axis=-1)


def rotate_interleaved(X: jax.Array, angles: jax.Array) -> jax.Array:
    """``R_i x_i`` for ``X (n, d)`` interleaved and ``angles (n, P)``."""
    return rotate_interleaved_cs(X, jnp.cos(angles), jnp.sin(angles))


def rotate_interleaved_cs(X: jax.Array, c: jax.Array, s: jax.Array) -> jax.Array:
    """``R_i x_i`` for ``X (..., n, d)`` interleaved, given ``cos, sin`` of the angles ``(n, P)``."""
    x0, x1 = X[..., 0::2], X[..., 1::2]
    y0 = c * x0 - s * x1
    y1 = s * x0 + c * x1
    return jnp.stack([y0, y1], axis=-1).reshape(X.shape)


def plane_pairs(A: Any, layout: str) -> tuple[Any, Any]:
    """The two channels of every plane of ``A (..., d)``: ``(a, b)``, each ``(..., P)`` (views, any array type)."""
    P = A.shape[-1] // 2
    if check_layout(layout) == "interleaved":
        return A[..., 0::2], A[..., 1::2]
    return A[..., :P], A[..., P:]


def per_channel(e: np.ndarray, layout: str) -> np.ndarray:
    """A per-plane array ``(..., P)`` spread to each plane's two channels ``(..., 2P)`` (inverse of the
    pairing of ``plane_pairs``)."""
    return np.repeat(e, 2, axis=-1) if check_layout(layout) == "interleaved" else np.concatenate([e, e], axis=-1)


def plane_of(channel: int, P: int, layout: str) -> int:
    """The plane that channel ``channel`` of a ``2P``-wide head belongs to."""
    return channel // 2 if check_layout(layout) == "interleaved" else channel % P


def check_layout(layout: Any) -> str:
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise BadValue(f"unknown layout {layout!r}; known layouts: {list(LAYOUTS)}")
    return layout
