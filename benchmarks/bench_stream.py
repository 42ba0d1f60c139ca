"""Benchmark: the streaming Gram kernel, general weights, to n (1e9 on an accelerator), anchored phases
against exactly reduced phases per element (the previous kernel), in the same run, and the fraction of
the float64 peak spent on the Gram update ``2 n d^2`` flops.

    python benchmarks/bench_stream.py [--n 1e9] [--d 128] [--positions-per-step 65536] [--peak-tflops 67]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import ropetheory as rt  # noqa: E402
from ropetheory import spectra as sp  # noqa: E402


def ramp(pos):
    """General weights for the benchmark: ``w_i = 1 + log1p(i)`` (no closed form)."""
    return 1.0 + jnp.log1p(pos.astype(jnp.float64))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    gpu = jax.default_backend() != "cpu"
    ap.add_argument("--n", type=float, default=1e9 if gpu else 1e7)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--positions-per-step", type=int, default=65536 if gpu else 4096,
                    help="positions per step of the streaming loop")
    ap.add_argument("--peak-tflops", type=float, default=67.0 if gpu else 0.0,
                    help="float64 peak of the device (H100 SXM tensor cores: 67)")
    ap.add_argument("--out", default="results/bench_stream.json")
    args = ap.parse_args(argv)
    n = int(args.n)
    th = rt.schedule("rope", head_dim=args.d, base=1e4).theta
    v = np.random.default_rng(0).standard_normal(args.d)
    lengths = [n // 100, n // 10, n]
    res = {"device": str(jax.devices()[0]), "n": n, "d": args.d, "positions_per_step": args.positions_per_step,
           "seconds": {}}
    lams = {}
    for phases in ("anchored", "exact"):
        def go(phases=phases):
            vv = jnp.asarray(v / np.linalg.norm(v))
            rows = sp.stream._rank1_rows_callable(ramp)
            return sp.stream_gram_curve(th, rows, (vv,), lengths, positions_per_step=args.positions_per_step,
                                        phases=phases)["lam"]
        sp.stream_gram_curve(th, sp.stream._rank1_rows_callable(ramp), (jnp.asarray(v),),
                             [args.positions_per_step * 2], positions_per_step=args.positions_per_step,
                             phases=phases)       # compile
        t0 = time.perf_counter()
        lams[phases] = np.asarray(go())
        res["seconds"][phases] = time.perf_counter() - t0
        flops = 2.0 * n * args.d ** 2
        res[f"{phases}_tflops"] = flops / res["seconds"][phases] / 1e12
        line = (f"{phases:8s}: {res['seconds'][phases]:.3f} s to n = {n:.0e} "
                f"({res[f'{phases}_tflops']:.2f} TFLOP/s on G += Y^T Y")
        if args.peak_tflops:
            res[f"{phases}_peak_fraction"] = res[f"{phases}_tflops"] / args.peak_tflops
            line += f", {100 * res[f'{phases}_peak_fraction']:.0f}% of {args.peak_tflops:g}"
        print(line + ")", flush=True)
    res["speedup"] = res["seconds"]["exact"] / res["seconds"]["anchored"]
    res["max_rel_diff_lam"] = float(np.max(np.abs(lams["anchored"] - lams["exact"]) / lams["exact"]))
    print(f"anchored is {res['speedup']:.2f}x faster; top eigenvalues agree to {res['max_rel_diff_lam']:.1e}")
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
