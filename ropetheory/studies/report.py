"""``ropetheory report SOURCE``: what a model's (or a schedule's) RoPE does past its training length, and why.

SOURCE is a model's ``config.json`` (any Hugging Face ``rope_type``, per-layer-type parameters
included), a packaged model (``smollm2-135m``, ``gemma3-270m``) or a ``.gguf`` file (config read from
its metadata; its measured geometry, from ``ropetheory analyze``, shown beside the prediction), a schedule name with parameters (``rope_id:train_len=4096``, ``rope:base=500000``), or a
JSON spec (``'{"name": "partial", "fraction": 0.5}'``, or a pasted ``rope_scaling`` /
``rope_parameters`` config). For every distinct schedule of the source (e.g. Gemma 3's sliding and
global layers) the report computes, with the package's own functions (same code path as the
studies, so the numbers are equal):

1. the frequencies against the horizon ``H`` (the training length ``L``, or the sliding window when
   smaller): how many planes complete 0, 1, 2+ cycles within ``H``; NoPE planes; the attention factor;
2. the FSV ratio ``rho_n`` of many random unit rank-1 clouds (5/50/95% bands) up to ``10^6 H``, the
   floor (Theorem 1's limit), the length at which the median cloud is within 1% of its floor, and
   the paper's criteria C1 (non-trivial floor) and C2 (reached within ``H``), Section 4;
3. the drift past ``L`` for ``s = 2 .. 16`` under the config's own scaling and unscaled (Section 5,
   as ``ropetheory extension`` measures it);
4. the second paper's position- and token-inversion probabilities at ``H`` and ``4H`` (exact over
   distances, averaged over random (q, k) pairs, standard error stated);
5. Men et al.'s condition ``B(m) = sum_j cos(m theta_j) >= 0`` for every integer ``m <= H`` on the
   schedule itself, and, for d = 128 plain RoPE, the certified smallest feasible base from
   ``docs/figures/base_bound.csv`` when ``L`` is in that table.

Writes ``report.json``, ``planes.csv``, ``curves.csv``, ``drift.csv``, one figure per schedule and a
self-contained ``report.html`` (figures embedded), and prints a short verdict.
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import pathlib
import sys
import time
from typing import Any

import numpy as np

from .. import figure7, spectra, theorems
from ..extension import low_frequency_drift
from ..positions import position_inversion, scores, token_inversion
from ..rope_types import frequencies_from_config
from ..schedules import schedule, schedule_from_spec
from ..store import check_finite_output, write_csv, write_json

#: random unit clouds per schedule (bands are 5/50/95% quantiles over them)
N_CLOUDS = 32
#: the curve runs to ``FAR_FACTOR * H``
FAR_FACTOR = 1e6
#: log-spaced lengths in the curve (plus H, 2H, 4H, ..., sL); the reach length is read on this grid
NUM = 60
#: extension factors for the drift section
FACTORS = (2, 4, 8, 16)
#: random (q, k1, k2) triples for the inversion probabilities
PAIRS = 8
#: where the committed certified base-bound table lives (d = 128)
BASE_TABLE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "figures" / "base_bound.csv"
SECTIONS = ("frequencies", "fsv", "drift", "inversions", "men", "verdict")


def _parse_value(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def load_source(source: str, *, train_len: int | None = None, seq_len: int | None = None) -> dict[str, Any]:
    """Read SOURCE into ``{label, kind, config, train_len, train_len_from, schedules: [...]}``."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"SOURCE must be a config.json path, a schedule name or a JSON spec, got {source!r}")
    for name, v in (("train_len", train_len), ("seq_len", seq_len)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 2):
            raise ValueError(f"{name} must be an integer >= 2, got {v!r}")
    path = pathlib.Path(source)
    cfg = None
    model = _model_config(source)
    if model is not None:
        cfg, label = model
        out = _config_source(label, cfg, train_len, seq_len)
        out["model"] = label
        return out
    if source.lstrip()[:1] in ("{", "["):
        try:
            spec = json.loads(source)
        except json.JSONDecodeError as e:
            raise ValueError(f"SOURCE looks like JSON but does not parse: {e}") from None
        if not isinstance(spec, dict):
            raise ValueError(f"a JSON SOURCE must be an object, got {type(spec).__name__}")
        if any(k in spec for k in ("rope_parameters", "rope_scaling", "rope_theta", "max_position_embeddings")):
            cfg, label = spec, "config"
        else:
            label = spec.get("name", "spec")
            return _schedule_source(label, schedule_from_spec(spec), spec, train_len)
    elif path.suffix == ".json" or path.exists():
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} does not exist")
        try:
            cfg = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"config file {str(path)!r} is not JSON: {e}") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"config file {str(path)!r} must hold a JSON object, got {type(cfg).__name__}")
        label = path.stem if path.name != "config.json" else path.parent.name
    else:
        name, _, params = source.partition(":")
        kw = {}
        for kv in filter(None, params.split(",")):
            if "=" not in kv:
                raise ValueError(f"schedule parameters must be KEY=VALUE, got {kv!r} in {source!r}")
            k, v = kv.split("=", 1)
            kw[k.strip()] = _parse_value(v.strip())
        kw.setdefault("head_dim", 128)
        return _schedule_source(name, schedule(name, **kw), {"name": name, **kw}, train_len)
    return _config_source(label, cfg, train_len, seq_len)


