"""The streaming Gram kernel: ``G += Y^T Y`` over chunks of positions, any weights, any rows.

Positions are processed in chunks of ``C`` inside one jitted ``lax`` loop with Neumaier-compensated
accumulation; memory ``O(d^2 + C d)`` whatever ``n`` is. Whole curves on a grid of lengths come from
one pass (snapshots at the grid points). Rows are rotated with exactly reduced angles. Rank-1 clouds
(``rank1_stream_curve``) take the weighted phase sums of ``.phase_stream`` instead: no rows to rotate.
"""
from __future__ import annotations

import functools
import math
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..core.angles import first_anchor, next_anchor, phase_table, phases_from_anchor, rope_angles, turn_chunks
from ..core.checks import (
    check_cloud_vector,
    scale_to_unit_max,
    check_finite_array,
    check_length,
    check_lengths,
    real_array,
)
from ..core.layouts import check_layout, rotate_interleaved_cs, to_interleaved
from ..core.schedule import as_schedule, check_schedule_first, schedule_layout
from .accumulate import chunked_prefix_scan, neumaier_add, neumaier_cumsum, neumaier_total
from .results import Curve, MatrixMetrics
from .gram import rotate_to_offset
from .phase_stream import phase_step, rank1_phase_stream_kernel
from .topeig import check_method, top_eigenvalue
from ..core.errors import BadValue
from ..core.renamed import renamed


#: positions per step of the streaming loop: the rows of one step, ``(C, d)`` float64, stay in cache
DEFAULT_POSITIONS_PER_STEP = 4096


# ---------------------------------------------------------------------------
# streaming (arbitrary rows / weights)
# ---------------------------------------------------------------------------
#: how the kernel gets cos/sin of i theta_j: "anchored" (exact anchor per chunk, stepped by a complex
#: product) or "exact" (every angle reduced exactly; the reference, ~3x the work per element)
PHASES = ("anchored", "exact")


@functools.partial(jax.jit, static_argnames=("rows_fn", "chunk", "keep_gram", "method", "phases"))
def _stream_curve_kernel(chunks, ends, rows_args, rows_fn, chunk, keep_gram=False, method=None,
                         phases="anchored"):
    """``G_n`` (Neumaier-compensated) at each end, with its top eigenvalue and trace; batched over the
    leading axes of the rows (clouds). Phases: one exactly reduced anchor per chunk, stepped inside it by
    one complex product with a table (``ropetheory.core.angles.phases_from_anchor``; the anchor carried from
    the step before, ``next_anchor``)."""
    d = 2 * chunks.shape[0]
    table = phase_table(chunks, chunk)
    batch = jax.eval_shape(lambda: rows_fn(jnp.zeros(chunk, jnp.int64), *rows_args)).shape[:-2]

    def step(state, pos, mask):
        acc, carry = state
        rows = jnp.where(mask[:, None], rows_fn(pos, *rows_args), 0.0)      # (..., chunk, d), interleaved;
        #                                         past the end: 0 even where rows_fn is not finite there
        if phases == "exact":
            ang = rope_angles(pos, chunks)
            c, s = jnp.cos(ang), jnp.sin(ang)
        else:                                    # the anchor reduced in the step before (core.angles.next_anchor)
            a, carry = next_anchor(carry, pos[0], chunk, chunks)
            c, s = phases_from_anchor(a, table)
        Y = rotate_interleaved_cs(rows, c, s)
        return neumaier_add(acc, jnp.einsum("...cd,...ce->...de", Y, Y, preferred_element_type=jnp.float64)), carry

    def snapshot(state):
        Gs = neumaier_total(state[0])
        Gs = 0.5 * (Gs + jnp.swapaxes(Gs, -1, -2))
        out = (top_eigenvalue(Gs, method), jnp.trace(Gs, axis1=-2, axis2=-1))
        return out + (Gs,) if keep_gram else out

    zero = jnp.zeros(batch + (d, d))
    return chunked_prefix_scan(ends, chunk, ((zero, zero), first_anchor(chunks)), step, snapshot)


def _one_pass_lengths(lengths: Any) -> np.ndarray:
    """Checked lengths for a one-pass stream: they must be non-decreasing (snapshots in order)."""
    L = check_lengths(lengths)
    if np.any(np.diff(L) < 0):
        raise BadValue("lengths must be non-decreasing for a one-pass curve")
    return L


