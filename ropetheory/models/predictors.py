"""What predicts the sink's collapse: candidates against the change of its log-odds from ``L`` to ``kL``.

The target, per head and multiple ``k`` (``kL`` on the analysis grid, ``k`` in ``.sinks.MULTIPLES``): the
change of the sink's log-odds under RoPE,

    y = lo(kL) - lo(L),    lo(n) = mean over the last ``SINK_QUERIES`` queries of log(a_0 / (1 - a_0)),

(``sink_rope_log_odds``, ``.stream.LayerStream``; ``L`` is the largest grid length ``<= L`` as in
``.sinks``). An analysis written before the log-odds terms were kept has only the mean share ``sink_rope``;
then the target is ``logit(mean share)`` instead, and the result says so (``target``); it is not the same
number (a logit of a mean is not a mean of logits).

Each candidate enters as its own change over the same lengths, ``x = c(kL) - c(L)``:

* ``fsv_ratio``: the measured FSV ratio ``rho_n = ||Rope(K_n)||_2 / ||K_n||_2`` (the paper's; ``rho_measured``),
  dimensionless;
* ``silhouette``: the silhouette score (cosine) of the keys / queries clusters after RoPE (``clusters``,
  ``silhouette_post``), dimensionless; missing where the analysis did not score both lengths;
* ``cos_kq_post``: the mean key-query cosine after RoPE, dimensionless;
* ``others_mean``: ``mu``, the mean logit of the keys other than the sink (``sink_rope_others_mean``), nats;
* ``phase_drift``: the energy-weighted unseen phase of the slow planes (``phase_drift``, below), radians.

**Phase drift.** With ``s_j`` the share of the head's pre-RoPE key energy in plane ``j``
(``diag(K^T K)`` over the plane's two channels, divided by ``tr(K^T K)``, the whole capture) and a
layer's longest relative distance ``min(n, W)`` (``W`` its sliding window, none: ``n``),

    drift(n) = sum_j s_j * max(0, min(min(n, W) theta_j, 2 pi) - min(L, W) theta_j),

the angle range a plane reaches at length ``n`` that it never reached within ``L``: only planes that have
not completed a turn within ``L`` (``L theta_j < 2 pi``) contribute, each at most the rest of its turn, and
NoPE planes (``theta_j = 0``) none. ``drift(L) = 0``, so the candidate is ``drift(kL)``.

Per candidate over the points ``(head, k)`` where it and the target are finite: Spearman's rank
correlation with a 95% interval from a bootstrap over heads (a head's lengths resampled together; seeded),
and ``R^2`` (with slope and intercept) of the least-squares line ``y = a + b x``. Pooled over lengths, the
target holds the dilution ``-Delta log(n - 1)``, the same for every head at one ``k`` and growing with
``k``: any candidate that grows with ``k`` (the phase drift does by construction) correlates through it
alone. So each candidate also gets Spearman's correlation within each ``k``, across heads
(``spearman_within_k``), which no per-length term can produce. Heads: those without a
sliding window (Gemma 3: its global layers; SmolLM2: every head), which see key 0 at every length. A
candidate absent from the analysis is reported missing, with the reason, never filled in.

Imports numpy only (the ranks: ``core.ranks``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.checks import check_finite_array, check_integer, check_lengths, check_seed
from ..core.ranks import rank_correlation
from ..core.errors import BadType, BadValue
from .sinks import MULTIPLES

__all__ = ["collapse_predictors", "predictor_rows", "phase_drift", "plane_energy", "CANDIDATES", "BOOTSTRAP_RESAMPLES",
           "BOOTSTRAP_LEVEL"]

#: the candidates, in the order of the result: (name, definition, unit of its change)
CANDIDATES = (
    ("fsv_ratio", "change of the measured FSV ratio rho_n (rho_measured)", "1"),
    ("silhouette", "change of the key/query silhouette after RoPE (clusters, silhouette_post)", "1"),
    ("cos_kq_post", "change of the mean key-query cosine after RoPE (cos_kq_post)", "1"),
    ("others_mean", "change of the others' mean logit mu (sink_rope_others_mean)", "nats"),
    ("phase_drift", "energy-weighted unseen phase of the slow planes at kL (phase_drift)", "rad"),
)
#: bootstrap resamples of the heads for Spearman's interval: its ends move by ~0.01 between seeds at 1000
BOOTSTRAP_RESAMPLES = 1000
#: two-sided level of the bootstrap interval
BOOTSTRAP_LEVEL = 0.95
#: at least this many points (and two heads) for a correlation; fewer: None
MIN_POINTS = 3


def plane_energy(gram_diag: Any, rotary_dim: int) -> np.ndarray:
    """Share of the key energy in each plane, ``(head_dim / 2,)``, from ``diag(K^T K)`` in transformers'
    channel order (plane ``j < rotary_dim / 2``: channels ``j`` and ``j + rotary_dim / 2``; past ``rotary_dim``
    the pass-through channels pair up as ``(r + 2i, r + 2i + 1)``, as ``.rotation.hf_to_interleaved`` lays
    them out). Sums to 1 (all zeros for a head without energy)."""
    from .rotation import hf_to_interleaved
    g = np.asarray(gram_diag, dtype=np.float64)
    if g.ndim != 1 or g.size % 2 or not np.all(np.isfinite(g)) or np.any(g < 0):
        raise BadValue(f"gram_diag must be an even-length vector of finite energies >= 0, got shape {g.shape}")
    e = hf_to_interleaved(g, int(rotary_dim)).reshape(-1, 2).sum(axis=1)
    tot = e.sum()
    return e / tot if tot > 0 else e


def phase_drift(theta: Any, energy: Any, L: int, lengths: Any, window: int | None = None) -> np.ndarray:
    """``drift(n)`` of the module docstring at each of ``lengths`` (radians): ``theta`` and ``energy``
    per plane (same length), ``L`` the training length, ``window`` the layer's sliding window (None: none)."""
    th, s = check_finite_array("theta", theta), check_finite_array("energy", energy)
    if th.shape != s.shape or th.ndim != 1:
        raise BadValue(f"theta and energy must be vectors of one length, got shapes {th.shape}, {s.shape}")
    L = check_integer("L", L, lo=1)
    n = check_lengths(lengths).astype(np.float64)
    W = math.inf if window is None else float(window)
    far = np.minimum(np.minimum(n, W)[:, None] * th[None, :], 2 * math.pi)
    return np.maximum(far - min(L, W) * th[None, :], 0.0) @ s