def _model_config(source: str) -> tuple[dict, str] | None:
    """A packaged model's name or a ``.gguf`` file: its config as transformers reads it (no weights)."""
    from ..models.registry import PACKAGED, resolve
    if source not in PACKAGED and not source.endswith(".gguf"):
        return None
    folder, gguf, label = resolve(source)
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(str(folder), gguf_file=gguf) if gguf else AutoConfig.from_pretrained(str(folder))
    return cfg.to_dict(), label


def find_analysis(label: str, explicit: str | None = None) -> pathlib.Path | None:
    """``analysis.json`` of a model: ``explicit``, else ``results/analysis/<label>/``, else the committed one."""
    if explicit:
        p = pathlib.Path(explicit)
        p = p / "analysis.json" if p.is_dir() else p
        if not p.is_file():
            raise ValueError(f"--analysis {explicit!r}: no analysis.json there")
        return p
    root = pathlib.Path(__file__).resolve().parents[2]
    for p in (pathlib.Path("results/analysis") / label / "analysis.json",
              root / "docs" / "figures" / "models" / label / "analysis.json"):
        if p.is_file():
            return p
    return None


def measured_section(res: dict, layer_type: str | None) -> dict[str, Any]:
    """A real model's measured key geometry for one schedule, beside ropetheory's predictions."""
    heads = [h for h in res["heads"] if layer_type is None or h["layer_type"] == layer_type]
    grid, L = res["grid"], int(res["train_len"])
    med = lambda xs: float(np.median([x for x in xs if x is not None])) if any(x is not None for x in xs) else None
    rows = []
    for k in (1, 2, 4, 8):
        if k * L in grid:
            i = grid.index(k * L)
            rows.append({"n": k * L, "rho_measured": med([h["rho_measured"][i] for h in heads]),
                         "rho_rank1_prediction": med([h["rho_predicted"][i] for h in heads]),
                         "max_abs_error": max((h["rho_abs_err"][i] or 0.0) for h in heads),
                         "heads_with_sink": sum(1 for h in heads if (h["sink_rope"][i] or 0) > 0.5),
                         "sink_share": med([h["sink_rope"][i] for h in heads])})
    return {"heads": len(heads), "tokens": int(res["n"]), "quantised": bool(res.get("meta", {}).get("quantised")),
            "predicted_floor": med([h["predicted_floor"] for h in heads]),
            "noisy_limit": med([h["rho_noisy_limit"] for h in heads]),
            "C1_heads": sum(bool(h["C1"]) for h in heads), "C2_heads": sum(bool(h["C2"]) for h in heads),
            "rows": rows}


def _schedule_source(label, theta, spec, train_len):
    L = train_len or int(spec.get("train_len", figure7.TRAIN_LEN))
    how = "--train-len" if train_len else ("the spec's train_len" if "train_len" in spec else
                                           f"default {figure7.TRAIN_LEN} (the paper's Figure 7)")
    theta = np.asarray(theta, dtype=np.float64)
    sched = {"name": label, "layers": "all", "theta": theta, "attention_factor": 1.0, "rope_type": label,
             "window": None, "head_dim": 2 * theta.size, "spec": spec, "config": None, "layer_type": None}
    return {"label": label, "kind": "schedule", "config": None, "train_len": L, "train_len_from": how,
            "schedules": [sched]}


