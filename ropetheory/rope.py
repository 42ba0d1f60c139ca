"""The RoPE operator with exactly reduced angles, in both channel layouts.

``Rope(X)_i = R_i x_i`` with ``R_i = blockdiag_j R(i theta_j)`` and
``R(a) = [[cos a, -sin a], [sin a, cos a]]`` (THEORY.md, Notation).

Exact angles
------------
A plain float64 product ``i * theta`` at ``i = 10^15`` has an absolute error
of about ``0.06`` radians: no correct digit of the angle is left. We instead
work in *turns* ``f_j = theta_j / (2 pi)`` and reduce ``i f_j mod 1`` exactly:

1. On the host, each float64 ``theta_j`` (an exact dyadic rational) is
   multiplied by a 300-bit fixed-point ``1/(2 pi)`` in Python integers and
   reduced mod 1 to a ``B = 156``-bit fixed-point fraction ``F_j``; that is cut
   into six float64 *chunks* of 26 bits each, ``f_j = sum_k c_jk`` with
   ``|f_j - sum_k c_jk| < 2^-155``.
2. In JAX, an int64 position is split into three 26-bit pieces,
   ``i = a 2^52 + b 2^26 + c``. Every product (26-bit piece) x (26- or
   27-bit chunk) fits in 53 bits, so it is exact in float64, and so is its
   fractional part ``x - floor(x)``. The fractional parts are added with a
   reduction mod 1 after each addition.

The reduced turn is accurate to about ``3e-15`` turns (``2e-14`` rad) for any
``|i| < 2^63``; the terms dropped (products below ``2^-78``) and the chunk
tail (``|i| 2^-155``) are far below that.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .schedules import from_theta, real_array

__all__ = [
    "TURN_BITS", "CHUNK_BITS", "N_CHUNKS", "fixed_turns", "turn_chunks",
    "chunks_from_fixed", "reduced_turns", "rope_angles", "apply_rope",
    "to_interleaved", "from_interleaved", "LAYOUTS", "check_positions",
]

CHUNK_BITS = 26
N_CHUNKS = 6
TURN_BITS = CHUNK_BITS * N_CHUNKS          # B = 156 fractional bits of a turn
_GUARD_BITS = 300                          # bits of 1/(2 pi) kept in the fixed-point constant
LAYOUTS = ("interleaved", "half")
MAX_ABS_POSITION = 2 ** 63 - 1


@functools.lru_cache(maxsize=1)
def _inv_two_pi_fixed() -> int:
    """``floor(2^_GUARD_BITS / (2 pi))`` as an exact Python integer."""
    import mpmath
    with mpmath.workprec(_GUARD_BITS + 64):
        return int(mpmath.floor(mpmath.ldexp(1, _GUARD_BITS) / (2 * mpmath.pi)))


def fixed_turns(theta: np.ndarray) -> list[int]:
    """``F_j = round(frac(theta_j / (2 pi)) 2^B)`` for float64 ``theta_j`` (exact integers).

    ``theta_j`` is read as the exact dyadic rational ``m 2^e`` it stores; the only
    error is the truncation of ``1/(2 pi)`` to ``_GUARD_BITS`` bits, below
    ``theta_j 2^-300`` turns.
    """
    inv = _inv_two_pi_fixed()
    out = []
    mod = 1 << TURN_BITS
    for t in np.asarray(theta, dtype=np.float64).tolist():
        num, den = float(t).as_integer_ratio()        # exact: t = num / den, den = 2^k
        shift = den.bit_length() - 1 + _GUARD_BITS - TURN_BITS
        prod = num * inv
        F = (prod >> shift) if shift >= 0 else (prod << -shift)
        out.append(F % mod)
    return out


def chunks_from_fixed(F: list[int]) -> np.ndarray:
    """Cut B-bit fixed-point turns into ``N_CHUNKS`` exact float64 chunks of 26 bits, shape ``(len(F), 6)``."""
    mask = (1 << CHUNK_BITS) - 1
    out = np.empty((len(F), N_CHUNKS), dtype=np.float64)
    for r, x in enumerate(F):
        for k in range(N_CHUNKS):
            piece = (x >> (TURN_BITS - CHUNK_BITS * (k + 1))) & mask
            out[r, k] = np.ldexp(float(piece), -CHUNK_BITS * (k + 1))
    return out


@functools.lru_cache(maxsize=256)
def _turn_chunks_cached(theta_bytes: bytes) -> np.ndarray:
    theta = np.frombuffer(theta_bytes, dtype=np.float64)
    return chunks_from_fixed(fixed_turns(theta))


def turn_chunks(theta: np.ndarray) -> np.ndarray:
    """Exact chunked turns of a schedule, shape ``(P, 6)`` float64 (cached per schedule)."""
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    return _turn_chunks_cached(theta.tobytes()).copy()


def _frac(x):
    return x - jnp.floor(x)


def reduced_turns(positions: jax.Array, chunks: jax.Array) -> jax.Array:
    """``frac(i f)`` in ``[-1/2, 1/2)`` for int64 positions and chunked turns ``(..., K)``.

    ``positions`` broadcasts against ``chunks[..., k]``; the result has that
    broadcast shape. Chunks may hold up to 27 bits each
    (sums or differences of two schedules' chunks), products stay exact.
    """
    positions = jnp.asarray(positions, dtype=jnp.int64)
    mask = (1 << CHUNK_BITS) - 1
    pieces = (
        (positions & mask).astype(jnp.float64),
        ((positions >> CHUNK_BITS) & mask).astype(jnp.float64),
        (positions >> (2 * CHUNK_BITS)).astype(jnp.float64),   # signed, |.| < 2^11
    )
    acc = None
    for s, p in enumerate(pieces):
        scale = float(2 ** (CHUNK_BITS * s))
        for k in range(s, min(s + 4, N_CHUNKS)):   # k < s: integer products; k >= s+4: < 2^-78
            term = _frac(p * scale * chunks[..., k])
            acc = term if acc is None else _frac(acc + term)
    return acc - (acc >= 0.5)


def rope_angles(positions: jax.Array, chunks: jax.Array) -> jax.Array:
    """Angles ``i theta_j mod 2 pi`` in ``[-pi, pi)``; positions ``(n,)``, chunks ``(P, K)`` -> ``(n, P)``."""
    return (2.0 * jnp.pi) * reduced_turns(positions[:, None], chunks[None, :, :])


def to_interleaved(X: jax.Array, layout: str) -> jax.Array:
    """Permute channels so plane ``j`` sits at ``(2j, 2j+1)``; ``half`` has it at ``(j, j+P)``."""
    if check_layout(layout) == "interleaved":
        return X
    P = X.shape[-1] // 2
    return jnp.stack([X[..., :P], X[..., P:]], axis=-1).reshape(X.shape)


def from_interleaved(X: jax.Array, layout: str) -> jax.Array:
    """Inverse of :func:`to_interleaved`."""
    if check_layout(layout) == "interleaved":
        return X
    P = X.shape[-1] // 2
    Y = X.reshape(X.shape[:-1] + (P, 2))
    return jnp.concatenate([Y[..., 0], Y[..., 1]], axis=-1)


def _rotate_interleaved(X: jax.Array, angles: jax.Array) -> jax.Array:
    """``R_i x_i`` for ``X (n, d)`` interleaved and ``angles (n, P)``."""
    c, s = jnp.cos(angles), jnp.sin(angles)
    x0, x1 = X[..., 0::2], X[..., 1::2]
    y0 = c * x0 - s * x1
    y1 = s * x0 + c * x1
    return jnp.stack([y0, y1], axis=-1).reshape(X.shape)


@functools.partial(jax.jit, static_argnames=("layout",))
def _apply_rope_kernel(X: jax.Array, chunks: jax.Array, positions: jax.Array, layout: str) -> jax.Array:
    """Rope(X) for ``X (..., n, d)``; ``chunks (P, K)`` or ``(..., P, K)`` per head; ``positions (n,)``."""
    def one(Xh, ch):
        Xi = to_interleaved(Xh, layout)
        return from_interleaved(_rotate_interleaved(Xi, rope_angles(positions, ch)), layout)

    batch = X.shape[:-2]
    Xf = X.reshape((-1,) + X.shape[-2:])
    if chunks.ndim == 2:
        out = jax.vmap(lambda Xh: one(Xh, chunks))(Xf)
    else:
        out = jax.vmap(one)(Xf, chunks.reshape((-1,) + chunks.shape[-2:]))
    return out.reshape(batch + X.shape[-2:])


def check_layout(layout: Any) -> str:
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known layouts: {list(LAYOUTS)}")
    return layout


def check_positions(positions: Any, n: int | None = None) -> np.ndarray:
    """Validate integer positions: a 1-D int64 array with ``|i| < 2^63`` (no floats, no NaN)."""
    arr = np.asarray(positions)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError("positions must be finite integers; got NaN or inf")
        if not np.all(arr == np.round(arr)):
            bad = arr[arr != np.round(arr)][0]
            raise ValueError(f"positions must be integers, got {float(bad)!r}")
        if np.any(np.abs(arr) >= 2.0 ** 53):
            raise ValueError("float positions at or beyond 2^53 are not exact; pass int64 positions")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and arr.max() > MAX_ABS_POSITION:
            raise ValueError(f"position {int(arr.max())} does not fit in int64")
        arr = arr.astype(np.int64)
    elif arr.dtype == object:
        try:
            vals = [int(x) for x in arr.ravel()]
        except (TypeError, ValueError):
            raise TypeError(f"positions must be integers, got {positions!r}") from None
        if any(abs(x) > MAX_ABS_POSITION for x in vals):
            raise ValueError("positions must satisfy |i| < 2^63")
        arr = np.array(vals, dtype=np.int64).reshape(arr.shape)
    else:
        raise TypeError(f"positions must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"positions must be a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"got {arr.shape[0]} positions for {n} tokens")
    return arr


def check_finite_array(name: str, X: Any, min_ndim: int = 1) -> np.ndarray:
    """Convert to a float64 numpy array and reject NaN/inf, naming the first bad index."""
    A = real_array(name, X)
    if A.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {A.shape}")
    bad = ~np.isfinite(A)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = ", ".join(map(str, idx))
        raise ValueError(f"{name} must be finite; {name}[{where}] = {float(A[idx])!r}")
    return A


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
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
        raise TypeError(f"offset must be an integer, got {offset!r}")
    if positions is None:
        if abs(int(offset)) + n > MAX_ABS_POSITION:
            raise ValueError(f"offset {offset} + n {n} overflows int64 positions")
        pos = np.arange(n, dtype=np.int64) + np.int64(offset)
    else:
        pos = check_positions(positions, n)
        if pos.size and (int(pos.max()) + int(offset) > MAX_ABS_POSITION or
                         int(pos.min()) + int(offset) < -MAX_ABS_POSITION):
            raise ValueError(f"positions + offset {offset} leave int64 (|i| < 2^63)")
        pos = pos + np.int64(offset)
    if A.size == 0:                       # no tokens (or an empty batch): nothing to rotate
        return jnp.asarray(A)
    return _apply_rope_kernel(jnp.asarray(A), jnp.asarray(chunks), jnp.asarray(pos), layout)
