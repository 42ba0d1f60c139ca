"""Figure 7: FSV decay of synthetic rank-1 clouds under each schedule, the Section 4 criteria,
and the RoPE-ID ablations of the paper's Table 5 (appendix A.6).

Section 4 criteria (docs/theory.md), with training length ``L``:
- **C1** a non-trivial floor: the limit ``rho_inf = sqrt(lambda)`` lies above the floor that
  the same cloud would have with every plane rotating, ``sqrt(max_j e_j / 2)``, by more than
  ``C1_MARGIN`` (relative);
- **C2** the floor is reached within ``L``: ``|rho_L - rho_inf| / rho_inf < C2_RTOL``.
Both are evaluated per cloud; the verdict is the median cloud's, and the share of clouds
that meet each criterion is reported beside it.

Outputs (``results/`` by default): ``fig7.csv`` (quantile bands and the single-v curve per
schedule, d and n), ``fig7.json`` (metadata + criteria table), ``fig7_ablations.csv`` /
``.json`` (with the transcribed RULER scores and rank correlations), then ``fig7.png`` and
``fig7.pdf`` drawn from the saved CSV alone. Per-(schedule, d) raw curves are kept in
``fig7_parts/`` so an interrupted run resumes.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import math
import pathlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import spectra
from ..spectra.gram import start_rank1_curves
from ..theory import criteria as _criteria
from ..schedules import names, schedule, schedule_from_spec
from ..store import PartStore, derived_code_hash, write_csv, write_json
from .. import figstyle
from .common import device_scope, int_list, parse_study_args, save_figures, study_parser
from ..core.errors import BadValue
from ..core.checks import read_json_file
from ..core.ranks import spearman

TRAIN_LEN = 4096
C1_MARGIN, C2_RTOL = _criteria.C1_MARGIN, _criteria.C2_RTOL     # Section 4: one definition, theory.criteria
floors, criteria = _criteria.floors, _criteria.criteria
QUANTILES = (0.05, 0.5, 0.95)

#: series label (``schedules.names``) -> (legend, registry parameters); the legend carries the parameter
SCHEDULES: dict[str, tuple[str, dict[str, Any]]] = {
    "rope_1e4": ("RoPE (base 1e4)", dict(base=1e4)),
    "rope_5e5": ("RoPE (base 5e5)", dict(base=5e5)),
    "half_rope": ("half-RoPE (base 1e4)", dict(base=1e4, fraction=0.5)),
    "high_freq": ("high-frequency (1 cycle in L)", dict(train_len=TRAIN_LEN, cycles=1)),
    "rope_id": ("RoPE-ID", dict(train_len=TRAIN_LEN)),
}
#: the paper's expectation (Section 4, Fig. 7): (C1, C2)
EXPECTED = {"rope_1e4": (False, False), "rope_5e5": (False, False), "half_rope": (True, False),
            "high_freq": (False, True), "rope_id": (True, True)}

# Table 5 of the paper (appendix A.6, "Llama-1B Models", RULER averages at 4K/8K/16K),
# transcribed from shared/paper/frayed-rope-fulltext.txt. The default configuration
# (fraction 1/2, shortest wavelength 32, lowest frequency 2 cycles = wavelength 2048)
# appears in all three blocks; it is counted once in the correlations.
TABLE5 = [
    # (label, rope_id kwargs, (4K, 8K, 16K))
    ("fraction 1/8", dict(fraction=1 / 8), (46.30, 35.12, 2.18)),
    ("fraction 1/4", dict(fraction=1 / 4), (41.59, 38.75, 36.41)),
    ("fraction 3/8", dict(fraction=3 / 8), (39.11, 32.83, 27.12)),
    ("fraction 1/2 (default)", dict(), (39.15, 35.64, 30.83)),
    ("fraction 5/8", dict(fraction=5 / 8), (36.52, 31.52, 17.72)),
    ("fraction 3/4", dict(fraction=3 / 4), (33.17, 27.40, 21.63)),
    ("fraction 7/8", dict(fraction=7 / 8), (34.23, 16.11, 9.05)),
    ("min wavelength 2", dict(min_wavelength=2), (37.37, 35.66, 27.77)),
    ("min wavelength 16", dict(min_wavelength=16), (38.46, 36.52, 26.76)),
    ("min wavelength 64", dict(min_wavelength=64), (41.62, 27.16, 9.46)),
    ("lowest freq 1 cycle (wavelength 4096)", dict(cycles=1), (36.11, 20.66, 16.07)),
]


def theta_of(key: str, d: int) -> np.ndarray:
    return schedule_from_spec({**names.spec_of(key, **SCHEDULES[key][1]), "head_dim": d}).theta


def clouds(d: int, n_clouds: int, seed: int = 0) -> np.ndarray:
    """Gaussian ``v`` (rows), fixed seed per head width: the same clouds under every schedule."""
    return np.random.default_rng(seed + d).standard_normal((n_clouds, d))


def first_cycle(theta: np.ndarray) -> float:
    """Length at which the slowest rotating plane completes its first cycle, ``2 pi / min theta_j``."""
    rot = theta[theta > 0]
    return float(2 * math.pi / rot.min())


def code_hash() -> str:
    """The code a saved part depends on: the exact angles, schedules, spectra, theory and this study."""
    return derived_code_hash(__name__)


def cached_curves(theta, V, grid, tag: str, store: PartStore, progress=None) -> Callable[[], np.ndarray]:
    """A function giving ``rho`` of every cloud at every grid length: from the store when saved with these
    inputs (the key hashes ``theta``, the clouds and the grid), else computed and saved when it is called.

    The computation is started now (``spectra.gram.start_rank1_curves``: on an accelerator the work is queued
    on the device, on CPU nothing is done yet), so a caller can start the next curve before reading this one."""
    key = hashlib.sha256(np.ascontiguousarray(theta).tobytes() + np.ascontiguousarray(V).tobytes()
                         + np.ascontiguousarray(grid).tobytes()).hexdigest()
    saved = store.get(tag, key, {"rho": (V.shape[0], len(grid))})
    if saved is not None:
        if progress is not None:
            progress(V.shape[0])
        return lambda: saved["rho"]
    finish = start_rank1_curves(theta, V, grid, progress=progress)

    def computed() -> np.ndarray:
        rho = finish().rho
        store.put(tag, key, rho=rho, grid=grid)
        return rho
    return computed


def one_ahead(starts: Sequence[Callable[[], Callable[[], Any]]]) -> Iterator[Any]:
    """Each started computation's result, in order, the next one started before this one is read: ``starts[k]()``
    starts the k-th and returns the function that reads it. On an accelerator the device works on the next
    while the host reads, saves and computes; at most the two in flight are lost to an interruption."""
    ahead = None
    for start in starts:
        started = start()
        if ahead is not None:
            yield ahead()
        ahead = started
    if ahead is not None:
        yield ahead()


def length_grid(n_max: float = 1e6, num: int = 60) -> np.ndarray:
    """The lengths of Figure 7's curves: ``num`` log-spaced points to ``n_max`` and ``L, 4 L, 16 L``."""
    L = TRAIN_LEN
    grid = np.unique(np.concatenate([spectra.log_grid(n_max, num), [L, 4 * L, 16 * L]]))
    return grid[grid <= max(n_max, 16 * L)]