def _config_source(label, cfg, train_len, seq_len):
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(rp, dict):
        raise ValueError(f"rope_parameters/rope_scaling must be a dict, got {rp!r}")
    per_type = [k for k, v in rp.items() if isinstance(v, dict)]
    orig = cfg.get("original_max_position_embeddings")
    if orig is None:
        orig = next((v.get("original_max_position_embeddings") for v in ([rp] + [rp[k] for k in per_type])
                     if isinstance(v, dict) and v.get("original_max_position_embeddings")), None)
    if train_len:
        L, how = train_len, "--train-len"
    elif orig:
        L, how = int(orig), "original_max_position_embeddings"
    elif cfg.get("max_position_embeddings"):
        L, how = int(cfg["max_position_embeddings"]), "max_position_embeddings"
    else:
        raise ValueError("the config names no training length (original_max_position_embeddings or "
                         "max_position_embeddings): pass --train-len")
    n = seq_len or L
    scheds = []
    window = cfg.get("sliding_window")
    layer_types = cfg.get("layer_types") or []
    for lt in (per_type or [None]):
        f = frequencies_from_config(cfg, seq_len=n, layer_type=lt)
        layers = [i for i, t in enumerate(layer_types) if t == lt] if lt else "all"
        w = window if (lt is None or "sliding" in str(lt)) and isinstance(window, int) and window < L else None
        scheds.append({"name": lt or "all layers", "layers": layers, "theta": np.asarray(f["theta"]),
                       "attention_factor": float(f["attention_factor"]), "rope_type": f["rope_type"],
                       "rope_theta": f["rope_theta"], "window": w, "head_dim": f["head_dim"],
                       "rotary_dim": f["rotary_dim"], "spec": None, "config": cfg, "layer_type": lt})
    return {"label": label, "kind": "config", "config": cfg, "train_len": L, "train_len_from": how,
            "seq_len": n, "schedules": scheds}


def _unit_clouds(d: int, n: int) -> np.ndarray:
    V = figure7.clouds(d, n)
    return V / np.linalg.norm(V, axis=1, keepdims=True)


def frequencies_section(theta: np.ndarray, H: int) -> dict[str, Any]:
    rot = theta > 0
    cycles = np.where(rot, theta * H / (2 * math.pi), 0.0)
    wl = [2 * math.pi / t if t > 0 else None for t in theta]
    return {"planes": int(theta.size), "nope_planes": int((~rot).sum()),
            "cycles_lt1": int((rot & (cycles < 1)).sum()), "cycles_1": int((rot & (cycles >= 1) & (cycles < 2)).sum()),
            "cycles_2plus": int((rot & (cycles >= 2)).sum()),
            "longest_wavelength": max((w for w in wl if w), default=None),
            "rows": [{"plane": j, "theta": float(t), "wavelength": w, "cycles_within_H": float(c)}
                     for j, (t, w, c) in enumerate(zip(theta, wl, cycles))]}


def fsv_section(theta: np.ndarray, H: int, V: np.ndarray, extra: list[int]) -> dict[str, Any]:
    grid = np.unique(np.concatenate([spectra.log_grid(FAR_FACTOR * H, NUM), [H * 2 ** k for k in range(5)],
                                     extra])).astype(np.int64)
    rho = spectra.rank1_curves_batch(theta, V, grid)
    fl, allrot = figure7.floors(theta, V)
    iH = int(np.flatnonzero(grid == H)[0])
    crit = figure7.criteria(rho[:, iH], fl, allrot)
    within = np.abs(rho - fl[:, None]) / fl[:, None] < theorems.C2_RTOL
    reach = np.array([grid[np.argmax(w)] if w.any() else np.inf for w in within], dtype=np.float64)
    q = np.quantile(rho, (0.05, 0.5, 0.95), axis=0)
    return {"grid": grid.tolist(), "q05": q[0].tolist(), "median": q[1].tolist(), "q95": q[2].tolist(),
            "rho_H": float(np.median(rho[:, iH])), "floor": crit["floor_median"],
            "allrot_floor": crit["allrot_floor_median"], "rel_dist_H": crit["rel_dist_L_median"],
            "reach_median": float(np.median(reach)) if np.isfinite(np.median(reach)) else None,
            "reach_resolution": float(grid[1] / grid[0]) if grid.size > 1 else None,
            "C1": crit["C1"], "C2": crit["C2"], "C1_share": crit["C1_share"], "C2_share": crit["C2_share"],
            "C1_MARGIN": theorems.C1_MARGIN, "C2_RTOL": theorems.C2_RTOL}


