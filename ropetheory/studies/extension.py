"""Context-extension methods (Hugging Face rope types) against the paper's criteria.

Base model: Llama-3 style, ``d = 128``, ``rope_theta = 5e5``, training length ``L = 8192``.
For each method (``linear`` = PI, ``dynamic`` = NTK evaluated at the extended length,
``yarn``, ``llama3``, ``longrope`` with an illustrative factor ramp) at extension factors
``s in {2, 4, 8, 16}``, and for RoPE-ID (trained at ``L``; no extension needed):

- the FSV-ratio curve (median over Gaussian v) to ``16 s L``, its floor, ``rho`` at ``L`` and ``sL``;
- C1 (floor above the all-planes-rotating floor by 10%) and C2 at the extended length
  (``|rho_{sL} - floor| / floor < 1%``), plus *in distribution at sL*: ``rho_{sL} >= rho_L`` of
  the unextended base model (the FSV never falls below what training saw);
- the paper's statement that PI and YaRN "limit the degree of drift in low-frequency
  channels to that seen during training": for every plane that does not complete a cycle
  within ``L`` under the base schedule, the ratio of its angle at ``sL`` under the method
  to its angle at ``L`` under the base, ``theta'_j s L / (theta_j L)``; the statement holds
  for a method iff the maximum ratio is ``<= 1``;
- what float32 positions (transformers' forward pass: ``position.float() * inv_freq``) do
  to the angles at 1e5 and 1e6 tokens, against ropetheory's exact angles.

Numbers go to ``results/extension.csv`` / ``.json`` first; ``extension.png`` is drawn from them.
"""
from __future__ import annotations

import csv
import math
import pathlib
import sys
import time
from typing import Any

import jax.numpy as jnp
import numpy as np

from . import figure7
from .. import spectra
from ..theory import criteria
from ..core.angles import reduced_turns, turn_chunks
from ..schedules.hf import frequencies_from_config, rope_parameters
from ..schedules import names, schedule
from ..core.verdicts import Verdict
from ..store import PartStore, derived_code_hash, write_csv, write_json
from .. import figstyle
from .common import device_scope, parse_study_args, save_figure, study_parser
from ..core.errors import BadValue
from ..core.checks import read_json_file

D = 128
ROPE_THETA = 5e5
TRAIN_LEN = 8192
FACTORS = (2, 4, 8, 16)
#: the extension methods: Hugging Face rope types (canonical names of ``schedules.names.HF_TYPES``)
METHODS = ("linear", "dynamic", "yarn", "llama3", "longrope")
#: the series without an extension method: the base model (``default``, an alias of ``rope``) and RoPE-ID
UNEXTENDED = ("default", "rope_id")
#: "in distribution at sL": rho_sL >= (1 - IN_DIST_RTOL) rho_L(base). PI maps sL positions onto
#: [0, L) with step 1/s, which changes the discrete sums behind rho by O(1/L) ~ 1e-4: allow 1e-3
IN_DIST_RTOL = 1e-3


def method_config(method: str, s: int) -> dict:
    """A Llama-3-style config.json dict for ``method`` at extension factor ``s``."""
    rp = rope_parameters(method, rope_theta=ROPE_THETA, factor=s, original_max_position_embeddings=TRAIN_LEN,
                         head_dim=D)
    return {"head_dim": D, "max_position_embeddings": TRAIN_LEN * (s if method != "dynamic" else 1),
            "rope_parameters": rp}


def extended_theta(method: str, s: int) -> tuple[np.ndarray, float]:
    f = frequencies_from_config(method_config(method, s), seq_len=s * TRAIN_LEN)
    return f.theta, f.attention_factor


def low_frequency_drift(theta_base: np.ndarray, theta_ext: np.ndarray, s: int, L: int = TRAIN_LEN) -> dict[str, Any]:
    """``ropetheory.theory.criteria.low_frequency_drift`` at this study's training length by default."""
    return criteria.low_frequency_drift(theta_base, theta_ext, s, L)


