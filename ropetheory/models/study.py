"""``ropetheory analyze --model NAME_OR_PATH``: a real model's keys and queries against the theory.

Pipeline: load offline (``.registry``), tokenise the long text (``.corpus``), run the model
over it in chunks with a KV cache (``chunk`` tokens at a time: the attention mask is ``chunk x n``,
never ``n x n``; with transformers' default sdpa path a single 32k-token pass asks for 36 GiB of
mask), record each layer's q and k before and after RoPE through the one attention hook
(``.hook.attention_hook``), and feed
them to one ``.stream.LayerStream`` per layer. Each layer gets its own schedule (per-layer
rope types, e.g. Gemma 3's sliding and global layers) and, for sliding layers, its window: the
C2 verdict of a sliding layer uses ``min(window, L)``.

Per head, beside the measurements: the rank-1 prediction of ``rho_n`` from the head's first
singular vector ``v`` and weights ``w_i = (k_i . v)^2`` (streamed, exact angles), its floor and
the length where the constant-weight curve is within 1% of it (``far`` grid: 90 points over
1..1e9, a step of x1.26, which is the resolution of that length), C1/C2, and the rank-1-plus-noise
limit ``rho_inf^2 = (lambda + 1/(d snr)) / (1 + 1/(d snr))`` with ``snr = lambda_1 / (tr - lambda_1)``
measured on the head (``ropetheory.theory.beyond.noisy_rank1_limit``). Numbers are written first
(``<out>/<label>/analysis.json``, ``heads.csv``, ``claims.csv``, ``collapse_predictors.csv``,
``failure_modes.csv``, ``sink_decomposition.csv``: the sink's
log-odds decomposition per head and length, ``.sinks``); the figures are drawn from them. The result also
holds ``collapse_predictors`` (``.predictors``: which head statistic tracks the change of the sink's log-odds
from L to kL; each head row keeps its ``phase_drift`` for it) and ``failure_modes`` (``.failure_modes``: the
second paper's four failure modes on the heads' own vectors beside its Gaussian model).
"""
from __future__ import annotations

import math
import pathlib
import sys
import time
from typing import Any

import numpy as np

from .. import spectra
from ..core.checks import bucket, check_integer
from ..core.renamed import renamed
from ..theory import criteria, theorems
from ..theory.beyond import noisy_rank1_limit
from .rotation import hf_to_interleaved, report_fields
from ..schedules.hf import frequencies_from_config
from ..store import write_csv, write_json
from .forward import (CHECKPOINT_EVERY_S, analysis_grid, attention_scale,
                      capture_streams, layer_schedules, training_length)
from .claims import claims
from .sinks import decomposition_rows, decomposition_summary
from .predictors import collapse_predictors, phase_drift, plane_energy, predictor_rows
from .failure_modes import failure_rows, measure_failure_modes
from ..core.errors import BadValue

__all__ = [
    "capture_streams",
    "analyze_streams",
    "layer_schedules",
    "claims",
    "run",
    "training_length",
    "attention_scale",
    "analysis_grid",
    "override_rope",
    "rank1_prediction",
    "SILHOUETTE_POINTS",
]

#: keys and queries (each) subsampled, evenly in position, for the silhouette / Davies-Bouldin scores
SILHOUETTE_POINTS = 200
#: the far grid for the length at which the rank-1 curve reaches its floor within 1%
FAR_GRID = (1e9, 90)


