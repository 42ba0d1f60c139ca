"""``ropetheory report SOURCE``: what a model's (or a schedule's) RoPE does past its training length, and why.

SOURCE is a model's ``config.json`` (any Hugging Face ``rope_type``, per-layer-type parameters
included), a packaged model (``smollm2-135m``, ``gemma3-270m``) or a ``.gguf`` file (config read from
its metadata; its measured geometry, from ``ropetheory analyze``, shown beside the prediction), a
schedule name with parameters (``rope_id:train_len=4096``, ``rope:base=500000``), a packaged fixture
config by name (``llama-2-7b``), or a JSON spec (``'{"name": "partial", "fraction": 0.5}'``, or a pasted
``rope_scaling`` / ``rope_parameters`` config). For every distinct schedule of the source (e.g. Gemma 3's sliding and
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
import csv
import json
import math
import pathlib
import sys
import time
from typing import Any

import numpy as np

from . import figure7
from .. import spectra
from .. import data
from ..core.checks import check_integer, read_json_file
from ..theory import criteria
from ..theory.positions import scores, scores_batch
from ..schedules.hf import frequencies_from_config
from ..store import check_finite_output, derived_code_hash
from .common import device_scope, one_blas_thread, parse_study_args, study_parser
from .report_html import assumed_lines, parameters_text, write
from .report_sources import find_analysis, load_source, measured_section

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
#: the certified base-bound table (d = 128), shipped with the package (``ropetheory.data``)
BASE_TABLE = data.base_table()
SECTIONS = ("frequencies", "fsv", "drift", "inversions", "men", "verdict")


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
                     for j, (t, w, c) in enumerate(zip(theta, wl, cycles, strict=False))]}


def fsv_curves(theta: np.ndarray, H: int, V: np.ndarray, extra: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The FSV section's grid (``NUM`` log-spaced lengths up to ``FAR_FACTOR * H``, ``H 2^k``, ``extra``) and
    ``rho`` of every cloud (row of ``V``) on it, ``(clouds, lengths)``."""
    grid = np.unique(np.concatenate([spectra.log_grid(FAR_FACTOR * H, NUM), [H * 2 ** k for k in range(5)],
                                     extra])).astype(np.int64)
    return grid, spectra.rank1_curves_batch(theta, V, grid).rho


def fsv_section(theta: np.ndarray, H: int, V: np.ndarray, grid: np.ndarray, rho: np.ndarray) -> dict[str, Any]:
    fl, allrot = criteria.floors(theta, V)
    iH = int(np.flatnonzero(grid == H)[0])
    crit = criteria.criteria(rho[:, iH], fl, allrot)
    within = criteria.within_floor(rho, fl[:, None])
    reach = np.array([grid[np.argmax(w)] if w.any() else np.inf for w in within], dtype=np.float64)
    q = np.quantile(rho, (0.05, 0.5, 0.95), axis=0)
    return {"grid": grid.tolist(), "q05": q[0].tolist(), "median": q[1].tolist(), "q95": q[2].tolist(),
            "rho_H": float(np.median(rho[:, iH])), "floor": crit["floor_median"],
            "allrot_floor": crit["allrot_floor_median"], "rel_dist_H": crit["rel_dist_L_median"],
            "reach_median": float(np.median(reach)) if np.isfinite(np.median(reach)) else None,
            "reach_resolution": float(grid[1] / grid[0]) if grid.size > 1 else None,
            "C1": crit["C1"], "C2": crit["C2"], "C1_share": crit["C1_share"], "C2_share": crit["C2_share"],
            "C1_MARGIN": criteria.C1_MARGIN, "C2_RTOL": criteria.C2_RTOL}


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
    return frequencies_from_config(cfg).theta


