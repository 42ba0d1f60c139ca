"""Benchmark: Figure 7's computation (every schedule and Table-5 ablation, d = 128 and 80, 256 clouds,
the default grid) with the top eigenvalue only against the whole spectrum (the previous method), same run.

Times ``ropetheory.spectra.rank1_curves_batch`` over the clouds, schedules and grid of ``ropetheory fig7``,
compile excluded (one warm-up per shape). ``--clouds`` scales it. Heavier than the command itself: the 11
ablations run here on the whole 63-point grid, where ``fig7`` needs them at L, 4L and 16L only (32 x clouds x
63 Grams here; ``fig7 --clouds 4096`` computes 2 x 4096 x (5 x 63 + 11 x 3) = 2.85M).

    python benchmarks/bench_fig7.py [--clouds 256] [--methods default,eigvalsh] [--out results/bench_fig7.json]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import jax  # noqa: E402

from ropetheory import spectra as sp  # noqa: E402
from ropetheory.schedules import schedule_from_spec  # noqa: E402
from ropetheory.studies import figure7 as f7  # noqa: E402


def workload(n_clouds: int):
    """``(theta, V, grid)`` for every curve batch ``ropetheory fig7`` computes."""
    L = f7.TRAIN_LEN
    grid = f7.length_grid()
    jobs = []
    for d in (128, 80):
        V = f7.clouds(d, n_clouds)
        thetas = [f7.theta_of(key, d) for key in f7.SCHEDULES]
        thetas += [schedule_from_spec(dict(name="rope_id", train_len=L, head_dim=d, **kw)).theta
                   for _, kw, _ in f7.TABLE5]
        jobs += [(th, V, grid) for th in thetas]
    return jobs


def run(jobs, method):
    out = [sp.rank1_curves_batch(th, V, g, method=method).rho for th, V, g in jobs]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clouds", type=int, default=256)
    ap.add_argument("--methods", default="default,eigvalsh")
    ap.add_argument("--out", default="results/bench_fig7.json")
    args = ap.parse_args(argv)
    jobs = workload(args.clouds)
    warm = workload(2)
    res = {"device": str(jax.devices()[0]), "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
           "clouds": args.clouds, "curve_batches": len(jobs), "grid_points": int(len(jobs[0][2])),
           "default_method": sp.default_method(), "seconds": {}}
    rhos = {}
    for m in args.methods.split(","):
        method = None if m == "default" else m
        run(warm, method)                                   # compile every shape once
        t0 = time.perf_counter()
        rhos[m] = run(jobs, method)
        res["seconds"][m] = time.perf_counter() - t0
        print(f"{m:10s} ({method or sp.default_method()}): {res['seconds'][m]:.2f} s for {len(jobs)} batches of "
              f"{args.clouds} clouds x {res['grid_points']} lengths", flush=True)
    names = list(rhos)
    if len(names) > 1:
        a, b = names[0], names[1]
        res["speedup"] = res["seconds"][b] / res["seconds"][a]
        res["max_rel_diff"] = float(max(np.max(np.abs(x - y) / y) for x, y in zip(rhos[a], rhos[b], strict=False)))
        print(f"{a} is {res['speedup']:.2f}x faster than {b}; max relative difference {res['max_rel_diff']:.1e}")
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
