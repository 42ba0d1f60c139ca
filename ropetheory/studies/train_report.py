"""The training study's numbers and figures, from what ``ropetheory.studies.train`` saved.

``save`` writes ``summary.json`` (the raw evaluation and geometry rows, the run's configuration and data
recipe); ``report`` derives from it ``per_model.csv``, ``table.csv``, ``correlations.csv`` and
``claims.json``, prints them and draws:

* ``train_ppl.png``: perplexity (positions ``[n/2, n)``) against evaluation length, per variant;
* ``train_retrieval.png``: retrieval accuracy (passkey and key-value, all depths) against length;
* ``train_geometry.png``: the measured FSV ratio (median over heads, mean over seeds) against length beside
  each schedule's predicted floor, from ``geometry_curves.csv`` (written from ``analysis/``);
* ``train_scatter.png``: each geometric measure against retrieval accuracy at 4L, one point per model;
* ``train_depth.png``: retrieval accuracy against length and needle depth, one panel per variant.

Error bars are one standard deviation over seeds; the training length is marked on every axis of length.
"""
from __future__ import annotations

import math
import pathlib
import shutil
from typing import Any

import numpy as np

from ..store import atomic_open, write_csv, write_json
from ..core.verdicts import Verdict
from .. import figstyle
from ..schedules import names
from .common import save_figure
from ..core.checks import read_json_file
from ..core.ranks import spearman

__all__ = ["save", "report", "correlations"]

#: outcomes correlated with the geometry, at these multiples of L (1: a control, inside the training length)
OUTCOME_MULTIPLES = (1, 2, 4, 8)
MEASURES = ("floor", "dist_floor_L", "drift_L_4L", "sink_drop")
FIGURES = ("train_ppl.png", "train_retrieval.png", "train_geometry.png", "train_scatter.png", "train_depth.png")


def _acc(row: dict, i: int) -> float:
    """Retrieval accuracy at the ``i``-th length: mean over tasks and depths."""
    return float(np.mean([row["retrieval"][k][i] for k in row["retrieval"]]))


def _mean_sd(xs: list[float]) -> tuple[float | None, float | None]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return None, None
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def per_model(res: dict) -> list[dict[str, Any]]:
    """One row per trained model (schedule, seed): its geometry and its outcomes at every length."""
    geo = {(g["schedule"], g["seed"]): g for g in res["geometry"]}
    rows = []
    for e in res["evals"]:
        if e["change"] is not None:
            continue
        g = geo.get((e["schedule"], e["seed"]), {})
        row = {"schedule": e["schedule"], "seed": e["seed"], **{k: g.get(k) for k in
               ("floor", "rho_L", "rho_4L", "dist_floor_L", "drift_L_4L", "sink_L", "sink_4L", "sink_drop",
                "C1_frac", "C2_frac")}}
        L = res["config"]["train_len"]
        for i, n in enumerate(e["lengths"]):
            row[f"ppl_{n // L}L"] = e["ppl"][i]
            row[f"acc_{n // L}L"] = _acc(e, i)
        rows.append(row)
    return rows


def correlations(rows: list[dict]) -> list[dict[str, Any]]:
    """Spearman's rho and its two-sided p-value between each measure and each outcome, across models."""
    out = []
    for m in MEASURES:
        for kind in ("acc", "ppl"):
            for k in OUTCOME_MULTIPLES:
                pairs = [(r[m], r.get(f"{kind}_{k}L")) for r in rows]
                pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
                rec = {
                    "measure": m,
                    "outcome": f"{kind}_{k}L",
                    "n_models": len(pairs),
                    "spearman": None,
                    "p_value": None,
                }
                if len(pairs) >= 3 and len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1:
                    rec["spearman"], rec["p_value"] = spearman([a for a, _ in pairs], [b for _, b in pairs])
                if f"{kind}_{k}L" in rows[0] if rows else False:
                    out.append(rec)
    return out


