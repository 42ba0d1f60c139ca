"""The sink's log-odds decomposition on a real model's heads, summarised from the per-head numbers.

Each head row of an analysis holds, at every grid length ``n`` and for RoPE (``sink_rope_*``) and the
same q, k un-rotated (``sink_norope_*``), the terms of
``log(a_0 / (1 - a_0)) = (s_0 - mu) - log(n - 1) - kappa`` (``ropetheory.theory.sink``) averaged over the
last ``SINK_QUERIES`` queries of a length-``n`` input (``.stream.LayerStream``). Here: per layer (the
mean over its heads, which keeps the identity exact), medians over heads, and between ``L`` and ``kL``
the change of the log-odds split into the sink's logit, the others' mean, dilution and spread
(``ropetheory.theory.sink.attribute_change``). Only heads that see key 0 at every length (global
layers) enter. Imports numpy and the theory layer only.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..theory.sink import SinkLogOdds, attribute_change
from .stream import SINK_QUERIES, SINK_TERMS

__all__ = ["decomposition_summary", "decomposition_rows", "KINDS", "MULTIPLES"]

#: RoPE as the model runs, and the same q, k un-rotated
KINDS = ("rope", "norope")
#: the lengths kL compared with L (those inside the text)
MULTIPLES = (2, 4, 8, 16)


def _terms(h: dict, kind: str, i: int) -> SinkLogOdds | None:
    vals = {f: h[f"sink_{kind}_{f}"][i] for f in SINK_TERMS}
    if any(v is None for v in vals.values()):
        return None
    a = {f: np.asarray(v, dtype=np.float64) for f, v in vals.items()}
    return SinkLogOdds(log_odds=a["log_odds"], gap=a["sink_logit"] - a["others_mean"], dilution=a["dilution"],
                       spread=a["spread"], share=np.asarray(h[f"sink_{kind}"][i], dtype=np.float64),
                       sink_logit=a["sink_logit"], others_mean=a["others_mean"])


def _lengths(grid: list[int], L: int) -> list[tuple[int, int]]:
    """``(k, index of kL)`` for ``k = 1`` (the largest grid length <= L) and each multiple on the grid."""
    at_L = max((i for i, m in enumerate(grid) if m <= L), default=0)
    return [(1, at_L)] + [(k, grid.index(k * L)) for k in MULTIPLES if k * L in grid]


def decomposition_rows(heads: list[dict], grid: list[int]) -> list[dict[str, Any]]:
    """Long format for CSV: one row per head, kind and grid length with the terms and the share."""
    rows = []
    for h in heads:
        for kind in KINDS:
            for i, n in enumerate(grid):
                t = _terms(h, kind, i)
                if t is not None:
                    rows.append({"layer": h["layer"], "kv_head": h["kv_head"], "kind": kind, "n": n,
                                 "share": float(t.share), "gap": float(t.gap),
                                 **{f: float(getattr(t, f)) for f in SINK_TERMS}})
    return rows


def _median(xs: list[float]) -> float | None:
    return float(np.median(xs)) if xs else None


def decomposition_summary(heads: list[dict], grid: list[int], L: int) -> dict[str, Any]:
    """Per layer means, medians over heads and the changes from L to kL (module docstring)."""
    grid = [int(m) for m in grid]
    glob = [h for h in heads if all(_terms(h, k, i) is not None for k in KINDS for i in range(len(grid)))]
    out: dict[str, Any] = {"queries": SINK_QUERIES, "grid": grid, "train_len": L, "heads": len(glob),
                           "median": {}, "layers": [], "changes": []}
    fields = (*SINK_TERMS, "share")
    for kind in KINDS:
        per = [[t for i in range(len(grid)) if (t := _terms(h, kind, i)) is not None] for h in glob]
        out["median"][kind] = {f: [_median([float(getattr(p[i], f)) for p in per]) for i in range(len(grid))]
                               for f in fields}
        for li in sorted({h["layer"] for h in glob}):
            mine = [p for p, h in zip(per, glob, strict=True) if h["layer"] == li]
            out["layers"].append({"layer": li, "kind": kind, "heads": len(mine), **{
                f: [float(np.mean([getattr(p[i], f) for p in mine])) for i in range(len(grid))] for f in fields}})
        steps = _lengths(grid, L)
        for k, i in steps[1:] if per else []:
            ch = [{c: float(v) for c, v in attribute_change(p[steps[0][1]], p[i]).items()} for p in per]
            layers = sorted({h["layer"] for h in glob})
            out["changes"].append({
                "kind": kind, "from_n": grid[steps[0][1]], "to_n": grid[i], "k": k,
                "median": {c: _median([x[c] for x in ch]) for c in ch[0]},
                "layers": [{"layer": li, **{c: float(np.mean([x[c] for x, h in zip(ch, glob, strict=True)
                                                               if h["layer"] == li])) for c in ch[0]}}
                           for li in layers],
                "heads": [{"layer": h["layer"], "kv_head": h["kv_head"], **x} for x, h in zip(ch, glob, strict=True)],
            })
    return out
