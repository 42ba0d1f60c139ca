"""The second paper's position/token claims, and Men et al.'s base bound (docs/theory.md, "The second
paper's model").

Model, stated exactly: fix a query ``q`` and a key ``k`` (``d = 2P``, Gaussian). Their RoPE score
at relative distance ``m`` is ``S(m) = <q, R_m k> = sum_j a_j cos(m theta_j + phi_j)``
(``a_j = |q_j||k_j|``, ``phi_j`` the angle from ``q_j`` to ``k_j``), ``m`` an integer uniform on
``[0, M)``. Angles are reduced exactly (``ropetheory.rope``).

- **position inversion**: ``p_inv = P(S(m1) < S(m2))``, ``m1 ~ U[0, M/2)``, ``m2 ~ U[M/2, M)``;
  the claim is ``p_inv -> 1/2``.
- **position aliasing**: some ``m1 != m2`` in ``[0, M)`` with ``|S(m1) - S(m2)| < eps``,
  ``eps = 2^-7 sqrt(P)`` (bf16 resolution at the score's scale); claim: probability -> 1.
- **token inversion**: keys ``k1, k2`` with ``S_1(0) > S_2(0)``; ``P_m(S_1(m) < S_2(m))``.
  Since ``S_1 - S_2`` is the score of ``k1 - k2``, it is the share of ``m`` with ``D(m) < 0``.
- **token aliasing**: the number of ``m`` with ``|S_1(m) - S_2(m)| < eps``.

Every quantity is computed **exactly** for each sampled ``(q, k)`` by enumerating all ``m``
(sorting and counting, ``O(M log M)``), and by Monte Carlo over ``m`` with 95% Wilson
intervals (reported); agreement is checked against 99.9% intervals (``AGREE_Z``), since a
report makes dozens of such checks and 95% intervals would miss ~5% of them by chance.

Men et al.'s base bound (``B(m) = sum_j cos(m theta_j) >= 0`` for every ``m <= L``) is searched,
certified, in ``ropetheory.theory.base_bound`` (``ropetheory basebound``).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core.angles import reduced_turns, turn_chunks
from ..core.checks import check_finite_array, check_integer, check_positions, from_theta
from ..core.errors import BadValue

__all__ = ["scores", "scores_batch", "position_inversion", "position_aliasing", "token_inversion", "token_aliasing",
           "wilson", "bf16_eps"]

#: z for the agreement check of Monte Carlo vs exact enumeration (99.9% two-sided)
AGREE_Z = 3.29


def bf16_eps(d: int) -> float:
    """``2^-7 sqrt(P)``: the bf16 resolution (8 significant bits) at the score's typical scale."""
    return 2.0 ** -7 * math.sqrt(d // 2)


@jax.jit
def _scores(m, chunks, zq, zk):
    """``S(m) = Re sum_j conj(zq_j) zk_j e^{2 pi i m f_j}`` for int64 ``m (N,)``."""
    t = reduced_turns(m[:, None], chunks[None, :, :])                   # (N, P), exact
    c = jnp.conj(zq) * zk
    return jnp.sum(c.real * jnp.cos(2 * jnp.pi * t) - c.imag * jnp.sin(2 * jnp.pi * t), axis=1)


def _complex(x: np.ndarray) -> np.ndarray:
    return x[0::2] + 1j * x[1::2]


def scores(theta: Any, q: np.ndarray, k: np.ndarray, m: Any) -> np.ndarray:
    """``S(m) = <q, R_m k>`` (interleaved) at integer distances ``m``."""
    th = from_theta(theta)
    arr = np.asarray(m)
    dist = check_positions(arr.ravel()).reshape(arr.shape)   # fractional distances refused, never floored
    q, k = (_vector(name, x, th.size) for name, x in (("q", q), ("k", k)))
    return np.asarray(_scores(jnp.asarray(dist), jnp.asarray(turn_chunks(th)), jnp.asarray(_complex(q)),
                              jnp.asarray(_complex(k))))


#: ``_scores`` for rows of ``zq``, ``zk``: the angles of ``m`` do not depend on the row and are reduced once
_scores_rows = jax.jit(jax.vmap(_scores, in_axes=(None, None, 0, 0)))


def scores_batch(theta: Any, q: np.ndarray, k: np.ndarray, m: Any) -> np.ndarray:
    """``scores`` of each row pair of ``q`` and ``k`` (``(B, d)`` each) at the distances ``m (N,)``: ``(B, N)``,
    row ``b`` the values ``scores(theta, q[b], k[b], m)`` gives; ``m theta_j`` is reduced and its cosine and
    sine are taken once for all rows. The same bits at the report's sizes (every packaged config, d >= 96 and
    thousands of distances); for tiny ones (d = 16, 300 distances) XLA may round the sum's last bit apart."""
    th = from_theta(theta)
    dist = check_positions(np.asarray(m).ravel())
    Q, K = (check_finite_array(name, x) for name, x in (("q", q), ("k", k)))
    if Q.ndim != 2 or Q.shape[1] != 2 * th.size or K.shape != Q.shape:
        raise BadValue(f"q and k must be (B, {2 * th.size}) arrays of one shape, got {Q.shape} and {K.shape}")
    zq, zk = (jnp.asarray(X[:, 0::2] + 1j * X[:, 1::2]) for X in (Q, K))
    return np.asarray(_scores_rows(jnp.asarray(dist), jnp.asarray(turn_chunks(th)), zq, zk))


def _vector(name: str, x: Any, P: int) -> np.ndarray:
    v = check_finite_array(name, x)
    if v.shape != (2 * P,):
        raise BadValue(f"{name} must be a vector of {2 * P} entries (the head dim), got shape {v.shape}")
    return v


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """Estimate and 95% Wilson interval of a binomial proportion."""
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return p, centre - half, centre + half


def _count_less(a: np.ndarray, b: np.ndarray) -> int:
    """#{(x, y) in a x b : x < y}, exactly, by sorting."""
    bs = np.sort(b)
    return int(np.sum(len(bs) - np.searchsorted(bs, a, side="right")))


def position_inversion(theta, q, k, M: int, mc_samples: int = 0, seed: int = 0) -> dict[str, Any]:
    """Exact ``P(S(m1) < S(m2))`` over ``m1 in [0, M/2)``, ``m2 in [M/2, M)``, and optionally Monte Carlo."""
    M = check_integer("M", M, lo=2)
    h = M // 2
    S = scores(theta, q, k, np.arange(M))
    exact = _count_less(S[:h], S[h:2 * h]) / (h * h)
    out = {"M": M, "exact": exact}
    if mc_samples:
        rng = np.random.default_rng(seed)
        m1, m2 = rng.integers(0, h, mc_samples), rng.integers(h, 2 * h, mc_samples)
        hits = float(np.sum(S[m1] < S[m2]))
        p, lo, hi = wilson(hits, mc_samples)
        _, lo3, hi3 = wilson(hits, mc_samples, AGREE_Z)
        out.update(mc=p, mc_lo=lo, mc_hi=hi, agrees=bool(lo3 <= exact <= hi3))
    return out


def position_aliasing(theta, q, k, M: int, eps: float) -> dict[str, Any]:
    """Whether two distinct positions in ``[0, M)`` alias (smallest score gap ``< eps``), and the gap."""
    M = check_integer("M", M, lo=2)
    S = np.sort(scores(theta, q, k, np.arange(M)))
    gap = float(np.min(np.diff(S))) if M > 1 else math.inf
    return {"M": M, "min_gap": gap, "aliased": bool(gap < eps)}


def token_inversion(theta, q, k1, k2, M: int, mc_samples: int = 0, seed: int = 0) -> dict[str, Any]:
    """Share of ``m in [0, M)`` with ``S_1(m) < S_2(m)``, for keys ordered ``S_1(0) > S_2(0)``."""
    M = check_integer("M", M, lo=2)
    D = scores(theta, q, k1 - k2, np.arange(M))
    if D[0] < 0:                                   # order the keys so that S_1(0) > S_2(0)
        D = -D
    out = {"M": M, "exact": float(np.mean(D < 0)), "D0": float(D[0])}
    if mc_samples:
        m = np.random.default_rng(seed).integers(0, M, mc_samples)
        hits = float(np.sum(D[m] < 0))
        p, lo, hi = wilson(hits, mc_samples)
        _, lo3, hi3 = wilson(hits, mc_samples, AGREE_Z)
        out.update(mc=p, mc_lo=lo, mc_hi=hi, agrees=bool(lo3 <= out["exact"] <= hi3))
    return out


def token_aliasing(theta, q, k1, k2, M: int, eps: float) -> dict[str, Any]:
    """Number of ``m in [0, M)`` with ``|S_1(m) - S_2(m)| < eps``."""
    M = check_integer("M", M, lo=2)
    D = scores(theta, q, k1 - k2, np.arange(M))
    return {"M": M, "count": int(np.sum(np.abs(D) < eps)), "share": float(np.mean(np.abs(D) < eps))}