def _unscaled(sc: dict) -> np.ndarray:
    """The schedule without its scaling: plain RoPE of the same base and rotary width."""
    if sc["config"] is None:
        return sc["theta"]
    cfg = dict(sc["config"])
    base = {"rope_type": "default", "rope_theta": sc["rope_theta"]}
    prf = sc["rotary_dim"] / sc["head_dim"]
    if prf < 1:
        base["partial_rotary_factor"] = prf
    cfg.pop("rope_scaling", None)
    cfg["rope_parameters"] = base
    return np.asarray(frequencies_from_config(cfg)["theta"])


def drift_section(sc: dict, L: int, V: np.ndarray) -> list[dict[str, Any]]:
    base = _unscaled(sc)
    rows = []
    for s in FACTORS:
        if sc["config"] is not None:
            th = np.asarray(frequencies_from_config(sc["config"], seq_len=s * L, layer_type=sc["layer_type"])["theta"])
        else:
            th = sc["theta"]
        own = low_frequency_drift(base, th, s, L) if (base > 0).any() and ((base > 0) & (base * L < 2 * math.pi)).any() \
            else {"max_drift_ratio": None, "holds": None, "low_freq_planes": 0}
        rho = spectra.rank1_curves_batch(th, V, np.array([L, s * L]))
        rows.append({"s": s, "eval_len": s * L, "low_freq_planes": own["low_freq_planes"],
                     "drift_ratio_own": own["max_drift_ratio"], "within_training": own["holds"],
                     "drift_ratio_unscaled": float(s) if own["max_drift_ratio"] is not None else None,
                     "rho_L": float(np.median(rho[:, 0])), "rho_sL": float(np.median(rho[:, 1]))})
    return rows


def inversion_section(theta: np.ndarray, H: int) -> dict[str, Any]:
    d = 2 * theta.size
    Q = np.random.default_rng(1).standard_normal((PAIRS, 3, d))
    out = {"pairs": PAIRS}
    for M in (H, 4 * H):
        p = [position_inversion(theta, q, k1, M)["exact"] for q, k1, _ in Q]
        t = [token_inversion(theta, q, k1, k2, M)["exact"] for q, k1, k2 in Q]
        out[f"M={M}"] = {"M": M, "p_position_inversion": float(np.mean(p)),
                         "se_position": float(np.std(p) / math.sqrt(PAIRS)),
                         "p_token_inversion": float(np.mean(t)), "se_token": float(np.std(t) / math.sqrt(PAIRS))}
    return out


def men_section(theta: np.ndarray, H: int, sc: dict) -> dict[str, Any]:
    ones = np.zeros(theta.size * 2)
    ones[0::2] = 1.0                                         # z_j = 1: S(m) = sum_j cos(m theta_j) = B(m)
    m = np.arange(1, H + 1)
    B = scores(theta, ones, ones, m)
    worst = int(np.argmin(B))
    out = {"m_max": H, "min_B": float(B[worst]), "argmin_m": int(m[worst]), "holds": bool(B[worst] >= 0),
           "negative_m": int((B < 0).sum()), "smallest_feasible_base": None, "table": None}
    if sc.get("rope_type") == "default" and 2 * theta.size == 128 and (theta > 0).all() and BASE_TABLE.exists():
        for r in csv.DictReader(BASE_TABLE.open()):
            if int(r["L"]) == H:
                out.update(smallest_feasible_base=float(r["smallest"]), table=str(BASE_TABLE.name))
    return out


