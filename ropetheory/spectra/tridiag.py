"""Batched Householder tridiagonalisation in plain JAX, and the top eigenvalue of a tridiagonal with an
enclosure; for accelerators, whose LAPACK-style ``sytrd`` runs one matrix at a time.

Reduction (LAPACK's blocked ``sytrd``/``latrd``, lower, vectorised over the batch): ``G = Q T Q^T`` with
``Q = H_0 ... H_{d-3}``, ``H_j = I - tau_j v_j v_j^T``. Columns are reduced ``PANEL`` at a time: for
column ``j`` of a panel, its current value is ``A e_j - V W^T e_j - W V^T e_j`` (the panel's earlier
reflectors folded in lazily), its reflector ``v`` zeroes it below the subdiagonal, and
``w = tau p - (tau^2 / 2)(p . v) v`` with ``p = (A - V W^T - W V^T) v``. After the panel, the trailing
matrix takes the rank-``2 PANEL`` update ``A <- A - V W^T - W V^T`` (one batched matrix product). Every
panel works on the trailing matrix only (static shapes per panel, one compilation for all inputs).

Top eigenvalue of ``T``: multisection on Sturm counts (``sturm_bracket``), a fixed number of steps.

Enclosure (``householder_top``): the computed ``T`` is exactly orthogonally similar to ``G + dG`` with
``||dG||_2 <= ||dG||_F <= 2 (d - 2) gamma_{HOUSEHOLDER_C d} ||G||_F`` (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., Lemma 19.3 and Thm 19.4: ``d - 2`` reflectors, each applied from both
sides, each a backward error ``gamma_{c m}`` relative with ``m <= d``; ``gamma_k = k eps / (1 - k eps)``);
by Weyl the top eigenvalues of ``T`` and ``G`` differ by at most that. A computed Sturm count is the
exact count of ``T`` with each off-diagonal perturbed by ``STURM_RTOL`` relative (Kahan; Demmel,
*Applied Numerical Linear Algebra*, Sec. 5.3.4), i.e. ``||dT||_2 <= 2 STURM_RTOL max |b|``. So
``lambda_max(G)`` lies in ``[lo - r, hi + r]`` with ``[lo, hi]`` the final bisection bracket and ``r`` the
two bounds summed.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

#: columns reduced per panel before the trailing matrix is updated (one batched matrix product): the
#: trailing matrix is read once per column plus twice per panel. H100, 4096 x 128 x 128, the reduction
#: alone: 8 ran 168k/s, 16 145k/s, 32 98k/s (a narrower panel reads a smaller trailing matrix per column)
PANEL = 8
#: the small integer ``c`` of Higham's ``gamma_{c m}`` for one Householder reflector applied to a vector of
#: length ``m`` (forming ``v`` and ``tau``: a norm, a square root and a division; applying it: a dot product
#: and an axpy, each ``gamma_m``); 8 is generous for these few operations
HOUSEHOLDER_C = 8
#: relative perturbation of each off-diagonal that makes a computed Sturm count exact (Kahan's bound for
#: the recurrence ``q_i = a_i - x - b_{i-1}^2 / q_{i-1}``: 2.5 eps, here rounded up to 3 eps)
STURM_RTOL = 3 * float(jnp.finfo(jnp.float64).eps)
#: shifts per multisection step + 1 and the number of steps: the bracket shrinks by 16^16 = 2^64, below
#: one ulp of any value inside the Gershgorin interval
SECTIONS, SECTION_STEPS = 16, 16


class Enclosure(NamedTuple):
    """Top eigenvalue of each matrix of a batch: ``value`` (the bracket's midpoint) and ``lo <= lambda_max
    <= hi`` (a priori: bracket widened by the reduction's and the counts' backward error bounds);
    ``ok``: the value is finite and the trace of ``T`` matches the trace of ``G`` (see ``TRACE_RTOL``)."""
    value: jax.Array
    lo: jax.Array
    hi: jax.Array
    ok: jax.Array


#: |tr T - tr G| / sum |diag G| above this means the reduction is broken (a correct one: ~ d eps)
TRACE_RTOL = 1e-9
#: a nonzero matrix whose largest entry is below this is outside ``householder_top``'s domain (``ok`` False):
#: the reduction's Householder norms and the enclosure radius's ``||G||_F`` square the entries, and squares
#: below 2^-1022 are subnormal (XLA on a CPU flushes them to zero inside compiled programs), so the value or
#: its enclosure would be lost. ``topeig.top_eigenvalue`` never gets here with such a matrix: it scales every
#: input exactly by a power of two, to a largest entry in [1/2, 1), first
TINY_ENTRY = 2.0 ** -480


def _reflector(col, j, idx):
    """Householder reflector zeroing ``col (B, n)`` below row ``j + 1``: ``(v, tau, beta)`` with ``v[j+1] =
    1``, ``v = 0`` above, ``(I - tau v v^T) col = beta e_{j+1}`` on rows ``> j``. No reflection (``tau = 0``,
    ``beta = col[j+1]``) where the part below ``j + 1`` is zero or its square underflows."""
    alpha = jnp.take_along_axis(col, jnp.broadcast_to(j + 1, (col.shape[0], 1)), axis=1)[:, 0]
    below = idx > j + 1
    sigma = jnp.sum(jnp.where(below, col * col, 0.0), axis=1)
    nrm = jnp.sqrt(alpha * alpha + sigma)
    refl = (sigma > 0) & (nrm > 0)
    beta = jnp.where(refl, -jnp.where(alpha >= 0, nrm, -nrm), alpha)
    denom = jnp.where(refl, alpha - beta, 1.0)
    tau = jnp.where(refl, (beta - alpha) / jnp.where(refl, beta, 1.0), 0.0)
    v = jnp.where(below, col / denom[:, None], 0.0) + (idx == j + 1)
    return v, tau, beta


def _matvec(M, x):
    """``M x`` for each matrix of a batch: ``(B, m, n), (B, n) -> (B, m)``."""
    return jnp.einsum("bmn,bn->bm", M, x)


def _matvec_t(M, y):
    """``M^T y`` for each matrix of a batch: ``(B, m, n), (B, m) -> (B, n)``."""
    return jnp.einsum("bmn,bm->bn", M, y)


def _panel(A, cols: int, unroll):
    """Reduce the first ``cols`` columns of the symmetric ``A (B, n, n)``; returns the diagonal and
    off-diagonal entries found ``(B, cols)`` each, and the updated trailing ``A[:, cols:, cols:]``.

    ``U = [V; W] (B, 2 cols, n)`` holds the reflectors ``v_k`` (rows ``k``) and ``w_k`` (rows ``cols + k``),
    so that ``V W^T + W V^T = U^T S U`` with ``S`` swapping the halves: each correction is one product."""
    Bn, n, _ = A.shape
    idx = jnp.arange(n)

    def swap(c):                                            # (B, 2 cols): [x; y] -> [y; x]
        return jnp.concatenate([c[:, cols:], c[:, :cols]], 1)

    def step(j, st):
        U, dg, off = st
        row = jax.lax.dynamic_index_in_dim(A, j, axis=1, keepdims=False)
        col = row - _matvec_t(U, swap(jax.lax.dynamic_index_in_dim(U, j, axis=2, keepdims=False)))
        v, tau, beta = _reflector(col, j, idx)
        p = _matvec(A, v) - _matvec_t(U, swap(_matvec(U, v)))
        w = tau[:, None] * (p - (0.5 * tau * jnp.sum(p * v, axis=1))[:, None] * v)
        dj = jnp.take_along_axis(col, jnp.broadcast_to(j, (Bn, 1)), axis=1)[:, 0]
        U = U.at[:, j].set(v).at[:, cols + j].set(w)
        return U, dg.at[:, j].set(dj), off.at[:, j].set(beta)

    zc = jnp.zeros((Bn, cols), A.dtype)
    U, dg, off = jax.lax.fori_loop(0, cols, step, (jnp.zeros((Bn, 2 * cols, n), A.dtype), zc, zc), unroll=unroll)
    Ut = U[:, :, cols:]
    rest = A[:, cols:, cols:] - jnp.einsum("bki,bkj->bij", Ut[:, :cols], Ut[:, cols:])
    rest = rest - jnp.einsum("bki,bkj->bij", Ut[:, cols:], Ut[:, :cols])
    return dg, off, rest


def householder_tridiagonal(G, panel: int = PANEL, unroll=1):
    """Diagonal ``a (B, d)`` and off-diagonal ``b (B, d-1)`` of ``T = Q^T G Q`` for each symmetric matrix
    of ``G (B, d, d)`` (only its lower triangle is read), by blocked Householder reflections (module
    docstring). ``|b|`` is what the spectrum depends on; the signs are Householder's (``b_j <= 0`` where
    a reflection was made). ``unroll``: of each panel's column loop (``lax.fori_loop``)."""
    Bn, d, _ = G.shape
    L = jnp.tril(G)
    A = L + jnp.swapaxes(jnp.tril(G, -1), 1, 2)
    diags, offs = [], []
    while A.shape[1] > 1:                                   # static shapes: one panel per iteration
        cols = min(panel, A.shape[1] - 1)
        dg, off, A = _panel(A, cols, unroll)
        diags.append(dg)
        offs.append(off)
    diags.append(A[:, :, 0])
    return jnp.concatenate(diags, 1), (jnp.concatenate(offs, 1) if offs else jnp.zeros((Bn, 0), G.dtype))


