"""The RoPE operator with exactly reduced angles, in both channel layouts.

``Rope(X)_i = R_i x_i`` with ``R_i = blockdiag_j R(i theta_j)`` and
``R(a) = [[cos a, -sin a], [sin a, cos a]]`` (docs/theory.md, Notation).

Angles are exactly reduced turns (``ropetheory.core.angles``): correct to about ``2e-14`` rad
at any ``|i| < 2^63``. This module holds the operator only.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .core.angles import N_CHUNKS, rope_angles, turn_chunks
from .core.checks import (
    check_finite_array,
    check_integer,
    check_offset,
    check_positions,
    from_theta,
    pad_to_bucket,
    real_array,
)
from .core.layouts import (check_layout, from_interleaved, per_channel, plane_pairs, rotate_interleaved,
                           rotate_interleaved_cs, to_interleaved)
from .core.schedule import check_schedule_first, schedule_layout
from .core.errors import BadValue, BadType

__all__ = ["apply_rope", "rope_tables", "rotate", "TABLE_FLOAT32_ABS_ERR"]

#: |error| of a float32 cos/sin from ``rope_tables``: the exact float64 value (<= 2e-14 off) rounded
#: to float32, half an ulp below 1 (2^-25 = 3.0e-8), so <= 3.0e-8 + 2e-14 at any position
TABLE_FLOAT32_ABS_ERR = 3.0e-8


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


def apply_rope(theta: Any, X: Any, positions: Any = None, *, layout: str | None = None,
               offset: int = 0) -> jax.Array:
    """Apply RoPE to ``X (..., n, d)``: row ``i`` is rotated by ``R_{p_i}``.

    Parameters
    ----------
    theta
        The schedule: a ``Schedule`` or a ``(P,)`` frequency vector shared by all heads, or ``(..., P)``
        one per head (the schedule comes first in every function that takes one: docs/conventions.md).
    X
        Float array ``(..., n, d)``; leading axes (e.g. heads) are vmapped.
    positions
        Int ``(n,)``; default ``offset + arange(n)`` (0-based, Hugging Face).
    layout
        ``"interleaved"`` (plane j = channels 2j, 2j+1) or ``"half"`` (plane j = channels j, j+P;
        Hugging Face ``rotate_half``).
    offset
        Added to every position.

    Returns
    -------
    jax.Array
        Float64 ``(..., n, d)``; each angle is reduced exactly (module doc).
    """
    check_schedule_first("apply_rope", theta, X)
    layout = schedule_layout(theta, layout)
    A = check_finite_array("X", X, min_ndim=2)
    n, d = A.shape[-2:]
    if d % 2 or d == 0:
        raise BadValue(f"head dim (last axis of X) must be a positive even integer, got {d}")
    th = real_array("theta", theta)
    if th.ndim == 0:
        raise BadValue(f"theta must be a vector of {d // 2} frequencies (one per plane), got the scalar {theta!r}")
    if th.ndim == 1:
        th = from_theta(th)
        chunks = turn_chunks(th)
    else:
        if th.shape[:-1] != A.shape[:-2] or th.size == 0:
            raise BadValue(f"per-head theta of shape {th.shape} does not match X batch {A.shape[:-2]}")
        flat = th.reshape(-1, th.shape[-1])
        chunks = np.stack([turn_chunks(from_theta(t)) for t in flat]).reshape(th.shape + (N_CHUNKS,))
    if th.shape[-1] * 2 != d:
        raise BadValue(f"theta has {th.shape[-1]} planes but X has head dim {d} (needs {d // 2})")
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
    A, exponents = _planes_to_safe_range(np.asarray(A), layout)
    # rows padded to a bucket (the last row repeated): one compiled kernel per bucket, rows independent
    Ap, pp = pad_to_bucket(A, axis=-2 % A.ndim), pad_to_bucket(pos)
    out = _apply_rope_kernel(jnp.asarray(Ap), jnp.asarray(chunks), jnp.asarray(pp), layout)[..., :n, :]
    if exponents is None:
        return out
    return jnp.asarray(_planes_back(np.asarray(out), exponents))


#: planes whose largest entry lies outside ``[2^-SAFE_PLANE_EXPONENT, 2^SAFE_PLANE_EXPONENT]`` are rotated
#: at an exactly rescaled magnitude: near the float64 maximum ``c x - s y`` can overflow although the
#: rotated plane (of the same norm) is representable, and XLA on CPU flushes subnormals to zero
SAFE_PLANE_EXPONENT = 400


def _planes_to_safe_range(A: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Each plane outside the safe range times ``2^-k`` (``k`` the binary exponent of its largest entry),
    exactly, with the per-channel exponents to undo it; ``(A, None)`` when every plane is in range."""
    xa, xb = plane_pairs(A, layout)
    m = np.maximum(np.abs(xa), np.abs(xb))
    out = (m != 0) & ((m < 2.0 ** -SAFE_PLANE_EXPONENT) | (m > 2.0 ** SAFE_PLANE_EXPONENT))
    if not out.any():
        return A, None
    e = per_channel(np.where(out, np.frexp(m)[1], 0), layout)
    return np.ldexp(A, -e), e