def _lengths(grid: list[int], L: int) -> list[tuple[int, int]]:
    """``(k, index of kL)``: ``k = 1`` the largest grid length ``<= L``, then each multiple on the grid."""
    at_L = max((i for i, m in enumerate(grid) if m <= L), default=0)
    return [(1, at_L)] + [(k, grid.index(k * L)) for k in MULTIPLES if k * L in grid]


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def _target(h: dict, i: int) -> float:
    if "sink_rope_log_odds" in h:
        return _num(h["sink_rope_log_odds"][i])
    a = _num(h["sink_rope"][i])
    return math.log(a / (1 - a)) if 0 < a < 1 else math.nan


def _series(h: dict, name: str, grid: list[int]) -> tuple[list[float] | None, str | None]:
    """The candidate's value at every grid length (NaN where not measured), or None and why it is missing."""
    if name == "fsv_ratio":
        key = "rho_measured"
    elif name == "others_mean":
        key = "sink_rope_others_mean"
    elif name == "silhouette":
        if "clusters" not in h:
            return None, "no 'clusters' in the head rows"
        at = {int(c["n"]): c["silhouette_post"] for c in h["clusters"]}
        return [_num(at.get(m)) for m in grid], None
    else:
        key = name
    if key not in h:
        return None, f"no '{key}' in the head rows (an analysis written before it was kept)"
    return [_num(x) for x in h[key]], None


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's correlation of at least ``MIN_POINTS`` pairs, else ``nan`` (``rank_correlation`` says ``nan``
    where either side holds a single value)."""
    return rank_correlation(x, y) if x.size >= MIN_POINTS else math.nan


def _fit(x: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """Least squares ``y = a + b x`` and its ``R^2`` (the squared Pearson correlation)."""
    if x.size < MIN_POINTS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r2": None, "slope": None, "intercept": None}
    b, a = np.polyfit(x, y, 1)
    r = np.corrcoef(x, y)[0, 1]
    return {"r2": float(r * r), "slope": float(b), "intercept": float(a)}


def _bootstrap(x: np.ndarray, y: np.ndarray, head: np.ndarray, rng: np.random.Generator,
               resamples: int) -> list[float] | None:
    """Percentile interval of Spearman's correlation, heads resampled with replacement (their points kept together)."""
    ids = np.unique(head)
    if ids.size < 2:
        return None
    rows = [np.flatnonzero(head == u) for u in ids]
    stats = []
    for _ in range(resamples):
        pick = np.concatenate([rows[j] for j in rng.integers(0, ids.size, ids.size)])
        r = _spearman(x[pick], y[pick])
        if math.isfinite(r):
            stats.append(r)
    if not stats:
        return None
    a = (1 - BOOTSTRAP_LEVEL) / 2
    return [float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))]