@renamed("0.3.0", chunk="positions_per_step")
def stream_gram_curve(theta: Any, rows_fn: Callable, rows_args: tuple, lengths: Any, *,
                      positions_per_step: int = DEFAULT_POSITIONS_PER_STEP, keep_gram: bool = False,
                      method: str | None = None, phases: str = "anchored") -> dict[str, np.ndarray]:
    """Streaming ``G_n = sum_{i<n} (R_i x_i)(R_i x_i)^T`` at each length, one pass: the one streaming
    Gram kernel of the package (rank-1 streams, general clouds, the sweep's and the beyond study's).

    ``rows_fn(positions, *rows_args) -> (..., C, d)`` gives the rows ``x_i`` (interleaved
    layout) for int64 ``positions`` (``C = positions_per_step`` of them), optionally with leading batch
    axes (one Gram per cloud); it must
    be a JAX-traceable pure function (hashable: a module-level function). Returns ``lam`` (the top
    eigenvalue, ``.topeig.top_eigenvalue`` with ``method``), ``trace`` (and ``gram`` if
    ``keep_gram``), each ``(len, ...)``; memory ``O(B d^2 + B C d)`` whatever the lengths. ``phases``:
    ``PHASES`` (``"exact"`` is the reference the anchored stepping is tested and benchmarked against).
    """
    theta = as_schedule(theta)
    L = _one_pass_lengths(lengths)
    chunk = check_length(positions_per_step, "positions_per_step")
    if phases not in PHASES:
        raise BadValue(f"phases must be one of {PHASES}, got {phases!r}")
    if method is not None:
        check_method(method)
    out = _stream_curve_kernel(jnp.asarray(turn_chunks(theta)), jnp.asarray(L), rows_args, rows_fn, chunk,
                               keep_gram=keep_gram, method=method, phases=phases)
    res = {"n": L, "lam": np.asarray(out[0]), "trace": np.asarray(out[1])}
    if keep_gram:
        res["gram"] = np.asarray(out[2])
    return res


@renamed("0.3.0", chunk="positions_per_step")
def stream_weight_sums(w_fn: Callable, lengths: Any, *,
                       positions_per_step: int = DEFAULT_POSITIONS_PER_STEP) -> np.ndarray:
    """``W_n = sum_{i<n} w(i)`` (compensated) at each length for a weights function ``w(positions)``
    (JAX-traceable, hashable), evaluated ``positions_per_step`` positions at a time; a ValueError naming
    the first length whose prefix holds a negative or non-finite weight."""
    L = _one_pass_lengths(lengths)
    W, bad = (np.asarray(x) for x in _weight_sums(jnp.asarray(L), w_fn,
                                                             check_length(positions_per_step, "positions_per_step")))
    if bad.any():
        raise BadValue(f"weights(positions) must be finite and >= 0; a value below position "
                         f"{int(L[np.argmax(bad)])} is not")
    return W


def _unit_weights(pos):
    return jnp.ones(pos.shape, jnp.float64)


def _array_weights(pos, w):
    return w[jnp.clip(pos, 0, w.shape[0] - 1)]


@functools.lru_cache(maxsize=32)
def _callable_weights(w_fn: Callable) -> Callable:
    """``max(w(i), 0)`` evaluated chunk by chunk (one weights function per ``w_fn``: the kernel's static key)."""
    def weights(pos):
        return jnp.maximum(_weights_at(w_fn, pos), 0.0)
    return weights


def _weights_at(w_fn: Callable, pos):
    w = jnp.asarray(w_fn(pos), dtype=jnp.float64)
    if w.shape != pos.shape:
        raise BadValue(f"weights callable must return one weight per position, got shape {w.shape} "
                         f"for {pos.shape[0]} positions")
    return w


@functools.partial(jax.jit, static_argnames=("w_fn", "chunk"))
def _weight_sums(ends, w_fn, chunk):
    """``W_n = sum_{i<n} w(i)`` (Neumaier-compensated) at each end, and whether any ``w(i)`` so far was
    negative or not finite; weights evaluated chunk by chunk, memory O(chunk)."""
    def step(state, pos, mask):
        acc, bad = state
        w = _weights_at(w_fn, pos)
        bad = bad | jnp.any(mask & ~(jnp.isfinite(w) & (w >= 0)))
        return neumaier_add(acc, jnp.sum(jnp.where(mask, w, 0.0))), bad

    return chunked_prefix_scan(ends, chunk, ((jnp.float64(0), jnp.float64(0)), jnp.bool_(False)), step,
                               lambda st: (neumaier_total(st[0]), st[1]))