def table(res: dict) -> list[dict[str, Any]]:
    """Per variant: mean and sd over seeds of perplexity and retrieval at each length, and its geometry."""
    L = res["config"]["train_len"]
    geo: dict[str, list] = {}
    for g in res["geometry"]:
        geo.setdefault(g["schedule"], []).append(g)
    rows = []
    for v in dict.fromkeys(e["variant"] for e in res["evals"]):
        es = [e for e in res["evals"] if e["variant"] == v]
        row = {"variant": v, "seeds": len(es)}
        for i, n in enumerate(es[0]["lengths"]):
            row[f"ppl_{n // L}L"], row[f"ppl_{n // L}L_sd"] = _mean_sd([e["ppl"][i] for e in es])
            row[f"acc_{n // L}L"], row[f"acc_{n // L}L_sd"] = _mean_sd([_acc(e, i) for e in es])
        gs = geo.get(es[0]["schedule"], [])
        for k in ("floor", "C1_frac", "C2_frac", "drift_L_4L", "sink_drop"):
            row[k] = _mean_sd([g[k] for g in gs])[0]
        row["geometry_of"] = es[0]["schedule"]
        rows.append(row)
    return rows


def _paper_variant(label: str) -> bool:
    """A series the paper ranks: a label (``schedules.names``) of one of the paper's schedules, an
    inference-time variant included (``rope_id+temp`` counts as RoPE-ID; PI / YaRN reads and NoPE do not)."""
    return names.label_schedule(label) in names.PAPER


def _is_rope_id(label: str) -> bool:
    return names.label_schedule(label) == "rope_id"


def claims(tab: list[dict], multiples=(2, 4, 8)) -> list[dict[str, Any]]:
    """The paper's ordering at this scale, by retrieval accuracy and by perplexity at ``k L``: among the
    schedules it compares (``_paper_variant``), RoPE-ID (either form) strictly best and RoPE strictly
    worst. A tie does not confirm it (every model at 0 accuracy). The best of every variant (NoPE and
    the inference-time PI / YaRN included) is reported beside it."""
    out = []
    for k in multiples:
        for what, sign in (("acc", 1), ("ppl", -1)):        # sign * value: larger is better
            col = f"{what}_{k}L"
            allv = {r["variant"]: r[col] for r in tab if r.get(col) is not None}
            vals = {v: x for v, x in allv.items() if _paper_variant(v)}
            ids = [v for v in vals if _is_rope_id(v)]
            if "rope" not in vals or not ids or len(vals) < 3:
                continue
            rid = max(ids, key=lambda v: sign * vals[v])
            rest = [sign * x for v, x in vals.items() if not _is_rope_id(v)]
            non_id = {v: x for v, x in vals.items() if not _is_rope_id(v)}
            best_ok = sign * vals[rid] > max(rest)
            worst_ok = all(sign * vals["rope"] < sign * x for v, x in non_id.items() if v != "rope")
            out.append({"claim": f"RoPE-ID best, RoPE worst by {what} at {k}L",
                        "best": max(vals, key=lambda v: sign * vals[v]),
                        "worst": min(vals, key=lambda v: sign * vals[v]),
                        "best_of_all_variants": max(allv, key=lambda v: sign * allv[v]),
                        "rope_id": vals[rid], "rope": vals["rope"], "holds": bool(best_ok and worst_ok)})
    return out


