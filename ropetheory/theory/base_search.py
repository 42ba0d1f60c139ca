"""The branch-and-bound engine of ``ropetheory.theory.base_bound``, resident on the device.

The search state is a stack of *blocks*: a block holds ``K`` intervals of ``t = ln b`` (host
arrays) and, in flat CSR form, the ``m`` still to be checked on each (``counts[i]`` of them)
and its witness candidates (``wcounts[i]``). The per-pair arrays (``m``, their interval index,
their enclosures) live on the device for the whole round: a round is a handful of jitted
programs (evaluate, segment-reduce per interval, compact the survivors, pick witnesses) whose
only transfers are the per-interval results (``K`` numbers). The padded sizes are powers of
two, so each program compiles for a few sizes only.

A round on a block:

1. *witnesses*: each interval's witness candidates (the ``m`` whose upper enclosure was lowest in
   the parent) are evaluated first; an interval with ``hi < 0`` there is proven infeasible;
2. every active ``m`` of the surviving intervals is evaluated; per interval, ``min hi < 0``
   proves it infeasible; no ``lo < 0`` left proves it feasible; otherwise it is split in two,
   unless narrower than ``min_width`` (undecided), and both halves keep only the ``m`` whose
   ``lo < 0`` (a proof over the parent holds over each half).

Which ``m`` are tried first changes the work, never the result: the decisions are those of
the enclosures of ``ropetheory.theory.base_bound.pair_bounds``, pair by pair.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import time
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import base_bound as bb
from ..core.checks import bucket, check_callable, check_head_dim, check_integer, check_number, pad_to_bucket
from ..core.devices import compute_platform
from ..store import (CHECKPOINT_OVERHEAD, CheckpointClock, derived_code_hash, load_checkpoint,  # noqa: F401
                     save_checkpoint)  # (CHECKPOINT_OVERHEAD: documented here)
from ..core.errors import BadValue
from ..core.renamed import renamed

__all__ = ["search_feasible_bases", "CHECKPOINT_OVERHEAD"]



def _bucket(n: int) -> int:
    """Padded length for ``n`` pairs: the next power of two, at least ``MIN_CHUNK`` (``_round`` reshapes
    the pairs into chunks of a power of two)."""
    return bucket(n, minimum=bb.MIN_CHUNK, power_of_two=True)


@dataclasses.dataclass
class _Block:
    """Pending intervals: ``t_lo``, ``t_hi``, ``counts``, ``wcounts`` on the host; ``m`` and ``w``
    on the device, padded (``m is None``: every ``1 <= m <= L`` is still active)."""
    t_lo: np.ndarray
    t_hi: np.ndarray
    counts: np.ndarray
    m: Any
    wcounts: np.ndarray
    w: Any

    @property
    def pairs(self) -> int:
        return int(self.counts.sum())

    def halves(self) -> tuple[_Block, _Block]:
        """The first and the second half of the intervals, with their active sets and witnesses."""
        k = self.t_lo.size // 2
        cm, cw = int(self.counts[:k].sum()), int(self.wcounts[:k].sum())
        nm, nw = self.pairs, int(self.wcounts.sum())
        def part(x, off, n):
            return None if x is None else _take(x, off, n, size=_bucket(n))
        a = _Block(self.t_lo[:k], self.t_hi[:k], self.counts[:k], part(self.m, 0, cm), self.wcounts[:k],
                   part(self.w, 0, cw))
        b = _Block(self.t_lo[k:], self.t_hi[k:], self.counts[k:], part(self.m, cm, nm - cm), self.wcounts[k:],
                   part(self.w, cw, nw - cw))
        return a, b


@functools.partial(jax.jit, static_argnames=("size",))
def _take(x, off, n, *, size):
    """``x[off:off+n]`` padded to ``size`` with ``x[off]`` (``off``, ``n`` traced: no recompilation)."""
    i = jnp.arange(size)
    return x[jnp.where(i < n, off + i, off)]


def _segments(counts_dev, size):
    """Interval index of each flat position (CSR ``counts``), clipped for padding, and the valid mask."""
    ends = jnp.cumsum(counts_dev)
    pos = jnp.arange(size)
    seg = jnp.searchsorted(ends, pos, side="right")
    return jnp.minimum(seg, counts_dev.shape[0] - 1).astype(jnp.int32), pos < ends[-1]


@functools.partial(jax.jit, static_argnames=("size", "out_size", "L", "chunk"))
def _round(m, counts, keep_rows, ar, *, size, out_size, L, chunk):
    """Evaluate the active pairs of the intervals with ``keep_rows`` and reduce per interval.

    ``m``: padded flat active ``m`` (``None``: every ``1 <= m <= L`` per interval); ``counts``:
    per interval (padded with 0). Returns the compacted pairs (``m``, interval, ``hi``, ``lo < 0``,
    valid) and per interval ``min hi`` (``+inf`` where none) and the number with ``lo < 0``;
    ``size`` is ``m``'s padded length, ``out_size`` that of the compacted pairs.
    """
    K = counts.shape[0]
    if m is None:
        pos = jnp.arange(size)
        seg, valid = jnp.minimum(pos // L, K - 1).astype(jnp.int32), pos < counts.sum()
        m = (pos % L + 1).astype(jnp.int32)
    else:
        seg, valid = _segments(counts, size)
    sel = valid & keep_rows[seg]
    idx = jnp.nonzero(sel, size=out_size, fill_value=0)[0]
    m, seg, valid = m[idx], seg[idx], jnp.arange(out_size) < sel.sum()
    c = min(chunk, out_size)
    lo, hi = jax.lax.map(lambda a: bb.pair_bounds(a[0], a[1], ar["th_h"], ar["th_l"], ar["th_c"], ar["delta"],
                                                  ar["ga"], ar["lin"], ar["h"]),
                         (m.reshape(-1, c), seg.reshape(-1, c)))
    lo, hi = lo.reshape(-1), hi.reshape(-1)
    hi_min = jax.ops.segment_min(jnp.where(valid, hi, jnp.inf), seg, num_segments=K)
    neg = (lo < 0) & valid
    remaining = jax.ops.segment_sum(neg.astype(jnp.int32), seg, num_segments=K)
    return m, seg, hi, neg, hi_min, remaining


@functools.partial(jax.jit, static_argnames=("k",))
def _children(m, seg, hi, neg, newidx, acounts, *, k):
    """Active sets of the split intervals (``newidx[i] >= 0``) and up to ``k`` witnesses each.

    Witnesses are the active ``m`` within 1/64 of the way from the interval's lowest upper
    enclosure to its mean (the lowest always qualifies), the first ``k`` of them in order.
    """
    sel = neg & (newidx[seg] >= 0)
    size = m.shape[0]                    # the active sets and witnesses are at most the round's survivors
    idx = jnp.nonzero(sel, size=size, fill_value=0)[0]
    act, h, aseg = m[idx], hi[idx], newidx[seg[idx]]
    S = acounts.shape[0]
    valid = jnp.arange(size) < sel.sum()
    aseg = jnp.where(valid, aseg, S - 1)
    lowest = jax.ops.segment_min(jnp.where(valid, h, jnp.inf), aseg, num_segments=S)
    mean = jax.ops.segment_sum(jnp.where(valid, h, 0.0), aseg, num_segments=S) / jnp.maximum(acounts, 1)
    cand = valid & (h <= (lowest + (mean - lowest) / 64)[aseg])
    run = jnp.cumsum(cand)
    starts = jnp.concatenate([jnp.zeros(1, acounts.dtype), jnp.cumsum(acounts)[:-1]])
    before = (run - cand)[jnp.minimum(starts, size - 1)]
    pick = cand & (run - before[aseg] <= k)
    wcounts = jax.ops.segment_sum(pick.astype(jnp.int32), aseg, num_segments=S)
    wit = act[jnp.nonzero(pick, size=size, fill_value=0)[0]]
    return act, wit, wcounts


@functools.partial(jax.jit, static_argnames=("size",))
def _twice(x, n, *, size):
    """``concat(x[:n], x[:n])`` padded to ``size``: the children's shared active sets."""
    i = jnp.arange(size)
    return x[jnp.where(i < n, i, jnp.where(i < 2 * n, i - n, 0))]


