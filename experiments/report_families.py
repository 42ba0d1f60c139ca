"""The README's table of RoPE families: ``ropetheory report`` on every fixture config.

    python experiments/report_families.py [--out docs/figures/report_families.csv]

One row per (config, schedule): floor, reach length / L, C1, C2, drift at 4L under the config's
own scaling, and Men's check, all read from the report's JSON (same code path as the command).
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from ropetheory.store import write_csv
from ropetheory.studies import report

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "examples" / "configs"


def rows(n_clouds: int = report.N_CLOUDS) -> list[dict]:
    out = []
    for cfg in sorted(CONFIGS.glob("*.json")):
        rep = report.build(str(cfg), n_clouds=n_clouds)
        L = rep["train_len"]
        for s in rep["schedules"]:
            f, d4 = s["fsv"], next(r for r in s["drift"] if r["s"] == 4)
            out.append({"config": cfg.stem, "schedule": s["name"], "rope_type": s["rope_type"], "d": s["head_dim"],
                        "L": L, "horizon": s["horizon"], "floor": f["floor"], "allrot_floor": f["allrot_floor"],
                        "rho_H": f["rho_H"], "reach": f["reach_median"],
                        "reach_over_H": f["reach_median"] / s["horizon"] if f["reach_median"] else None,
                        "C1": f["C1"], "C2": f["C2"], "drift_4L_own": d4["drift_ratio_own"],
                        "men_holds": s["men"]["holds"], "men_min_B": s["men"]["min_B"]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/report_families.csv")
    ap.add_argument("--clouds", type=int, default=report.N_CLOUDS)
    args = ap.parse_args(argv)
    rs = rows(args.clouds)
    write_csv(pathlib.Path(args.out), rs)
    print(
        "| config | schedule | type | d | L (H) | floor | ρ at H | reach / H | C1 | C2 | drift at 4L | B(m) ≥ 0 to H |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    yn = {True: "yes", False: "no", None: "–"}
    for r in rs:
        LH = f"{r['L']}" + (f" ({r['horizon']})" if r["horizon"] != r["L"] else "")
        reach = f"{r['reach_over_H']:.3g}" if r["reach_over_H"] else "> 1e6"
        drift = f"{r['drift_4L_own']:.3g}" if r["drift_4L_own"] is not None else "–"
        print(f"| {r['config']} | {r['schedule']} | {r['rope_type']} | {r['d']} | {LH} | {r['floor']:.3f} | "
              f"{r['rho_H']:.3f} | {reach} | {yn[r['C1']]} | {yn[r['C2']]} | {drift} | {yn[r['men_holds']]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