def float32_angle_error(theta: np.ndarray, positions=(10 ** 5, 10 ** 6)) -> list[dict[str, float]]:
    """transformers' float32 ``position * inv_freq`` vs the exact angle (both reduced mod 2 pi)."""
    inv32 = theta.astype(np.float32)
    exact_turns = np.asarray(reduced_turns(jnp.asarray(np.asarray(positions, dtype=np.int64)[:, None]),
                                           jnp.asarray(turn_chunks(theta)[None])))
    out = []
    for k, p in enumerate(positions):
        ang32 = (np.float32(p) * inv32).astype(np.float64)
        err = np.abs((ang32 - 2 * math.pi * exact_turns[k] + math.pi) % (2 * math.pi) - math.pi)
        cos_err = np.abs(np.cos(np.float32(p) * inv32).astype(np.float64)
                         - np.cos(2 * math.pi * exact_turns[k]))
        out.append(
            {
                "position": int(p),
                "max_angle_err_rad": float(err.max()),
                "median_angle_err_rad": float(np.median(err)),
                "max_cos_err": float(cos_err.max()),
            }
        )
    return out


def _series() -> list[tuple[str, int, np.ndarray, float]]:
    """Every ``(method, s, theta, attention factor)`` the study evaluates: the base model (``s = 1``), each
    method at each factor ``s``, and RoPE-ID trained at ``L`` (``s = 1``)."""
    base = schedule(names.label_schedule(UNEXTENDED[0]), head_dim=D, base=ROPE_THETA).theta
    rope_id = schedule(names.label_schedule(UNEXTENDED[1]), head_dim=D, train_len=TRAIN_LEN).theta
    return [(UNEXTENDED[0], 1, base, 1.0), *((m, s, *extended_theta(m, s)) for m in METHODS for s in FACTORS),
            (UNEXTENDED[1], 1, rope_id, 1.0)]


def _eval_len(method: str, s: int) -> int:
    """The length ``sL`` a series is judged at: ``s L`` for a method, ``max(FACTORS) L`` for the others."""
    return (s if method in METHODS else max(FACTORS)) * TRAIN_LEN


#: the drift columns of a series the statement does not apply to (RoPE-ID: no base schedule it extends)
NO_DRIFT = {"low_freq_planes": None, "max_drift_ratio": None, "worst_plane": None, "holds": None}


def _drift(method: str, base: np.ndarray, th: np.ndarray, s: int) -> dict[str, Any]:
    """``low_frequency_drift`` of a method at ``s``; of the base model against itself at ``s = 1``; else none."""
    if method in METHODS:
        return low_frequency_drift(base, th, s)
    return low_frequency_drift(base, th, 1) if method == UNEXTENDED[0] else dict(NO_DRIFT)


def _row(method: str, s: int, th: np.ndarray, att: float, rho: np.ndarray, grid: np.ndarray, V: np.ndarray,
         base: np.ndarray, base_rho_L: float | None) -> dict[str, Any]:
    """One row of ``extension.csv``: the median floor and FSV ratio at ``L`` and ``sL`` over the clouds ``V``
    (``rho``: clouds x ``grid``), C1 and C2 at ``sL``, ``rho_sL >= (1 - IN_DIST_RTOL) rho_L(base)`` (the base
    model's own ``rho_L`` where ``base_rho_L`` is ``None``) and the low-frequency drift."""
    sL = _eval_len(method, s)
    fl, allrot = criteria.floors(th, V)
    at = {int(n): i for i, n in enumerate(grid)}
    med = np.median(rho, axis=0)
    base_rho_L = float(med[at[TRAIN_LEN]]) if base_rho_L is None else base_rho_L
    crit = criteria.criteria(rho[:, at[sL]], fl, allrot)          # C1, and C2 judged at sL
    drift = _drift(method, base, th, s)
    return {"method": method, "s": s, "eval_len": sL, "attention_factor": att,
            "floor": float(np.median(fl)), "rho_L": float(med[at[TRAIN_LEN]]), "rho_sL": float(med[at[sL]]),
            "rel_dist_sL": crit["rel_dist_L_median"], "C1": crit["C1"], "C2_at_sL": crit["C2"],
            "in_distribution_at_sL": bool(med[at[sL]] >= base_rho_L * (1 - IN_DIST_RTOL)),
            "low_freq_planes": drift["low_freq_planes"], "max_low_freq_drift_ratio": drift["max_drift_ratio"],
            "worst_plane": drift["worst_plane"], "drift_statement_holds": drift["holds"]}


