"""Beyond rank 1: noisy, rank-k and heavy-tailed clouds (docs/theory.md, Extensions; the paper leaves it open).

Conjecture (docs/theory.md). For clouds with stationary rows the spectrum of ``Rope(X)^T Rope(X)``
tends to ``{||X_j||_F^2 / 2 (twice) for rotating planes} U spec(X_0^T X_0)``.

What ``proofs/beyond.py`` derives, and this module tests by streaming:
- i.i.d. rows with second moment ``Sigma`` (any distribution with finite fourth moment):
  ``G_n / n -> Gbar = sum_j [rotating] (tr Sigma_jj / 2) I_2  (+)  Sigma_00`` (block diagonal) --
  the conjecture, with ``||X_j||_F^2 / n -> tr Sigma_jj``. The deterministic part converges
  like ``1/n``; the random part's norm like ``n^-1/2`` (law of large numbers), which bounds the
  rate of ``rho_n^2`` (the measured envelope slopes are steeper, -0.5 to -2.3, since the top
  eigenvalue feels the fluctuation only through its projection).
- rank-1 plus isotropic noise, ``x_i = v + sigma xi_i``, ``||v|| = 1``, ``xi ~ N(0, I/d)``,
  signal-to-noise ratio ``snr = ||v||^2 / E||sigma xi||^2 = 1/sigma^2``:
  ``rho_inf^2 = (lambda + 1/(d snr)) / (1 + 1/(d snr))`` with ``lambda`` the rank-1 limit
  (``max(e_0, max e_j/2)``). As ``snr -> inf`` it is Lemma 1; as ``snr -> 0`` it tends to 1
  (isotropic clouds are rotation invariant).
- where it fails: rows whose distribution moves with position (``x_i = R_{-i} v``: the cloud
  un-rotates and ``rho = 1``), degenerate schedules (resonances keep cross terms), and
  heavy-tailed weights with infinite mean (Pareto ``alpha < 1``): ``W_n`` is dominated by its
  largest terms, ``TV_n = o(W_n)`` fails, and ``rho_n`` keeps fluctuating.

Everything is streamed: rows are generated from ``fold_in(key, position)`` inside one jitted
loop, so ``n = 10^7`` and beyond need ``O(d^2 + C d)`` memory (``C = positions_per_step``).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import theorems
from ..core.layouts import rotate_interleaved
from ..core.angles import rope_angles, turn_chunks
from ..core.checks import from_theta, check_cloud_vector, check_lengths, check_positive
from ..spectra.stream import stream_gram_curve
from ..core.errors import BadValue
from ..core.renamed import renamed

__all__ = ["noisy_rank1_limit", "stationary_limit_spectrum", "stream_cloud_curve"]


def noisy_rank1_limit(theta: Any, v: Any, snr: float) -> float:
    """Closed form ``rho_inf^2 = (lambda + 1/(d snr)) / (1 + 1/(d snr))`` for ``x_i = v + noise``."""
    snr = check_positive("snr", snr)
    th = from_theta(theta)
    lam = theorems.predicted_limit(th, v).lam
    s = 1.0 / (2 * th.size * snr)
    return (lam + s) / (1 + s)


def stationary_limit_spectrum(theta: Any, Sigma: np.ndarray) -> np.ndarray:
    """Conjectured limit spectrum of ``G_n / n`` for i.i.d. rows with second moment ``Sigma`` (interleaved)."""
    th = from_theta(theta)
    from ..core.angles import nope_planes
    nope = nope_planes(th)
    ev = []
    for j in np.flatnonzero(~nope):
        t = Sigma[2 * j, 2 * j] + Sigma[2 * j + 1, 2 * j + 1]
        ev += [t / 2, t / 2]
    idx = np.concatenate([[2 * j, 2 * j + 1] for j in np.flatnonzero(nope)]) if nope.any() else np.array([], int)
    if idx.size:
        ev += list(np.linalg.eigvalsh(Sigma[np.ix_(idx, idx)]))
    return np.sort(np.array(ev))


# ---------------------------------------------------------------------------
# streamed clouds: rows generated per position
# ---------------------------------------------------------------------------
def _rows_noisy(key, pos, v, sigma, k_basis, alpha):
    """``x_i = u_i (v + sigma xi_i)`` (+ rank-k part ``k_basis^T z_i``), ``u_i^2`` Pareto(alpha) if alpha > 0."""
    d = v.shape[0]
    z = jax.vmap(lambda p: jax.random.normal(jax.random.fold_in(key, p), (d + k_basis.shape[0],)))(pos)
    xi = z[:, :d] / jnp.sqrt(d)
    rows = v[None, :] + sigma * xi
    if k_basis.shape[0]:
        rows = rows + z[:, d:d + k_basis.shape[0]] @ k_basis
    ukey = jax.random.fold_in(key, 0x5EED)                        # a separate stream for the weights
    U = jax.vmap(lambda p: jax.random.uniform(jax.random.fold_in(ukey, p), (), minval=1e-300))(pos)
    u2 = jnp.where(alpha > 0, U ** (-1.0 / jnp.where(alpha > 0, alpha, 1.0)), 1.0)   # Pareto(alpha), x_m = 1
    return rows * jnp.sqrt(u2)[:, None]


def _rows_and_unrotated(pos, key, chunks, v, sigma, k_basis, alpha):
    """``[x_i, R_{-i} x_i]``: the streaming kernel rotates both by ``R_i``, giving the Grams of ``Rope(X)``
    and of ``X`` in one pass."""
    X = _rows_noisy(key, pos, v, sigma, k_basis, alpha)
    return jnp.stack([X, rotate_interleaved(X, -rope_angles(pos, chunks))])


def _rows_and_unrotated_counter(pos, key, chunks, v, sigma, k_basis, alpha):
    """As ``_rows_and_unrotated`` for the counter-rotated cloud ``x_i = R_{-i} (...)``."""
    back = -rope_angles(pos, chunks)
    X = rotate_interleaved(_rows_noisy(key, pos, v, sigma, k_basis, alpha), back)
    return jnp.stack([X, rotate_interleaved(X, back)])


@renamed("0.3.0", chunk="positions_per_step")
def stream_cloud_curve(theta: Any, v: Any, lengths: Any, *, snr: float = math.inf, rank_k: int = 0,
                       k_scale: float = 0.5, pareto_alpha: float = 0.0, counter_rotate: bool = False,
                       seed: int = 0, positions_per_step: int = 4096) -> dict[str, np.ndarray]:
    """FSV ratio ``||Rope(X_:n)||_2 / ||X_:n||_2`` and stable ranks for a streamed cloud.

    Rows ``x_i = u_i (v + sigma xi_i + sum_{r<k} z_ir b_r)``: ``sigma = 1/sqrt(snr)``, ``xi ~ N(0, I/d)``,
    ``b_r`` fixed random directions of norm ``k_scale`` (rank-k signal), ``u_i^2 ~ Pareto(alpha)``
    when ``pareto_alpha > 0`` (heavy-tailed weights), optionally counter-rotated; streamed
    ``positions_per_step`` positions at a time.
    """
    th = from_theta(theta)
    vv = check_cloud_vector(v, th.size)
    L = check_lengths(lengths)
    if np.any(np.diff(L) < 0):
        raise BadValue("lengths must be non-decreasing")
    if not (snr > 0):
        raise BadValue(f"snr must be > 0, got {snr!r}")
    sigma = 0.0 if math.isinf(snr) else 1.0 / math.sqrt(snr)
    d = vv.size
    B = np.random.default_rng(seed + 7).standard_normal((rank_k, d))
    if rank_k:
        B = k_scale * B / np.linalg.norm(B, axis=1, keepdims=True)
    key = jax.random.PRNGKey(seed)
    rows_fn = _rows_and_unrotated_counter if counter_rotate else _rows_and_unrotated
    args = (key, jnp.asarray(turn_chunks(th)), jnp.asarray(vv), float(sigma), jnp.asarray(B.reshape(rank_k, d)),
            float(pareto_alpha))
    out = stream_gram_curve(th, rows_fn, args, L, positions_per_step=positions_per_step)
    (lam, lam0), (tr, tr0) = out["lam"].T, out["trace"].T
    return {"n": L, "rho": np.sqrt(lam / lam0), "rho2": lam / lam0, "srank": tr / lam, "srank_before": tr0 / lam0,
            "frob_ratio": np.sqrt(tr / tr0)}