@renamed("0.3.0", chunk="positions_per_step")
def rank1_stream_curve(
    theta: Any,
    v: Any,
    lengths: Any,
    weights: Any = None,
    *,
    layout: str | None = None,
    offset: int = 0,
    positions_per_step: int | None = None,
) -> Curve:
    """FSV ratio and stable rank of ``Rope(u v^T)`` for arbitrary weights ``w_i = u_i^2``, streamed.

    ``weights``: ``None`` (constant), a 1-D array ``w`` of length ``>= max(lengths)``,
    or a callable ``w(positions) -> weights`` (JAX-traceable, int64 positions in, evaluated
    ``positions_per_step`` at a time inside the stream). Weights must be finite and ``>= 0``.
    ``positions_per_step``: by default ``phase_stream.default_phase_step(lengths)`` (the results do not
    depend on it beyond rounding). Memory ``O(positions_per_step + d^2)`` times a platform constant
    (``phase_stream.PHASE_TABLE_ROWS``) whatever the lengths (plus the array when one is given). Returns
    ``n, rho, rho2, srank, frob_ratio, W``. The Gram comes from the weighted phase sums
    ``sum_i w_i e^{i i (theta_j -+ theta_k)}`` (``.phase_stream``): one product on a fixed table per step or per
    block of steps, no rotated rows.
    """
    layout = schedule_layout(theta, layout)
    theta = as_schedule(theta)
    th = theta.theta
    vv = check_cloud_vector(v, th.size)
    check_layout(layout)
    L = _one_pass_lengths(lengths)
    chunk, block = phase_step(L, positions_per_step, 2 * th.size)
    nmax = int(L.max())
    v_il = jnp.asarray(rotate_to_offset(theta, to_interleaved(np.asarray(vv), layout), offset, nmax))
    w_fn: Callable[..., Any]
    w_args: tuple[Any, ...] = ()
    if weights is None:
        W = Ws = L.astype(np.float64)                              # exact: n < 2^53
        w_fn = _unit_weights
    elif callable(weights):
        W = Ws = stream_weight_sums(weights, L, positions_per_step=chunk)
        w_fn = _callable_weights(weights)
    else:
        w, Ws, W = _scaled_weight_array(weights, L)
        w_fn, w_args = _array_weights, (jnp.asarray(w),)
    _check_weight_sums(Ws, L)
    # the Gram from the weighted phase sums (``.phase_stream``): one product on a fixed table per step or block
    lam, tr = (np.asarray(x) for x in rank1_phase_stream_kernel(
        jnp.asarray(turn_chunks(theta)), jnp.asarray(L), v_il, w_args, w_fn, chunk, block=block))
    if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(tr))):
        raise BadValue("weights: the weighted Gram matrix exceeds the float64 range; rescale the weight "
                         "function (every ratio here is scale-invariant)")
    return Curve(n=L, rho=np.sqrt(lam / Ws), rho2=lam / Ws, srank=tr / lam, frob_ratio=np.sqrt(tr / Ws),
                 weight_sum=W)