def _planes_back(Y: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Undo ``_planes_to_safe_range`` on the rotated planes; refuse, naming ``X``, a rotated plane
    whose entries exceed the float64 maximum (rotation keeps a plane's norm, not its largest entry)."""
    with np.errstate(over="ignore"):
        out = np.ldexp(Y, e)
    bad = ~np.isfinite(out)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise BadValue(f"X: the rotated value at index {idx} exceeds the float64 maximum (a plane's norm is "
                         f"kept, not its largest entry); rescale X, e.g. by a power of two")
    return out


def rope_tables(theta: Any, n: int, *, offset: int = 0, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` of the exactly reduced angles ``(offset + i) theta_j``, ``i < n``: two ``(n, P)`` arrays.

    The angles are computed as ``apply_rope`` computes them (float64, exact reduction) and only
    then cast to ``dtype``: a float32 table is the exact value rounded once, off by at most
    ``TABLE_FLOAT32_ABS_ERR`` at any position (a float32 ``i * theta`` would be off by ``~i * 6e-8`` rad).
    With ``rotate`` this is the operator for traced code (training), where ``apply_rope``'s
    host-side checks and float64 result do not fit.
    """
    th = from_theta(real_array("theta", theta))
    if th.ndim != 1:
        raise BadValue(f"theta must be a vector of frequencies, got shape {th.shape}")
    n = check_integer("n", n, lo=0)
    offset = check_offset(offset, 0, max(int(n) - 1, 0))
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise BadType(f"dtype must be float32 or float64, got {dtype!r}")
    ang = rope_angles(jnp.arange(int(n), dtype=jnp.int64) + np.int64(offset), jnp.asarray(turn_chunks(th)))
    return np.asarray(jnp.cos(ang)).astype(dtype), np.asarray(jnp.sin(ang)).astype(dtype)


def rotate(X: jax.Array, cos: jax.Array, sin: jax.Array, *, layout: str = "interleaved") -> jax.Array:
    """``R_i x_i`` for ``X (..., n, d)`` from tables ``cos, sin (n, d/2)`` (``rope_tables``).

    Traceable and differentiable, in ``X``'s dtype; the same rotation as ``apply_rope`` (one
    formula, ``ropetheory.core.layouts.rotate_interleaved_cs``). Shapes are checked at trace time.
    """
    check_layout(layout)
    if X.shape[-1] != 2 * cos.shape[-1] or cos.shape != sin.shape or X.shape[-2] != cos.shape[-2]:
        raise BadValue(f"X {X.shape} does not match tables cos {cos.shape}, sin {sin.shape}: "
                         f"need X (..., n, d) with cos, sin (n, d/2)")
    Xi = to_interleaved(X, layout)
    return from_interleaved(rotate_interleaved_cs(Xi, cos.astype(X.dtype), sin.astype(X.dtype)), layout)
