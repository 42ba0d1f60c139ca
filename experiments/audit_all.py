"""Audit every built-in RoPE implementation, per dtype, to 8x a Llama 3.1 context (131072 -> 1048576),
on the CPU or a GPU; writes the findings table (one row per implementation x dtype x device) and the
per-position errors.

    python experiments/audit_all.py --device cpu  --out docs/audit
    python experiments/audit_all.py --device cuda --out docs/audit      # adds liger-kernel's Triton RoPE
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import traceback

from ropetheory.store import write_csv, write_json
from ropetheory.studies.audit import plot, run_audit

CPU_TARGETS = ["reference", "float32-positions", "transformers", "torchtune", "torchtune-llama3",
               "rotary-embedding-torch", "x-transformers", "mlx", "keras-hub", "litgpt"]
#: Llama 3.1 8B: d = 128, base 5e5, context 131072
HEAD_DIM, BASE, CONTEXT = 128, 5e5, 131072


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="results/audit_all")
    ap.add_argument("--factor", type=int, default=8)
    ap.add_argument("--vectors", type=int, default=4)
    ap.add_argument("--figures", action="store_true", help="draw each implementation's figure")
    args = ap.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    targets = CPU_TARGETS + (["liger"] if args.device.startswith("cuda") else [])
    table, rows, skipped = [], [], []
    for t in targets:
        try:
            res = run_audit(t, head_dim=HEAD_DIM, base=BASE, context=CONTEXT, factor=args.factor,
                            dtypes=["float32", "bfloat16", "float16"], vectors=args.vectors, device=args.device)
        except Exception as e:                                   # an adapter that cannot run here is reported
            skipped.append({"target": t, "device": args.device, "error": f"{type(e).__name__}: {e}"})
            traceback.print_exc()
            continue
        rows += res["rows"]
        if args.figures:
            fig_dir = out / "figures" / f"{t}_{args.device.split(':')[0]}"
            fig_dir.mkdir(parents=True, exist_ok=True)
            plot(res, fig_dir)
        for dt, r in res["dtypes"].items():
            far = max(r["logit"], key=lambda e: e["max_abs_err"])
            table.append({"implementation": t, "dtype": dt, "device": args.device,
                          "worst_abs_err": r["worst_abs_err"], "worst_ulps": r["worst_ulps"],
                          "worst_floor_ratio": r["worst_floor_ratio"], "worst_position": r["worst_position"],
                          "ratio_within_context": r["ratio_at_context"],
                          "first_position_over_floor": r["first_over_floor"],
                          "worst_logit_err": far["max_abs_err"], "logit_err_distance": far["distance"],
                          "logit_floor": far["floor"],
                          "verdict": r["verdict"]})
            print(f"{t:24s} {r['verdict']}")
    write_csv(out / f"table_{args.device.split(':')[0]}.csv", table)
    write_csv(out / f"positions_{args.device.split(':')[0]}.csv", rows)
    write_json(out / f"skipped_{args.device.split(':')[0]}.json", {"skipped": skipped})
    return 0


if __name__ == "__main__":
    sys.exit(main())