def rank1_prediction(w: np.ndarray, v: np.ndarray, sched: dict, grid: np.ndarray) -> np.ndarray:
    """``rho_n`` of the rank-1 cloud ``x_i = (k_i . v) v`` (model channel order) at the grid lengths.

    ``w_i = (k_i . v)^2`` (``ropetheory.models.stream.LayerStream.projections``, squared);
    ``G_n = sum_{i<n} w_i (R_i v)(R_i v)^T`` with ``R_i`` the layer's exact rotation (no attention
    factor: it cancels in the ratio) and ``||X_n||_2^2 = W_n = sum_{i<n} w_i``: the package's one streaming
    kernel, ``ropetheory.spectra.rank1_stream_curve`` (Neumaier-compensated, ``O(d^2 + chunk d)`` memory),
    on ``v`` in the interleaved order of the layer's planes. A length whose prefix has no weight (every
    projection zero) has no cloud to shrink: its ratio is 1.
    """
    w = np.asarray(w, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.int64)
    W = np.cumsum(w)[grid - 1]
    out = np.ones(grid.size)
    live = W > 0
    if live.any():
        v_il = hf_to_interleaved(np.asarray(v, dtype=np.float64), int(sched["rotary_dim"]))
        n = int(grid[-1])           # a chunk no longer than the stream (rounded to a bucket: one compilation)
        step = min(spectra.DEFAULT_POSITIONS_PER_STEP, bucket(n))
        out[live] = spectra.rank1_stream_curve(sched["theta"], v_il, grid[live], weights=w[:n],
                                               positions_per_step=step).rho
    return out


def _silhouette(K: np.ndarray, Q: np.ndarray) -> tuple[float, float]:
    """Silhouette (cosine distance) and Davies-Bouldin scores of the two clusters keys / queries.

    As scikit-learn defines them (``silhouette_score(metric="cosine")``, ``davies_bouldin_score`` on the
    unit vectors; tested equal), written for two labels with numpy: one ``m x m`` distance matrix for
    ``m <= 2 SILHOUETTE_POINTS`` points, no per-call validation (the analysis calls it ~10 times per head).
    """
    X = np.concatenate([K, Q]).astype(np.float64)
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-300)
    lab = np.r_[np.zeros(len(K), bool), np.ones(len(Q), bool)]
    D = np.clip(1.0 - X @ X.T, 0.0, 2.0)
    np.fill_diagonal(D, 0.0)
    same = lab[:, None] == lab[None, :]
    n_same = np.where(lab, lab.sum(), (~lab).sum())
    a = np.where(same, D, 0.0).sum(1) / np.maximum(n_same - 1, 1)
    b = np.where(~same, D, 0.0).sum(1) / np.maximum(len(X) - n_same, 1)
    den = np.maximum(a, b)
    sil = np.where((n_same > 1) & (den > 0), (b - a) / np.where(den > 0, den, 1.0), 0.0)
    c0, c1 = X[~lab].mean(0), X[lab].mean(0)
    s0, s1 = np.linalg.norm(X[~lab] - c0, axis=1).mean(), np.linalg.norm(X[lab] - c1, axis=1).mean()
    m = np.linalg.norm(c0 - c1)
    return float(sil.mean()), float((s0 + s1) / m) if m > 0 else 0.0


def _pick(n: int, m: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, m)).round().astype(np.int64))


