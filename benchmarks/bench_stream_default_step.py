"""Benchmark: ``rank1_stream_curve`` with its default step (``phase_stream.default_phase_step``: from the
lengths, blocks of steps where they pay) against the former fixed 4096 positions a step, in the same run;
general weights ``1 + log1p(i)``, d = 128, log-spaced lengths.

    python benchmarks/bench_stream_default_step.py [--out docs/benchmarks/bench_stream_default_step_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import ropetheory as rt  # noqa: E402
from ropetheory import spectra as sp  # noqa: E402

#: the former default positions per step of ``rank1_stream_curve``
FORMER_STEP = 4096
#: (largest length, number of log-spaced lengths) timed
CASES = ((1e6, 200), (1e7, 200), (1e7, 20))


def ramp(pos):
    return 1.0 + jnp.log1p(pos.astype(jnp.float64))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/bench_stream_default_step.json")
    args = ap.parse_args(argv)
    th = rt.schedule("rope", head_dim=128, base=1e4)
    v = np.random.default_rng(0).standard_normal(128)
    res = {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "machine": platform.machine(),
           "former_step": FORMER_STEP, "cases": []}
    for n_max, num in CASES:
        L = sp.log_grid(n_max, num)
        row = {"n_max": int(L[-1]), "lengths": int(L.size), "default_step": sp.phase_stream.default_phase_step(L),
               "seconds": {}}
        rho = {}
        for name, step in (("former", FORMER_STEP), ("default", None)):
            sp.rank1_stream_curve(th, v, L, weights=ramp, positions_per_step=step)     # compile for these lengths
            t0 = time.perf_counter()
            rho[name] = sp.rank1_stream_curve(th, v, L, weights=ramp, positions_per_step=step).rho
            row["seconds"][name] = time.perf_counter() - t0
        row["speedup"] = row["seconds"]["former"] / row["seconds"]["default"]
        row["max_rel_diff_rho"] = float(np.max(np.abs(rho["default"] / rho["former"] - 1)))
        res["cases"].append(row)
        print(f"{num} lengths to {n_max:.0e}: step {FORMER_STEP} {row['seconds']['former']:.2f} s, default "
              f"({row['default_step']}) {row['seconds']['default']:.2f} s ({row['speedup']:.2f}x), rho "
              f"{row['max_rel_diff_rho']:.1e} apart", flush=True)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