def compute(out_dir: pathlib.Path, n_clouds: int = 256, n_max: float = 1e6, num: int = 60,
            head_dims=(128, 80), quiet: bool = False, resume: bool = True) -> dict[str, Any]:
    """Compute and save everything (resumable); returns the metadata dict. Each curve is started before the
    one before it is read (``one_ahead``)."""
    from ..progress import progress
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = PartStore(out_dir / "fig7_parts", code=code_hash(), resume=resume)
    L = TRAIN_LEN
    grid = length_grid(n_max, num)
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    table: list[dict[str, Any]] = []
    ablated: list[dict[str, Any]] = []
    total = len(head_dims) * (len(SCHEDULES) * n_clouds + len(TABLE5) * n_clouds)
    bar = progress(total=total, desc="fig7 clouds", quiet=quiet, unit="cloud")
    V = {d: clouds(d, n_clouds) for d in head_dims}
    jobs: list[tuple[int, str | tuple, np.ndarray, np.ndarray, str]] = []   # a schedule key or a TABLE5 entry
    for d in head_dims:
        jobs += [(d, key, theta_of(key, d), grid, f"{key}_d{d}_v{n_clouds}_n{int(n_max)}_g{num}") for key in SCHEDULES]
        if d == head_dims[0]:
            jobs += [(d, config, th, ABLATION_GRID, tag) for config, th, tag in _ablation_jobs(d, n_clouds)]
    starts = [functools.partial(cached_curves, th, V[d], g, tag, parts, bar.update) for d, _, th, g, tag in jobs]
    for (d, key, th, _, _), rho in zip(jobs, one_ahead(starts), strict=True):
        if isinstance(key, tuple):
            ablated.append(_ablation_row(key, th, rho, V[d]))
            continue
        label = SCHEDULES[key][0]
        fl, allrot = floors(th, V[d])
        q = np.quantile(rho, QUANTILES, axis=0)
        for i, n in enumerate(grid):
            rows.append({"schedule": key, "label": label, "d": d, "n": int(n), "q05": q[0, i], "median": q[1, i],
                         "q95": q[2, i], "single_v": rho[0, i],
                         "floor_median": float(np.median(fl)), "single_v_floor": fl[0]})
        at = {int(n): i for i, n in enumerate(grid)}
        crit = criteria(rho[:, at[L]], fl, allrot)
        exp = EXPECTED[key]
        table.append({"schedule": key, "label": label, "d": d,
                      "rho_L": float(np.median(rho[:, at[L]])), "rho_4L": float(np.median(rho[:, at[4 * L]])),
                      "rho_16L": float(np.median(rho[:, at[16 * L]])), **crit,
                      "first_cycle": first_cycle(th),
                      "expected_C1": exp[0], "expected_C2": exp[1],
                      "agrees_with_paper": (crit["C1"], crit["C2"]) == exp})
    bar.close()
    ablations = _ablations(head_dims[0], ablated)
    _write(out_dir, rows, table, ablations)
    meta = {"train_len": L, "n_clouds": n_clouds, "n_max": n_max, "grid_points": int(len(grid)),
            "head_dims": list(head_dims), "quantiles": list(QUANTILES), "C1_MARGIN": C1_MARGIN, "C2_RTOL": C2_RTOL,
            "schedules": {k: {"label": v[0], "spec": names.spec_of(k, **v[1])} for k, v in SCHEDULES.items()},
            "criteria": table, "seconds": time.time() - t0,
            "vertical_lines": {f"{k}_d{d}": first_cycle(theta_of(k, d)) for k in SCHEDULES for d in head_dims}}
    write_json(out_dir / "fig7.json", meta)
    return meta