def _none(x):
    """Floats for JSON: NaN (undefined, e.g. no sink in a window) becomes None."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_none(v) for v in x]
    x = float(x)
    return x if math.isfinite(x) else None


def _far_curves(cap: dict, tops: list, far: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """``rho`` on the far grid of every head's top direction, by ``(layer, kv head)``: one batched
    ``spectra.rank1_curves_batch`` call per distinct schedule."""
    groups: dict[bytes, tuple[dict, list]] = {}
    for li, ((V, _, _), sc) in enumerate(zip(tops, cap["schedules"], strict=False)):
        key = np.asarray(sc["theta"], dtype=np.float64).tobytes() + bytes(str(sc["rotary_dim"]), "ascii")
        groups.setdefault(key, (sc, []))[1].extend((li, h, hf_to_interleaved(V[h], sc["rotary_dim"]))
                                                   for h in range(V.shape[0]))
    far_rho = {}
    for sc, items in groups.values():
        rho = spectra.rank1_curves_batch(sc["theta"], np.stack([v for _, _, v in items]), far).rho
        far_rho.update({(li, h): r for (li, h, _), r in zip(items, rho, strict=False)})
    return far_rho


def _clusters(st, h: int, lengths: list[int]) -> list[dict[str, float]]:
    """Silhouette and Davies-Bouldin scores of key head ``h``'s keys against its group's queries, before
    and after RoPE, at each length (``SILHOUETTE_POINTS`` of each, evenly in position)."""
    out = []
    group = slice(h * st.group_size, (h + 1) * st.group_size)
    for m in lengths:
        ki = _pick(m, SILHOUETTE_POINTS)
        qsel = np.flatnonzero(st.query_sample_positions < m)
        qg = st.query_samples["pre"][group][:, qsel].reshape(-1, st.head_dim)
        qgp = st.query_samples["post"][group][:, qsel].reshape(-1, st.head_dim)
        qi = _pick(len(qg), SILHOUETTE_POINTS)
        s0, db0 = _silhouette(st.keys["pre"][h, ki], qg[qi])
        s1, db1 = _silhouette(st.keys["post"][h, ki], qgp[qi])
        out.append({"n": m, "silhouette_pre": s0, "silhouette_post": s1, "db_pre": db0, "db_post": db1})
    return out


def _theory(st, h: int, sc: dict, top: tuple, grid: np.ndarray, far: np.ndarray, far_rho: np.ndarray,
            L_eff: int) -> dict[str, Any]:
    """Head ``h``'s predictions: the rank-1 curve on the grid, its floor, the all-rotating floor, the reach
    length on the far grid, C1 / C2 and the rank-1-plus-noise limit (module docstring)."""
    V, lam, tr = top
    v_il = hf_to_interleaved(V[h], sc["rotary_dim"])
    lim = theorems.predicted_limit(sc["theta"], v_il)
    allrot = math.sqrt(float(lim.plane_energies.max()) / 2)
    reach = criteria.reach_length(far, far_rho, lim.rho)
    snr = lam[h] / (tr[h] - lam[h]) if tr[h] > lam[h] else math.inf
    noisy = math.sqrt(noisy_rank1_limit(sc["theta"], v_il, float(snr))) if math.isfinite(snr) else lim.rho
    drift = phase_drift(sc["theta"], plane_energy(np.diagonal(st.gram_pre[h]), sc["rotary_dim"]), L_eff, grid,
                        sc["window"])
    return {"pc1_var": float(lam[h] / tr[h]), "snr": _none(snr),
            "rho_predicted": rank1_prediction(st.projections(h, V[h]) ** 2, V[h], sc, grid),
            "rho_noisy_limit": float(noisy), "predicted_floor": float(lim.rho), "allrot_floor": allrot,
            "floor_reached_at": reach, "C1": bool(criteria.meets_c1(lim.rho, allrot)),
            "C2": bool(reach is not None and reach <= L_eff), "phase_drift": _none(drift)}


def _measured(st, h: int, sc: dict, logits: np.ndarray, norm_ratio: np.ndarray) -> dict[str, Any]:
    """Head ``h``'s measurements at the grid lengths (snapshots of ``LayerStream``), as JSON values."""
    sn = {k: v[h] for k, v in st.snapshots.items()}
    # transformers multiplies cos and sin by the attention factor (YaRN, LongRoPE): divide it out,
    # so the ratio is the rotation's alone, as the rank-1 prediction is
    lg = logits[h]
    return {"srank_pre": _none(sn["tr_pre"] / sn["lam_pre"]), "srank_post": _none(sn["tr_post"] / sn["lam_post"]),
            "rho_measured": np.sqrt(sn["lam_post"] / sn["lam_pre"]) / sc["attention_factor"],
            **{k: _none(sn[k]) for k in ("cos_kk_pre", "cos_qq_pre", "cos_kq_pre", "cos_kk_post", "cos_qq_post",
                                         "cos_kq_post", "centroid_cos", "sink_rope", "sink_norope")},
            **{k: _none(sn[k]) for k in sn if k.startswith(("sink_rope_", "sink_norope_"))},
            "sink_key_norm_ratio": float(norm_ratio[h]),
            "key_logit_first": _none(lg[:64] / np.max(lg) if lg.size and np.max(lg) > 0 else lg[:64]),
            "key0_logit_rank": int(np.sum(lg > lg[0])) if lg.size else 0}