def _scaled_weight_array(weights: Any, L: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights given as an array ``w`` (finite, ``>= 0``, at least ``max(L)`` entries), scaled by ``2^-k`` to a
    unit maximum (exact; rho, srank and the Frobenius ratio do not change): ``w 2^-k``, the scaled sums
    ``2^-k W_n`` at the lengths ``L`` (Neumaier) and the weights' own sums ``W_n = sum_{i<n} w_i``."""
    nmax = int(L.max())
    w = real_array("weights", weights)
    if w.ndim != 1 or w.shape[0] < nmax:
        raise BadValue(f"weights array must be 1-D with at least {nmax} entries, got shape {w.shape}")
    bad = ~np.isfinite(w[:nmax]) | (w[:nmax] < 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise BadValue(f"weights must be finite and >= 0; w[{k}] = {float(w[k])!r}")
    w, k = scale_to_unit_max(w[:nmax])
    Ws = neumaier_cumsum(w)[L - 1]
    with np.errstate(over="ignore"):
        W = np.ldexp(Ws, k)
    return w, Ws, W


def _check_weight_sums(Ws: np.ndarray, L: np.ndarray) -> None:
    """Refuse weight sums ``W_n`` (at the lengths ``L``) that overflow float64 or are zero: ``rho_n^2 =
    lambda_max / W_n`` needs ``0 < W_n < inf``."""
    if not np.all(np.isfinite(Ws)):
        raise BadValue(f"weights: their sum up to length {int(L[np.argmax(~np.isfinite(Ws))])} exceeds the "
                       f"float64 maximum; rescale the weight function (every ratio here is scale-invariant)")
    if np.any(Ws <= 0):
        raise BadValue(f"weights sum to zero up to length {int(L[np.argmax(Ws <= 0)])}")


def _matrix_rows(pos, X):
    idx = jnp.clip(pos, 0, X.shape[0] - 1)
    return X[idx]


def matrix_metrics(X: Any) -> MatrixMetrics:
    """FSV ``||X||_2``, Frobenius norm and stable rank of a general ``n x d`` matrix (via its d x d Gram)."""
    A = check_finite_array("X", X, min_ndim=2)
    if A.ndim != 2:
        raise BadValue(f"X must be 2-D (n x d), got shape {A.shape}")
    A, k = scale_to_unit_max(A)                       # exact; the norms are scaled back by 2^k below
    G = A.T @ A
    lam = float(np.linalg.eigvalsh(G)[-1])
    fro2 = float(np.trace(G))
    if fro2 == 0:
        raise BadValue("X is the zero matrix: its stable rank is undefined")
    fsv, frob = math.ldexp(math.sqrt(lam), k), math.ldexp(math.sqrt(fro2), k)
    return MatrixMetrics(fsv=fsv, frob=frob, srank=fro2 / lam)


@renamed("0.3.0", chunk="positions_per_step")
def rope_matrix_curve(theta: Any, X: Any, lengths: Any, *, layout: str | None = None, offset: int = 0,
                      positions_per_step: int = DEFAULT_POSITIONS_PER_STEP) -> Curve:
    """FSV ratio ``||Rope(X_:n)||_2 / ||X_:n||_2`` and stable ranks of the prefixes of a general cloud.

    ``X``: ``(N, d)`` rows in ``layout``; the prefixes ``X[:n]`` for each ``n`` in
    ``lengths`` (``<= N``). Streams over rows; never builds ``Rope(X)``.
    """
    check_schedule_first("rope_matrix_curve", theta, X)
    layout = schedule_layout(theta, layout)
    A = check_finite_array("X", X, min_ndim=2)
    if A.ndim != 2:
        raise BadValue(f"X must be 2-D (n x d), got shape {A.shape}")
    theta = as_schedule(theta)
    th = theta.theta
    if A.shape[1] != 2 * th.size:
        raise BadValue(f"X has head dim {A.shape[1]} but the schedule has {th.size} planes")
    check_layout(layout)
    L = check_lengths(lengths)
    positions_per_step = check_length(positions_per_step, "positions_per_step")
    if L.max() > A.shape[0]:
        raise BadValue(f"length {int(L.max())} exceeds the {A.shape[0]} rows of X")
    A, _ = scale_to_unit_max(A)                       # exact; every output is a ratio of norms
    zero = np.cumsum(np.sum(A * A, axis=1))[L - 1] == 0
    if zero.any():
        raise BadValue(f"X: its first {int(L[np.argmax(zero)])} rows are zero (or below 2^-1074 of its largest "
                         f"entry), so the FSV ratio of that prefix is undefined")
    Xi = jnp.asarray(rotate_to_offset(theta, to_interleaved(np.asarray(A), layout), offset, int(L.max())))
    out = stream_gram_curve(th, _matrix_rows, (Xi,), L, positions_per_step=min(positions_per_step, int(L.max())),
                            keep_gram=False)
    # the un-rotated prefix Grams (denominators) need no angles: sums of X^T X over the same steps of
    # positions_per_step rows as the streamed numerator, compensated the same way
    zero_gram = np.zeros((A.shape[1], A.shape[1]))
    acc, lams0, trs0, prev = (zero_gram, zero_gram), [], [], 0
    for n in L:
        for s in range(prev, int(n), positions_per_step):
            rows = A[s:min(s + positions_per_step, int(n))]
            acc = neumaier_add(acc, rows.T @ rows)
        prev = int(n)
        G0 = neumaier_total(acc)
        lams0.append(np.linalg.eigvalsh(G0)[-1])
        trs0.append(np.trace(G0))
    lam, tr, lam0, tr0 = out["lam"], out["trace"], np.array(lams0), np.array(trs0)
    return Curve(n=L, rho=np.sqrt(lam / lam0), srank=tr / lam, srank_before=tr0 / lam0, frob_ratio=np.sqrt(tr / tr0))