def _write(out_dir: pathlib.Path, rows, table, ablations) -> None:
    write_csv(out_dir / "fig7.csv", rows)
    write_csv(out_dir / "fig7_criteria.csv", table)
    write_csv(out_dir / "fig7_ablations.csv", ablations["rows"])
    write_json(out_dir / "fig7_ablations.json", ablations)


#: the lengths the ablation metrics need: L, 4L and 16L
ABLATION_GRID = np.array([TRAIN_LEN, 4 * TRAIN_LEN, 16 * TRAIN_LEN], dtype=np.int64)


def _ablation_jobs(d: int, n_clouds: int) -> list[tuple[tuple, np.ndarray, str]]:
    """Each Table 5 configuration (its ``TABLE5`` entry), its theta and the tag of its saved curve at
    ``ABLATION_GRID``."""
    out = []
    for config in TABLE5:
        kw = config[1]
        assert isinstance(kw, dict)
        th = schedule("rope_id", head_dim=d, train_len=TRAIN_LEN, **kw).theta
        out.append((config, th, "abl_" + "_".join(f"{k}{v:.4g}" for k, v in sorted(kw.items()))
                    + f"_d{d}_v{n_clouds}_L{TRAIN_LEN}"))
    return out


def _ablation_row(config: tuple, th: np.ndarray, rho: np.ndarray, V: np.ndarray) -> dict[str, Any]:
    """One Table 5 configuration (``TABLE5``'s entry): floor, rho_L, attainment, drift L -> 4L, its RULER scores."""
    label, kw, scores = config
    L = TRAIN_LEN
    at = {int(n): i for i, n in enumerate(ABLATION_GRID)}
    fl, allrot = floors(th, V)
    crit = criteria(rho[:, at[L]], fl, allrot)
    drift = (rho[:, at[L]] - rho[:, at[4 * L]]) / rho[:, at[L]]
    return {"config": label, **{k: v for k, v in kw.items()}, "floor": float(np.median(fl)),
            "rho_L": float(np.median(rho[:, at[L]])), "attain_rel_dist_L": crit["rel_dist_L_median"],
            "attained_within_L": crit["C2"],
            "drift_L_to_4L": float(np.median(drift)),
            "ruler_4k": scores[0], "ruler_8k": scores[1], "ruler_16k": scores[2]}


