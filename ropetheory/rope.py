"""The RoPE operator with exactly reduced angles, in both channel layouts.

``Rope(X)_i = R_i x_i`` with ``R_i = blockdiag_j R(i theta_j)`` and
``R(a) = [[cos a, -sin a], [sin a, cos a]]`` (THEORY.md, Notation).

Angles are exactly reduced turns (:mod:`ropetheory.core.angles`): correct to about ``2e-14`` rad
at any ``|i| < 2^63``. This module holds the operator only.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .core.angles import N_CHUNKS, rope_angles, turn_chunks
from .core.checks import check_finite_array, check_offset, check_positions, from_theta, real_array
from .core.layouts import check_layout, from_interleaved, rotate_interleaved, to_interleaved

__all__ = ["apply_rope"]


@functools.partial(jax.jit, static_argnames=("layout",))
def _apply_rope_kernel(X: jax.Array, chunks: jax.Array, positions: jax.Array, layout: str) -> jax.Array:
    """Rope(X) for ``X (..., n, d)``; ``chunks (P, K)`` or ``(..., P, K)`` per head; ``positions (n,)``."""
    def one(Xh, ch):
        Xi = to_interleaved(Xh, layout)
        return from_interleaved(rotate_interleaved(Xi, rope_angles(positions, ch)), layout)

    batch = X.shape[:-2]
    Xf = X.reshape((-1,) + X.shape[-2:])
    if chunks.ndim == 2:
        out = jax.vmap(lambda Xh: one(Xh, chunks))(Xf)
    else:
        out = jax.vmap(one)(Xf, chunks.reshape((-1,) + chunks.shape[-2:]))
    return out.reshape(batch + X.shape[-2:])


def apply_rope(X: Any, theta: Any, positions: Any = None, *, layout: str = "interleaved",
               offset: int = 0) -> jax.Array:
    """Apply RoPE to ``X (..., n, d)``: row ``i`` is rotated by ``R_{p_i}``.

    Parameters
    ----------
    X: float array ``(..., n, d)``; leading axes (e.g. heads) are vmapped.
    theta: ``(P,)`` schedule shared by all heads, or ``(..., P)`` one per head.
    positions: int ``(n,)``; default ``offset + arange(n)`` (0-based, Hugging Face).
    layout: ``"interleaved"`` (plane j = channels 2j, 2j+1) or ``"half"``
        (plane j = channels j, j+P; Hugging Face ``rotate_half``).

    Returns float64 ``(..., n, d)``; each angle is reduced exactly (module doc).
    """
    A = check_finite_array("X", X, min_ndim=2)
    n, d = A.shape[-2:]
    if d % 2 or d == 0:
        raise ValueError(f"head dim (last axis of X) must be a positive even integer, got {d}")
    th = real_array("theta", theta)
    if th.ndim == 0:
        raise ValueError(f"theta must be a vector of {d // 2} frequencies (one per plane), got the scalar {theta!r}")
    if th.ndim == 1:
        th = from_theta(th)
        chunks = turn_chunks(th)
    else:
        flat = th.reshape(-1, th.shape[-1])
        chunks = np.stack([turn_chunks(from_theta(t)) for t in flat]).reshape(th.shape + (N_CHUNKS,))
        if th.shape[:-1] != A.shape[:-2]:
            raise ValueError(f"per-head theta of shape {th.shape} does not match X batch {A.shape[:-2]}")
    if th.shape[-1] * 2 != d:
        raise ValueError(f"theta has {th.shape[-1]} planes but X has head dim {d} (needs {d // 2})")
    check_layout(layout)
    if positions is None:
        offset = check_offset(offset, 0, n - 1)
        pos = np.arange(n, dtype=np.int64) + np.int64(offset)
    else:
        pos = check_positions(positions, n)
        offset = check_offset(offset, int(pos.min()) if pos.size else 0, int(pos.max()) if pos.size else 0)
        pos = pos + np.int64(offset)
    if A.size == 0:                       # no tokens (or an empty batch): nothing to rotate
        return jnp.asarray(A)
    return _apply_rope_kernel(jnp.asarray(A), jnp.asarray(chunks), jnp.asarray(pos), layout)