def sturm_bracket(a, b, unroll: bool = False):
    """``(lo, hi)`` bracketing the largest eigenvalue of symmetric tridiagonal matrices (diagonals
    ``a (B, d)``, off-diagonals ``b (B, d-1)``) by multisection on Sturm counts: ``SECTION_STEPS`` steps of
    ``SECTIONS - 1`` shifts each, from the Gershgorin interval.

    ``count(x)`` = number of negative pivots of ``T - x I = L D L^T`` (``q_i = a_i - x - b_{i-1}^2 / q_{i-1}``,
    a pivot smaller than ``pivmin`` replaced by ``-pivmin`` as in LAPACK's ``dstebz``) = number of
    eigenvalues below ``x``. The bracket keeps ``count(lo) < d = count(hi)``. ``unroll``: unroll the loop
    over pivots (same arithmetic; on GPUs one fused kernel per count instead of one per pivot).
    """
    B, d = a.shape
    z = jnp.zeros((B, 1), a.dtype)
    ab = jnp.abs(b)
    radius = jnp.concatenate([ab, z], 1) + jnp.concatenate([z, ab], 1)
    lo, hi = jnp.min(a - radius, 1), jnp.max(a + radius, 1)             # Gershgorin
    hi = hi + 4 * jnp.finfo(a.dtype).eps * jnp.maximum(jnp.abs(hi), jnp.abs(lo))
    b2 = jnp.concatenate([z, b * b], 1)                                 # b_{i-1}^2, 0 for the first pivot
    pivmin = jnp.finfo(a.dtype).tiny * jnp.maximum(1.0, jnp.max(b2, 1))[:, None]
    frac = jnp.arange(1, SECTIONS, dtype=a.dtype) / SECTIONS

    def count_below(x):                                                 # x (B, SECTIONS - 1)
        def pivot(carry, ab_i):
            q, cnt = carry
            ai, bi = ab_i
            q = ai[:, None] - x - bi[:, None] / q
            q = jnp.where(jnp.abs(q) < pivmin, -pivmin, q)
            return (q, cnt + (q < 0)), None
        (_, cnt), _ = jax.lax.scan(pivot, (jnp.ones_like(x), jnp.zeros(x.shape, jnp.int32)), (a.T, b2.T),
                                   unroll=bool(unroll))
        return cnt

    def section(_, st):
        lo, hi = st
        x = lo[:, None] + (hi - lo)[:, None] * frac[None]
        above = count_below(x) >= d                                     # every eigenvalue below x
        return (jnp.max(jnp.where(above, lo[:, None], x), 1), jnp.min(jnp.where(above, x, hi[:, None]), 1))

    return jax.lax.fori_loop(0, SECTION_STEPS, section, (lo, hi))


