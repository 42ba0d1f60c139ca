"""The rank-1 stream as weighted phase sums: one matrix product on a fixed table per step of positions.

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
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ..core.angles import first_anchor, next_anchor, phase_table
from .gram import assemble_gram
from .accumulate import chunked_prefix_scan, neumaier_add, neumaier_total
from .topeig import top_eigenvalue


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


@functools.partial(jax.jit, static_argnames=("w_fn", "chunk", "method"))
def rank1_phase_stream_kernel(chunks, ends, v_il, w_args, w_fn: Callable, chunk: int, method=None):
    """``(lambda_max(G_n), tr G_n)`` at each end for the rank-1 clouds ``sqrt(w_i) v`` (``v_il`` interleaved,
    ``(d,)`` or ``(clouds, d)``: every cloud shares the weights, so one stream of phase sums serves them all;
    each is ``(len,)`` or ``(len, clouds)``), ``w_fn(positions, *w_args) -> (C,)`` the weights (JAX-traceable,
    hashable); memory ``O(d^2 + C d)`` plus one Gram per cloud at a snapshot."""
    P = chunks.shape[0]
    cos_t, sin_t = phase_table(chunks, chunk)
    U = jnp.concatenate([cos_t, sin_t], axis=1)

    def step(state, pos, mask):
        acc, carry = state
        ang, carry = next_anchor(carry, pos[0], chunk, chunks)      # reduced in the step before (core.angles)
        w = jnp.where(mask, w_fn(pos, *w_args), 0.0)          # past the end: 0 even where w_fn is not finite
        return neumaier_add(acc, weighted_phase_sums_step(U, w, ang)), carry

    def snapshot(state):
        Dr, Di, Sr, Si = neumaier_total(state[0])
        D, S = Dr + 1j * Di, Sr + 1j * Si
        G = jnp.vectorize(lambda v: assemble_gram(v, D, S), signature="(d)->(d,d)")(v_il)
        return top_eigenvalue(G, method), jnp.trace(G, axis1=-2, axis2=-1)

    zero = jnp.zeros((4, P, P))
    return chunked_prefix_scan(ends, chunk, ((zero, zero), first_anchor(chunks)), step, snapshot)
