"""``ropetheory basebound``: Men et al.'s smallest RoPE base, by a certified search.

For each context length ``L`` the feasible set ``F_L = {b : B(m; b) >= 0 for all integers
0 <= m <= L}``, ``B(m; b) = sum_{j<d/2} cos(m b^(-2j/d))``, is searched over ``[b_min, b_max]``
by ``ropetheory.theory.search_feasible_bases``: every part of the domain ends proven
feasible, proven infeasible, or undecided (narrower than ``min_width`` in ln b, reported).
Writes ``base_bound.csv`` (one row per L), ``base_bound_windows.csv`` (every feasible window
and undecided interval), ``base_bound.json``, then ``base_bound.png`` from the saved numbers.
Each L is journaled when it finishes, keyed by its parameters and a hash of the search code:
a rerun skips finished lengths, and a change of parameters or code recomputes them. Within one
L the search state is checkpointed every 30 s (``base_bound_L<L>.ckpt.npz``): a killed run
resumes where it was.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import pathlib
import sys
from typing import Any

from ..store import Journal, derived_code_hash, write_csv, write_json
from .common import device_scope, parse_study_args, save_figure, study_parser
from ..theory import base_bound as bb, base_search
from ..core.errors import BadValue
from ..core.checks import read_json_file

#: the searched domain of bases (the command's defaults; docs/figures/ was computed with them)
B_MIN, B_MAX = 1e2, 1e10
SCALES = {"cpu": [4096, 8192, 16384],
          "gpu": [4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576]}


def code_hash() -> str:
    """sha256 (first 16 hex digits) of the search code: a stored row from other code is recomputed."""
    return derived_code_hash(__name__)


def row_key(L: int, d: int, b_min: float, b_max: float, min_width: float) -> str:
    return f"L={L}|d={d}|b=[{b_min!r},{b_max!r}]|w={min_width!r}|code={code_hash()}"


def run(out_dir: pathlib.Path, lengths: list[int], *, d: int = 128, b_min: float = B_MIN, b_max: float = B_MAX,
        min_width: float = bb.DEFAULT_MIN_WIDTH, quiet: bool = False, resume: bool = True) -> dict[str, Any]:
    from ..progress import progress
    out_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(out_dir / "base_bound.jsonl", resume=resume, code=code_hash())
    rows = []
    for L in lengths:
        key = row_key(L, d, b_min, b_max, min_width)
        if key not in journal:
            with progress(total=1.0, desc=f"basebound L={L}", quiet=quiet,
                          bar_format="{l_bar}{bar}| {n:.3f}/1 of ln b decided [{elapsed}]") as bar:
                res = base_search.search_feasible_bases(
                    train_len=L,
                    head_dim=d,
                    b_min=b_min,
                    b_max=b_max,
                    min_width=min_width,
                    progress=bar.update,
                    checkpoint=out_dir / f"base_bound_L{L}.ckpt.npz",
                )
            journal.add(key, res.as_row())
        rows.append(journal.rows[key])
    summary = [_summary(r) for r in rows]
    windows = [{"L": r["L"], "kind": kind, "b_lo": a, "b_hi": b, "ratio": b / a}
               for r in rows for kind in ("feasible", "undecided") for a, b in r[kind]]
    write_csv(out_dir / "base_bound.csv", summary)
    write_csv(out_dir / "base_bound_windows.csv", windows)
    meta = {"definition": DEFINITION, "d": d, "b_min": b_min, "b_max": b_max, "min_width_ln_b": min_width,
            "code": code_hash(), "rows": rows}
    write_json(out_dir / "base_bound.json", meta)
    return meta


DEFINITION = ("B(m; b) = sum_{j=0}^{d/2-1} cos(m b^(-2j/d)); feasible iff B(m; b) >= 0 for every integer "
              "0 <= m <= L (Men et al. 2024, Eq. for B_{m,theta}; their Table 2 lists the smallest such base)")


def _summary(r: dict) -> dict[str, Any]:
    widths = [b / a for a, b in r["feasible"]]
    return {"L": r["L"], "d": r["d"], "smallest": r["smallest"], "smallest_lower": r["smallest_lower"],
            "enclosure_rel_width": (r["smallest"] / r["smallest_lower"] - 1) if r["smallest"] else None,
            "men_table2": r["men_table2"], "windows": r["windows"],
            "narrowest_window_ratio": min(widths) if widths else None,
            "last_window_start": r["feasible"][-1][0] if r["feasible"] else None,
            "undecided_count": r["undecided_count"], "undecided_ln_measure": r["undecided_ln_measure"],
            "measure_per_decade": json.dumps({str(k): round(v, 6) for k, v in r["measure_per_decade"].items()}),
            "evaluations": r["evaluations"], "seconds": r["seconds"]}


def print_report(meta: dict) -> None:
    print(f"\nMen et al.'s base bound, certified (d = {meta['d']}, b in [{meta['b_min']:.0e}, {meta['b_max']:.0e}], "
          f"undecided below {meta['min_width_ln_b']:.0e} in ln b)")
    print("  " + meta["definition"])
    print(
        "  inf F_L lies in [lower, smallest]; 'narrowest' is the relative width b_hi/b_lo - 1 of the narrowest window"
    )
    print(f"{'L':>8s} {'inf F_L in [lower, smallest]':>36s} {'Men T2':>8s} {'windows':>7s} "
          f"{'narrowest':>10s} {'last window from':>16s} {'undecided (ln b)':>17s} {'time':>7s}")
    for r in meta["rows"]:
        s = _summary(r)
        enc = f"[{s['smallest_lower']:.11g}, {s['smallest']:.11g}]" if s["smallest"] else "none in the domain"
        men = f"{s['men_table2']:.2g}" if s["men_table2"] else "-"
        nar = f"{s['narrowest_window_ratio'] - 1:.1e}" if s["narrowest_window_ratio"] else "-"
        last = f"{s['last_window_start']:.5g}" if s["last_window_start"] else "-"
        print(f"{s['L']:>8d} {enc:>36s} {men:>8s} {s['windows']:>7d} {nar:>10s} {last:>16s} "
              f"{s['undecided_count']:>5d} / {s['undecided_ln_measure']:.1e} {s['seconds']:6.1f}s")


def saved(out_dir: pathlib.Path) -> dict[str, Any]:
    """The saved numbers: ``base_bound.json``, else the two CSVs (``docs/figures/`` keeps only those; the
    searched domain and undecided width are then the command's defaults, with which they were computed)."""
    if (out_dir / "base_bound.json").is_file():
        return read_json_file("--out", out_dir / "base_bound.json", saved=True)
    if not (out_dir / "base_bound.csv").is_file():
        raise BadValue(f"no base_bound.json or base_bound.csv in {str(out_dir)!r}; run without --plot-only first")
    with (out_dir / "base_bound.csv").open(encoding="utf-8") as fh:
        rows: list[dict[str, Any]] = [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()
                                       if k != "measure_per_decade"} for r in csv.DictReader(fh)]
    windows: dict[int, list[list[float]]] = {}
    with (out_dir / "base_bound_windows.csv").open(encoding="utf-8") as fh:
        for w in csv.DictReader(fh):
            if w["kind"] == "feasible":
                windows.setdefault(int(w["L"]), []).append([float(w["b_lo"]), float(w["b_hi"])])
    for r in rows:
        r["L"] = int(r["L"])
        r["feasible"] = windows.get(r["L"], [])
    return {"d": int(rows[0]["d"]) if rows else 128, "b_min": B_MIN, "b_max": B_MAX,
            "min_width_ln_b": bb.DEFAULT_MIN_WIDTH, "rows": rows}