def _ablations(d: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The Table 5 rows and the rank correlations of each metric with RULER."""
    corr = {}
    for metric in ("floor", "rho_L", "attain_rel_dist_L", "drift_L_to_4L"):
        x = [r[metric] for r in rows]
        for col in ("ruler_8k", "ruler_16k"):
            y = [r[col] for r in rows]
            r_s, p_value = spearman(x, y)
            corr[f"{metric}~{col}"] = {"spearman": r_s, "p_value": p_value}
    return {
        "head_dim": d,
        "rows": rows,
        "spearman": corr,
        "source": "RULER averages: the paper's Table 5 (appendix A.6), Llama-1B models, as transcribed in "
        "shared/paper/frayed-rope-fulltext.txt; temperature-exponent rows omitted (no effect on geometry)",
        "n_configs": len(rows),
    }


# ---------------------------------------------------------------------------
# reporting and plotting (from the saved files alone)
# ---------------------------------------------------------------------------
def print_tables(out_dir: pathlib.Path) -> None:
    meta = read_json_file("--out", out_dir / "fig7.json", saved=True)
    abl = read_json_file("--out", out_dir / "fig7_ablations.json", saved=True)
    L = meta["train_len"]
    print(f"\nSection 4 criteria (L = {L}; medians over {meta['n_clouds']} Gaussian v; "
          f"C1: floor > all-rotating floor x {1 + C1_MARGIN:.2f}; C2: |rho_L - floor|/floor < {C2_RTOL:.0%})")
    print(f"{'schedule':30s} {'d':>3s} {'floor':>7s} {'rho_L':>7s} {'rho_4L':>7s} {'rho_16L':>7s} {'dist_L':>8s} "
          f"{'C1':>4s} {'C2':>4s} {'paper':>9s} {'agree':>5s}")
    for r in meta["criteria"]:
        exp = f"{'Y' if r['expected_C1'] else 'N'}/{'Y' if r['expected_C2'] else 'N'}"
        print(f"{r['label']:30s} {r['d']:3d} {r['floor_median']:7.4f} {r['rho_L']:7.4f} {r['rho_4L']:7.4f} "
              f"{r['rho_16L']:7.4f} {r['rel_dist_L_median']:8.2%} {'Y' if r['C1'] else 'N':>4s} "
              f"{'Y' if r['C2'] else 'N':>4s} {exp:>9s} {'yes' if r['agrees_with_paper'] else 'NO':>5s}")
    bad = [r for r in meta["criteria"] if not r["agrees_with_paper"]]
    if bad:
        print("Disagreements with the paper's expectation: " +
              "; ".join(f"{r['label']} d={r['d']}: C1={r['C1']}, C2={r['C2']} "
                        f"(dist_L {r['rel_dist_L_median']:.2%})" for r in bad))
    else:
        print("Every schedule meets exactly the criteria the paper expects.")
    print(f"\nRoPE-ID ablations (paper's Table 5, d = {abl['head_dim']}): geometry vs RULER")
    print(f"{'config':40s} {'floor':>7s} {'rho_L':>7s} {'dist_L':>8s} {'drift L->4L':>11s} {'8K':>6s} {'16K':>6s}")
    for r in abl["rows"]:
        print(f"{r['config']:40s} {r['floor']:7.4f} {r['rho_L']:7.4f} {r['attain_rel_dist_L']:8.3%} "
              f"{r['drift_L_to_4L']:11.3%} {r['ruler_8k']:6.2f} {r['ruler_16k']:6.2f}")
    print(f"Spearman rank correlations (n = {abl['n_configs']:d} configs):")
    for k, v in abl["spearman"].items():
        print(f"  {k:32s} rho_s = {v['spearman']:+.3f}  (p = {v['p_value']:.3f})")


#: two medians within this relative distance of each other ...
COINCIDE_RTOL = 0.01
#: ... on at least this share of the lengths are drawn so that both show (the later one dashed)
COINCIDE_SHARE = 0.25


def _band(ax, n, lo, hi, col, ls: Any = "-") -> None:
    """A 5-95% band: a light fill and its two edges in the schedule's colour (bands that coincide, as
    RoPE-ID's and half-RoPE's do past L, still show both edges' colours)."""
    ax.fill_between(n, lo, hi, color=col, alpha=0.12, lw=0)
    for edge in (lo, hi):
        ax.plot(n, edge, color=col, lw=0.6, alpha=0.8, ls=ls)


def plot(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Draw fig7.png / fig7.pdf from fig7.csv and fig7.json alone."""
    import matplotlib.pyplot as plt
    meta = read_json_file("--out", out_dir / "fig7.json", saved=True)
    with open(out_dir / "fig7.csv") as fh:
        rows = list(csv.DictReader(fh))
    dims = meta["head_dims"]
    fig, axes = plt.subplots(2, len(dims), figsize=(6 * len(dims), 8), sharex=True, squeeze=False)
    L = meta["train_len"]
    for c, d in enumerate(dims):
        drawn: list[np.ndarray] = []
        for key in meta["schedules"]:
            sel = [r for r in rows if r["schedule"] == key and int(r["d"]) == d]
            n = np.array([float(r["n"]) for r in sel])
            med = np.array([float(r["median"]) for r in sel])
            lo = np.array([float(r["q05"]) for r in sel])
            hi = np.array([float(r["q95"]) for r in sel])
            one = np.array([float(r["single_v"]) for r in sel])
            col = figstyle.color(key)
            lab = meta["schedules"][key]["label"]
            # a median on top of an earlier one (RoPE-ID on half-RoPE past L) is dashed, so both show
            same = any(np.mean(np.abs(med - m) <= COINCIDE_RTOL * m) >= COINCIDE_SHARE for m in drawn)
            drawn.append(med)
            style = {"color": col, "lw": 1.8, "label": lab, **({"ls": (0, (4, 3)), "zorder": 3} if same else {})}
            ax = axes[0, c]
            _band(ax, n, lo, hi, col, style.get("ls", "-"))
            ax.plot(n, med, **style)
            ax.plot(n, one, color=col, lw=0.8, ls=":")
            ax2 = axes[1, c]
            _band(ax2, n, 1 / hi ** 2, 1 / lo ** 2, col, style.get("ls", "-"))
            ax2.plot(n, 1 / med ** 2, **style)
            fc = meta["vertical_lines"][f"{key}_d{d}"]
            if fc <= n.max():
                for ax_ in (ax, ax2):
                    ax_.axvline(fc, color=col, lw=0.7, ls="--", alpha=0.7)
        for ax_ in (axes[0, c], axes[1, c]):
            ax_.axvline(L, color="k", lw=1.0, label=f"training length L = {L}")
            ax_.set_xscale("log")
            ax_.grid(alpha=0.3, which="both", lw=0.3)
            ax_.legend(fontsize=7, loc="lower left" if ax_ is axes[0, c] else "upper left")
        axes[0, c].set_ylim(0, 1.02)
        axes[0, c].set_ylabel("FSV ratio ||Rope(X)||_2 / ||X||_2")
        axes[0, c].set_title(f"d = {d}: FSV ratio (band 5-95% of clouds, dotted: one v)")
        axes[1, c].set_yscale("log")
        axes[1, c].set_ylabel("stable rank of Rope(u v^T)")
        axes[1, c].set_title(f"d = {d}: stable rank")
        axes[1, c].set_xlabel("length n (tokens; dashed: each schedule's slowest plane completes a cycle)")
    fig.suptitle(f"Figure 7, simulated: rank-1 clouds, {meta['n_clouds']} Gaussian v per schedule")
    return save_figures(fig, [out_dir / "fig7.png", out_dir / "fig7.pdf"])


def main(argv=None) -> int:
    ap = study_parser("ropetheory fig7", __doc__)
    ap.add_argument("--clouds", type=int, default=256, help="random Gaussian v per schedule (the paper's figure: 256)")
    ap.add_argument("--n-max", type=float, default=1e6, help="largest length n of the curves")
    ap.add_argument("--num", type=int, default=60, help="log-grid points")
    ap.add_argument(
        "--head-dims", type=int_list("--head-dims"), default=(128, 80), help="comma-separated head widths d"
    )
    args = parse_study_args(ap, argv)
    with device_scope(args.device):
        out = pathlib.Path(args.out)
        if not args.plot_only:
            dims = args.head_dims
            if args.clouds < 1 or args.n_max < 16 * TRAIN_LEN:
                raise BadValue(f"need --clouds >= 1 and --n-max >= 16 L = {16 * TRAIN_LEN}")
            compute(out, args.clouds, args.n_max, args.num, dims, args.quiet, resume=not args.fresh)
        print_tables(out)
        for p in plot(out):
            print(f"wrote {p}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
