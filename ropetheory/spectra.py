"""Gram matrices, first singular value (FSV) and stable rank, without the n x d matrix.

For a rank-1 cloud ``X = u v^T`` (``||v|| = 1``, weights ``w_i = u_i^2``,
``W_n = sum_{i<n} w_i``) the Gram matrix of ``Rope(X)`` is

    G_n = sum_{i<n} w_i R_i v v^T R_i^T            (d x d)

and its block ``(j, k)`` is linear in the weighted mean phases
``D_jk = sum_i w_i e^{2 pi i t i} / W_n`` at ``t = f_j - f_k`` and ``S_jk`` at
``t = f_j + f_k`` (``f = theta / 2 pi`` in turns); the block formula is derived
in ``proofs/gram_blocks.py`` and imported from :mod:`ropetheory._derived`.

Then ``rho_n^2 = lambda_max(G_n) / W_n`` (FSV ratio squared),
``srank = tr(G_n) / lambda_max(G_n)`` and the Frobenius ratio
``sqrt(tr(G_n) / W_n)`` (1 by Lemma 2).

Closed form (affine weights ``w_i = a + b i``, constant when ``b = 0``). With
``alpha = pi t``, ``c = (n-1)/2`` and ``K(alpha) = sin(n alpha)/sin(alpha)``,

    sum_i w_i e^{2 alpha i i} = e^{2 i alpha c} [ (a + b c) K + i b T ],
    T = -(1/2) dK/dalpha,

and ``W_n = n (a + b c)``. Written with ``sinc`` and its derivative (series
for small arguments) this has no cancellation at any ``n`` or ``t``; the phases
``e^{2 i alpha c}`` and ``sin(n alpha)`` are reduced exactly from the chunked
turns of :mod:`ropetheory.rope`, so ``n = 10^12`` and beyond are exact.

Resonances: a frequency combination within :data:`RESONANCE_TOL_TURNS` of a
whole number of turns is taken to be *exactly* resonant (a documented choice:
float64 cannot store a 2 pi-commensurate frequency such as ``pi``; such a
combination is read as the commensurate value it rounds).

Streaming (any weights, any rows): positions are processed in chunks of ``C``
inside one jitted ``lax`` loop, ``G += Y^T Y`` with Neumaier-compensated
accumulation; memory ``O(d^2 + C d)``. Whole curves on a grid of lengths come
from one pass (snapshots at the grid points).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._derived import gram_block
from .rope import (TURN_BITS, check_finite_array, check_layout, chunks_from_fixed,
                   fixed_turns, reduced_turns, rope_angles, _rotate_interleaved, to_interleaved,
                   turn_chunks, apply_rope, MAX_ABS_POSITION)
from .schedules import from_theta

__all__ = [
    "RESONANCE_TOL_TURNS", "AffineWeights", "TrigWeights", "weighted_mean_phases", "PairFrequencies", "pair_frequencies", "nope_planes",
    "check_cloud_vector", "check_clouds", "check_length", "log_grid", "rank1_gram", "rank1_curve",
    "metrics_from_gram", "rank1_curves_batch", "chunked_prefix_scan", "stream_gram_curve", "rank1_stream_curve", "matrix_metrics",
    "rope_matrix_curve", "sinc", "dsinc",
]

#: Frequencies within this many turns of an integer are exactly resonant (see module doc).
#: 2^-52 turns: ``float(pi)`` misses half a turn by 2e-17 turns and ``2 pi - theta``
#: computed in float64 misses a whole turn by at most 7e-17 turns, both inside; a
#: genuine frequency this small (theta < 1.4e-15 rad) rotates by less than 1e-3 rad
#: over 10^12 positions.
RESONANCE_TOL_TURNS = 2.0 ** -52

#: Below this |x| the sinc functions use their Taylor series (16 terms' worth, error < 1e-18).
_SINC_SERIES_BELOW = 0.5

DEFAULT_CHUNK = 4096


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------
def check_cloud_vector(v: Any, P: int | None = None) -> np.ndarray:
    """Validate ``v`` (finite, non-zero, even length ``2P``) and return it normalised to ``||v|| = 1``."""
    arr = check_finite_array("v", v)
    if arr.ndim != 1:
        raise ValueError(f"v must be a 1-D vector, got shape {arr.shape}")
    if arr.size % 2 or arr.size == 0:
        raise ValueError(f"v must have a positive even length (the head dim), got {arr.size}")
    if P is not None and arr.size != 2 * P:
        raise ValueError(f"v has length {arr.size} but the schedule has {P} planes (head dim {2 * P})")
    arr = scale_by_power_of_two(arr)                  # exact; keeps ||v|| finite and non-zero
    nrm = float(np.linalg.norm(arr))
    if nrm == 0.0:
        raise ValueError("v must be non-zero (a rank-1 cloud X = u v^T needs v != 0); got the zero vector")
    return arr / nrm


#: arrays whose largest entry lies outside ``[2^-SAFE_EXPONENT, 2^SAFE_EXPONENT]`` are rescaled by a
#: power of two (exact) before squares and sums, which would otherwise overflow to inf or underflow to 0;
#: the FSV ratio, stable rank and Frobenius ratio do not depend on the scale
SAFE_EXPONENT = 400


def scale_by_power_of_two(a: np.ndarray) -> np.ndarray:
    """Each row (last axis) times ``2^-k``, ``k`` the binary exponent of its ``max |a|``, where that max
    is outside the safe range; rows inside it (and zero rows) are returned untouched. Exact."""
    m = np.max(np.abs(a), axis=-1, keepdims=True) if a.size else np.zeros(a.shape[:-1] + (1,))
    out_of_range = (m != 0) & ((m < 2.0 ** -SAFE_EXPONENT) | (m > 2.0 ** SAFE_EXPONENT))
    if not out_of_range.any():
        return a
    return np.ldexp(a, np.where(out_of_range, -np.frexp(m)[1], 0))


def check_clouds(V: Any, P: int, layout: str = "interleaved") -> np.ndarray:
    """Validate a batch of cloud vectors (rows of ``V``, each ``2P`` long, finite, non-zero) and
    return them normalised to unit norm, in the interleaved channel order, ``(n_clouds, 2P)``."""
    A = check_finite_array("V", V, min_ndim=2)
    if A.ndim != 2 or A.shape[1] != 2 * P or A.shape[0] == 0:
        raise ValueError(f"V must be (n_clouds >= 1, {2 * P}), got shape {A.shape}")
    A = scale_by_power_of_two(A)                      # exact, per row: no overflow or underflow in the norms
    norms = np.linalg.norm(A, axis=1)
    if np.any(norms == 0):
        raise ValueError(f"V row {int(np.argmax(norms == 0))} is the zero vector")
    check_layout(layout)
    return np.asarray(to_interleaved(jnp.asarray(A / norms[:, None]), layout))


def check_length(n: Any, name: str = "n") -> int:
    """``n`` must be an integer ``1 <= n < 2^62``."""
    if isinstance(n, bool):
        raise TypeError(f"{name} must be an integer, got {n!r}")
    if isinstance(n, (float, np.floating)):
        if not math.isfinite(n) or n != int(n):
            raise ValueError(f"{name} must be a whole number, got {n!r}")
        n = int(n)
    if not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    if n >= 2 ** 62:
        raise ValueError(f"{name} must be < 2^62, got {n}")
    return n


def check_lengths(lengths: Any) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(lengths, dtype=object))
    return np.array([check_length(x, "length") for x in arr.ravel()], dtype=np.int64)


#: most lengths one grid may hold (each costs a d x d eigenproblem; more is a typo, not a study)
MAX_GRID_POINTS = 10 ** 6


def log_grid(n_max: float = 1e12, num: int = 200, n_min: int = 1) -> np.ndarray:
    """``num`` distinct integer lengths, log-spaced from ``n_min`` to ``n_max`` (both included)."""
    if isinstance(n_max, bool) or not isinstance(n_max, (int, float, np.integer, np.floating)) \
            or not math.isfinite(n_max):
        raise ValueError(f"n_max must be a finite number, got {n_max!r}")
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or not 2 <= num <= MAX_GRID_POINTS:
        raise ValueError(f"num must be an integer in [2, {MAX_GRID_POINTS}] (both ends are included), got {num!r}")
    n_max = check_length(int(round(n_max)), "n_max")
    n_min = check_length(n_min, "n_min")
    if n_max - n_min + 1 < num:
        return np.arange(n_min, n_max + 1, dtype=np.int64)
    g = np.round(np.geomspace(n_min, n_max, num)).astype(np.int64)
    for i in range(1, num):                      # strictly increasing from the left ...
        g[i] = max(g[i], g[i - 1] + 1)
    g[-1] = n_max
    for i in range(num - 2, -1, -1):             # ... and ending at n_max
        g[i] = min(g[i], g[i + 1] - 1)
    return g


@dataclasses.dataclass(frozen=True)
class AffineWeights:
    """Weights ``w_i = a + b i`` (``a, b >= 0``): constant (``b = 0``) or a monotone ramp.

    ``W_n = n a + b n (n-1)/2``, ``w_{n-1} = a + b (n-1)``, ``TV_n = b (n-1)``.
    """
    a: float = 1.0
    b: float = 0.0

    def __post_init__(self):
        for name in ("a", "b"):
            x = getattr(self, name)
            if not isinstance(x, (int, float, np.floating, np.integer)) or not math.isfinite(x) or x < 0:
                raise ValueError(f"AffineWeights.{name} must be a finite number >= 0, got {x!r}")
        if self.a == 0 and self.b == 0:
            raise ValueError("AffineWeights(a=0, b=0) gives all-zero weights")

    def total(self, n):
        return n * self.a + self.b * n * (n - 1) / 2

    def last(self, n):
        return self.a + self.b * (n - 1)

    def total_variation(self, n):
        return self.b * (n - 1)


CONSTANT = AffineWeights(1.0, 0.0)


@dataclasses.dataclass(frozen=True)
class TrigWeights:
    """Oscillating weights ``w_i = a0 + sum_m a_m cos(i phi_m)`` (must stay >= 0: ``a0 >= sum |a_m|``).

    Their total variation grows like ``n``, so ``TV_n = o(W_n)`` fails (Remark 1):
    the counter-example family. The mean phase is exact in closed form:
    ``sum_i w_i e^{i omega i} = a0 S(omega) + sum_m a_m (S(omega + phi_m) + S(omega - phi_m)) / 2``.
    """
    a0: float = 1.0
    terms: tuple = ((1.0, 1.0),)          # ((a_m, phi_m), ...)

    def __post_init__(self):
        if not math.isfinite(self.a0) or self.a0 <= 0:
            raise ValueError(f"TrigWeights.a0 must be finite and > 0, got {self.a0!r}")
        for a, phi in self.terms:
            if not (math.isfinite(a) and math.isfinite(phi)) or phi < 0:
                raise ValueError(f"TrigWeights term (a={a!r}, phi={phi!r}) must be finite with phi >= 0")
        if sum(abs(a) for a, _ in self.terms) > self.a0:
            raise ValueError(f"TrigWeights can go negative: a0={self.a0} < sum |a_m|")
        if self.a0 + sum(a for a, phi in self.terms if phi == 0) <= 0:
            raise ValueError(f"TrigWeights(a0={self.a0}, terms={self.terms}) are identically zero: no cloud to weigh")

    def components(self):
        """``[(coef, shift_rad)]`` with ``w_i = sum coef e^{i shift i}``."""
        out = [(self.a0, 0.0)]
        for a, phi in self.terms:
            out += [(a / 2, phi), (a / 2, -phi)]
        return out


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
    """Planes that do not rotate: ``theta_j`` within :data:`RESONANCE_TOL_TURNS` of ``2 pi Z``."""
    mod = 1 << TURN_BITS
    tol = int(RESONANCE_TOL_TURNS * mod)
    return np.array([min(F, mod - F) <= tol for F in fixed_turns(from_theta(theta))], dtype=bool)


def pair_frequencies(theta: Any, shift: float = 0.0) -> PairFrequencies:
    """Exact pair frequencies ``theta_j -+ theta_k + shift`` of a schedule (cached; shift in radians)."""
    th = np.ascontiguousarray(from_theta(theta))
    return _pair_frequencies_cached(th.tobytes(), float(shift))


# ---------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------
_SINC_COEF = [(-1) ** k / math.factorial(2 * k + 1) for k in range(9)]


def sinc(x, sin_x=None):
    """``sin(x)/x`` (unnormalised), series below |x| < 0.5; ``sin_x`` may carry an exactly reduced sine."""
    x = jnp.asarray(x)
    small = jnp.abs(x) < _SINC_SERIES_BELOW
    x2 = x * x
    ser = sum(c * x2 ** k for k, c in enumerate(_SINC_COEF))
    xs = jnp.where(small, 1.0, x)
    s = jnp.sin(x) if sin_x is None else sin_x
    return jnp.where(small, ser, s / xs)


def dsinc(x, sin_x=None, cos_x=None):
    """Derivative of ``sin(x)/x``: ``(x cos x - sin x)/x^2``, series below |x| < 0.5."""
    x = jnp.asarray(x)
    small = jnp.abs(x) < _SINC_SERIES_BELOW
    x2 = x * x
    ser = x * sum(c * 2 * k * x2 ** (k - 1) for k, c in enumerate(_SINC_COEF) if k > 0)
    xs = jnp.where(small, 1.0, x)
    s = jnp.sin(x) if sin_x is None else sin_x
    c = jnp.cos(x) if cos_x is None else cos_x
    return jnp.where(small, ser, c / xs - s / (xs * xs))


def mean_phase(t, half_chunks, n, a, b):
    """``sum_{i<n} (a + b i) e^{2 pi i t i} / W_n`` for turns ``t`` (exact, see module doc).

    ``t``: float array (reduced, correctly rounded); ``half_chunks``: chunks of ``t/2``
    with one more trailing axis; ``n``: int64 scalar. Returns complex128 like ``t``.
    """
    nf = n.astype(jnp.float64)
    alpha = jnp.pi * t                                   # |alpha| <= pi/2
    x = nf * alpha                                       # n alpha, float (relative exact)
    v = reduced_turns(n, half_chunks)                    # n t / 2 mod 1: n alpha = 2 pi v mod 2 pi
    sx, cx = jnp.sin(2 * jnp.pi * v), jnp.cos(2 * jnp.pi * v)
    s_n, ds_n = sinc(x, sx), dsinc(x, sx, cx)
    s_1, ds_1 = sinc(alpha), dsinc(alpha)
    K_over_n = s_n / s_1                                  # sin(n alpha) / (n sin alpha)
    # T = -(1/2) K'(alpha); K = n sinc(n alpha)/sinc(alpha)
    dK_over_n = (nf * ds_n * s_1 - s_n * ds_1) / (s_1 * s_1)
    c = (nf - 1.0) / 2.0
    T_over_n = -0.5 * dK_over_n
    phase = 2 * jnp.pi * reduced_turns(n - 1, half_chunks)   # alpha (n - 1) mod 2 pi
    denom = a + b * c
    val = K_over_n + 1j * (b / denom) * T_over_n
    return jnp.exp(1j * phase) * val


def assemble_gram(v_il, Dm, Sm):
    """``G / W`` (d x d) from interleaved unit ``v`` and mean phases ``Dm, Sm`` (P x P complex)."""
    P = v_il.shape[0] // 2
    x0, x1 = v_il[0::2][:, None], v_il[1::2][:, None]
    y0, y1 = v_il[0::2][None, :], v_il[1::2][None, :]
    g = gram_block(x0, x1, y0, y1, Dm.real, Dm.imag, Sm.real, Sm.imag)
    G = jnp.stack([jnp.stack([g[0], g[1]], -1), jnp.stack([g[2], g[3]], -1)], -2)  # (P,P,2,2)
    G = G.transpose(0, 2, 1, 3).reshape(2 * P, 2 * P)
    return 0.5 * (G + G.T)


def metrics_from_gram(G, W=1.0):
    """FSV ratio, stable rank and Frobenius ratio from a Gram matrix ``G`` of a cloud with ``||X||_2^2 = W``."""
    ev = jnp.linalg.eigvalsh(G)
    lam = ev[-1]
    tr = jnp.trace(G)
    return {"rho": jnp.sqrt(lam / W), "rho2": lam / W, "srank": tr / lam, "frob_ratio": jnp.sqrt(tr / W)}


@jax.jit
def _mean_phases(t_diff, half_diff, t_sum, half_sum, lengths, a, b):
    """``D_jk, S_jk`` at every length: ``(len, P, P)`` complex, vectorised over ``n``."""
    return jax.vmap(lambda n: (mean_phase(t_diff, half_diff, n, a, b),
                               mean_phase(t_sum, half_sum, n, a, b)))(lengths)


@jax.jit
def _assemble_batch(v_il, Dm, Sm):
    return jax.lax.map(lambda DS: assemble_gram(v_il, DS[0], DS[1]), (Dm, Sm))


@jax.jit
def _metrics_batch(Gs):
    return jax.lax.map(metrics_from_gram, Gs)          # one eigvalsh per length


def _prepare_rank1(theta, v, layout, offset):
    th = from_theta(theta)
    P = th.size
    vv = check_cloud_vector(v, P)
    check_layout(layout)
    v_il = np.asarray(to_interleaved(jnp.asarray(vv), layout))
    if offset:
        v_il = np.asarray(apply_rope(v_il[None, :], th, np.array([int(offset)])))[0]
    return th, v_il


def _check_weights(weights, lengths=None):
    if weights is None:
        return CONSTANT
    if isinstance(weights, AffineWeights):
        if lengths is not None and weights.a == 0 and np.any(np.asarray(lengths) == 1):
            raise ValueError("AffineWeights(a=0, ...) has W_1 = 0: the FSV ratio at n = 1 is undefined")
        return weights
    if isinstance(weights, TrigWeights):
        return weights
    raise TypeError("closed forms take weights=None (constant), AffineWeights(a, b) or TrigWeights; "
                    "for arbitrary weights use rank1_stream_curve")


def weighted_mean_phases(theta: np.ndarray, weights, lengths: np.ndarray):
    """``(D, S)``: ``sum_{i<n} w_i e^{i i (theta_j -+ theta_k)} / W_n``, each ``(len, P, P)`` complex."""
    L = jnp.asarray(lengths)
    if isinstance(weights, AffineWeights):
        pf = pair_frequencies(theta)
        return _mean_phases(pf.t_diff, pf.half_diff, pf.t_sum, pf.half_sum, L,
                            float(weights.a), float(weights.b))
    # trigonometric weights: superpose shifted constant-weight sums (each S/n), then divide by W_n/n
    D = S = 0.0
    for coef, shift in weights.components():
        pf = pair_frequencies(theta, shift)
        Dc, Sc = _mean_phases(pf.t_diff, pf.half_diff, pf.t_sum, pf.half_sum, L, 1.0, 0.0)
        D, S = D + coef * Dc, S + coef * Sc
    Wn = 0.0
    for coef, shift in weights.components():    # W_n / n = sum coef * mean(e^{i shift i})
        pf = pair_frequencies(np.zeros(1), shift)
        Wc, _ = _mean_phases(pf.t_diff, pf.half_diff, pf.t_sum, pf.half_sum, L, 1.0, 0.0)
        Wn = Wn + coef * Wc[:, 0, 0].real
    Wn = Wn[:, None, None]
    return D / Wn, S / Wn


def rank1_gram(theta: Any, v: Any, n: Any, *, weights: AffineWeights | TrigWeights | None = None,
               layout: str = "interleaved", offset: int = 0) -> np.ndarray:
    """``G_n / W_n`` for ``X = u v^T`` (closed-form weights), in the interleaved channel order, ``(d, d)``."""
    n = check_length(n)
    w = _check_weights(weights, [n])
    th, v_il = _prepare_rank1(theta, v, layout, offset)
    D, S = weighted_mean_phases(th, w, np.array([n], dtype=np.int64))
    return np.asarray(_assemble_batch(v_il, D, S))[0]


def rank1_curve(theta: Any, v: Any, lengths: Any, *, weights: AffineWeights | TrigWeights | None = None,
                layout: str = "interleaved", offset: int = 0) -> dict[str, np.ndarray]:
    """FSV ratio ``rho_n``, stable rank and Frobenius ratio of ``Rope(u v^T)`` at each length.

    Closed form (constant, affine or trigonometric weights): the cost per length
    is independent of ``n``; 200 lengths up to ``10^12`` take well under a second
    after compilation (d = 128). Returns numpy arrays keyed
    ``n, rho, rho2, srank, frob_ratio``.
    """
    L = check_lengths(lengths)
    w = _check_weights(weights, L)
    th, v_il = _prepare_rank1(theta, v, layout, offset)
    # three jitted stages: fused into one program, XLA:CPU ran ~10x slower (measured)
    D, S = weighted_mean_phases(th, w, L)
    out = _metrics_batch(_assemble_batch(v_il, D, S))
    res = {k: np.asarray(x) for k, x in out.items()}
    res["n"] = L
    return res


@functools.partial(jax.jit, static_argnames=("batched_eig",))
def _rho2_for_clouds(V_il, Dm, Sm, batched_eig=False):
    """``rho_n^2`` for each cloud ``V (nv, d)`` and length: ``(nv, len)``; tr(G/W) = 1 for unit v."""
    def grams(v):
        return jax.vmap(lambda D, S: assemble_gram(v, D, S))(Dm, Sm)
    if batched_eig:            # accelerators: one batched eigh over clouds x lengths
        return jnp.linalg.eigvalsh(jax.vmap(grams)(V_il))[..., -1]
    return jax.lax.map(lambda v: jax.lax.map(lambda G: jnp.linalg.eigvalsh(G)[-1], grams(v)), V_il)


def rank1_curves_batch(theta: Any, V: Any, lengths: Any, *, layout: str = "interleaved",
                       chunk: int | None = None, progress=None) -> np.ndarray:
    """``rho_n`` for many rank-1 clouds (rows of ``V``, constant weights) at every length: ``(nv, len)``.

    The mean phases do not depend on ``v``: they are computed once; each cloud then costs one
    block assembly and one eigvalsh per length. ``progress(k)`` is called after each chunk of clouds.
    """
    th = from_theta(theta)
    Vi = check_clouds(V, th.size, layout)
    L = check_lengths(lengths)
    Dm, Sm = weighted_mean_phases(th, CONSTANT, L)
    batched = jax.default_backend() != "cpu"
    if chunk is None:          # on an accelerator, batch many clouds (batched eigh); on CPU, few
        chunk = max(1, min(256, (1 << 30) // (8 * len(L) * Vi.shape[1] ** 2))) if batched else 16
    else:
        chunk = check_length(chunk, "chunk")
    out = []
    for k in range(0, Vi.shape[0], chunk):
        out.append(np.asarray(_rho2_for_clouds(jnp.asarray(Vi[k:k + chunk]), Dm, Sm, batched_eig=batched)))
        if progress is not None:
            progress(min(chunk, Vi.shape[0] - k))
    return np.sqrt(np.clip(np.concatenate(out), 0, None))


# ---------------------------------------------------------------------------
# streaming (arbitrary rows / weights)
# ---------------------------------------------------------------------------
def _neumaier_add(s, c, x):
    t = s + x
    c = c + jnp.where(jnp.abs(s) >= jnp.abs(x), (s - t) + x, (x - t) + s)
    return t, c


def chunked_prefix_scan(ends, chunk: int, init, step, snapshot):
    """The one streaming loop: for each ``end`` in ``ends`` (non-decreasing), advance ``state`` over
    positions ``[previous end, end)`` in chunks, then emit ``snapshot(state)``.

    ``step(state, pos, mask) -> state`` sees int64 positions ``(chunk,)`` and a boolean mask of those
    below ``end``. A ``lax.scan`` over the ends holds a ``lax.while_loop`` over chunks: no host round
    trip, memory ``O(state + chunk)``. Returns the stacked snapshots.
    """
    chunk = check_length(chunk, "chunk")
    ar = jnp.arange(chunk, dtype=jnp.int64)

    def seg(carry, end):
        state, start = carry

        def body(st):
            state, p0 = st
            pos = p0 + ar
            return step(state, pos, pos < end), p0 + chunk

        state, _ = jax.lax.while_loop(lambda st: st[1] < end, body, (state, start))
        return (state, end), snapshot(state)

    _, out = jax.lax.scan(seg, (init, jnp.int64(0)), ends)
    return out


@functools.partial(jax.jit, static_argnames=("rows_fn", "chunk"))
def _stream_curve_kernel(chunks, ends, rows_args, rows_fn, chunk):
    """``G_n`` (Neumaier-compensated) at each end, with its top eigenvalue and trace."""
    d = 2 * chunks.shape[0]

    def step(state, pos, mask):
        G, comp = state
        rows = rows_fn(pos, *rows_args) * mask[:, None].astype(jnp.float64)    # (chunk, d), interleaved
        Y = _rotate_interleaved(rows, rope_angles(pos, chunks))
        return _neumaier_add(G, comp, Y.T @ Y)

    def snapshot(state):
        Gs = state[0] + state[1]
        return jnp.linalg.eigvalsh(0.5 * (Gs + Gs.T))[-1], jnp.trace(Gs), Gs

    zero = jnp.zeros((d, d))
    return chunked_prefix_scan(ends, chunk, (zero, zero), step, snapshot)


def stream_gram_curve(theta: Any, rows_fn: Callable, rows_args: tuple, lengths: Any, *,
                      chunk: int = DEFAULT_CHUNK, keep_gram: bool = False) -> dict[str, np.ndarray]:
    """Streaming ``G_n = sum_{i<n} (R_i x_i)(R_i x_i)^T`` at each length, one pass.

    ``rows_fn(positions, *rows_args) -> (C, d)`` gives the rows ``x_i`` (interleaved
    layout) for int64 ``positions``; it must be a JAX-traceable pure function
    (hashable: a module-level function). Returns ``lam_max``, ``trace`` (and
    ``gram`` if ``keep_gram``) per length; memory ``O(d^2 + C d)`` per step.
    """
    th = from_theta(theta)
    L = check_lengths(lengths)
    if np.any(np.diff(L) < 0):
        raise ValueError("lengths must be non-decreasing for a one-pass curve")
    chunk = check_length(chunk, "chunk")
    Gs = _stream_curve_kernel(jnp.asarray(turn_chunks(th)), jnp.asarray(L), rows_args, rows_fn, chunk)
    lam, tr, G = (np.asarray(x) for x in Gs)
    out = {"n": L, "lam_max": lam, "trace": tr}
    if keep_gram:
        out["gram"] = G
    return out


def _rank1_rows_array(pos, v, sqrt_w):
    idx = jnp.clip(pos, 0, sqrt_w.shape[0] - 1)
    return sqrt_w[idx][:, None] * v[None, :]


def rank1_stream_curve(theta: Any, v: Any, lengths: Any, weights: Any = None, *,
                       layout: str = "interleaved", chunk: int = DEFAULT_CHUNK) -> dict[str, np.ndarray]:
    """FSV ratio and stable rank of ``Rope(u v^T)`` for arbitrary weights ``w_i = u_i^2``, streamed.

    ``weights``: ``None`` (constant), a 1-D array ``w`` of length ``>= max(lengths)``,
    or a callable ``w(positions) -> weights`` (JAX-traceable, int64 positions in).
    Weights must be finite and ``>= 0``. Returns ``n, rho, rho2, srank, frob_ratio, W``.
    """
    th = from_theta(theta)
    vv = check_cloud_vector(v, th.size)
    check_layout(layout)
    v_il = to_interleaved(jnp.asarray(vv), layout)
    L = check_lengths(lengths)
    nmax = int(L.max())
    if weights is None:
        w = np.ones(nmax)
    elif callable(weights):
        w = np.asarray(weights(jnp.arange(nmax, dtype=jnp.int64)), dtype=np.float64)
        if w.shape != (nmax,):
            raise ValueError(f"weights callable must return one weight per position, got shape {w.shape}")
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or w.shape[0] < nmax:
            raise ValueError(f"weights array must be 1-D with at least {nmax} entries, got shape {w.shape}")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"weights must be finite and >= 0; w[{k}] = {float(w[k])!r}")
    Wc = np.cumsum(w[:nmax])
    W = Wc[L - 1]
    if np.any(W <= 0):
        raise ValueError(f"weights sum to zero up to length {int(L[np.argmax(W <= 0)])}")
    out = stream_gram_curve(th, _rank1_rows_array, (v_il, jnp.asarray(np.sqrt(w[:nmax]))), L, chunk=chunk)
    lam, tr = out["lam_max"], out["trace"]
    return {"n": L, "rho": np.sqrt(lam / W), "rho2": lam / W, "srank": tr / lam,
            "frob_ratio": np.sqrt(tr / W), "W": W}


def _matrix_rows(pos, X):
    idx = jnp.clip(pos, 0, X.shape[0] - 1)
    return X[idx]


def matrix_metrics(X: Any) -> dict[str, float]:
    """FSV ``||X||_2``, Frobenius norm and stable rank of a general ``n x d`` matrix (via its d x d Gram)."""
    A = check_finite_array("X", X, min_ndim=2)
    if A.ndim != 2:
        raise ValueError(f"X must be 2-D (n x d), got shape {A.shape}")
    G = A.T @ A
    lam = float(np.linalg.eigvalsh(G)[-1])
    fro2 = float(np.trace(G))
    if fro2 == 0:
        raise ValueError("X is the zero matrix: its stable rank is undefined")
    return {"fsv": math.sqrt(lam), "frob": math.sqrt(fro2), "srank": fro2 / lam}


def rope_matrix_curve(X: Any, theta: Any, lengths: Any, *, layout: str = "interleaved",
                      chunk: int = DEFAULT_CHUNK) -> dict[str, np.ndarray]:
    """FSV ratio ``||Rope(X_:n)||_2 / ||X_:n||_2`` and stable ranks of the prefixes of a general cloud.

    ``X``: ``(N, d)`` rows in ``layout``; the prefixes ``X[:n]`` for each ``n`` in
    ``lengths`` (``<= N``). Streams over rows; never builds ``Rope(X)``.
    """
    A = check_finite_array("X", X, min_ndim=2)
    if A.ndim != 2:
        raise ValueError(f"X must be 2-D (n x d), got shape {A.shape}")
    th = from_theta(theta)
    if A.shape[1] != 2 * th.size:
        raise ValueError(f"X has head dim {A.shape[1]} but the schedule has {th.size} planes")
    check_layout(layout)
    L = check_lengths(lengths)
    if L.max() > A.shape[0]:
        raise ValueError(f"length {int(L.max())} exceeds the {A.shape[0]} rows of X")
    Xi = to_interleaved(jnp.asarray(A), layout)
    out = stream_gram_curve(th, _matrix_rows, (Xi,), L, chunk=min(chunk, int(L.max())), keep_gram=False)
    # the un-rotated prefix Grams (denominators) need no angles: segment sums of X^T X
    G0 = np.zeros((A.shape[1], A.shape[1]))
    lam0, tr0, prev = [], [], 0
    for n in L:
        G0 += A[prev:n].T @ A[prev:n]
        prev = n
        lam0.append(np.linalg.eigvalsh(G0)[-1])
        tr0.append(np.trace(G0))
    lam, tr, lam0, tr0 = out["lam_max"], out["trace"], np.array(lam0), np.array(tr0)
    return {"n": L, "rho": np.sqrt(lam / lam0), "srank": tr / lam, "srank_before": tr0 / lam0,
            "frob_ratio": np.sqrt(tr / tr0)}