def _pad_intervals(x: np.ndarray, fill: Any) -> np.ndarray:
    """A per-interval array padded with ``fill`` as ``interval_inputs`` pads the intervals."""
    return pad_to_bucket(x, fill=fill, minimum=bb.MIN_INTERVALS, power_of_two=True)


def _evaluate_block(blk: _Block, L: int, d: int, chunk: int):
    """One round's device work for ``blk``: (alive, min hi, remaining, survivors, pairs evaluated)."""
    K = blk.t_lo.size
    ar = {k: jnp.asarray(v) for k, v in bb.interval_inputs(blk.t_lo, blk.t_hi, d).items()}
    alive = np.ones(K, dtype=bool)
    pairs = 0
    nw = int(blk.wcounts.sum())
    if nw:
        every = jnp.asarray(_pad_intervals(np.ones(K, bool), True))
        *_, whi, _ = _round(blk.w, jnp.asarray(_pad_intervals(blk.wcounts, 0)), every, ar,
                            size=_bucket(nw), out_size=_bucket(nw), L=L, chunk=chunk)
        alive = ~(np.asarray(whi)[:K] < 0)
        pairs += nw
    counts = np.where(alive, blk.counts, 0)
    n2 = int(counts.sum())
    if n2 == 0:
        return alive, np.full(K, np.inf), np.zeros(K, np.int64), None, pairs
    size = _bucket(blk.pairs)
    m, seg, hi, neg, hi_min, remaining = _round(blk.m, jnp.asarray(_pad_intervals(blk.counts, 0)),
                                                jnp.asarray(_pad_intervals(alive, False)), ar, size=size,
                                                out_size=_bucket(n2), L=L, chunk=chunk)
    return (alive, np.asarray(hi_min)[:K], np.asarray(remaining)[:K].astype(np.int64), (m, seg, hi, neg),
            pairs + n2)


