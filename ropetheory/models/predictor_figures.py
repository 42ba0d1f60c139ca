"""The collapse-predictor figure: the change of the sink's log-odds from ``L`` to ``kL`` against each candidate's
change (``.predictors``), one panel per candidate, drawn only from a saved ``analysis.json``."""
from __future__ import annotations

import pathlib
import textwrap
from typing import Any

import numpy as np

from .. import figstyle
from ..core.checks import read_json_file
from .predictors import CANDIDATES, collapse_predictors

__all__ = ["plot_collapse_predictors", "FIGURE_NAME"]

#: the figure's file name in the analysis folder
FIGURE_NAME = "collapse_predictors.png"
_UNITS = {"1": "dimensionless", "nats": "nats", "rad": "radians"}
_LABELS = {"fsv_ratio": "change of FSV ratio rho", "silhouette": "change of silhouette (after RoPE)",
           "cos_kq_post": "change of key-query cosine (after RoPE)", "others_mean": "change of others' mean logit mu",
           "phase_drift": "slow planes' unseen phase drift"}


def _panel(ax, name: str, cand: dict[str, Any], points: list[dict[str, Any]], ks: list[int]) -> None:
    ax.set_xlabel(f"{_LABELS[name]} ({_UNITS[cand['unit']]})", fontsize=8)
    if not cand["available"]:
        ax.text(0.5, 0.5, "missing:\n" + textwrap.fill(str(cand["missing"]), 40), ha="center", va="center",
                fontsize=7, transform=ax.transAxes)
        ax.set_title(name, fontsize=9)
        return
    for k, col in zip(ks, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=False):
        xy = np.array([(p[name], p["d_log_odds"]) for p in points
                       if p["k"] == k and p[name] is not None and p["d_log_odds"] is not None], dtype=float)
        if xy.size:
            ax.scatter(xy[:, 0], xy[:, 1], s=10, color=col, alpha=0.7, label=f"L -> {k}L")
    if cand.get("slope") is not None:
        xs = np.array(ax.get_xlim())
        ax.plot(xs, cand["intercept"] + cand["slope"] * xs, "k--", lw=0.8, label=f"line, R^2 = {cand['r2']:.2f}")
    rho, ci = cand.get("spearman"), cand.get("spearman_ci")
    txt = "n/a" if rho is None else f"{rho:+.2f}" + ("" if ci is None else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]")
    within = ", ".join(f"{k}L {'n/a' if r is None else format(r, '+.2f')}"
                       for k, r in (cand.get("spearman_within_k") or {}).items())
    ax.set_title(f"{name}: Spearman {txt}\nwithin one k: {within}", fontsize=8)
    ax.axhline(0, color="gray", lw=0.5)
    ax.legend(fontsize=6)


def plot_collapse_predictors(d: pathlib.Path) -> list[pathlib.Path]:
    """Draw ``d/collapse_predictors.png`` from ``d/analysis.json``: its ``collapse_predictors`` entry, or, for an
    analysis written before that entry, ``.predictors.collapse_predictors`` of the saved numbers. Returns the
    paths written (none when no head has a change to show)."""
    import matplotlib.pyplot as plt
    res = read_json_file("--out", pathlib.Path(d) / "analysis.json", saved=True)
    cp = res.get("collapse_predictors") or collapse_predictors(res)
    if not cp["points"]:
        return []
    cols = 3
    rows = -(-len(CANDIDATES) // cols)
    fig, ax = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), sharey=True, squeeze=False)
    for a, (name, _, _) in zip(ax.flat, CANDIDATES, strict=False):
        _panel(a, name, cp["candidates"][name], cp["points"], cp["multiples"])
    for a in list(ax.flat)[len(CANDIDATES):]:
        a.set_visible(False)
    for a in ax[:, 0]:
        a.set_ylabel("change of the sink's log-odds (nats)", fontsize=8)
    model = res.get("meta", {}).get("model", pathlib.Path(d).name)
    fig.suptitle(f"{model}: what predicts the sink's collapse from L = {cp['from_n']} to kL "
                 f"({cp['head_set']['heads']} heads, {int(cp['level'] * 100)}% bootstrap interval over heads)\n"
                 f"y: {cp['target']}", fontsize=9)
    fig.tight_layout()
    return [figstyle.save_figure(fig, pathlib.Path(d) / FIGURE_NAME)]
