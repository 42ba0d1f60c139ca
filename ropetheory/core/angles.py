"""Exact angles: positions times frequencies reduced modulo one turn, at any position.

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

Pair frequencies ``f_j - f_k`` and ``f_j + f_k`` (the phases of a Gram block) are formed from
the same fixed-point turns, in exact integers. Resonances: a combination within
``RESONANCE_TOL_TURNS`` of a whole number of turns is taken to be *exactly* resonant (a
documented choice: float64 cannot store a 2 pi-commensurate frequency such as ``pi``; such a
combination is read as the commensurate value it rounds). A plane with ``theta = 0`` (NoPE) is
found by ``nope_planes``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .checks import from_theta


CHUNK_BITS = 26


N_CHUNKS = 6


TURN_BITS = CHUNK_BITS * N_CHUNKS          # B = 156 fractional bits of a turn


_GUARD_BITS = 300                          # bits of 1/(2 pi) kept in the fixed-point constant


#: ``floor(2^_GUARD_BITS / (2 pi))``, the exact integer (298 bits): written out rather than computed with
#: mpmath at the first angle, whose import cost every command 20-30 ms; the tests recompute it at 364 bits
INV_TWO_PI_FIXED = 0x28be60db9391054a7f09d5f47d4d377036d8a5664f10e4107f9458eaf7aef1586dc91b8e909


def fixed_turns(theta: np.ndarray) -> list[int]:
    """``F_j = round(frac(theta_j / (2 pi)) 2^B)`` for float64 ``theta_j`` (exact integers).

    ``theta_j`` is read as the exact dyadic rational ``m 2^e`` it stores; the only
    error is the truncation of ``1/(2 pi)`` to ``_GUARD_BITS`` bits, below
    ``theta_j 2^-300`` turns.
    """
    inv = INV_TWO_PI_FIXED
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
    """Cut B-bit fixed-point turns (integers in ``[0, 2^B)``) into ``N_CHUNKS`` exact float64 chunks of 26
    bits, shape ``(len(F), 6)``: chunk k is bits ``B - 26 (k + 1) .. B - 26 k - 1`` times ``2^(-26 (k + 1))``."""
    nbytes = (TURN_BITS + 7) // 8
    raw = np.frombuffer(b"".join(x.to_bytes(nbytes, "big") for x in F), dtype=np.uint8).reshape(len(F), nbytes)
    bits = np.unpackbits(raw, axis=1)[:, 8 * nbytes - TURN_BITS:]            # most significant first
    # each piece is an integer below 2^26 summed from its bits: exact in int64 and in float64, so one ldexp
    # scales them all (the bits at once: one Python step per turn, not one per chunk)
    weights = np.left_shift(1, np.arange(CHUNK_BITS - 1, -1, -1, dtype=np.int64))
    pieces = bits.reshape(len(F), N_CHUNKS, CHUNK_BITS).astype(np.int64) @ weights
    return np.ldexp(pieces.astype(np.float64), -CHUNK_BITS * np.arange(1, N_CHUNKS + 1))


@functools.lru_cache(maxsize=256)
def _turn_chunks_cached(theta_bytes: bytes) -> np.ndarray:
    theta = np.frombuffer(theta_bytes, dtype=np.float64)
    return chunks_from_fixed(fixed_turns(theta))


def turn_chunks(theta: Any) -> np.ndarray:
    """Exact chunked turns of a schedule, shape ``(P, 6)`` float64 (cached per schedule); ``theta`` is
    checked as a schedule (``ropetheory.core.checks.from_theta``)."""
    theta = np.ascontiguousarray(from_theta(theta))
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
    acc: Any = None
    for s, p in enumerate(pieces):
        scale = float(2 ** (CHUNK_BITS * s))
        for k in range(s, min(s + 4, N_CHUNKS)):   # k < s: integer products; k >= s+4: < 2^-78
            term = _frac(p * scale * chunks[..., k])
            acc = term if acc is None else _frac(acc + term)
    return acc - (acc >= 0.5)


@jax.jit
def rope_angles(positions: jax.Array, chunks: jax.Array) -> jax.Array:
    """Angles ``i theta_j mod 2 pi`` in ``[-pi, pi)``; positions ``(n,)``, chunks ``(P, K)`` -> ``(n, P)``.
    Compiled: a caller outside ``jit`` runs one program per shape, not each of its ~40 operations alone."""
    return (2.0 * jnp.pi) * reduced_turns(positions[:, None], chunks[None, :, :])


#: |error| of a cos/sin from ``phases_from_anchor``: anchor and table entries are cos/sin of reduced
#: angles (each <= 2e-14 rad off, module doc, + 1 ulp of libm), so each product term is off by at most
#: 2 * (2e-14 + 1.2e-16); two products and a sum add 3 roundings: <= 4.1e-14, twice the exact path's
#: own bound and independent of the position (every chunk starts from its own exactly reduced anchor)
ANCHORED_PHASE_ABS_ERR = 4.1e-14


def phase_table(chunks: jax.Array, chunk: int):
    """``(cos, sin)`` of ``k theta_j`` for ``k = 0 .. chunk-1``, exactly reduced: ``(chunk, P)`` each."""
    ang = rope_angles(jnp.arange(chunk, dtype=jnp.int64), chunks)
    return jnp.cos(ang), jnp.sin(ang)


def anchor_angles(p0: jax.Array, chunks: jax.Array) -> jax.Array:
    """The anchor ``p0 theta_j mod 2 pi`` (exactly reduced), ``(P,)``, for an int64 scalar ``p0``."""
    return rope_angles(jnp.reshape(p0, (1,)), chunks)[0]


def phases_from_anchor(a: jax.Array, table):
    """``(cos, sin)`` of ``(p0 + k) theta_j`` for the ``k`` of ``table`` (``phase_table``), from the anchor
    angles ``a = p0 theta_j`` (``anchor_angles``, reduced exactly).

    Inside the chunk the phase steps by one complex product with the table, ``e^{i (p0 + k) theta} =
    e^{i p0 theta} e^{i k theta}``: no reduction or sine per element, error at most ``ANCHORED_PHASE_ABS_ERR``
    at any ``p0``.
    """
    ca, sa = jnp.cos(a), jnp.sin(a)
    ck, sk = table
    return ca * ck - sa * sk, sa * ck + ca * sk


def first_anchor(chunks: jax.Array):
    """The anchor carry of a stream before its first step (``next_anchor``): position 0 and its angles."""
    return jnp.int64(0), anchor_angles(jnp.int64(0), chunks)


def next_anchor(carry, p0: jax.Array, chunk: int, chunks: jax.Array):
    """This step's anchor angles ``p0 theta`` and the carry for the next step, ``(p0 + chunk, its angles)``.

    A stream reduces each step's anchor in the step before and carries it: computed in the step that uses
    it, XLA fuses the exact reduction into every consumer of the anchor and runs it once per element (on CPU
    that doubled a step's time). A step that does not start where the carried anchor is (the first of a
    segment of ``.accumulate.chunked_prefix_scan``) reduces its own."""
    at, ang = carry
    ang = jax.lax.cond(at == p0, lambda: ang, lambda: anchor_angles(p0, chunks))
    return ang, (p0 + chunk, anchor_angles(p0 + chunk, chunks))


#: Frequencies within this many turns of an integer are exactly resonant (see module doc).
#: 2^-52 turns: ``float(pi)`` misses half a turn by 2e-17 turns and ``2 pi - theta``
#: computed in float64 misses a whole turn by at most 7e-17 turns, both inside; a
#: genuine frequency this small (theta < 1.4e-15 rad) rotates by less than 1e-3 rad
#: over 10^12 positions.
RESONANCE_TOL_TURNS = 2.0 ** -52


# ---------------------------------------------------------------------------
# pair frequencies (host, exact integers)
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PairFrequencies:
    """Frequencies ``t = f_j -+ f_k`` (turns) for all plane pairs of a schedule.

    ``t_diff, t_sum``: ``(P, P)`` float64 in ``[-1/2, 1/2)``, correctly rounded;
    ``half_diff, half_sum``: ``(P, P, 6)`` exact chunks of ``t / 2``;
    ``res_diff, res_sum``: ``(P, P)`` bool, exactly resonant (``t`` snapped to 0).
    """
    theta: np.ndarray
    t_diff: np.ndarray
    t_sum: np.ndarray
    half_diff: np.ndarray
    half_sum: np.ndarray
    res_diff: np.ndarray
    res_sum: np.ndarray


def _pairs(F: list[int], sign: int, shift: int = 0):
    """Reduced pair turns ``t = f_j + sign f_k + shift`` in [-1/2, 1/2), resonance flags, chunks of ``t/2``."""
    mod = 1 << TURN_BITS
    half = mod >> 1
    tol = int(RESONANCE_TOL_TURNS * mod)
    P = len(F)
    t = np.zeros((P, P))
    res = np.zeros((P, P), dtype=bool)
    signed = []
    for j in range(P):
        for k in range(P):
            x = (F[j] + sign * F[k] + shift) % mod
            s = x - mod if x >= half else x
            if abs(s) <= tol:
                res[j, k] = True
                s = 0
            t[j, k] = s / mod
            signed.append(s)
    # chunks of t/2 = s / 2^(B+1): chunks of |s| halved (exact), with the sign of s
    sgn = np.sign(np.array(signed, dtype=np.float64))[:, None]
    ch = sgn * chunks_from_fixed([abs(s) for s in signed]) / 2.0
    return t, res, ch.reshape(P, P, -1)


@functools.lru_cache(maxsize=64)
def _pair_frequencies_cached(theta_bytes: bytes, shift: float) -> PairFrequencies:
    theta = np.frombuffer(theta_bytes, dtype=np.float64).copy()
    F = fixed_turns(theta)
    Fs = (fixed_turns(np.array([abs(shift)]))[0] * (1 if shift >= 0 else -1)) if shift else 0
    t_diff, res_diff, ch_diff = _pairs(F, -1, Fs)
    t_sum, res_sum, ch_sum = _pairs(F, +1, Fs)
    return PairFrequencies(theta, t_diff, t_sum, ch_diff, ch_sum, res_diff, res_sum)


def nope_planes(theta: Any) -> np.ndarray:
    """Planes that do not rotate: ``theta_j`` within ``RESONANCE_TOL_TURNS`` of ``2 pi Z``."""
    mod = 1 << TURN_BITS
    tol = int(RESONANCE_TOL_TURNS * mod)
    return np.array([min(F, mod - F) <= tol for F in fixed_turns(from_theta(theta))], dtype=bool)


def pair_frequencies(theta: Any, shift: float = 0.0) -> PairFrequencies:
    """Exact pair frequencies ``theta_j -+ theta_k + shift`` of a schedule (cached; shift in radians)."""
    th = np.ascontiguousarray(from_theta(theta))
    return _pair_frequencies_cached(th.tobytes(), float(shift))
