"""The retrofit's verdict table and figure, drawn from its evaluation files (``ropetheory retrofit report``).

Inputs: ``eval-<evaluation>.json`` and ``<variant>/train.json`` (or ``train-<variant>.json``) in one folder,
as ``ropetheory.models.retrofit`` writes them. Per evaluation: perplexity per range (mean and standard
deviation over the held-out windows), passkey accuracy per length, and per length the median sink share
over heads and the count of sink heads (share above ``SINK_HEAD_SHARE``), averaged over windows.

The verdict, per evaluation past ``L``:

* *keeps perplexity flat*: every range past ``L`` has perplexity at most ``FLAT_PPL_FACTOR`` times its
  perplexity on ``[1024, L)``;
* *keeps the sink*: the sink heads at ``8L`` are at least ``SINK_KEPT_FRACTION`` of those at ``L``.

The geometry table (``geometry-<variant>.json``, written by ``ropetheory retrofit geometry``): per variant,
over its heads, the median and quartiles of the FSV ratio ``rho(n) = sigma_1(post) / sigma_1(pre)`` at
``n = L, 2L, 4L, 8L``, the median predicted floor (Theorem 1's rank-1 limit), the heads meeting C1 and C2,
and the median sink share (no temperature) at the same lengths.

The decomposition table: per evaluation, the change of the sink's log-odds from ``L`` to ``8L``,
``log(a_0 / (1 - a_0)) = (s_0 - mu) - log(n - 1) - kappa`` (``ropetheory.theory.sink``), split into the
sink's own logit ``s_0``, the other keys' mean logit ``mu``, the dilution ``log(n - 1)`` and the spread
``kappa``: means over every head and window, so the four parts add up to the change exactly.
"""
from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import numpy as np

from ..core.errors import BadValue

__all__ = ["load_results", "summarise", "verdict_rows", "markdown_table", "finetune_cost", "draw", "FLAT_PPL_FACTOR",
           "SINK_HEAD_SHARE", "SINK_KEPT_FRACTION", "load_geometry", "geometry_rows", "geometry_table",
           "GEOMETRY_LENGTHS", "draw_geometry", "decomposition_rows", "decomposition_table", "collapse_rows",
           "predictor_table"]

#: a head whose sink share is above this is a sink head (the same threshold as the committed SmolLM2 analysis)
SINK_HEAD_SHARE = 0.5
#: perplexity past L counts as flat up to this factor over the perplexity within L (the spread of the
#: within-L perplexity between held-out windows is itself tens of percent, so a finer line is noise)
FLAT_PPL_FACTOR = 1.5
#: the sink is kept when at least this fraction of the sink heads at L are still sink heads at 8L
SINK_KEPT_FRACTION = 0.5


def _read(p: pathlib.Path) -> dict[str, Any]:
    import gzip
    return json.loads(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_text())


def _signature(paths: list[pathlib.Path]) -> tuple:
    """What identifies the files' contents for ``_read_all``'s cache: path, size and modification time."""
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


@functools.lru_cache(maxsize=8)
def _read_all(signature: tuple) -> tuple[dict[str, Any], ...]:
    """The files ``signature`` names, read once per version (a report reads each several times)."""
    return tuple(_read(pathlib.Path(p)) for p, _, _ in signature)


def _ordered(found: dict[str, dict]) -> dict[str, dict]:
    order = {name: i for i, name in enumerate(LABEL)}
    return dict(sorted(found.items(), key=lambda kv: order.get(kv[0], len(order))))


