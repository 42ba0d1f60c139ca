"""The paper's real-model figures (Figs. 2-6, A.3), drawn only from a saved ``analysis.json``."""
from __future__ import annotations

import pathlib

import numpy as np

from .. import figstyle
from ..core.checks import read_json_file

__all__ = ["plot_all"]


def _arr(heads, key):
    return np.array([[np.nan if x is None else x for x in h[key]] for h in heads], dtype=float)


def _mark_L(ax, L, n):
    if n >= L:
        ax.axvline(L, color="k", ls="--", lw=0.8, label=f"training length L = {L}")


def _band(ax, g, A, label, color, ls="-"):
    med = np.nanmedian(A, axis=0)
    lo, hi = np.nanpercentile(A, 10, axis=0), np.nanpercentile(A, 90, axis=0)
    ax.plot(g, med, ls, color=color, label=f"{label} (median)")
    ax.fill_between(g, lo, hi, color=color, alpha=0.15)


def plot_all(d: pathlib.Path) -> list[pathlib.Path]:
    """Draw every figure of ``d/analysis.json`` into ``d`` (PNG and PDF), from the saved numbers alone: each
    ``_fig*`` function below makes one from the analysis and returns ``(figure, file name, title)``."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    res = read_json_file("--out", d / "analysis.json", saved=True)
    model = res.get("meta", {}).get("model", d.name)
    q = " (4-bit quantised)" if res.get("meta", {}).get("quantised") else ""
    paths = []
    for draw in (_fig2_cosines, _fig3_pca, _fig4_fsv, _fig5_sink_key, _fig6_sink_share, _a3_clusters):
        fig, name, title = draw(plt, res)
        for a in fig.axes:
            if a.get_xscale() == "log":
                a.xaxis.set_minor_formatter(NullFormatter())
        fig.suptitle(f"{model}{q}: {title}", fontsize=10)
        paths.append(figstyle.save_figure(fig, d / name))
    if res.get("sink_decomposition", {}).get("heads"):
        paths.append(_plot_sink_decomposition(res, d / "sink_decomposition.png", f"{model}{q}"))
    return paths


def _fig2_cosines(plt, res: dict):
    """Fig. 2: the cluster cosines before and after RoPE against length."""
    H, g, L, n = res["heads"], np.array(res["grid"]), res["train_len"], res["n"]
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    for i, (k, title) in enumerate((("kk", "key-key"), ("qq", "query-query"), ("kq", "key-query"))):
        _band(ax[i], g, _arr(H, f"cos_{k}_pre"), "no RoPE", "tab:blue")
        _band(ax[i], g, _arr(H, f"cos_{k}_post"), "RoPE", "tab:red")
        ax[i].set_xscale("log")
        ax[i].set_xlabel("length n (tokens)")
        ax[i].set_ylabel(f"mean {title} cosine")
        ax[i].axhline(0, color="gray", lw=0.5)
        _mark_L(ax[i], L, n)
        ax[i].legend(fontsize=7)
        ax[i].set_title(f"{title} (band: 10-90% of heads)", fontsize=9)
    return fig, "fig2_cosines.png", "Fig. 2, cluster cosines against length"


def _fig3_pca(plt, res: dict):
    """Fig. 3: one head's keys and queries in its pre-RoPE principal plane, at n = L, 2L, ..."""
    L = res["train_len"]
    snaps = res["pca"]["snapshots"]
    fig, ax = plt.subplots(1, len(snaps), figsize=(3.3 * len(snaps), 3.3), squeeze=False)
    for a, s in zip(ax[0], snaps, strict=False):
        K, Q = np.array(s["keys"]), np.array(s["queries"])
        a.scatter(K[:, 0], K[:, 1], s=3, c="tab:blue", label="keys")
        a.scatter(Q[:, 0], Q[:, 1], s=3, c="tab:orange", label="queries")
        a.set_title(s["label"], fontsize=9)
        a.set_xlabel("PC1 (pre-RoPE, n = min(L, n))")
        a.set_ylabel("PC2")
        a.legend(fontsize=7)
    return fig, "fig3_pca.png", f"Fig. 3, layer {res['pca']['layer']} head 0 in one projection (L = {L})"


def _fig4_fsv(plt, res: dict):
    """Fig. 4: PC1 variance share; FSV ratio measured against the rank-1 prediction; stable ranks."""
    H, g, L, n = res["heads"], np.array(res["grid"]), res["train_len"], res["n"]
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    ax[0].hist([h["pc1_var"] for h in H], bins=np.linspace(0, 1, 41), color="tab:gray")
    ax[0].set_xlabel("PC1 variance share (pre-RoPE keys, whole text)")
    ax[0].set_ylabel("heads")
    ax[0].set_title("PC1 variance across heads", fontsize=9)
    _band(ax[1], g, _arr(H, "rho_measured"), "measured", "tab:red")
    _band(ax[1], g, _arr(H, "rho_predicted"), "rank-1 prediction", "tab:green", "--")
    ax[1].plot(g, np.full(g.shape, np.median([h["rho_noisy_limit"] for h in H])), ":", color="tab:purple",
               label="rank-1 + noise limit (median)")
    ax[1].set_xscale("log")
    ax[1].set_xlabel("length n (tokens)")
    ax[1].set_ylabel("FSV ratio ||Rope(K_n)||_2 / ||K_n||_2")
    _mark_L(ax[1], L, n)
    ax[1].legend(fontsize=7)
    _band(ax[2], g, _arr(H, "srank_pre"), "no RoPE", "tab:blue")
    _band(ax[2], g, _arr(H, "srank_post"), "RoPE", "tab:red")
    ax[2].set_xscale("log")
    ax[2].set_xlabel("length n (tokens)")
    ax[2].set_ylabel("stable rank of the keys")
    _mark_L(ax[2], L, n)
    ax[2].legend(fontsize=7)
    return fig, "fig4_fsv.png", "Fig. 4, rank-1-like keys and what RoPE does to them"