def markdown_table(s: dict) -> str:
    """The README's table: per variant, perplexity and retrieval at 1, 2, 4, 8 L (mean ± sd over seeds)
    beside the trained schedule's geometry (median floor, fractions of heads meeting C1 and C2)."""
    L = s["config"]["train_len"]
    mult = [m for m in (1, 2, 4, 8) if f"ppl_{m}L" in s["table"][0]]
    head = (
        "| variant | "
        + " | ".join(f"ppl {m}L" for m in mult)
        + " | "
        + " | ".join(f"retrieval {m}L" for m in mult)
        + " | floor (median head) | heads meeting C1 | heads meeting C2 |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in s["table"]:
        lines.append(
            f"| {r['variant']} | "
            + " | ".join(_fmt(r[f'ppl_{m}L'], r[f'ppl_{m}L_sd'], '{:.0f}') for m in mult)
            + " | "
            + " | ".join(_fmt(r[f'acc_{m}L'], r[f'acc_{m}L_sd']) for m in mult)
            + f" | {_fmt(r['floor'], None)} | {_fmt(r['C1_frac'], None)} | {_fmt(r['C2_frac'], None)} |"
        )
    return "\n".join(lines) + f"\n\nL = {L} tokens; ± one standard deviation over {s['table'][0]['seeds']} seeds.\n"


def derive(raw: dict) -> dict[str, Any]:
    """Everything derived from the saved raw rows (evaluations, geometry, configuration): per-model rows,
    the table, the correlations (across all trained models, and across the rotating ones: NoPE's floor
    is 1 by construction, which can carry a rank correlation alone) and the claims."""
    rows = per_model(raw)
    tab = table(raw)
    rotating = [r for r in rows if names.label_schedule(r["schedule"]) != names.NOPE]
    cor = [{"models": "all trained", **c} for c in correlations(rows)] + \
          [{"models": "rotating (no NoPE)", **c} for c in correlations(rotating)]
    return {"per_model": rows, "table": tab, "correlations": cor, "claims": claims(tab)}


def save(res: dict, out: pathlib.Path) -> None:
    """``summary.json``: the raw rows and the run's description (the derived numbers are redrawn from it)."""
    write_json(out / "summary.json", res)


def _write_derived(s: dict, out: pathlib.Path) -> dict:
    d = derive(s)
    write_csv(out / "per_model.csv", d["per_model"])
    write_csv(out / "table.csv", d["table"])
    write_csv(out / "correlations.csv", d["correlations"])
    write_json(out / "claims.json", d["claims"])
    with atomic_open(out / "table.md", "w") as fh:
        fh.write(markdown_table({**s, **d}))
    return d


def _fmt(m, s, f="{:.2f}"):
    return "-" if m is None else (f.format(m) + ("" if s is None else " ± " + f.format(s)))


def _read_csv(path: pathlib.Path) -> list[dict]:
    import csv
    with open(path) as fh:
        return list(csv.DictReader(fh))


def geometry_curves(out: pathlib.Path) -> list[dict[str, Any]]:
    """Per trained model and analysis length: the median head's measured FSV ratio and the median
    predicted floor, from ``analysis/*.json`` (the figure of the FSV ratio is drawn from these rows)."""
    rows = []
    for f in sorted((out / "analysis").glob("*_seed*.json")):
        sched, _, seed = f.stem.rpartition("_seed")
        a = read_json_file("--out", f, saved=True)
        rho = np.array([[np.nan if v is None else v for v in h["rho_measured"]] for h in a["heads"]])
        floor = float(np.median([h["predicted_floor"] for h in a["heads"]]))
        rows += [{"schedule": sched, "seed": int(seed), "n": int(n), "rho_median_head": float(np.nanmedian(rho[:, i])),
                  "floor_median_head": floor} for i, n in enumerate(a["grid"])]
    return rows


def report(out: pathlib.Path, docs: pathlib.Path | None = None) -> list[pathlib.Path]:
    """Print the table, the correlations and the claims; draw the figures; copy them to ``docs``."""
    s = read_json_file("--out", out / "summary.json", saved=True)
    s.update(_write_derived(s, out))
    if (out / "analysis").is_dir():
        write_csv(out / "geometry_curves.csv", geometry_curves(out))
    L = s["config"]["train_len"]
    mult = [n // L for n in s["evals"][0]["lengths"]]
    print(
        f"{'variant':16s}"
        + "".join(f"{f'ppl {m}L':>18s}" for m in mult)
        + "".join(f"{f'acc {m}L':>14s}" for m in mult)
        + "  floor  C1   C2"
    )
    for r in s["table"]:
        print(f"{r['variant']:16s}" + "".join(f"{_fmt(r[f'ppl_{m}L'], r[f'ppl_{m}L_sd'], '{:.1f}'):>18s}" for m in mult)
              + "".join(f"{_fmt(r[f'acc_{m}L'], r[f'acc_{m}L_sd']):>14s}" for m in mult)
              + f"  {_fmt(r['floor'], None)} {_fmt(r['C1_frac'], None)} {_fmt(r['C2_frac'], None)}")
    for c in s["correlations"]:
        if c["spearman"] is not None:
            print(f"  spearman({c['measure']}, {c['outcome']}) = {c['spearman']:+.2f} (p = {c['p_value']:.3g}, "
                  f"{c['n_models']} models: {c['models']})")
    for c in s["claims"]:
        print(f"  [{Verdict.of(bool(c['holds']))}] {c['claim']}: best {c['best']}, "
              f"worst {c['worst']} (best of every variant: {c['best_of_all_variants']})")
    paths = _plot(s, out)
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        for name in ("table.csv", "table.md", "per_model.csv", "correlations.csv", "claims.json", "summary.json",
                     "train_log.csv", "geometry_curves.csv"):
            if (out / name).exists():
                shutil.copy(out / name, docs / name)
        for q in paths:
            shutil.copy(q, docs / q.name)
    return paths


#: a variant whose mean perplexity passes this gets a panel of its own (the rotating variants stay below ~150,
#: NoPE reaches ~1e4 past L: on one axis it would flatten the other seven)
PPL_OWN_PANEL = 500.0
#: variants at one length are spread over this fraction of a factor of 2 on the log-2 length axis, so their
#: error bars do not overlap
DODGE_OCTAVES = 0.3


def _dodged(lengths: list[int], i: int, k: int) -> list[float]:
    """The lengths of variant ``i`` of ``k``, shifted by its share of ``DODGE_OCTAVES`` (log-2 axis)."""
    shift = (i - (k - 1) / 2) * DODGE_OCTAVES / max(k - 1, 1)
    return [n * 2.0 ** shift for n in lengths]


def _errorbars(ax, rows: list[dict], key: str, L: int, lengths: list[int], order: list[str]) -> None:
    """One line with ± 1 sd error bars per variant, dodged in x; L marked; a log-2 length axis."""
    for r in rows:
        m = [r[f"{key}_{n // L}L"] for n in lengths]
        sd = [r[f"{key}_{n // L}L_sd"] for n in lengths]
        ax.errorbar(_dodged(lengths, order.index(r["variant"]), len(order)), m, yerr=sd, marker="o", ms=3,
                    capsize=2, label=r["variant"], color=figstyle.color(r["variant"]),
                    ls="--" if "+" in r["variant"] else "-")
    ax.axvline(L, color="k", lw=0.8, ls=":", label=f"training length L = {L}")
    ax.set_xscale("log", base=2)
    ax.set_xlim(L / 1.5, max(lengths) * 1.5)          # L (the first length) inside the axes, not on them
    ax.set_xticks(lengths, [f"{n}" for n in lengths])
    ax.set_xlabel("evaluation length n (tokens)")


def _plot_ppl(s: dict, L: int, lengths: list[int]):
    """Perplexity per variant: the variants past ``PPL_OWN_PANEL`` (NoPE) in a panel of their own."""
    import matplotlib.pyplot as plt
    seeds = s["table"][0]["seeds"]
    order = [r["variant"] for r in s["table"]]
    high = [r for r in s["table"] if max(r[f"ppl_{n // L}L"] for n in lengths) > PPL_OWN_PANEL]
    groups = [[r for r in s["table"] if r not in high], high] if high else [s["table"]]
    fig, axs = plt.subplots(1, len(groups), figsize=(6.4 * (1 + 0.6 * (len(groups) - 1)), 4.2), squeeze=False,
                            gridspec_kw={"width_ratios": [1, 0.6][:len(groups)]})
    for ax, rows in zip(axs[0], groups, strict=True):
        _errorbars(ax, rows, "ppl", L, lengths, order)
        ax.set_yscale("log")
        if len(rows) > 2:                             # below the axes: no error bar behind it
            ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
        else:
            ax.legend(fontsize=7, loc="upper left")
    axs[0][0].set_ylabel(f"perplexity on positions [n/2, n)\n(± 1 sd over {seeds} seeds)")
    if high:
        axs[0][0].set_title(f"variants below {PPL_OWN_PANEL:g}")
        axs[0][1].set_title(f"{', '.join(r['variant'] for r in high)}: own scale")
    return fig


def _plot_retrieval(s: dict, L: int, lengths: list[int]):
    import matplotlib.pyplot as plt
    seeds = s["table"][0]["seeds"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _errorbars(ax, s["table"], "acc", L, lengths, [r["variant"] for r in s["table"]])
    ax.set_ylabel(f"retrieval accuracy (passkey + key-value)\n(± 1 sd over {seeds} seeds)")
    ax.set_title(f"error bars: ± 1 sd over {seeds} seeds; variants offset in n to keep them apart", fontsize=8)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))   # below: hides no bar
    return fig


def _plot(s: dict, out: pathlib.Path) -> list[pathlib.Path]:
    import matplotlib.pyplot as plt
    L = s["config"]["train_len"]
    lengths = s["evals"][0]["lengths"]
    paths = [_plot_ppl(s, L, lengths), _plot_retrieval(s, L, lengths)]
    paths = [save_figure(fig, out / fname) for fig, fname in zip(paths, FIGURES[:2], strict=True)]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    curves = _read_csv(out / "geometry_curves.csv")
    for sched in dict.fromkeys(r["schedule"] for r in curves):
        rs = [r for r in curves if r["schedule"] == sched]
        ns = sorted({int(r["n"]) for r in rs})
        rho = [np.mean([float(r["rho_median_head"]) for r in rs if int(r["n"]) == n]) for n in ns]
        line, = ax.plot(ns, rho, color=figstyle.color(sched), label=f"{sched}: measured (median head, mean of seeds)")
        ax.axhline(float(np.mean([float(r["floor_median_head"]) for r in rs])), color=line.get_color(), ls="--", lw=0.8)
    ax.axvline(L, color="k", lw=0.8, ls=":", label=f"training length L = {L}")
    ax.set_xscale("log")
    ax.set_xlabel("length n (tokens)")
    ax.set_ylabel("FSV ratio rho_n (dashed: predicted floor)")
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / FIGURES[2]))
    rows = s["per_model"]
    acc_col = "acc_4L" if rows and "acc_4L" in rows[0] else f"acc_{lengths[-1] // L}L"
    fig, axs = plt.subplots(1, len(MEASURES), figsize=(12, 3.4), sharey=True)
    for ax, measure in zip(axs, MEASURES, strict=False):
        for sched in dict.fromkeys(r["schedule"] for r in rows):
            pts = [(r[measure], r[acc_col]) for r in rows if r["schedule"] == sched and r[measure] is not None]
            if pts:
                ax.scatter(*zip(*pts, strict=False), s=14, color=figstyle.color(sched), label=sched)
        ax.set_xlabel(measure)
    axs[0].set_ylabel(f"retrieval accuracy at {acc_col[4:]} (L = {L})")
    if axs[0].get_legend_handles_labels()[0]:
        axs[0].legend(fontsize=7)
    paths.append(save_figure(fig, out / FIGURES[3]))
    paths.append(_plot_depth(s, out))
    return paths