def drift_section(sc: dict, L: int, V: np.ndarray, known: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> list[dict[str, Any]]:
    """Per factor ``s``: the low-frequency drift at ``sL`` and ``rho`` of the clouds ``V`` at ``L`` and ``sL``
    under the schedule at sequence length ``sL``. ``known``: ``fsv_curves``'s ``(grid, rho)`` for the same
    clouds under ``sc["theta"]``; where the schedule at ``sL`` is that ``theta`` (most rope types do not
    depend on the sequence length) and the grid holds ``L`` and ``sL``, ``rho`` is read there (the same
    numbers: ``rank1_curves_batch`` computes every length on its own)."""
    base = _unscaled(sc)
    rows = []
    for s in FACTORS:
        if sc["config"] is not None:
            th = frequencies_from_config(sc["config"], seq_len=s * L, layer_type=sc["layer_type"]).theta
        else:
            th = sc["theta"]
        own = criteria.low_frequency_drift(base, th, s, L)
        grid, known_rho = known if known is not None else (np.zeros(0, np.int64), None)
        at = [np.flatnonzero(grid == n) for n in (L, s * L)]
        if known_rho is not None and all(i.size for i in at) and np.array_equal(th, sc["theta"]):
            rho = known_rho[:, [int(at[0][0]), int(at[1][0])]]
        else:
            rho = spectra.rank1_curves_batch(th, V, np.array([L, s * L])).rho
        rows.append({"s": s, "eval_len": s * L, "low_freq_planes": own["low_freq_planes"],
                     "drift_ratio_own": own["max_drift_ratio"], "within_training": own["holds"],
                     "drift_ratio_unscaled": float(s) if own["max_drift_ratio"] is not None else None,
                     "rho_L": float(np.median(rho[:, 0])), "rho_sL": float(np.median(rho[:, 1]))})
    return rows


def _position_inversion(S: np.ndarray) -> float:
    """``theory.positions.position_inversion``'s exact value from the scores ``S`` at ``m = 0 .. M-1``: the share
    of pairs ``m1 < M/2 <= m2`` with ``S(m1) < S(m2)``, counted by sorting."""
    h = S.size // 2
    later = np.sort(S[h:2 * h])
    return int(np.sum(later.size - np.searchsorted(later, S[:h], side="right"))) / (h * h)


def _token_inversion(D: np.ndarray) -> float:
    """``theory.positions.token_inversion``'s exact value from ``D = S_1 - S_2`` at ``m = 0 .. M-1``: the share
    of ``m`` with ``D(m) < 0`` once the keys are ordered so that ``D(0) > 0``."""
    return float(np.mean((-D if D[0] < 0 else D) < 0))


def inversion_section(theta: np.ndarray, H: int) -> dict[str, Any]:
    """Position and token inversion at ``M = H`` and ``4H`` over ``PAIRS`` random ``(q, k1, k2)``: the values
    of ``theory.positions.position_inversion`` and ``token_inversion``, from one ``scores_batch`` per ``M``
    (the angles ``m theta_j`` reduced once for every pair instead of once per call)."""
    d = 2 * theta.size
    Q = np.random.default_rng(1).standard_normal((PAIRS, 3, d))
    out: dict[str, Any] = {"pairs": PAIRS}
    q, k = np.concatenate([Q[:, 0], Q[:, 0]]), np.concatenate([Q[:, 1], Q[:, 1] - Q[:, 2]])
    for M in (H, 4 * H):
        S = scores_batch(theta, q, k, np.arange(M))         # rows: S of (q, k1), then D of (q, k1 - k2)
        p = [_position_inversion(row) for row in S[:PAIRS]]
        t = [_token_inversion(row) for row in S[PAIRS:]]
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
    out: dict[str, Any] = {
        "m_max": H,
        "min_B": float(B[worst]),
        "argmin_m": int(m[worst]),
        "holds": bool(B[worst] >= 0),
        "negative_m": int((B < 0).sum()),
        "smallest_feasible_base": None,
        "table": None,
    }
    if sc.get("rope_type") == "default" and 2 * theta.size == 128 and (theta > 0).all() and BASE_TABLE.is_file():
        for r in csv.DictReader(BASE_TABLE.open(encoding="utf-8")):
            if int(r["L"]) == H:
                out.update(smallest_feasible_base=float(r["smallest"]), table=str(BASE_TABLE.name))
    return out


def verdict(sec: dict, L: int) -> list[str]:
    f, ms = sec["fsv"], sec["men"]
    H = sec["horizon"]
    reach = f["reach_median"]
    lines = [
        f"floor {f['floor']:.3f} vs all-planes-rotating {f['allrot_floor']:.3f}: C1 "
        f"{'met' if f['C1'] else 'not met'} (Section 4: a NoPE/slow block must keep a non-trivial floor)",
        (
            f"floor reached (within 1%) at {reach:.3g} tokens = {reach / H:.3g} H: C2 {'met' if f['C2'] else 'not met'}"
            if reach
            else "floor not reached within 10^6 H: C2 not met"
        )
        + f" (Section 4; rho at H = {f['rho_H']:.3f}, {100 * f['rel_dist_H']:.1f}% above the floor)",
    ]
    d4 = next((r for r in sec["drift"] if r["s"] == 4), None)
    if d4 and d4["drift_ratio_own"] is not None:
        lines.append(
            f"drift at 4L: {d4['drift_ratio_own']:.3g} x the training drift under this schedule's own scaling "
            f"({'within' if d4['within_training'] else 'beyond'} training; "
            f"unscaled: {d4['drift_ratio_unscaled']:.0f}x; Section 5)"
        )
    lines.append(f"Men et al.: B(m) >= 0 for all m <= {H}: {'yes' if ms['holds'] else 'no'} "
                 f"(min {ms['min_B']:.3g} at m = {ms['argmin_m']})" +
                 (f"; smallest feasible base for this L (certified) {ms['smallest_feasible_base']:.4g}"
                  if ms["smallest_feasible_base"] else ""))
    me = sec.get("measured")
    if me and me["rows"]:
        a, b = me["rows"][0], me["rows"][-1]
        lines.append(
            f"measured on the model ({me['heads']} heads): rho at L {a['rho_measured']:.3f} (rank-1 prediction "
            f"{a['rho_rank1_prediction']:.3f}), at {b['n']} {b['rho_measured']:.3f} ({b['rho_rank1_prediction']:.3f}); "
            f"heads with a sink: {a['heads_with_sink']} at L, {b['heads_with_sink']} at {b['n']}"
        )
    return lines


def build(source: str, *, train_len: int | None = None, seq_len: int | None = None, n_clouds: int = N_CLOUDS,
          analysis: str | None = None, progress=None) -> dict[str, Any]:
    """Compute every section for every distinct schedule of ``source`` (see the module docstring)."""
    n_clouds = check_integer("n_clouds", n_clouds, lo=2)
    t0 = time.time()
    src = load_source(source, train_len=train_len, seq_len=seq_len)
    L = src["train_len"]
    res = None
    if src.get("model") or analysis:
        p = find_analysis(src.get("model") or src["label"], analysis)
        res = read_json_file("--analysis", p) if p else None
    out = {
        "source": source,
        "analysis": str(p) if res is not None else None,
        "label": src["label"],
        "kind": src["kind"],
        "train_len": L,
        "train_len_from": src["train_len_from"],
        "seq_len": src.get("seq_len"),
        "n_clouds": n_clouds,
        "schedules": [],
    }
    for sc in src["schedules"]:
        theta = sc["theta"]
        H = int(min(L, sc["window"])) if sc["window"] else L
        V = _unit_clouds(2 * theta.size, n_clouds)
        grid, rho = fsv_curves(theta, H, V, [s * L for s in FACTORS])
        sec = {"name": sc["name"], "layers": sc["layers"], "rope_type": sc["rope_type"],
               "parameters": sc["parameters"], "assumed": sc["assumed"],
               "attention_factor": sc["attention_factor"], "head_dim": 2 * theta.size, "window": sc["window"],
               "horizon": H, "horizon_is": "sliding window" if sc["window"] else "training length",
               "frequencies": frequencies_section(theta, H),
               "fsv": fsv_section(theta, H, V, grid, rho),
               "drift": drift_section(sc, L, V, (grid, rho)), "inversions": inversion_section(theta, H),
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


def parser() -> argparse.ArgumentParser:
    ap = study_parser("ropetheory report", __doc__, out="results/report", flags=("fresh", "quiet", "device"))
    ap.add_argument("source", help="config.json, a schedule name (rope_id:train_len=4096) or a JSON spec")
    ap.add_argument("--train-len", type=int, default=None,
                    help="training length L (default: the config's original_max_position_embeddings, "
                         "else max_position_embeddings)")
    ap.add_argument("--seq-len", type=int, default=None, help="sequence length for length-dependent rope types")
    ap.add_argument("--clouds", type=int, default=N_CLOUDS, help="random rank-1 clouds per schedule")
    ap.add_argument("--analysis", default=None, help="a real model's analysis.json (or its folder) to show beside "
                                                     "the prediction (default for a packaged model: results/analysis/"
                                                     "<model>/, else the committed one)")
    return ap


def report_key(source: str, **params: Any) -> str:
    """What a saved report was computed from: the source (and the bytes of a source file), the
    parameters and the code (``ropetheory.store.derived_code_hash``); a saved report is reused
    only when all of it is the same."""
    import hashlib
    h = hashlib.sha256(json.dumps({"source": source, **params}, sort_keys=True, default=str).encode())
    p = pathlib.Path(source)
    if len(source) < 4096 and p.is_file():
        h.update(p.read_bytes())
    elif len(source) < 4096 and p.is_dir() and (p / "config.json").is_file():
        h.update((p / "config.json").read_bytes())
    h.update(derived_code_hash(__name__).encode())
    return h.hexdigest()[:16]


def _saved(out: pathlib.Path, key: str) -> dict[str, Any] | None:
    try:
        rep = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    return rep if isinstance(rep, dict) and rep.get("key") == key else None


def main(argv=None) -> int:
    args = parse_study_args(parser(), argv)
    check_integer("--clouds", args.clouds, lo=2)
    with device_scope(args.device):
        out = pathlib.Path(args.out)
        key = report_key(args.source, train_len=args.train_len, seq_len=args.seq_len, clouds=args.clouds,
                         analysis=args.analysis)
        saved = None if args.fresh else _saved(out, key)
        if saved is not None:
            rep = saved
        else:
            from ..progress import progress
            with progress(desc="report", unit="schedule", quiet=args.quiet) as bar, one_blas_thread():
                rep = build(args.source, train_len=args.train_len, seq_len=args.seq_len, n_clouds=args.clouds,
                            analysis=args.analysis, progress=bar.update)
            rep["key"] = key
        page = out / "report.html"
        if not (saved is not None and page.is_file()):      # a reused report's page is already there
            page = write(rep, out)
        for s in rep["schedules"]:                          # after the write: an error stays one line
            for line in assumed_lines(s):
                print(f"ropetheory report: note: {s['name']}: {line}", file=sys.stderr)
        print(f"{rep['label']}: L = {rep['train_len']} (from {rep['train_len_from']})")
        for s in rep["schedules"]:
            print(f"  {s['name']} ({s['rope_type']}, d = {s['head_dim']}, horizon {s['horizon']}):")
            print(f"    parameters: {parameters_text(s)}")
            for v in s["verdict"]:
                print(f"    - {v}")
        if saved is not None:
            print(f"reused {page}: computed earlier ({rep['seconds']:.1f} s) from the same source, parameters and code "
                  f"(--fresh recomputes)")
        else:
            print(f"wrote {page} ({rep['seconds']:.1f} s)")
        return 0


if __name__ == "__main__":
    sys.exit(main())
