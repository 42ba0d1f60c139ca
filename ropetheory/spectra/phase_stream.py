"""The rank-1 stream as weighted phase sums: one matrix product on a fixed table per step (or block of steps).

A rank-1 cloud ``x_i = sqrt(w_i) v`` has the Gram ``G_n = assemble_gram(v, D, S)``, linear in the weighted
phase sums ``D_jk = sum_{i<n} w_i e^{i i (theta_j - theta_k)}`` and ``S_jk = sum_{i<n} w_i e^{i i (theta_j +
theta_k)}``, which do not depend on ``v``. In a step of ``C`` positions ``p0 + k`` the phase factors as
``e^{i (p0 + k) theta} = a t_k`` with the anchor ``a = e^{i p0 theta}`` (reduced exactly) and the table
``t_k = e^{i k theta}`` (reduced exactly once), so

    sum_k w_k e^{i (p0+k) (theta_j -+ theta_q)} = a_j a_q^{-+1} sum_k w_k t_kj t_kq^{-+1},

and with ``U = [cos | sin]`` of the table (``C x d``) every real sum ``sum_k w_k {c, s}_kj {c, s}_kq`` is an
entry of the one product ``M = U^T diag(w) U`` (blocks ``CC, CS; SC, SS``):

    sum_k w_k t_kj conj(t_kq) = (CC + SS) + i (SC - CS),    sum_k w_k t_kj t_kq = (CC - SS) + i (SC + CS).

Per step: the weights, one ``d x C x d`` product with the same table every step, and ``P x P`` complex
products with the anchors; no phases and no rotated rows (what ``stream._stream_curve_kernel`` computes
for general clouds). The sums are accumulated with Neumaier's compensation, as every stream's.

**Blocks of steps as one product.** A ``(d, C, d)`` product per step is too thin for a GPU's matrix units
(one H100: 16-24 TFLOP/s with the weighted copy, a third of its float64 peak). A block of ``S`` steps
``p0 + s C + k`` needs, per step ``s``, only the sums over pairs ``j <= q`` (``T = P (P+1) / 2`` of each of
the four kinds above), and those are one product for the whole block,

    R = W V,    W (S, C) the block's weights,    V[k, (kind, j, q)] = the table products of position k,

``(S, C) x (C, 4T)``: large on every side, half the flops of the ``d x d`` products (one triangle), and
``V`` is fixed like the table. Step ``s`` is then anchored at ``a t'_s`` with ``t'_s = e^{i s C theta}``
(exactly reduced once): the block's sums are ``a_j a_q^{-+1} sum_s t'_sj t'_sq^{-+1} R_s``, the inner sum
elementwise over ``(S, T)``. Measured on one H100, a ``(1024, 4096) x (4096, 8256)`` product (about this one's
size at d = 128, where ``4T = 8320``): 53 TFLOP/s, 80% of its float64 peak.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..core.angles import first_anchor, next_anchor, phase_table, rope_angles
from ..core.checks import check_length
from ..core.devices import platform_class
from ..core.errors import BadValue
from .gram import assemble_gram
from .accumulate import chunked_prefix_scan, neumaier_add, neumaier_total
from .topeig import top_eigenvalue


#: positions of the table of a blocked step (``block > 1``) at d <= 128, by platform: CPU 512, GPU 4096
PHASE_TABLE_ROWS = {"cpu": 512, "gpu": 4096}
#: bytes the pair products ``V`` and the block's product ``R`` may each hold: ``V``'s size at d = 128 (34 MB on
#: CPU, 272 MB on a GPU); past d = 128 the table gets fewer rows and a block fewer steps, and where a block
#: would fall under ``MIN_BLOCK`` steps the stream keeps one product per step (large enough there)
PHASE_BLOCK_BYTES = {p: rows * 8 * 2 * 64 * 65 for p, rows in PHASE_TABLE_ROWS.items()}
#: the fewest steps a block must hold to pay well for reading ``V`` each step: to n = 4e6 at d = 128 on 2 CPU
#: cores (compiled before timing), one product per step of 4096 positions took 3.0 s; blocks of 512-position
#: steps 2.8 s (8 a block), 1.7 s (32), 1.1 s (128); on an H100 a (1024, 4096) x (4096, 8256) product ran at
#: 53 TFLOP/s, against 16-24 for the unblocked step's products (``docs/benchmarks/bench_stream_h100_steps.json``);
#: the whole stream to n = 1e9 in blocks of 256-1024 steps of 2^20-2^22 positions: 0.31-0.35 s on an H100, 47-55
#: TFLOP/s of work done (``bench_stream_blocks_h100_s18.json``)
MIN_BLOCK = {"cpu": 64, "gpu": 256}
#: the largest default step: ``MIN_BLOCK`` x 2 blocks of ``PHASE_TABLE_ROWS`` (CPU 65536, GPU 2^21 positions)
MAX_DEFAULT_STEP = {p: 2 * MIN_BLOCK[p] * PHASE_TABLE_ROWS[p] for p in PHASE_TABLE_ROWS}
#: the smallest default step (the general stream's ``DEFAULT_POSITIONS_PER_STEP``)
MIN_DEFAULT_STEP = 4096


def phase_block(chunk: int, d: int) -> int:
    """The steps per block for a step of ``chunk`` positions at head dim ``d`` on the platform in scope:
    ``chunk / rows``, with ``rows`` the power of two at most ``PHASE_TABLE_ROWS`` whose pair products fit
    ``PHASE_BLOCK_BYTES``, where that divides, is at least ``MIN_BLOCK`` and the block's product fits too;
    else 1 (one product per step)."""
    plat = platform_class()
    P = d // 2
    row_bytes = 8 * 2 * P * (P + 1)                   # one position's (or one step's) 4 T float64 sums
    budget = PHASE_BLOCK_BYTES[plat]
    fit = max(budget // row_bytes, 1)
    rows = min(PHASE_TABLE_ROWS[plat], 1 << (fit.bit_length() - 1))
    block = chunk // rows
    ok = chunk % rows == 0 and block >= MIN_BLOCK[plat] and block * row_bytes <= budget
    return block if ok else 1


def default_phase_step(lengths) -> int:
    """Positions per step for a phase-sum stream to the lengths ``lengths``: the power of two at or below
    ``max(lengths) / len(lengths)`` (each length ends a step early, wasting up to one step, so the waste
    stays below the work), between ``MIN_DEFAULT_STEP`` and the platform's ``MAX_DEFAULT_STEP``."""
    L = np.asarray(lengths)
    per = max(int(L.max()) // max(L.size, 1), 1)
    return int(min(max(1 << (per.bit_length() - 1), MIN_DEFAULT_STEP), MAX_DEFAULT_STEP[platform_class()]))


def phase_step(lengths, positions_per_step, d: int) -> tuple[int, int]:
    """``(positions per step, steps per block)`` of a phase-sum stream to ``lengths`` at head dim ``d``:
    ``positions_per_step`` (checked, named) or ``default_phase_step(lengths)`` where it is None, and
    ``phase_block`` of it."""
    chunk = check_length(default_phase_step(lengths) if positions_per_step is None else positions_per_step,
                         "positions_per_step")
    return chunk, phase_block(chunk, d)


def weighted_phase_sums_step(U, w, anchor_angles):
    """``(Dr, Di, Sr, Si)`` (``(4, P, P)``) of one step: weights ``w (C,)`` on the table ``U = [cos | sin]``
    ``(C, 2P)`` of ``k theta``, anchored at the exactly reduced angles ``p0 theta`` ``(P,)``."""
    P = U.shape[1] // 2
    M = jnp.einsum("cj,ck->jk", U * w[:, None], U)
    CC, CS, SC, SS = M[:P, :P], M[:P, P:], M[P:, :P], M[P:, P:]
    a = jnp.cos(anchor_angles) + 1j * jnp.sin(anchor_angles)
    D = (a[:, None] * jnp.conj(a)[None, :]) * ((CC + SS) + 1j * (SC - CS))
    S = (a[:, None] * a[None, :]) * ((CC - SS) + 1j * (SC + CS))
    return jnp.stack([D.real, D.imag, S.real, S.imag])


def pair_products(U):
    """``V (C, 4, T)``: per position ``k`` of the table ``U = [cos | sin]`` ``(C, 2P)`` and pair ``j <= q``
    (``np.triu_indices(P)`` order), ``cos`` and ``sin`` of ``k (theta_j - theta_q)`` and of ``k (theta_j +
    theta_q)`` as products of the table's entries."""
    P = U.shape[1] // 2
    j, q = np.triu_indices(P)
    cj, sj, cq, sq = U[:, j], U[:, P + j], U[:, q], U[:, P + q]
    return jnp.stack([cj * cq + sj * sq, sj * cq - cj * sq, cj * cq - sj * sq, sj * cq + cj * sq], axis=1)


def _full_pairs(x, P: int, hermitian: bool):
    """The ``(P, P)`` matrix whose upper triangle (``np.triu_indices`` order) is ``x (T,)``: the lower one
    mirrored, conjugated where ``hermitian``."""
    j, q = np.triu_indices(P)
    idx = np.zeros((P, P), np.int64)
    idx[j, q] = idx[q, j] = np.arange(j.size)
    full = x[idx]
    return jnp.where(np.tril(np.ones((P, P), bool), -1), jnp.conj(full), full) if hermitian else full


def weighted_phase_sums_block(V, W, steps, anchor_angles):
    """``(Dr, Di, Sr, Si)`` (``(4, P, P)``) of ``S`` consecutive steps of ``C`` positions: weights ``W (S, C)``
    on the pair products ``V = pair_products(U)`` ``(C, 4, T)``, step ``s`` at ``e^{i s C theta}`` (``steps``,
    ``(S, P)`` complex, exactly reduced), the block anchored at the exactly reduced angles ``p0 theta``."""
    S, C = W.shape
    P = steps.shape[1]
    j, q = np.triu_indices(P)
    R = jnp.reshape(W @ jnp.reshape(V, (C, -1)), (S, 4, -1))            # the block's one product
    tj, tq = steps[:, j], steps[:, q]
    D = jnp.sum(tj * jnp.conj(tq) * (R[:, 0] + 1j * R[:, 1]), axis=0)
    Sm = jnp.sum(tj * tq * (R[:, 2] + 1j * R[:, 3]), axis=0)
    a = jnp.cos(anchor_angles) + 1j * jnp.sin(anchor_angles)
    D = _full_pairs(a[j] * jnp.conj(a[q]) * D, P, hermitian=True)
    Sm = _full_pairs(a[j] * a[q] * Sm, P, hermitian=False)
    return jnp.stack([D.real, D.imag, Sm.real, Sm.imag])


@functools.partial(jax.jit, static_argnames=("w_fn", "chunk", "method", "block"))
def rank1_phase_stream_kernel(chunks, ends, v_il, w_args, w_fn: Callable, chunk: int, method=None,
                              block: int = 1):
    """``(lambda_max(G_n), tr G_n)`` at each end for the rank-1 clouds ``sqrt(w_i) v`` (``v_il`` interleaved,
    ``(d,)`` or ``(clouds, d)``: every cloud shares the weights, so one stream of phase sums serves them all;
    each is ``(len,)`` or ``(len, clouds)``), ``w_fn(positions, *w_args) -> (C,)`` the weights (JAX-traceable,
    hashable); memory ``O(d^2 + C d)`` plus one Gram per cloud at a snapshot. ``block > 1`` (dividing
    ``chunk``): each step is ``block`` steps of ``chunk / block`` positions as one product
    (``weighted_phase_sums_block``; memory ``O(chunk + (chunk / block + block) d^2)``)."""
    P = chunks.shape[0]
    if block < 1 or chunk % block:
        raise BadValue(f"block must be a positive divisor of chunk = {chunk}, got {block}")
    rows = chunk // block                                        # the table's positions
    cos_t, sin_t = phase_table(chunks, rows)
    U = jnp.concatenate([cos_t, sin_t], axis=1)
    if block > 1:
        V = pair_products(U)
        steps = jnp.exp(1j * rope_angles(jnp.arange(block, dtype=jnp.int64) * rows, chunks))

        def sums(w, ang):
            return weighted_phase_sums_block(V, jnp.reshape(w, (block, rows)), steps, ang)
    else:
        def sums(w, ang):
            return weighted_phase_sums_step(U, w, ang)

    def step(state, pos, mask):
        acc, carry = state
        ang, carry = next_anchor(carry, pos[0], chunk, chunks)      # reduced in the step before (core.angles)
        w = jnp.where(mask, w_fn(pos, *w_args), 0.0)          # past the end: 0 even where w_fn is not finite
        return neumaier_add(acc, sums(w, ang)), carry

    def snapshot(state):
        Dr, Di, Sr, Si = neumaier_total(state[0])
        D, S = Dr + 1j * Di, Sr + 1j * Si
        G = jnp.vectorize(lambda v: assemble_gram(v, D, S), signature="(d)->(d,d)")(v_il)
        return top_eigenvalue(G, method), jnp.trace(G, axis1=-2, axis2=-1)

    zero = jnp.zeros((4, P, P))
    return chunked_prefix_scan(ends, chunk, ((zero, zero), first_anchor(chunks)), step, snapshot)