def load_results(folder: pathlib.Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """The evaluations (``eval-<name>.json``, or ``.json.gz`` as committed) and fine-tune logs in ``folder``."""
    folder = pathlib.Path(folder)
    paths = sorted(folder.glob("eval-*.json")) + sorted(folder.glob("eval-*.json.gz"))
    evals = {p.name[5:].split(".json")[0]: ev for p, ev in zip(paths, _read_all(_signature(paths)), strict=True)}
    tpaths = sorted(folder.glob("*/train.json")) + sorted(folder.glob("train-*.json"))
    trains = {t["variant"]: t for t in _read_all(_signature(tpaths))}
    if not evals:
        raise BadValue(f"{str(folder)!r} holds no eval-*.json (run 'ropetheory retrofit evaluate' first)")
    return _ordered(evals), trains


#: the lengths, in units of L, at which the geometry table reports each head
GEOMETRY_LENGTHS = (1, 2, 4, 8)


def load_geometry(folder: str | pathlib.Path) -> dict[str, dict]:
    """The geometry analyses (``geometry-<variant>.json``, or ``.json.gz`` as committed) in ``folder``."""
    folder = pathlib.Path(folder)
    found = sorted(folder.glob("geometry-*.json")) + sorted(folder.glob("geometry-*.json.gz"))
    return _ordered({p.name[len("geometry-"):].split(".json")[0]: g
                     for p, g in zip(found, _read_all(_signature(found)), strict=True)})


def _at(heads: list[dict], key: str, i: int) -> np.ndarray:
    """Every head's ``key`` at grid index ``i``, the heads where it was measured (not None)."""
    return np.array([h[key][i] for h in heads if h[key][i] is not None], dtype=np.float64)


def geometry_rows(folder: str | pathlib.Path) -> list[dict[str, Any]]:
    """One flat row per geometry analysis (module docstring)."""
    rows = []
    for name, g in load_geometry(folder).items():
        L, grid, heads = int(g["train_len"]), [int(m) for m in g["grid"]], g["heads"]
        row: dict[str, Any] = {"variant": name, "heads": len(heads), "window": g.get("window")}
        for k in GEOMETRY_LENGTHS:
            if k * L not in grid:
                continue
            i = grid.index(k * L)
            q1, med, q3 = np.percentile(_at(heads, "rho_measured", i), [25, 50, 75])
            row.update({f"fsv_ratio_{k}L": float(med), f"fsv_ratio_{k}L_q1": float(q1),
                        f"fsv_ratio_{k}L_q3": float(q3),
                        f"median_share_{k}L": float(np.median(_at(heads, "sink_rope", i)))})
        row["median_floor"] = float(np.median([h["predicted_floor"] for h in heads]))
        row["C1_heads"] = int(sum(bool(h["C1"]) for h in heads))
        row["C2_heads"] = int(sum(bool(h["C2"]) for h in heads))
        row["rotation_within_bound"] = all(bool(h["rotation_within_bound"]) for h in heads)
        rows.append(row)
    return rows


#: the decomposition's terms as the evaluation files name them, and the sign each enters the log-odds with
DECOMPOSITION_TERMS = {"sink_logit": 1.0, "others_mean": -1.0, "dilution": -1.0, "spread": -1.0}


def decomposition_rows(folder: str | pathlib.Path, far: int = 8) -> list[dict[str, Any]]:
    """Per evaluation, the mean over heads and windows of the change of the sink's log-odds from ``L`` to
    ``far * L`` and of each term's contribution (module docstring); the contributions sum to the change."""
    evals, _ = load_results(pathlib.Path(folder))
    rows = []
    for name, ev in evals.items():
        L = int(ev["L"])
        at: dict[tuple[int, int, int], dict[int, dict]] = {}
        for h in ev["heads"]:
            at.setdefault((h["window"], h["layer"], h["kv_head"]), {})[h["n"] // L] = h
        pairs = [(v[1], v[far]) for v in at.values() if 1 in v and far in v]
        if not pairs:
            continue
        row: dict[str, Any] = {"evaluation": name, "heads": len(pairs),
                               "log_odds_at_L": float(np.mean([a["log_odds"] for a, _ in pairs])),
                               "change": float(np.mean([b["log_odds"] - a["log_odds"] for a, b in pairs]))}
        for term, sign in DECOMPOSITION_TERMS.items():
            row[f"from_{term}"] = sign * float(np.mean([b[term] - a[term] for a, b in pairs]))
        rows.append(row)
    return rows


def decomposition_table(rows: list[dict[str, Any]], far: int = 8) -> str:
    """The guide's decomposition table: ``decomposition_rows(folder, far)`` as markdown, in nats."""
    lines = [f"| evaluation | log-odds at L | change L → {far}L | from the sink's logit s_0 | from the others' "
             f"mean mu | from dilution | from the spread kappa |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        parts = " | ".join(f"{r[f'from_{t}']:+.2f}" for t in DECOMPOSITION_TERMS)
        lines.append(f"| {LABEL.get(r['evaluation'], r['evaluation'])} | {r['log_odds_at_L']:.2f} | "
                     f"{r['change']:+.2f} | {parts} |")
    return "\n".join(lines)


def collapse_rows(folder: str | pathlib.Path) -> list[dict[str, Any]]:
    """Per geometry analysis and candidate, how well the candidate explains the change of the sink's log-odds
    from L to kL across heads (``.predictors.collapse_predictors``, seeded)."""
    from .predictors import collapse_predictors, predictor_rows
    return [{"variant": v, **r} for v, g in load_geometry(folder).items()
            for r in predictor_rows(collapse_predictors(g))]


def predictor_table(rows: list[dict[str, Any]]) -> str:
    """The guide's predictor table: the available candidates of ``collapse_rows(folder)`` as markdown."""
    lines = ["| variant | candidate | Spearman (95% bootstrap) | R² | Spearman within 2L / 4L / 8L |",
             "|---|---|---|---|---|"]
    for r in rows:
        if r["available"]:
            lines.append(f"| {LABEL.get(r['variant'], r['variant'])} | {r['candidate']} | {r['spearman']:+.2f} "
                         f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] | {r['r2']:.2f} | {r['spearman_within_k']} |")
    return "\n".join(lines)


def geometry_table(rows: list[dict[str, Any]]) -> str:
    """The guide's geometry table: ``geometry_rows(folder)`` as markdown."""
    lines = ["| variant | FSV ratio at L | 2L | 4L | 8L | predicted floor | heads C1 / C2 | median share L → 8L |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rho = [f"{r[f'fsv_ratio_{k}L']:.3f} [{r[f'fsv_ratio_{k}L_q1']:.3f}, {r[f'fsv_ratio_{k}L_q3']:.3f}]"
               for k in GEOMETRY_LENGTHS]
        lines.append(f"| {LABEL.get(r['variant'], r['variant'])} | {' | '.join(rho)} | {r['median_floor']:.3f} | "
                     f"{r['C1_heads']} / {r['C2_heads']} of {r['heads']} | "
                     f"{_fmt(r['median_share_1L'])} → {_fmt(r['median_share_8L'])} |")
    return "\n".join(lines)


def summarise(ev: dict[str, Any]) -> dict[str, Any]:
    """One evaluation's numbers (module docstring)."""
    L = int(ev["L"])
    ranges: dict[tuple[int, int], list[float]] = {}
    for w in ev["windows"]:
        for r in w["ranges"]:
            ranges.setdefault((r["start"], r["end"]), []).append(r["ppl"])
    ppl = [{"start": a, "end": b, "mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "windows": len(v)} for (a, b), v in sorted(ranges.items())]
    sink = []
    for n in sorted({h["n"] for h in ev["heads"]}):
        per_w: dict[int, list[float]] = {}
        for h in ev["heads"]:
            if h["n"] == n:
                per_w.setdefault(h["window"], []).append(h["share"])
        heads = [np.asarray(v) for v in per_w.values()]
        sink.append({"n": int(n), "median_share": float(np.mean([np.median(s) for s in heads])),
                     "sink_heads": float(np.mean([np.sum(s > SINK_HEAD_SHARE) for s in heads])),
                     "heads": int(heads[0].size)})
    passkey = []
    for n in sorted({r["length"] for r in ev.get("passkey", [])}):
        rows = [r for r in ev["passkey"] if r["length"] == n]
        passkey.append({"length": int(n), "accuracy": float(np.mean([r["correct"] for r in rows])),
                        "trials": len(rows)})
    return {"evaluation": ev["variant"], "L": L, "ppl": ppl, "sink": sink, "passkey": passkey}


def verdict_rows(folder: str | pathlib.Path) -> list[dict[str, Any]]:
    """One flat row per evaluation: perplexities, passkey accuracies, sink heads and the two verdicts."""
    evals, _ = load_results(pathlib.Path(folder))
    rows = []
    for name, ev in evals.items():
        s = summarise(ev)
        L = s["L"]
        row: dict[str, Any] = {"evaluation": name}
        for r in s["ppl"]:
            tag = f"{r['start'] // 1024}k-L" if r["end"] == L else f"{r['start'] // L}L-{r['end'] // L}L"
            row[f"ppl_{tag}"] = r["mean"]
            row[f"ppl_{tag}_sd"] = r["sd"]
        for r in s["passkey"]:
            row[f"passkey_{r['length'] / L:g}L"] = r["accuracy"]
        for r in s["sink"]:
            row[f"sink_heads_{r['n'] // L}L"] = r["sink_heads"]
            row[f"median_share_{r['n'] // L}L"] = r["median_share"]
        within = next(r["mean"] for r in s["ppl"] if r["end"] == L)
        past = [r["mean"] for r in s["ppl"] if r["start"] >= L]
        row["ppl_flat_past_L"] = bool(past) and all(p <= FLAT_PPL_FACTOR * within for p in past)
        heads = {r["n"] // L: r["sink_heads"] for r in s["sink"]}
        share = {r["n"] // L: r["median_share"] for r in s["sink"]}
        if share.get(1):
            row["median_share_8L_over_L"] = share.get(8, 0.0) / share[1]
        row["sink_kept_8L"] = (heads.get(8, 0.0) >= SINK_KEPT_FRACTION * heads[1]) if heads.get(1) else None
        row["windows"] = s["ppl"][0]["windows"]
        rows.append(row)
    return rows


#: how each evaluation is drawn: the colour of its schedule (``ropetheory.figstyle``) and a line style
STYLE = {"original": ("rope", ":"), "rope": ("rope", "-"), "rope+yarn": ("yarn", "-"),
         "rope_id": ("rope_id", "-"), "rope_id+temp": ("rope_id+temp", "--"), "half_rope": ("half_rope", "-")}
LABEL = {"original": "RoPE, not fine-tuned", "rope": "RoPE (control)", "rope+yarn": "control + YaRN x8",
         "rope_id": "RoPE-ID", "rope_id+temp": "RoPE-ID + temperature", "half_rope": "half-RoPE"}


#: steps averaged in the training curves (the batches differ in difficulty: single steps are noise)
SMOOTH_STEPS = 50


def _draw_finetune(ax_ppl, ax_ratio, trains: dict[str, dict]) -> None:
    """The control's training perplexity on unseen tokens, and each variant's ratio to it on the same batches
    (every variant reads the same tokens in the same order, so the ratio removes the batches' difficulty)."""
    from .. import figstyle
    k = SMOOTH_STEPS
    base = trains.get("rope")
    for name, t in trains.items():
        loss = np.array([r["loss"] for r in t["log"]])
        tokens = np.arange(k, loss.size + 1) * t["config"]["batch"] * t["config"]["seq_len"] / 1e6
        kw = {"color": figstyle.color(STYLE.get(name, (name, "-"))[0]), "label": LABEL.get(name, name)}
        ax_ppl.plot(tokens, np.exp(np.convolve(loss, np.ones(k) / k, mode="valid")), **kw)
        if base is not None and len(base["log"]) == loss.size:
            diff = loss - np.array([r["loss"] for r in base["log"]])
            ax_ratio.plot(tokens, np.exp(np.convolve(diff, np.ones(k) / k, mode="valid")), **kw)
    for a in (ax_ppl, ax_ratio):
        a.set_xlabel("fine-tune tokens (millions), all within L")
    ax_ppl.set_ylabel(f"training perplexity ({k}-step mean, unseen tokens)")
    ax_ppl.set_yscale("log")
    ax_ppl.set_title("fine-tune: perplexity within L")
    ax_ratio.set_ylabel(f"perplexity / control's on the same batches ({k}-step mean)")
    ax_ratio.set_yscale("log")
    ax_ratio.axhline(1.0, color="k", lw=0.8)
    ax_ratio.set_title("fine-tune: cost against the control")


def draw(folder: str | pathlib.Path, out: str | pathlib.Path) -> list[pathlib.Path]:
    """Five panels: perplexity per range, sink heads per length, passkey accuracy per length, the control's
    training perplexity, and each variant's over the control's on the same batches."""
    import matplotlib.pyplot as plt
    from .. import figstyle
    evals, trains = load_results(pathlib.Path(folder))
    fig, ax = plt.subplots(1, 5, figsize=(21, 4.2))
    L = 1
    for name, ev in evals.items():
        s = summarise(ev)
        L = s["L"]
        col, ls = STYLE.get(name, (name, "-"))
        kw = {"color": figstyle.color(col), "ls": ls, "marker": "o", "label": LABEL.get(name, name)}
        mid = [np.sqrt(max(r["start"], 1) * r["end"]) / L for r in s["ppl"]]
        ax[0].errorbar(mid, [r["mean"] for r in s["ppl"]], yerr=[r["sd"] for r in s["ppl"]], capsize=3, **kw)
        ax[1].plot([r["n"] / L for r in s["sink"]], [r["sink_heads"] for r in s["sink"]], **kw)
        ax[2].plot([r["length"] / L for r in s["passkey"]], [r["accuracy"] for r in s["passkey"]], **kw)
    _draw_finetune(ax[3], ax[4], trains)
    for a in ax[:3]:
        a.set_xscale("log", base=2)
        a.axvline(1.0, color="k", lw=0.8, ls="--", label="L")
        a.set_xlabel(f"length / L (L = {L} tokens)")
    ax[0].set_yscale("log")
    ax[0].set_ylabel("perplexity (mean over held-out windows, bars: sd)")
    ax[0].set_title("perplexity per range")
    ax[1].set_ylabel(f"sink heads (share > {SINK_HEAD_SHARE:g}), mean over windows")
    ax[1].set_title("heads with a working sink")
    ax[2].set_ylabel("passkey accuracy (fraction of prompts)")
    ax[2].set_ylim(-0.05, 1.05)
    ax[2].set_title("passkey retrieval")
    for a in ax:
        a.legend(fontsize=7)
    fig.tight_layout()
    o = pathlib.Path(out)
    return figstyle.save_figures(fig, [o.with_suffix(".png"), o.with_suffix(".svg")])


def _fmt(x: float) -> str:
    """Three significant digits, no exponent below 1e5 (perplexities, shares)."""
    if x == 0:
        return "0"
    if abs(x) < 1e-3:
        return f"{x:.0e}"
    return f"{x:.3g}" if abs(x) < 1e3 else f"{x:.0f}"


def markdown_table(folder: str | pathlib.Path) -> str:
    """The guide's result table: per evaluation perplexity per range (mean ± sd over windows), passkey
    accuracy per length, sink heads and median share at L and 8L."""
    evals, _ = load_results(pathlib.Path(folder))
    head = ("| evaluation | ppl [1k, L) | ppl [L, 2L) | ppl [2L, 4L) | ppl [4L, 8L) | passkey L/2, L, 2L, 4L, 8L "
            "| sink heads L → 8L | median share L → 8L |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name, ev in evals.items():
        s = summarise(ev)
        ppl = [f"{_fmt(r['mean'])} ± {_fmt(r['sd'])}" for r in s["ppl"]][:4]
        pk = ", ".join(f"{r['accuracy']:g}" for r in s["passkey"])
        sink = {r["n"] // s["L"]: r for r in s["sink"]}
        lines.append(f"| {LABEL.get(name, name)} | {' | '.join(ppl)} | {pk} | "
                     f"{sink[1]['sink_heads']:.2g} → {sink[8]['sink_heads']:.2g} | "
                     f"{_fmt(sink[1]['median_share'])} → {_fmt(sink[8]['median_share'])} |")
    return "\n".join(lines)


def finetune_cost(folder: str | pathlib.Path, steps: int = 100) -> dict[str, list[float]]:
    """Each variant's perplexity over the control's on the same batches, per block of ``steps`` steps:
    ``exp(mean(loss_v - loss_control)) - 1`` (every variant reads the same tokens in the same order)."""
    _, trains = load_results(pathlib.Path(folder))
    if "rope" not in trains:
        return {}
    base = np.array([r["loss"] for r in trains["rope"]["log"]])
    out = {}
    for name, t in trains.items():
        loss = np.array([r["loss"] for r in t["log"]])
        if name != "rope" and loss.size == base.size:
            d = loss - base
            out[name] = [float(np.expm1(d[a:a + steps].mean())) for a in range(0, d.size, steps)]
    return out


def draw_geometry(folder: str | pathlib.Path, out: str | pathlib.Path) -> list[pathlib.Path]:
    """Two panels per geometry analysis, against length on the analysis grid: the FSV ratio (median over
    heads, band: quartiles) with its median predicted floor as a dotted line, and the median sink share."""
    import matplotlib.pyplot as plt
    from .. import figstyle
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.6))
    L = 1
    for name, g in load_geometry(folder).items():
        L, heads = int(g["train_len"]), g["heads"]
        idx = [i for i, m in enumerate(g["grid"]) if m >= L // 8]
        n = np.array([g["grid"][i] for i in idx], dtype=np.float64) / L
        rho = np.array([np.percentile(_at(heads, "rho_measured", i), [25, 50, 75]) for i in idx])
        share = [np.median(_at(heads, "sink_rope", i)) for i in idx]
        col = figstyle.color(STYLE.get(name, (name, "-"))[0])
        ax[0].plot(n, rho[:, 1], color=col, label=LABEL.get(name, name))
        ax[0].fill_between(n, rho[:, 0], rho[:, 2], color=col, alpha=0.15)
        ax[0].axhline(float(np.median([h["predicted_floor"] for h in heads])), color=col, ls=":", lw=1,
                      label=f"{LABEL.get(name, name)}: predicted floor")
        ax[1].plot(n, share, color=col, label=LABEL.get(name, name))
    for a in ax:
        a.set_xscale("log", base=2)
        a.axvline(1.0, color="k", lw=0.8, ls="--", label="L")
        a.set_xlabel(f"length n / L (L = {L} tokens)")
        a.legend(fontsize=7)
    ax[0].set_ylabel("FSV ratio of the keys, sigma1(post) / sigma1(pre)")
    ax[0].set_title("FSV ratio (median over heads, band: quartiles)")
    ax[1].set_yscale("log")
    ax[1].set_ylabel("sink share (median over heads, no temperature)")
    ax[1].set_title("the sink's share")
    fig.tight_layout()
    o = pathlib.Path(out)
    return figstyle.save_figures(fig, [o.with_suffix(".png"), o.with_suffix(".svg")])
