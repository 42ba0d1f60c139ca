"""Inference-time context extension on a real model: PI, dynamic NTK and YaRN at s = 2, 4, 8.

The paper (Section 5) says PI and YaRN keep the low-frequency drift within what training saw and
so keep the key/query clusters separated. On a real model this is measured, not assumed: the
model runs once per (method, s) over ``s L`` tokens with its rope replaced at inference
(``ropetheory.models.study.override_rope``), and once unscaled; ``extension_row`` reads one
run's ``analysis.json`` and returns, at ``L`` and ``s L``: the median FSV ratio over heads, the
median silhouette of the key/query clusters after RoPE, how many heads keep a sink (share above
``ropetheory.models.claims.SINK_SHARE``), the median sink share, the perplexity within ``L`` and
in ``[L, sL)``, and, beside them, the synthetic prediction of the same schedule: the largest
low-frequency drift ratio ``theta'_j s L / (theta_j L)`` over planes that do not finish a cycle in
``L`` (``ropetheory.theory.criteria.low_frequency_drift``; <= 1 means "within training").

May import: numpy, ``ropetheory.theory.criteria``, ``ropetheory.models.study``; reads JSON only.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..theory.criteria import low_frequency_drift
from .claims import SINK_SHARE
from ..core.checks import check_integer
from ..core.errors import BadValue
from ..schedules import names

#: a head's rotation flag in analyses written before ``rotation_within_bound`` (``_rotation_ok``)
LEGACY_ROTATION_FLAG = "rotation_within_float32_bound"
#: the rope types run at inference and their spec for factor ``s`` (merged over the model's own)
METHODS = {m: names.DISPLAY[m] for m in ("linear", "dynamic", "yarn")}


def scaling(method: str, s: int) -> dict[str, Any]:
    """The ``rope_scaling`` dict passed to ``analyze --rope-scaling`` for ``method`` at factor ``s``."""
    if method not in METHODS:
        raise BadValue(f"method must be one of {sorted(METHODS)}, got {method!r}")
    s = check_integer("s", s, lo=1)
    return {"rope_type": method, "factor": float(s)}


def _grid_index(grid: list[int], n: int) -> int:
    if n not in grid:
        raise BadValue(f"length {n} is not on the analysis grid (the run must reach it; grid ends at {grid[-1]})")
    return grid.index(n)


def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.median(xs)) if xs else None


def _silhouette_at(h: dict, n: int) -> float | None:
    pts = [c for c in h["clusters"] if c["n"] <= n]
    return pts[-1]["silhouette_post"] if pts else None


def attention_factor(res: dict) -> float:
    """The factor transformers multiplied cos/sin by in this run.

    Analyses written since it is recorded carry it per head. For older ones it is recomputed from the
    saved rope scaling merged over the saved schedule as ``ropetheory.models.study.override_rope``
    merges it (training length = ``original_max_position_embeddings``).
    """
    recorded = [h["attention_factor"] for h in res["heads"] if "attention_factor" in h]
    if recorded:
        return float(recorded[0])
    scaling = res["meta"].get("rope_scaling")
    if not scaling:
        return 1.0
    from ..schedules.hf import frequencies_from_config
    sch = next(iter(res["meta"]["schedules"].values()))
    L = int(res["train_len"])
    cfg = {"head_dim": int(sch["rotary_dim"]), "max_position_embeddings": L,
           "rope_parameters": {"rope_type": "default", "rope_theta": sch["rope_theta"],
                               "original_max_position_embeddings": L, **scaling}}
    return frequencies_from_config(cfg, seq_len=int(res["n"])).attention_factor


def one_text(results: list[dict]) -> str:
    """The sha256 of the text that every analysis in ``results`` read (``meta["text"]["sha256"]``, written by
    ``.corpus.text_tokens``). Analyses of different texts (another machine's licence files, another
    ``--text``), or one that does not record its text, are refused with each text named: one table's rows
    must compare runs over the same input."""
    seen = {str((r.get("meta", {}).get("text") or {}).get("sha256")): r.get("meta", {}).get("model", "?")
            for r in results}
    if len(seen) != 1 or "None" in seen:
        named = "; ".join(f"{model}: text sha256 {sha}" for sha, model in seen.items())
        raise BadValue(f"the analyses of one extension table must read one text; they read {len(seen)} ({named}): "
                       "rerun the others here or pass the same --text")
    return next(iter(seen))


def extension_row(res: dict, s: int, base_theta: np.ndarray | None = None) -> dict[str, Any]:
    """One table row from an ``analysis.json`` (see the module docstring); ``base_theta`` is the
    unscaled schedule (for the drift ratio; omitted for the unscaled run)."""
    L, grid, heads = int(res["train_len"]), list(res["grid"]), res["heads"]
    iL, iS = _grid_index(grid, L), _grid_index(grid, s * L)
    scheds = res["meta"]["schedules"]
    if len(scheds) != 1:
        raise BadValue("extension rows need one rope schedule for every layer")
    theta = np.asarray(next(iter(scheds.values()))["theta"], dtype=np.float64)
    drift = None
    if base_theta is not None:
        drift = low_frequency_drift(np.asarray(base_theta, dtype=np.float64), theta, s, L)["max_drift_ratio"]
    af = attention_factor(res)
    # analyses that record the factor already divided rho_measured by it; older ones did not
    undo = 1.0 if all("attention_factor" in h for h in heads) else af
    ppl_in = next((r["ppl"] for r in res.get("nll_ranges", []) if r["end"] == L), None)
    ppl_past = None
    if s > 1:
        past = [r for r in res.get("nll_ranges", []) if r["start"] >= L and r["end"] <= s * L]
        if past:                                   # tokens L .. sL, weighted by each range's length
            w = np.array([r["count"] for r in past], dtype=np.float64)
            ppl_past = float(np.exp(np.dot(w, [r["mean_nll"] for r in past]) / w.sum()))
    return {"model": res["meta"]["model"], "s": s, "n_tokens": res["n"],
            "rho_L": _median(h["rho_measured"][iL] / undo for h in heads),
            "rho_sL": _median(h["rho_measured"][iS] / undo for h in heads),
            "silhouette_post_sL": _median(_silhouette_at(h, s * L) for h in heads),
            "sinks_L": sum(1 for h in heads if (h["sink_rope"][iL] or 0) > SINK_SHARE),
            "sinks_sL": sum(1 for h in heads if (h["sink_rope"][iS] or 0) > SINK_SHARE),
            "share_sL": _median(h["sink_rope"][iS] for h in heads),
            "ppl_within_L": ppl_in, "ppl_L_to_sL": ppl_past,
            "max_low_freq_drift": drift, "attention_factor": af,
            "rotation_ok": _rotation_ok(heads, res["meta"])}


def _rotation_ok(heads: list[dict], meta: dict | None = None) -> bool | None:
    """Every head's rotation within its bound; None if some head was not checked.

    Analyses written before ``rotation_within_bound`` existed carry ``rotation_within_float32_bound``. The
    chunked capture (``models.study.run``: its ``meta`` records ``chunk`` or ``tokens_per_pass``) computed it,
    on the first and last chunk, against the bound of that time; a key dump's analysis wrote True without
    checking anything, so there the old flag counts as not checked (None), never as True.
    """
    chunked = meta is not None and ("chunk" in meta or "tokens_per_pass" in meta)
    flags = [h.get("rotation_within_bound", h.get(LEGACY_ROTATION_FLAG) if chunked else None) for h in heads]
    return None if any(f is None for f in flags) else all(flags)