def _save_state(path, key, stack, lists, evaluations, seconds) -> None:
    """Write the search state (decided intervals and the pending blocks) as a ``store`` checkpoint.

    Blocks whose active sets are still "every m" are stored as bare intervals (no m list)."""
    def host(x, n):
        return np.asarray(x)[:n] if n else np.zeros(0, np.int32)

    part = [b for b in stack if b.m is not None]
    full = np.array(
        [(a, b) for blk in stack if blk.m is None for a, b in zip(blk.t_lo, blk.t_hi, strict=False)]
    ).reshape(-1, 2)
    def cat(xs, dt):
        return np.concatenate([np.asarray(x, dt) for x in xs] + [np.zeros(0, dt)])

    arrays: dict[str, np.ndarray] = dict(
        full=full,
        ends=np.stack([cat((b.t_lo for b in part), np.float64), cat((b.t_hi for b in part), np.float64)], 1),
        counts=cat((b.counts for b in part), np.int64), act=cat((host(b.m, b.pairs) for b in part), np.int32),
        wcounts=cat((b.wcounts for b in part), np.int64),
        wit=cat((host(b.w, int(b.wcounts.sum())) for b in part), np.int32))
    arrays.update({k: np.array(v).reshape(-1, 2) for k, v in zip(("feas", "infeas", "und"), lists, strict=True)})
    save_checkpoint(path, key, arrays, evaluations=int(evaluations), seconds=float(seconds))


def _device_block(t_lo, t_hi, counts, m, wcounts, w) -> _Block:
    def dev(x):
        return None if x is None else jnp.asarray(pad_to_bucket(x.astype(np.int32), fill=1, minimum=bb.MIN_CHUNK,
                                                                power_of_two=True))
    return _Block(t_lo, t_hi, counts, dev(m), wcounts, dev(w))