def enclosure_radius(G, b):
    """A priori bound on ``|lambda_max(T) - lambda_max(G)|`` plus the Sturm counts' own: ``2 (d - 2)
    gamma_{HOUSEHOLDER_C d} ||G||_F + 2 STURM_RTOL max |b|`` (module docstring), per matrix."""
    d = G.shape[-1]
    eps = jnp.finfo(G.dtype).eps
    k = HOUSEHOLDER_C * d * eps
    fro = jnp.sqrt(jnp.sum(jnp.tril(G) ** 2 + jnp.tril(G, -1) ** 2, axis=(1, 2)))
    bmax = jnp.max(jnp.abs(b), axis=1) if b.shape[1] else jnp.zeros(G.shape[:1], G.dtype)
    return 2 * max(d - 2, 0) * (k / (1 - k)) * fro + 2 * STURM_RTOL * bmax


def householder_top(G, panel: int = PANEL, unroll=1, unroll_sturm: bool = False) -> Enclosure:
    """``lambda_max`` of each symmetric matrix in ``G (B, d, d)`` with an a priori enclosure (``Enclosure``):
    ``householder_tridiagonal`` then ``sturm_bracket``; ``[lo, hi]`` widened by ``enclosure_radius``.
    ``unroll``, ``unroll_sturm``: of the panels' column loops and of the Sturm counts' pivot loop.

    ``topeig.top_eigenvalue`` hands it matrices already scaled exactly to a largest entry in ``[1/2, 1)``;
    called directly, a nonzero matrix whose largest entry is below ``TINY_ENTRY`` is not ``ok``."""
    a, b = householder_tridiagonal(G, panel, unroll)
    lo, hi = sturm_bracket(a, b, unroll=unroll_sturm)
    r = enclosure_radius(G, b)
    gd = jnp.diagonal(G, axis1=1, axis2=2)
    value = 0.5 * (lo + hi)
    big = jnp.max(jnp.abs(G), axis=(1, 2))
    ok = jnp.isfinite(value) & (jnp.abs(jnp.sum(a, 1) - jnp.sum(gd, 1)) <= TRACE_RTOL * jnp.sum(jnp.abs(gd), 1))
    ok &= (big >= TINY_ENTRY) | (big == 0)
    return Enclosure(value, lo - r, hi + r, ok)
