"""Benchmarks for sweeps: (a) streaming general-weight Gram at n = 1e6..1e9 (FLOP/s vs float64 peak);
(b) a Figure-7 sweep of many clouds to n = 1e6 on 1 device vs all visible devices; (c) a batch of clouds
under shared general weights: one stream of weighted phase sums (``sweep.stream_gram_batch``) against every
cloud's rows rotated and multiplied (the previous kernel, ``stream_gram_curve``); ratios in one run.

    python benchmarks/bench_sweep.py --part a [--n-max 1e9]
    python benchmarks/bench_sweep.py --part b [--clouds 4096]
    python benchmarks/bench_sweep.py --part c [--n-max 2e5] [--out docs/benchmarks/bench_sweep_batch_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
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


def _power_rows(pos, V_il, alpha):
    """The previous kernel's rows ``sqrt((i+1)^alpha) v`` for every cloud: ``(clouds, C, d)``."""
    sw = jnp.sqrt((pos + 1).astype(jnp.float64) ** alpha)
    return sw[None, :, None] * V_il[:, None, :]


def _rotated_rows_batch(th, V, L, step):
    lam = spectra.stream_gram_curve(th, _power_rows, (jnp.asarray(V), -0.5), L, positions_per_step=step)["lam"]
    W = spectra.stream_weight_sums(sweep._power_weights(-0.5), L, positions_per_step=step)
    return np.sqrt(lam / W[:, None]).T


def _phase_sums_batch(th, V, L, step):
    return sweep.stream_gram_batch(th, V, L, alpha=-0.5)                 # its own default step


def part_c(n_max: float) -> list[dict]:
    rows = []
    for n_clouds, d in ((64, 64), (128, 128)):
        th = rt.schedule("rope", head_dim=d).theta
        V = spectra.check_clouds(np.random.default_rng(0).standard_normal((n_clouds, d)), th.size)
        L = spectra.log_grid(n_max, 20)
        step = 2 ** max(6, int(np.log2(max(64, (4 << 20) // (8 * n_clouds * d * 3)))))   # its own CPU default

        times, rho = {}, {}
        for name, fn in (("rotated_rows", _rotated_rows_batch), ("phase_sums", _phase_sums_batch)):
            fn(th, V, L, step)                                            # compile
            t0 = time.perf_counter()
            rho[name] = fn(th, V, L, step)
            times[name] = time.perf_counter() - t0
        r = {"clouds": n_clouds, "d": d, "n_max": int(L[-1]), "lengths": int(L.size), "seconds": times,
             "speedup": times["rotated_rows"] / times["phase_sums"],
             "max_rel_diff_rho": float(np.max(np.abs(rho["phase_sums"] - rho["rotated_rows"]) / rho["rotated_rows"]))}
        rows.append(r)
        print(f"{n_clouds} clouds, d = {d}, to n = {r['n_max']:.0e}: rotated rows {times['rotated_rows']:.2f} s, "
              f"phase sums {times['phase_sums']:.2f} s ({r['speedup']:.1f}x), rho {r['max_rel_diff_rho']:.1e} apart",
              flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["a", "b", "c"], required=True)
    ap.add_argument("--n-max", type=float, default=1e9)
    ap.add_argument("--clouds", type=int, default=4096)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    print(f"devices: {jax.devices()}", flush=True)
    parts = {"a": lambda: part_a(args.n_max), "b": lambda: part_b(args.clouds), "c": lambda: part_c(args.n_max)}
    out = parts[args.part]()
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"devices": [str(x) for x in jax.devices()],
                                                      "cpu_count": os.cpu_count(), "machine": platform.machine(),
                                                      "argv": sys.argv[1:], "result": out}, indent=1, default=str))


if __name__ == "__main__":
    main()