def verdict(sec: dict, L: int) -> list[str]:
    f, ms = sec["fsv"], sec["men"]
    H = sec["horizon"]
    reach = f["reach_median"]
    lines = [f"floor {f['floor']:.3f} vs all-planes-rotating {f['allrot_floor']:.3f}: C1 "
             f"{'met' if f['C1'] else 'not met'} (Section 4: a NoPE/slow block must keep a non-trivial floor)",
             (f"floor reached (within 1%) at {reach:.3g} tokens = {reach / H:.3g} H: C2 {'met' if f['C2'] else 'not met'}"
              if reach else "floor not reached within 10^6 H: C2 not met") +
             f" (Section 4; rho at H = {f['rho_H']:.3f}, {100 * f['rel_dist_H']:.1f}% above the floor)"]
    d4 = next((r for r in sec["drift"] if r["s"] == 4), None)
    if d4 and d4["drift_ratio_own"] is not None:
        lines.append(f"drift at 4L: {d4['drift_ratio_own']:.3g} x the training drift under this schedule's own scaling "
                     f"({'within' if d4['within_training'] else 'beyond'} training; unscaled: {d4['drift_ratio_unscaled']:.0f}x; Section 5)")
    lines.append(f"Men et al.: B(m) >= 0 for all m <= {H}: {'yes' if ms['holds'] else 'no'} "
                 f"(min {ms['min_B']:.3g} at m = {ms['argmin_m']})" +
                 (f"; smallest feasible base for this L (certified) {ms['smallest_feasible_base']:.4g}"
                  if ms["smallest_feasible_base"] else ""))
    me = sec.get("measured")
    if me and me["rows"]:
        a, b = me["rows"][0], me["rows"][-1]
        lines.append(f"measured on the model ({me['heads']} heads): rho at L {a['rho_measured']:.3f} (rank-1 prediction "
                     f"{a['rho_rank1_prediction']:.3f}), at {b['n']} {b['rho_measured']:.3f} ({b['rho_rank1_prediction']:.3f}); "
                     f"heads with a sink: {a['heads_with_sink']} at L, {b['heads_with_sink']} at {b['n']}")
    return lines


def build(source: str, *, train_len: int | None = None, seq_len: int | None = None, n_clouds: int = N_CLOUDS,
          analysis: str | None = None, progress=None) -> dict[str, Any]:
    """Compute every section for every distinct schedule of ``source`` (see the module docstring)."""
    if isinstance(n_clouds, bool) or not isinstance(n_clouds, int) or n_clouds < 2:
        raise ValueError(f"n_clouds must be an integer >= 2, got {n_clouds!r}")
    t0 = time.time()
    src = load_source(source, train_len=train_len, seq_len=seq_len)
    L = src["train_len"]
    res = None
    if src.get("model") or analysis:
        p = find_analysis(src.get("model") or src["label"], analysis)
        res = json.loads(p.read_text()) if p else None
    out = {"source": source, "analysis": str(p) if res is not None else None, "label": src["label"], "kind": src["kind"], "train_len": L,
           "train_len_from": src["train_len_from"], "seq_len": src.get("seq_len"), "n_clouds": n_clouds,
           "schedules": []}
    for sc in src["schedules"]:
        theta = sc["theta"]
        H = int(min(L, sc["window"])) if sc["window"] else L
        V = _unit_clouds(2 * theta.size, n_clouds)
        sec = {"name": sc["name"], "layers": sc["layers"], "rope_type": sc["rope_type"],
               "attention_factor": sc["attention_factor"], "head_dim": 2 * theta.size, "window": sc["window"],
               "horizon": H, "horizon_is": "sliding window" if sc["window"] else "training length",
               "frequencies": frequencies_section(theta, H),
               "fsv": fsv_section(theta, H, V, [s * L for s in FACTORS]),
               "drift": drift_section(sc, L, V), "inversions": inversion_section(theta, H),
               "men": men_section(theta, H, sc)}
        if res is not None:
            sec["measured"] = measured_section(res, sc["layer_type"])
        sec["verdict"] = verdict(sec, L)
        out["schedules"].append(sec)
        if progress:
            progress(1)
    out["seconds"] = time.time() - t0
    check_finite_output(out, "report")          # also for callers of build() who never write it
    return out