def _load_state(path, key, L):
    """The saved state if ``path`` holds one for ``key`` (else None; ``store.load_checkpoint`` reports a
    checkpoint it does not use)."""
    return load_checkpoint(path, key, functools.partial(_restore_state, L=L))


def _restore_state(z: dict[str, np.ndarray], meta: dict[str, Any], *, L: int):
    """The stack, decided lists and counters from a checkpoint's arrays ``z``; a ValueError if inconsistent."""
    ends, counts, act, wcounts, wit = z["ends"], z["counts"], z["act"], z["wcounts"], z["wit"]
    if (counts.size != len(ends) or wcounts.size != len(ends) or counts.sum() != act.size
            or wcounts.sum() != wit.size or (act.size and (act.min() < 1 or act.max() > L))
            or (wit.size and (wit.min() < 1 or wit.max() > L))):
        raise BadValue("inconsistent active sets")
    if not all(np.isfinite(x).all() for x in (z["feas"], z["infeas"], z["und"], ends, z["full"])):
        raise BadValue("non-finite interval ends")
    stack = []
    if len(ends):
        stack.append(_device_block(ends[:, 0].copy(), ends[:, 1].copy(), counts.astype(np.int64), act,
                                   wcounts.astype(np.int64), wit))
    full = z["full"]
    if len(full):
        n = len(full)
        stack.append(_Block(full[:, 0].copy(), full[:, 1].copy(), np.full(n, L, np.int64), None,
                            np.zeros(n, np.int64), None))
    lists = [[(float(a), float(b)) for a, b in z[k]] for k in ("feas", "infeas", "und")]
    return stack, lists, int(meta["evaluations"]), float(meta["seconds"])


def _merge(iv: list[tuple[float, float]]) -> list[list[float]]:
    out: list[list[float]] = []
    for a, b in sorted(iv):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


#: most starting pieces accepted: the first round holds (pieces x planes) float64 arrays, and the search
#: splits a piece only where it must, so more than 2^20 starting pieces is a typo, not a finer search
MAX_INITIAL = 2 ** 20
#: narrowest ``min_width`` (in ``ln b``): float64 spacing at ``ln b = MAX_LN_B = 64`` is 2^-46, so halving
#: an interval narrower than a few dozen ulps stops shrinking it and the search would never end
MIN_WIDTH_FLOOR = 2.0 ** -40


def _check_search_args(train_len, head_dim, b_min, b_max, min_width, initial):
    L, d = check_integer("train_len", train_len, lo=1, hi=bb.MAX_L), check_head_dim(head_dim, "head_dim")
    b_min, b_max = (check_number(name, v, lo=0.0, lo_open=True) for name, v in (("b_min", b_min), ("b_max", b_max)))
    min_width = check_number("min_width", min_width, lo=MIN_WIDTH_FLOOR)
    if not (1.0 < b_min < b_max <= math.exp(bb.MAX_LN_B)):
        raise BadValue(f"need 1 < b_min < b_max <= e^{bb.MAX_LN_B:g}, got b_min={b_min!r}, b_max={b_max!r}")
    return L, d, b_min, b_max, min_width, check_integer("initial", initial, lo=1, hi=MAX_INITIAL)