def _none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def collapse_predictors(res: dict, *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """The candidates against the change of the sink's log-odds from ``L`` to ``kL`` (module docstring), from
    an analysis (``.study.analyze_streams``'s result, or a saved ``analysis.json``): the target, lengths and
    head set used, per candidate its Spearman correlation (bootstrap interval), ``R^2`` of a line and the
    number of points, or why it is missing; and the points themselves (``points``), for the figure."""
    if not isinstance(res, dict):
        raise BadType(f"res must be an analysis dict (analyze_streams' result), got {type(res).__name__}")
    miss = [k for k in ("heads", "grid", "train_len") if k not in res]
    if miss:
        raise BadValue(f"res is not an analysis: it has no {', '.join(repr(k) for k in miss)}")
    seed = check_seed("seed", seed)
    resamples = check_integer("resamples", resamples, lo=1)
    grid, L = [int(m) for m in res["grid"]], int(res["train_len"])
    steps = _lengths(grid, L)
    heads = [h for h in res["heads"] if h.get("window") is None]
    has_terms = any("sink_rope_log_odds" in h for h in heads)
    out: dict[str, Any] = {
        "target": ("change of the sink's log-odds, mean over the last queries (sink_rope_log_odds)" if has_terms
                   else "change of logit(mean sink share) (sink_rope): the analysis has no log-odds terms"),
        "train_len": L, "from_n": grid[steps[0][1]], "multiples": [k for k, _ in steps[1:]],
        "to_n": [grid[i] for _, i in steps[1:]],
        "head_set": {"rule": "heads without a sliding window (they see key 0 at every length)",
                     "heads": len(heads), "layers": sorted({int(h["layer"]) for h in heads})},
        "seed": seed, "resamples": resamples, "level": BOOTSTRAP_LEVEL, "candidates": {}, "points": []}
    i0 = steps[0][1]
    pts: list[dict[str, Any]] = []
    owner: list[int] = []                                  # the head (index into heads) of each point
    series = {name: [_series(h, name, grid) for h in heads] for name, _, _ in CANDIDATES}
    for hi, h in enumerate(heads):
        for k, i in steps[1:]:
            p = {"layer": int(h["layer"]), "kv_head": int(h["kv_head"]), "k": k,
                 "d_log_odds": _none(_target(h, i) - _target(h, i0))}
            for name, _, _ in CANDIDATES:
                s = series[name][hi][0]
                p[name] = None if s is None else _none(s[i] - s[i0])
            pts.append(p)
            owner.append(hi)
    out["points"] = pts
    rng = np.random.default_rng(seed)
    for name, what, unit in CANDIDATES:
        why = next((w for s, w in series[name] if s is None), None)
        entry: dict[str, Any] = {"definition": what, "unit": unit, "available": why is None, "missing": why}
        if why is None:
            ok = [j for j, p in enumerate(pts) if p[name] is not None and p["d_log_odds"] is not None]
            x = np.array([pts[j][name] for j in ok], dtype=np.float64)
            y = np.array([pts[j]["d_log_odds"] for j in ok], dtype=np.float64)
            head = np.array([owner[j] for j in ok], dtype=np.int64)
            kk = np.array([pts[j]["k"] for j in ok], dtype=np.int64)
            entry.update(points=len(ok), spearman=_none(_spearman(x, y)),
                         spearman_ci=_bootstrap(x, y, head, rng, resamples), **_fit(x, y),
                         spearman_within_k={str(k): _none(_spearman(x[kk == k], y[kk == k])) for k in out["multiples"]})
            if not ok:
                entry.update(available=False, missing="measured at L and a kL on no head where the target is")
        out["candidates"][name] = entry
    return out


def predictor_rows(cp: dict) -> list[dict[str, Any]]:
    """``collapse_predictors``' table, one row per candidate (for ``collapse_predictors.csv``)."""
    return [{"candidate": name, "unit": c["unit"], "available": c["available"], "points": c.get("points", 0),
             "spearman": c.get("spearman"), "ci_low": (c.get("spearman_ci") or [None, None])[0],
             "ci_high": (c.get("spearman_ci") or [None, None])[1], "r2": c.get("r2"), "slope": c.get("slope"),
             "intercept": c.get("intercept"),
             "spearman_within_k": " ".join(f"{k}L:{'n/a' if r is None else format(r, '+.3f')}"
                                           for k, r in (c.get("spearman_within_k") or {}).items()),
             "heads": cp["head_set"]["heads"], "from_n": cp["from_n"],
             "to_n": " ".join(str(n) for n in cp["to_n"]), "missing": c["missing"] or ""}
            for name, c in cp["candidates"].items()]