def _fig5_sink_key(plt, res: dict):
    """Fig. 5: the sink key's norm and the mean logit per key position."""
    H = res["heads"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    ratios = [h["sink_key_norm_ratio"] for h in H]
    ax[0].hist(ratios, bins=np.linspace(0, max(2.0, max(ratios) * 1.05), 41), color="tab:gray")
    ax[0].axvline(1, color="k", lw=0.8)
    ax[0].set_xlabel("||k_0|| / median ||k_i|| (pre-RoPE)")
    ax[0].set_ylabel("heads")
    A = _arr(H, "key_logit_first")
    ax[1].plot(np.arange(A.shape[1]), np.nanmedian(A, axis=0), "o-", ms=3, label="median over heads")
    ax[1].fill_between(np.arange(A.shape[1]), np.nanpercentile(A, 10, 0), np.nanpercentile(A, 90, 0), alpha=0.2,
                       label="10-90% of heads")
    ax[1].set_xlabel("key position j")
    ax[1].set_ylabel("mean logit over later queries / largest")
    ax[1].legend(fontsize=7)
    return fig, "fig5_sink_key.png", "Fig. 5, the sink key"


def _fig6_sink_share(plt, res: dict):
    """Fig. 6: the sink's attention share against length (global-attention layers)."""
    H, g, L, n = res["heads"], np.array(res["grid"]), res["train_len"], res["n"]
    glob = [h for h in H if h["window"] is None]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    if glob:
        _band(ax[0], g, _arr(glob, "sink_rope"), "RoPE", "tab:red")
        _band(ax[0], g, _arr(glob, "sink_norope"), "no RoPE (same q, k un-rotated)", "tab:blue")
        R = _arr(glob, "sink_rope")
        ax[1].plot(g, np.sum(R > 0.5, axis=0), "o-", color="tab:red", ms=3, label="RoPE")
        ax[1].plot(g, np.sum(_arr(glob, "sink_norope") > 0.5, axis=0), "s-", color="tab:blue", ms=3, label="no RoPE")
    for a in ax:
        a.set_xscale("log")
        a.set_xlabel("length n (tokens)")
        _mark_L(a, L, n)
        a.legend(fontsize=7)
    ax[0].set_ylabel("attention share of key 0 (last 32 queries)")
    ax[1].set_ylabel(f"heads with a sink (share > 0.5) of {len(glob)}")
    return fig, "fig6_sink_share.png", "Fig. 6, sink share against length (global-attention layers)"


def _a3_clusters(plt, res: dict):
    """A.3: silhouette and Davies-Bouldin scores of the key / query clusters against length."""
    H, L, n = res["heads"], res["train_len"], res["n"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    ns = [c["n"] for c in H[0]["clusters"]]
    for key, a, lab in (("silhouette", ax[0], "silhouette score (cosine)"), ("db", ax[1], "Davies-Bouldin index")):
        for t, col, nm in (("pre", "tab:blue", "no RoPE"), ("post", "tab:red", "RoPE")):
            A = np.array([[c[f"{key}_{t}"] for c in h["clusters"]] for h in H])
            if A.size:
                _band(a, np.array(ns), A, nm, col)
        a.set_xscale("log")
        a.set_xlabel("length n (tokens)")
        a.set_ylabel(lab)
        _mark_L(a, L, n)
        a.legend(fontsize=7)
    return fig, "a3_clusters.png", "A.3, key/query cluster quality (200 keys + 200 queries per head and length)"


def _plot_sink_decomposition(res: dict, path: pathlib.Path, title: str) -> pathlib.Path:
    """The sink's log-odds and its terms against length (medians over global heads), RoPE and un-rotated."""
    import matplotlib.pyplot as plt
    dec = res["sink_decomposition"]
    g, L, n = np.array(dec["grid"]), dec["train_len"], res["n"]
    terms = (("log_odds", "log-odds log(a0/(1-a0))", "k"), ("sink_logit", "sink logit s0", "tab:red"),
             ("others_mean", "others' mean mu", "tab:blue"), ("dilution", "dilution log(n-1)", "tab:gray"),
             ("spread", "spread kappa", "tab:green"))
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for a, kind, label in zip(ax, ("rope", "norope"), ("RoPE", "same q, k un-rotated"), strict=True):
        med = dec["median"][kind]
        for key, name, col in terms:
            a.plot(g, np.array([np.nan if x is None else x for x in med[key]]), "o-", ms=3, color=col, label=name)
        a.set_xscale("log")
        a.set_xlabel("length n (tokens)")
        a.set_title(f"{label} (median of {dec['heads']} heads, last {dec['queries']} queries)", fontsize=9)
        a.axhline(0, color="gray", lw=0.5)
        _mark_L(a, L, n)
        a.legend(fontsize=7)
    ax[0].set_ylabel("nats")
    fig.suptitle(f"{title}: the sink's log-odds = (s0 - mu) - log(n - 1) - kappa", fontsize=10)
    return figstyle.save_figure(fig, path)