def _curve_rows(method: str, s: int, rho: np.ndarray, grid: np.ndarray) -> list[dict[str, Any]]:
    """Rows of ``extension_curves.csv``: per length, the median and the 5% and 95% quantiles over the clouds."""
    med = np.median(rho, axis=0)
    return [{"method": method, "s": s, "n": int(n), "median": float(med[i]),
             "q05": float(np.quantile(rho[:, i], 0.05)), "q95": float(np.quantile(rho[:, i], 0.95))}
            for i, n in enumerate(grid)]


#: what ``extension.json`` says about the series that need it
NOTES = {
    "dynamic": "frequencies at seq_len = s L (transformers recomputes them for the running length)",
    "longrope": "illustrative factors (short = 1, long = linear ramp 1 -> s); real models ship searched ones",
    "rope_id": "trained at L; evaluated at 16 L with no extension",
}


def run(out_dir: pathlib.Path, n_clouds: int = 32, num: int = 50, quiet: bool = False,
        resume: bool = True) -> dict[str, Any]:
    """Every series' FSV-ratio curves to ``16 sL`` over ``n_clouds`` Gaussian clouds on ``num`` log-spaced
    lengths (kept in parts), its row and float32's angle error, written to ``extension.csv``,
    ``extension_curves.csv`` and ``extension.json``; returns the JSON."""
    from ..progress import progress
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = PartStore(out_dir / "extension_parts", code=derived_code_hash(__name__), resume=resume)
    V = figure7.clouds(D, n_clouds)
    todo = _series()
    base = todo[0][2]
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    t0 = time.time()
    for m, s, th, att in progress(todo, desc="extension", quiet=quiet):
        sL = _eval_len(m, s)
        grid = np.unique(np.concatenate([spectra.log_grid(16 * sL, num), [TRAIN_LEN, sL]]))
        rho = figure7.cached_curves(th, V, grid, f"{m}_s{s}_v{n_clouds}_g{num}", parts)()
        rows.append(_row(m, s, th, att, rho, grid, V, base, rows[0]["rho_L"] if rows else None))
        curves += _curve_rows(m, s, rho, grid)
    write_csv(out_dir / "extension.csv", rows)
    write_csv(out_dir / "extension_curves.csv", curves)
    meta = {"d": D, "rope_theta": ROPE_THETA, "train_len": TRAIN_LEN, "factors": list(FACTORS), "n_clouds": n_clouds,
            "rows": rows, "float32_positions": float32_angle_error(base), "base_rho_L": rows[0]["rho_L"],
            "seconds": time.time() - t0, "notes": dict(NOTES)}
    write_json(out_dir / "extension.json", meta)
    return meta


def print_table(out_dir: pathlib.Path) -> None:
    meta = read_json_file("--out", out_dir / "extension.json", saved=True)
    print(
        f"\nContext extension on a Llama-3-style base (d = {meta['d']}, rope_theta = {meta['rope_theta']:g}, "
        f"L = {meta['train_len']}); medians over {meta['n_clouds']} Gaussian v; base rho_L = {meta['base_rho_L']:.4f}"
    )
    print(f"{'method':9s} {'s':>3s} {'floor':>7s} {'rho_L':>7s} {'rho_sL':>7s} {'dist_sL':>8s} {'C1':>3s} {'C2':>3s} "
          f"{'in-dist':>7s} {'drift max':>9s} {'statement':>9s}")
    for r in meta["rows"]:
        dr = "-" if r["max_low_freq_drift_ratio"] is None else f"{r['max_low_freq_drift_ratio']:.3f}"
        st = "-" if r["drift_statement_holds"] is None else str(Verdict.of(r["drift_statement_holds"]))
        print(f"{r['method']:9s} {r['s']:3d} {r['floor']:7.4f} {r['rho_L']:7.4f} {r['rho_sL']:7.4f} "
              f"{r['rel_dist_sL']:8.2%} {'Y' if r['C1'] else 'N':>3s} {'Y' if r['C2_at_sL'] else 'N':>3s} "
              f"{'Y' if r['in_distribution_at_sL'] else 'N':>7s} {dr:>9s} {st:>9s}")
    print("drift max = max over planes that do not finish a cycle in L of theta'_j sL / (theta_j L)")
    print("float32 positions (transformers' forward pass) vs exact angles, base schedule:")
    for e in meta["float32_positions"]:
        print(f"  position {e['position']:>8d}: max angle error {e['max_angle_err_rad']:.3e} rad, "
              f"median {e['median_angle_err_rad']:.3e} rad, max |cos error| {e['max_cos_err']:.3e}")