@renamed("0.3.0", L="train_len", d="head_dim")
def search_feasible_bases(train_len: int, head_dim: int = 128, *, b_min: float = 1e2, b_max: float = 1e10,
                          min_width: float = bb.DEFAULT_MIN_WIDTH, initial: int = 256, budget: int | None = None,
                          progress: Callable[[float], None] | None = None, checkpoint: Any = None,
                          checkpoint_seconds: float = 30.0) -> bb.BaseSearchResult:
    """Certified feasible set ``F_L`` (``L = train_len``) of bases within ``[b_min, b_max]`` for heads of
    width ``d = head_dim`` (see ``.base_bound``).

    ``initial`` equal pieces of ``[ln b_min, ln b_max]`` start the search; each round evaluates up
    to ``budget`` pairs ``(interval, m)`` (default 2^22 on a CPU, 2^25 on an accelerator).
    With ``checkpoint`` (a file path) the state is saved every ``checkpoint_seconds`` (at least
    ``CHECKPOINT_OVERHEAD`` times the last save's duration apart) and a search with the same
    arguments resumes from it (the file is removed when the search ends). ``progress(k)``, the
    package's progress convention (``tqdm``'s ``update``), gets the share of ``[ln b_min, ln b_max]``
    decided since the last call, so the calls sum to 1 when the search ends.
    """
    L, d, b_min, b_max, min_width, initial = _check_search_args(train_len, head_dim, b_min, b_max, min_width,
                                                                initial)
    accel = compute_platform() != "cpu"
    budget = 1 << (25 if accel else 22) if budget is None else check_integer("budget", budget, lo=1)
    checkpoint_seconds = check_number("checkpoint_seconds", checkpoint_seconds, lo=0.0)
    if progress is not None:
        check_callable("progress", progress)
    chunk = bb.pair_chunk(d // 2)
    t0 = time.perf_counter()
    lo_t, hi_t = math.log(b_min), math.log(b_max)
    key = repr((L, d, b_min, b_max, min_width, initial, derived_code_hash(__name__)))
    saved = None if checkpoint is None else _load_state(checkpoint, key, L)
    state = _SearchState(*saved) if saved is not None else _SearchState([_initial_block(lo_t, hi_t, initial, L)])
    decided, total = sum(b - a for a, b in state.feas + state.infeas + state.und), hi_t - lo_t
    reported = 0.0
    clock = CheckpointClock(checkpoint_seconds)
    while state.stack:
        if checkpoint is not None and clock.due():
            now = time.perf_counter()
            _save_state(checkpoint, key, state.stack, (state.feas, state.infeas, state.und), state.evaluations,
                        state.elapsed_before + now - t0)
            clock.written(now)
        width = _search_round(state, L, d, chunk=chunk, budget=budget, min_width=min_width)
        if width is None:
            continue
        decided += width
        if progress:
            progress(decided / total - reported)
            reported = decided / total
    if checkpoint is not None and pathlib.Path(checkpoint).exists():
        pathlib.Path(checkpoint).unlink()
    return _result(state, L, d, b_min, b_max, min_width, state.elapsed_before + time.perf_counter() - t0)


@dataclasses.dataclass
class _SearchState:
    """The search's progress: the pending blocks, processed last-in first-out (depth first keeps memory
    bounded); the decided intervals ``(t_lo, t_hi)`` of ``t = ln b``, each feasible, infeasible or undecided
    (narrower than ``min_width``); the pairs ``(interval, m)`` evaluated; the seconds spent before a resume."""
    stack: list[_Block]
    lists: list[list[tuple[float, float]]] = dataclasses.field(default_factory=lambda: [[], [], []])
    evaluations: int = 0
    elapsed_before: float = 0.0

    @property
    def feas(self) -> list[tuple[float, float]]:
        return self.lists[0]

    @property
    def infeas(self) -> list[tuple[float, float]]:
        return self.lists[1]

    @property
    def und(self) -> list[tuple[float, float]]:
        return self.lists[2]


def _initial_block(lo_t: float, hi_t: float, initial: int, L: int) -> _Block:
    """``initial`` equal pieces of ``[lo_t, hi_t]`` (ends exact), every ``1 <= m <= L`` active on each."""
    edges = np.linspace(lo_t, hi_t, initial + 1)
    edges[0], edges[-1] = lo_t, hi_t
    return _Block(edges[:-1].copy(), edges[1:].copy(), np.full(initial, L, np.int64), None,
                  np.zeros(initial, np.int64), None)


def _search_round(state: _SearchState, L: int, d: int, *, chunk: int, budget: int, min_width: float) -> float | None:
    """One round on the top block of ``state.stack``: a block over ``budget`` pairs is split in two halves
    (``None``); else an interval is infeasible where a witness's or an active ``m``'s ``hi < 0``, feasible where
    no ``lo < 0`` remains, undecided where narrower than ``min_width``, and otherwise split in two
    (``_split_block``). Returns the width of ``t`` decided in this round."""
    blk = state.stack.pop()
    if blk.pairs > budget and blk.t_lo.size > 1:          # too large for one round: split it
        a, b = blk.halves()
        state.stack += [b, a]
        return None
    alive, hi_min, remaining, pairs, n = _evaluate_block(blk, L, d, chunk)
    state.evaluations += n
    dead = ~alive
    inf2 = alive & (hi_min < 0)
    narrow = blk.t_hi - blk.t_lo < min_width
    ok = alive & ~inf2
    is_feas, is_und, split = ok & (remaining == 0), ok & (remaining > 0) & narrow, ok & (remaining > 0) & ~narrow
    for mask, out in ((is_feas, state.feas), (is_und, state.und), (dead | inf2, state.infeas)):
        out.extend(zip(blk.t_lo[mask].tolist(), blk.t_hi[mask].tolist(), strict=False))
    if split.any():
        state.stack.append(_split_block(blk, split, remaining, pairs))
    return float((blk.t_hi - blk.t_lo)[~split].sum())


def _split_block(blk: _Block, split: np.ndarray, remaining: np.ndarray, pairs: tuple) -> _Block:
    """The halves ``[a, (a+b)/2]`` then ``[(a+b)/2, b]`` of ``blk``'s intervals marked ``split``, each keeping
    its parent's ``remaining`` active ``m`` (those with ``lo < 0``; ``pairs``: the round's survivors) and its
    ``bb.WITNESS_CANDIDATES`` witness candidates."""
    S = int(split.sum())
    acounts = remaining[split]
    n_act = int(acounts.sum())
    newidx = np.full(bucket(blk.t_lo.size, minimum=bb.MIN_INTERVALS, power_of_two=True), -1, np.int32)
    newidx[np.flatnonzero(split)] = np.arange(S, dtype=np.int32)
    m, seg, hi, neg = pairs
    act, wit, wcounts = _children(m, seg, hi, neg, jnp.asarray(newidx), jnp.asarray(_pad_intervals(acounts, 0)),
                                  k=bb.WITNESS_CANDIDATES)
    wcounts = np.asarray(wcounts)[:S].astype(np.int64)
    n_w = int(wcounts.sum())
    a_, b_ = blk.t_lo[split], blk.t_hi[split]
    mid = 0.5 * (a_ + b_)
    return _Block(np.concatenate([a_, mid]), np.concatenate([mid, b_]), np.tile(acounts, 2),
                  _twice(act, n_act, size=_bucket(2 * n_act)), np.tile(wcounts, 2),
                  _twice(wit, n_w, size=_bucket(2 * n_w)))


def _result(state: _SearchState, L: int, d: int, b_min: float, b_max: float, min_width: float,
            seconds: float) -> bb.BaseSearchResult:
    """The finished search as bases ``b = e^t``: the merged feasible and undecided intervals, the smallest
    certified feasible base and the smallest base not proven infeasible."""
    fw = [[math.exp(a), math.exp(b)] for a, b in _merge(state.feas)]
    uw = [[math.exp(a), math.exp(b)] for a, b in _merge(state.und)]
    not_infeasible = sorted(state.feas + state.und)
    return bb.BaseSearchResult(
        train_len=L, head_dim=d, b_min=b_min, b_max=b_max, min_width=min_width, feasible=fw, undecided=uw,
        smallest=fw[0][0] if fw else None,
        smallest_lower=math.exp(not_infeasible[0][0]) if not_infeasible else None,
        evaluations=state.evaluations, leaves=len(state.feas) + len(state.infeas) + len(state.und), seconds=seconds)