def plot_schedule(sec: dict, L: int) -> bytes:
    import matplotlib
    from matplotlib.figure import Figure
    matplotlib.rcParams.update({"font.size": 8})
    fig = Figure(figsize=(11, 3.2))
    a, b, c = fig.subplots(1, 3)
    H = sec["horizon"]
    fr = sec["frequencies"]["rows"]
    a.semilogy([r["plane"] for r in fr if r["wavelength"]], [r["wavelength"] for r in fr if r["wavelength"]], ".",
               label="wavelength 2π/θ_j")
    a.axhline(H, color="k", ls="--", label=f"horizon H = {H}")
    a.set_xlabel("plane j")
    a.set_ylabel("wavelength (tokens)")
    a.set_title("frequencies")
    a.legend(fontsize=7)
    f = sec["fsv"]
    g = np.array(f["grid"], dtype=float)
    b.fill_between(g, f["q05"], f["q95"], alpha=0.3, label="5–95% of clouds")
    b.plot(g, f["median"], label="median cloud")
    b.axhline(f["floor"], color="g", ls=":", label=f"floor {f['floor']:.3f}")
    b.axhline(f["allrot_floor"], color="r", ls=":", label=f"all-rotating floor {f['allrot_floor']:.3f}")
    b.axvline(L, color="k", ls="--", label=f"training length L = {L}")
    if H != L:
        b.axvline(H, color="gray", ls="--", label=f"window {H}")
    b.set_xscale("log")
    b.set_xlabel("length n (tokens)")
    b.set_ylabel("FSV ratio ρ_n")
    b.set_title("rank-1 clouds under RoPE")
    b.legend(fontsize=6)
    dr = sec["drift"]
    xs = [r["s"] for r in dr]
    if all(r["drift_ratio_own"] is not None for r in dr):
        c.plot(xs, [r["drift_ratio_own"] for r in dr], "o-", label="own scaling")
        c.plot(xs, [r["drift_ratio_unscaled"] for r in dr], "s--", label="unscaled")
        c.axhline(1, color="k", lw=0.8, label="training drift")
        c.set_yscale("log")
        c.set_ylabel("max low-frequency drift at sL / at L")
    else:
        c.text(0.5, 0.5, "no plane slower than one cycle in L", ha="center", transform=c.transAxes)
    c.set_xlabel("extension factor s (evaluated at sL)")
    c.set_title("drift past L")
    c.legend(fontsize=7)
    fig.suptitle(f"{sec['name']} ({sec['rope_type']}, d = {sec['head_dim']})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def render_html(rep: dict, pngs: list[bytes]) -> str:
    L = rep["train_len"]
    parts = [f"<h1>ropetheory report: {html.escape(rep['label'])}</h1>",
             f"<p>source <code>{html.escape(rep['source'])}</code>; training length L = {L} "
             f"(from {html.escape(rep['train_len_from'])}); {rep['n_clouds']} random unit rank-1 clouds per schedule; "
             f"computed in {rep['seconds']:.1f} s.</p>"]
    for sec, png in zip(rep["schedules"], pngs):
        fq, f, ms = sec["frequencies"], sec["fsv"], sec["men"]
        inv = [dict(v) for k, v in sec["inversions"].items() if k.startswith("M=")]
        parts += [f"<h2>{html.escape(sec['name'])}: {html.escape(sec['rope_type'])}, d = {sec['head_dim']}, "
                  f"layers {html.escape(str(sec['layers']))}</h2>",
                  '<section id="verdict"><h3>Verdict</h3><ul>' +
                  "".join(f"<li>{html.escape(v)}</li>" for v in sec["verdict"]) + "</ul></section>",
                  f'<img alt="figures for {html.escape(sec["name"])}" src="data:image/png;base64,'
                  f'{base64.b64encode(png).decode()}">',
                  '<section id="frequencies"><h3>Frequencies against the horizon</h3>'
                  f"<p>horizon H = {sec['horizon']} ({sec['horizon_is']}); attention factor {sec['attention_factor']:.4g}; "
                  f"{fq['planes']} planes: {fq['nope_planes']} NoPE, {fq['cycles_lt1']} complete less than one cycle "
                  f"within H, {fq['cycles_1']} one, {fq['cycles_2plus']} two or more; longest wavelength "
                  f"{_fmt(fq['longest_wavelength'])} tokens.</p></section>",
                  '<section id="fsv"><h3>FSV ratio, floor, C1 and C2 (Lemma 1, Theorem 1, Section 4)</h3>'
                  + _table([{"floor (median)": f["floor"], "all-rotating floor": f["allrot_floor"], "rho at H": f["rho_H"],
                             "above floor at H": f["rel_dist_H"], "reach (median, tokens)": f["reach_median"],
                             "grid step (x)": f["reach_resolution"], "C1": f["C1"], "C2": f["C2"],
                             "C1 share": f["C1_share"], "C2 share": f["C2_share"]}],
                           ["floor (median)", "all-rotating floor", "rho at H", "above floor at H", "reach (median, tokens)",
                            "grid step (x)", "C1", "C2", "C1 share", "C2 share"])
                  + f"<p>C1: floor above the all-rotating floor by {100 * f['C1_MARGIN']:.0f}%; C2: within "
                    f"{100 * f['C2_RTOL']:.0f}% of the floor at H.</p></section>",
                  '<section id="drift"><h3>Drift past L (Section 5)</h3>'
                  + _table(sec["drift"], ["s", "eval_len", "low_freq_planes", "drift_ratio_own", "within_training",
                                          "drift_ratio_unscaled", "rho_L", "rho_sL"]) + "</section>",
                  '<section id="inversions"><h3>Position and token inversions (second paper)</h3>'
                  + _table(inv, ["M", "p_position_inversion", "se_position", "p_token_inversion", "se_token"])
                  + f"<p>exact over every distance; mean over {sec['inversions']['pairs']} random (q, k) pairs.</p></section>",
                  '<section id="men"><h3>Men et al.: B(m) ≥ 0 up to H</h3>'
                  + _table([ms], ["m_max", "min_B", "argmin_m", "holds", "negative_m", "smallest_feasible_base"])
                  + "</section>"]
        if "measured" in sec:
            me = sec["measured"]
            parts.append('<section id="measured"><h3>The real model, measured (keys before/after RoPE)</h3>'
                         f"<p>{me['heads']} key heads, {me['tokens']} tokens"
                         f"{' (4-bit quantised weights)' if me['quantised'] else ''}; median rank-1 floor "
                         f"{_fmt(me['predicted_floor'])}, rank-1-plus-noise limit {_fmt(me['noisy_limit'])}; heads meeting "
                         f"C1 {me['C1_heads']}, C2 {me['C2_heads']}.</p>"
                         + _table(me["rows"], ["n", "rho_measured", "rho_rank1_prediction", "max_abs_error",
                                               "heads_with_sink", "sink_share"]) + "</section>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}" \
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}img{max-width:100%}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>ropetheory report</title>" \
           f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"


def write(rep: dict, out: pathlib.Path) -> pathlib.Path:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", rep)
    write_csv(out / "planes.csv", [{"schedule": s["name"], **r} for s in rep["schedules"] for r in s["frequencies"]["rows"]])
    write_csv(out / "curves.csv", [{"schedule": s["name"], "n": n, "q05": a, "median": m, "q95": b}
                                   for s in rep["schedules"]
                                   for n, a, m, b in zip(s["fsv"]["grid"], s["fsv"]["q05"], s["fsv"]["median"], s["fsv"]["q95"])])
    write_csv(out / "drift.csv", [{"schedule": s["name"], **r} for s in rep["schedules"] for r in s["drift"]])
    pngs = [plot_schedule(s, rep["train_len"]) for s in rep["schedules"]]
    for s, png in zip(rep["schedules"], pngs):
        (out / f"report_{str(s['name']).replace(' ', '_')}.png").write_bytes(png)
    page = out / "report.html"
    page.write_text(render_html(rep, pngs))
    return page


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ropetheory report", description=__doc__.split("\n")[0])
    ap.add_argument("source", help="config.json, a schedule name (rope_id:train_len=4096) or a JSON spec")
    ap.add_argument("--train-len", type=int, default=None,
                    help="training length L (default: the config's original_max_position_embeddings, "
                         "else max_position_embeddings)")
    ap.add_argument("--seq-len", type=int, default=None, help="sequence length for length-dependent rope types")
    ap.add_argument("--clouds", type=int, default=N_CLOUDS, help="random rank-1 clouds per schedule")
    ap.add_argument("--analysis", default=None, help="a real model's analysis.json (or its folder) to show beside "
                                                     "the prediction (default for a packaged model: results/analysis/"
                                                     "<model>/, else the committed one)")
    ap.add_argument("--out", default="results/report")
    ap.add_argument("--quiet", action="store_true")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    rep = build(args.source, train_len=args.train_len, seq_len=args.seq_len, n_clouds=args.clouds,
                analysis=args.analysis)
    page = write(rep, pathlib.Path(args.out))
    print(f"{rep['label']}: L = {rep['train_len']} (from {rep['train_len_from']})")
    for s in rep["schedules"]:
        print(f"  {s['name']} ({s['rope_type']}, d = {s['head_dim']}, horizon {s['horizon']}):")
        for v in s["verdict"]:
            print(f"    - {v}")
    print(f"wrote {page} ({rep['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
