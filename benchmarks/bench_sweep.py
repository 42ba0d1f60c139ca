"""Benchmarks for sweeps: (a) streaming general-weight Gram at n = 1e6..1e9 (FLOP/s vs float64 peak);
(b) a Figure-7 sweep of many clouds to n = 1e6 on 1 device vs all visible devices; ratios in one run.

    python benchmarks/bench_sweep.py --part a [--n-max 1e9]
    python benchmarks/bench_sweep.py --part b [--clouds 4096]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import jax  # noqa: E402
import numpy as np  # noqa: E402

import ropetheory as rt  # noqa: E402
from ropetheory import spectra  # noqa: E402
from ropetheory.studies import sweep  # noqa: E402

#: float64 peaks (dense, tensor-core DGEMM), TFLOP/s, from NVIDIA's data sheets
FP64_PEAK_TFLOPS = {"H100": 67.0, "H200": 67.0}


def peak_for(device) -> float | None:
    kind = getattr(device, "device_kind", "")
    for k, v in FP64_PEAK_TFLOPS.items():
        if k in kind:
            return v
    return None


def part_a(n_max: float, d: int = 128) -> list[dict]:
    th = rt.schedule("rope", head_dim=d).theta
    V = np.random.default_rng(0).standard_normal((1, d))
    rows = []
    dev = jax.devices()[0]
    peak = peak_for(dev)
    n = 10 ** 6
    sweep.stream_gram_batch(th, V, [10 ** 5], alpha=-0.5)            # compile
    while n <= n_max:
        t0 = time.perf_counter()
        rho = sweep.stream_gram_batch(th, V, [n], alpha=-0.5)         # w_i = (i+1)^-1/2: general weights
        dt = time.perf_counter() - t0
        flops = 2.0 * n * d * d                                       # the Gram update alone
        r = {"n": n, "seconds": dt, "tflops": flops / dt / 1e12, "rho": float(rho[0, 0]),
             "fraction_of_fp64_peak": (flops / dt / 1e12 / peak) if peak else None}
        rows.append(r)
        print(f"n = {n:.0e}: {dt:8.3f} s, {r['tflops']:6.2f} TFLOP/s (Gram only)"
              + (f" = {r['fraction_of_fp64_peak']:.1%} of {peak} TFLOP/s fp64 peak" if peak else ""), flush=True)
        n *= 10
    return rows


def part_b(n_clouds: int) -> dict:
    th = rt.schedule("rope", head_dim=128).theta
    V = np.random.default_rng(0).standard_normal((n_clouds, 128))
    g = spectra.log_grid(1e6, 60)
    res = {}
    devs = jax.devices()
    for k in sorted({1, len(devs)}):
        mesh = sweep.device_mesh(devs[:k])
        sweep.sharded_rank1_curves(th, V, g, mesh=mesh)               # compile (same shapes as the timed run)
        t0 = time.perf_counter()
        rho = sweep.sharded_rank1_curves(th, V, g, mesh=mesh)
        res[k] = {"seconds": time.perf_counter() - t0, "clouds_per_s": n_clouds / (time.perf_counter() - t0)}
        res[k]["median_rho_at_1e6"] = float(np.median(rho[:, -1]))
        print(f"{k} device(s): {res[k]['seconds']:.2f} s for {n_clouds} clouds x {len(g)} lengths", flush=True)
    if len(res) > 1:
        res["scaling"] = res[1]["seconds"] / res[len(devs)]["seconds"]
        print(f"scaling 1 -> {len(devs)} devices: {res['scaling']:.2f}x")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["a", "b"], required=True)
    ap.add_argument("--n-max", type=float, default=1e9)
    ap.add_argument("--clouds", type=int, default=4096)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    print(f"devices: {jax.devices()}", flush=True)
    out = part_a(args.n_max) if args.part == "a" else part_b(args.clouds)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"devices": [str(x) for x in jax.devices()], "result": out},
                                                     indent=1, default=str))


if __name__ == "__main__":
    main()