#: tick values of the drift axis (log scale), those inside the data's range labelled
DRIFT_TICKS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)


def plot(out_dir: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    meta = read_json_file("--out", out_dir / "extension.json", saved=True)
    with open(out_dir / "extension_curves.csv") as fh:
        curves = list(csv.DictReader(fh))
    L = meta["train_len"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    ax = axes[0]
    for m in UNEXTENDED[:1] + METHODS + UNEXTENDED[1:]:
        s = 8 if m in METHODS else 1
        sel = [c for c in curves if c["method"] == m and int(c["s"]) == s]
        ax.plot([int(c["n"]) for c in sel], [float(c["median"]) for c in sel], color=figstyle.color(m),
                label=f"{m} (s={s})" if s > 1 else m)
    ax.axvline(L, color="k", lw=0.8, label=f"training length L = {L}")
    ax.axvline(8 * L, color="gray", lw=0.8, ls="--", label="8L")
    ax.set_xscale("log")
    ax.set_title("FSV ratio (median over clouds), s = 8")
    ax.set_xlabel("length n (tokens)")
    ax.set_ylabel("FSV ratio ||Rope(X)||_2 / ||X||_2")
    ax.legend(fontsize=7)
    ax2 = axes[1]
    # methods whose drift is exactly 1 coincide: each gets its own marker and size (largest first) and the
    # legend names the ones it lies under
    markers = [("o", 9), ("s", 7), ("^", 6), ("D", 5), ("v", 4)]
    drifts = {m: [r["max_low_freq_drift_ratio"] for r in meta["rows"] if r["method"] == m] for m in METHODS}
    for (m, ys), (mk, ms) in zip(drifts.items(), markers, strict=True):
        rs = [r for r in meta["rows"] if r["method"] == m]
        twins = [o for o in METHODS if o != m and drifts[o] == ys]
        ax2.plot([r["s"] for r in rs], ys, marker=mk, ms=ms, mfc="none", color=figstyle.color(m),
                 label=m + (f" (= {', '.join(twins)})" if twins else ""))
    ax2.axhline(1, color="k", lw=0.8, label="1: the drift seen within training")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("extension factor s")
    lo, hi = ax2.get_ylim()                     # the data span less than a decade: label ticks inside it
    ticks = [t for t in DRIFT_TICKS if lo <= t <= hi]
    ax2.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax2.yaxis.set_minor_formatter(NullFormatter())
    ax2.set_ylabel("max low-frequency drift at sL / at L")
    ax2.set_title("low-frequency drift (<= 1: in distribution)")
    ax2.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))   # below: covers no marker
    return save_figure(fig, out_dir / "extension.png")


def main(argv=None) -> int:
    ap = study_parser("ropetheory extension", __doc__)
    ap.add_argument("--clouds", type=int, default=32, help="random Gaussian v per method and factor")
    ap.add_argument("--num", type=int, default=50, help="log-grid points")
    args = parse_study_args(ap, argv)
    with device_scope(args.device):
        out = pathlib.Path(args.out)
        if not args.plot_only:
            if args.clouds < 1 or args.num < 4:
                raise BadValue(f"need --clouds >= 1 and --num >= 4, got {args.clouds}, {args.num}")
            run(out, args.clouds, args.num, args.quiet, resume=not args.fresh)
        print_table(out)
        print(f"wrote {plot(out)}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