def _head_row(li: int, h: int, st, sc: dict, L: int, theory: dict, measured: dict, clusters: list) -> dict:
    """One head's row of the analysis, in the order ``analysis.json`` and ``heads.csv`` keep."""
    meas, pred = measured.pop("rho_measured"), theory.pop("rho_predicted")
    return {"layer": li, "kv_head": h, "layer_type": sc["layer_type"], "window": sc["window"],
            "L_eff": min(L, sc["window"]) if sc["window"] else L, "attention_factor": float(sc["attention_factor"]),
            "pc1_var": theory.pop("pc1_var"), "snr": theory.pop("snr"),
            "srank_pre": measured.pop("srank_pre"), "srank_post": measured.pop("srank_post"),
            "rho_measured": _none(meas), "rho_predicted": _none(pred), "rho_abs_err": _none(np.abs(meas - pred)),
            **theory, **measured, "clusters": clusters, **report_fields(st.rotation)}


def analyze_streams(cap: dict, *, L: int, pca_layer: int | None = None, progress=None) -> dict[str, Any]:
    """Per head: measurements at the grid lengths beside the theory's predictions (see module doc).

    ``progress(k)`` (optional) is called with the number of heads finished since the last call.
    """
    t0 = time.time()
    grid = cap["grid"]
    far = spectra.log_grid(*FAR_GRID)
    heads = []
    n = int(cap["streams"][0].n_total)
    # the silhouette at about 8 lengths, and at L and each kL on the grid (.predictors compares those)
    sil_grid = sorted(set([int(m) for m in grid if m >= 64][:: max(1, len(grid) // 8)])
                      | {int(m) for m in grid if m in (L, 2 * L, 4 * L, 8 * L, 16 * L)})
    tops = [st.top_direction() for st in cap["streams"]]
    far_rho = _far_curves(cap, tops, far)
    for li, (st, sc) in enumerate(zip(cap["streams"], cap["schedules"], strict=False)):
        logits = st.key_logit_means() if n > 1 else np.zeros((st.kv_heads, 0))
        norm_ratio = st.sink_norm_ratio()
        L_eff = min(L, sc["window"]) if sc["window"] else L
        for h in range(st.kv_heads):
            theory = _theory(st, h, sc, tops[li], grid, far, far_rho[(li, h)], L_eff)
            heads.append(_head_row(li, h, st, sc, L, theory, _measured(st, h, sc, logits, norm_ratio),
                                   _clusters(st, h, sil_grid)))
            if progress:
                progress(1)
    res = {"grid": grid.tolist(), "n": n, "train_len": L, "heads": heads,
           "nll_bins": _nll_bins(cap["nll"], L), "nll_ranges": nll_ranges(cap["nll"], L),
           "capture_seconds": cap["seconds"]}
    res["sink_decomposition"] = decomposition_summary(heads, res["grid"], L)
    res["collapse_predictors"] = collapse_predictors(res)
    res["failure_modes"] = measure_failure_modes(cap, L=L)
    res["pca"] = _pca_snapshot(cap, L, pca_layer)
    res["analysis_seconds"] = time.time() - t0
    return res


def nll_ranges(nll: np.ndarray, L: int) -> list[dict[str, float]]:
    """Mean next-token loss and perplexity over ``[1024, L)`` and ``[kL, 2kL)`` for k = 1, 2, 4, ... within the text.

    ``nll[i]`` is the loss of predicting token ``i + 1`` from tokens ``0..i``; a range ``[a, b)`` is
    over predicted positions ``a..b-1`` (context lengths ``a+1..b``).
    A range reaching the end of the text holds the ``n - 1 - a`` predictions there are (``count``).
    """
    edges = [(min(1024, L // 2), L)] + [(k * L, 2 * k * L) for k in (1, 2, 4, 8, 16)]
    return [{"start": a, "end": b, "count": int(nll[a:b].size), "mean_nll": float(nll[a:b].mean()),
             "ppl": float(np.exp(nll[a:b].mean()))} for a, b in edges if b <= nll.size + 1 and a < nll.size]


def _nll_bins(nll: np.ndarray, L: int) -> list[dict[str, float]]:
    edges = sorted({0, *[int(x) for x in np.geomspace(16, max(17, nll.size), 16)], nll.size})
    return [{"start": a, "end": b, "mean_nll": float(nll[a:b].mean()), "ppl": float(np.exp(nll[a:b].mean()))}
            for a, b in zip(edges[:-1], edges[1:], strict=False) if b > a]


def _pca_snapshot(cap: dict, L: int, layer: int | None) -> dict[str, Any]:
    """Fig. 3: keys/queries of one head in the top-2 principal plane of its pre-RoPE cloud (length min(L, n))."""
    streams = cap["streams"]
    li = len(streams) // 2 if layer is None else int(layer)
    st = streams[li]
    n = st.n_total
    n0 = min(L, n)
    qsel = np.flatnonzero(st.query_sample_positions < n0)
    Q0 = st.query_samples["pre"][0][qsel].astype(np.float64)
    # principal plane of [K0; Q0] from its d x d scatter, accumulated over key blocks (no n x d matrix)
    tot, S1, S2 = len(Q0), Q0.sum(0), Q0.T @ Q0
    for _, _, Kb in st.keys["pre"].blocks(0, n0):
        tot, S1, S2 = tot + len(Kb), S1 + Kb.sum(0), S2 + Kb.T @ Kb
    mu = S1 / tot
    ev, V = np.linalg.eigh(S2 - tot * np.outer(mu, mu))
    P = V[:, ::-1][:, :2]
    P = P * np.where(P[np.argmax(np.abs(P), axis=0), [0, 1]] < 0, -1.0, 1.0)      # sign: largest entry > 0
    snaps = []
    for label, t, m in [("no RoPE, n = L", "pre", n0)] + [
        (f"RoPE, n = {f}L" if f != 1 else "RoPE, n = L", "post", f * L) for f in (1, 2, 4, 8) if f * L <= n
    ]:
        ki = _pick(m, 300)
        qs = np.flatnonzero(st.query_sample_positions < m)
        qi = qs[_pick(len(qs), 300)]
        snaps.append({"label": label, "n": int(m),
                      "keys": ((st.keys[t][0, ki] - mu) @ P).round(5).tolist(),
                      "queries": ((st.query_samples[t][0, qi].astype(np.float64) - mu) @ P).round(5).tolist()})
    return {"layer": li, "kv_head": 0, "query_head": 0, "snapshots": snaps}


def override_rope(model, scaling: dict) -> str:
    """Replace the model's rope parameters at inference (PI = ``linear``, ``dynamic``, ``yarn``, ...).

    ``scaling`` is merged over the config's own ``rope_parameters`` (so ``rope_theta`` is kept and
    ``original_max_position_embeddings`` defaults to the training length), the config is checked by
    ``ropetheory.schedules.hf.frequencies_from_config``, and every rotary-embedding module of the
    model is rebuilt from it. Returns a label such as ``linear-x2``. Models whose rope parameters
    are given per layer type are refused.
    """
    if not isinstance(scaling, dict) or "rope_type" not in scaling:
        raise BadValue(f"rope scaling must be a dict with a 'rope_type', got {scaling!r}")
    cfg = model.config
    base = dict(getattr(cfg, "rope_parameters", None) or {})
    if any(isinstance(v, dict) for v in base.values()):
        raise BadValue("rope parameters per layer type: inference-time scaling of such models is not supported")
    new = {**base, "original_max_position_embeddings": cfg.max_position_embeddings, **scaling}
    frequencies_from_config({**cfg.to_dict(), "rope_parameters": new})          # validates, names bad keys
    cfg.rope_parameters = new
    n = 0
    for name, mod in model.named_modules():
        if name.endswith("rotary_emb"):
            dev = mod.inv_freq.device
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], type(mod)(config=cfg).to(dev))
            n += 1
    if n == 0:
        raise BadValue(f"{type(model).__name__} has no rotary_emb module to rebuild")
    return f"{scaling['rope_type']}-x{scaling.get('factor', 1):g}"


@renamed("0.3.0", chunk="tokens_per_pass")
def run(model: str, *, out: pathlib.Path, n_tokens: int, text: str | None = None, bos: bool = False,
        repeat_text: bool = False, tokens_per_pass: int = 2048, device: str = "cpu", quiet: bool = False,
        train_len: int | None = None, rope_scaling: dict | None = None, resume: bool = True,
        checkpoint_every: float = CHECKPOINT_EVERY_S, text_distribution: str | None = None) -> dict[str, Any]:
    from ..progress import progress
    from .corpus import text_tokens
    from .registry import PACKAGED, load_model, model_quantised
    if train_len is not None:
        check_integer("train_len", train_len, lo=2)           # 0 is a bad length, not "not given"
    m, tok, label = load_model(model, device=device)
    L = int(train_len if train_len is not None else
            training_length(m.config.to_dict(), PACKAGED.get(label, {}).get("train_len")))
    quantised = model_quantised(model)                      # from the file's own types, not its name
    if rope_scaling:
        label = f"{label}+{override_rope(m, rope_scaling)}"
    ids, text_desc = text_tokens(tok, n_tokens, text_file=text, bos=bos, repeat=repeat_text,
                                 distribution=text_distribution)
    import hashlib
    import json
    from ..store import derived_code_hash, package_version
    key = hashlib.sha256(json.dumps({"model": label, "ids": list(map(int, ids)), "tokens_per_pass": tokens_per_pass,
                                     "L": L,
                                     "device": device, "version": package_version(),
                                     "code": derived_code_hash(__name__)},
                                    sort_keys=True).encode()).hexdigest()
    ckpt = out / label / "capture.ckpt"
    if not resume and ckpt.exists():
        ckpt.unlink()
    import shutil
    from .forward import key_folder
    with progress(total=len(ids), desc=f"capture {label}", quiet=quiet, unit="tok") as bar:
        cap = capture_streams(m, ids, L=L, tokens_per_pass=tokens_per_pass, progress=bar.update, checkpoint=ckpt,
                              checkpoint_key=key, checkpoint_every=checkpoint_every)
    print(f"{ckpt}: {cap['kept']} saved part(s) kept, {cap['computed']} computed", file=sys.stderr)
    heads = sum(st.kv_heads for st in cap["streams"])
    with progress(total=heads, desc=f"analyse {label}", quiet=quiet, unit="head") as bar:
        res = analyze_streams(cap, L=L, progress=bar.update)
    res["meta"] = {"model": label, "architecture": type(m).__name__, "text": text_desc,
                   "quantised": quantised, "tokens_per_pass": tokens_per_pass, "device": device,
                   "rope_scaling": rope_scaling,
                   "schedules": {s["layer_type"]: {"rope_type": s["rope_type"], "rope_theta": s["rope_theta"],
                                                   "window": s["window"], "rotary_dim": s["rotary_dim"],
                                                   "attention_factor": float(s["attention_factor"]),
                                                   "theta": [float(x) for x in s["theta"]]}
                                 for s in cap["schedules"]}}
    res["claims"] = claims(res)
    d = out / label
    write_json(d / "analysis.json", res)
    write_csv(d / "heads.csv", [{k: v for k, v in h.items() if not isinstance(v, (list, dict))} for h in res["heads"]])
    write_csv(d / "claims.csv", res["claims"])
    write_csv(d / "sink_decomposition.csv", decomposition_rows(res["heads"], res["grid"]))
    write_csv(d / "collapse_predictors.csv", predictor_rows(res["collapse_predictors"]))
    write_csv(d / "failure_modes.csv", failure_rows(res["failure_modes"]))
    if ckpt.exists():
        ckpt.unlink()                                        # the results are written: nothing to resume
    shutil.rmtree(key_folder(ckpt), ignore_errors=True)
    return res