def plot(out_dir: pathlib.Path) -> pathlib.Path:
    """``base_bound.png`` (and its PDF) in ``out_dir``, drawn from the saved numbers there (``saved``)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    meta = saved(out_dir)
    rows = meta["rows"]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 2.4))
    for y, r in enumerate(rows):
        for a, b in r["feasible"]:
            ax.plot([a, b], [y, y], color="tab:green", lw=6, solid_capstyle="butt")
            if b / a < 1.01:                                  # windows too narrow to see at this scale
                ax.plot([math.sqrt(a * b)], [y], "|", color="tab:green", ms=12)
        if r["smallest"]:
            ax.plot([r["smallest"]], [y], "v", color="k", ms=6)
        if r["men_table2"]:
            ax.plot([r["men_table2"]], [y], "x", color="tab:blue", ms=8, mew=2)
    ax.set_xscale("log")
    firsts = [r["smallest_lower"] for r in rows if r["smallest_lower"]]
    ax.set_xlim(max(meta["b_min"], 10 ** (math.floor(math.log10(min(firsts))) - 0.3)) if firsts else meta["b_min"],
                meta["b_max"])
    ax.set_yticks(range(len(rows)), [f"L = {r['L']}" for r in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("RoPE base b (log scale)")
    ax.set_ylabel("context length L (tokens)")
    ax.set_title(f"Feasible bases: B(m; b) >= 0 for every integer m <= L (d = {meta['d']}), certified;\n"
                 f"everything else is proven infeasible except undecided slivers < {meta['min_width_ln_b']:.0e} "
                 "in ln b at window ends", fontsize=10)
    # below the axes, so it covers no length's bar
    ax.legend(handles=[Line2D([], [], color="tab:green", lw=6, label="proven feasible window (| : narrower than 1%)"),
                       Line2D([], [], color="k", marker="v", ls="", label="smallest feasible base"),
                       Line2D([], [], color="tab:blue", marker="x", ls="", mew=2, label="Men et al. Table 2")],
              fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    ax.grid(True, which="major", axis="x", alpha=0.3)
    return save_figure(fig, out_dir / "base_bound.png")


def _lengths(s: str) -> list[int]:
    try:
        out = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lengths must be comma-separated integers, got {s!r}") from None
    if not out or any(not (1 <= L <= bb.MAX_L) for L in out):
        raise argparse.ArgumentTypeError(f"--lengths must be integers in [1, {bb.MAX_L}], got {s!r}")
    return out


def parser() -> argparse.ArgumentParser:
    ap = study_parser("ropetheory basebound", __doc__)
    ap.add_argument("--scale", choices=sorted(SCALES), default="cpu",
                    help="cpu: L = 4k, 8k, 16k (~2 min on 2 cores); gpu: L = 4k .. 1M")
    ap.add_argument("--lengths", type=_lengths, default=None, help="comma-separated L (overrides --scale)")
    ap.add_argument("--head-dim", type=int, default=128, help="head width d")
    ap.add_argument("--b-min", type=float, default=B_MIN, help="smallest base searched")
    ap.add_argument("--b-max", type=float, default=B_MAX, help="largest base searched")
    ap.add_argument("--min-width", type=float, default=bb.DEFAULT_MIN_WIDTH,
                    help="intervals narrower than this (in ln b) are reported undecided")
    return ap


def main(argv=None) -> int:
    args = parse_study_args(parser(), argv)
    with device_scope(args.device):
        out = pathlib.Path(args.out)
        if args.plot_only:
            meta = saved(out)
        else:
            meta = run(out, args.lengths or SCALES[args.scale], d=args.head_dim, b_min=args.b_min, b_max=args.b_max,
                       min_width=args.min_width, quiet=args.quiet, resume=not args.fresh)
        if "definition" in meta:                   # the full record (the CSVs alone are enough for the figure)
            print_report(meta)
        print(f"wrote {plot(out)}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