def _plot_depth(s: dict, out: pathlib.Path) -> pathlib.Path:
    """Accuracy (mean over seeds and both tasks) on a length x depth grid, one panel per variant."""
    import matplotlib.pyplot as plt
    from ..training.evaluate import DEPTHS
    L = s["config"]["train_len"]
    variants = list(dict.fromkeys(e["variant"] for e in s["evals"]))
    cols = 4
    rows = -(-len(variants) // cols)
    fig, axs = plt.subplots(rows, cols, figsize=(2.8 * cols + 1, 2.4 * rows + 0.6), squeeze=False, sharex=True,
                            sharey=True, layout="constrained")
    lengths = s["evals"][0]["lengths"]
    im = None
    for ax, v in zip(axs.flat, variants, strict=False):
        es = [e for e in s["evals"] if e["variant"] == v]
        acc = np.mean([[np.mean([e["retrieval"][k][i] for k in e["retrieval"]], axis=0) for i in range(len(lengths))]
                       for e in es], axis=0)                                # (lengths, depths)
        im = ax.imshow(acc.T, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(lengths)), [f"{n // L}L" for n in lengths])
        ax.set_yticks(range(len(DEPTHS)), [f"{x:g}" for x in DEPTHS])
        ax.set_title(v, fontsize=9)
    fig.supxlabel(f"evaluation length (multiples of the training length L = {L} tokens)")
    fig.supylabel("needle depth (relative position in the filler)")
    for ax in list(axs.flat)[len(variants):]:
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=axs, shrink=0.8, label="retrieval accuracy")
    path = out / FIGURES[4]
    fig.savefig(path, dpi=figstyle.PNG_DPI)   # not save_figure: its tight_layout would undo the constrained layout
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path
