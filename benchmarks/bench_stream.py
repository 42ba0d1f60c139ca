"""Benchmark: the streaming Gram kernel, general weights, to n (1e9 on an accelerator), anchored phases
against exactly reduced phases per element (the previous kernel), in the same run, and the fraction of
the float64 peak spent on the Gram update ``2 n d^2`` flops.

    python benchmarks/bench_stream.py [--n 1e9] [--d 128] [--positions-per-step 65536] [--peak-tflops 67]
"""
from __future__ import annotations

import argparse
import os
import platform
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
from ropetheory.core.angles import turn_chunks  # noqa: E402
from ropetheory.core.devices import platform_class  # noqa: E402


def ramp(pos):
    """General weights for the benchmark: ``w_i = 1 + log1p(i)`` (no closed form)."""
    return 1.0 + jnp.log1p(pos.astype(jnp.float64))


def ramp_rows(pos, v):
    """The rank-1 rows ``sqrt(w_i) v`` for the general-rows kernel (rows rotated per step)."""
    return jnp.sqrt(ramp(pos))[:, None] * v[None, :]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    gpu = jax.default_backend() != "cpu"
    ap.add_argument("--n", type=float, default=1e9 if gpu else 1e7)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--positions-per-step", type=int, default=65536 if gpu else 4096,
                    help="positions per step of the streaming loop (the blocked phase sums: the platform's "
                         "phase_stream.MAX_DEFAULT_STEP)")
    ap.add_argument("--peak-tflops", type=float, default=67.0 if gpu else 0.0,
                    help="float64 peak of the device (H100 SXM tensor cores: 67)")
    ap.add_argument("--out", default="results/bench_stream.json")
    args = ap.parse_args(argv)
    n = int(args.n)
    th = rt.schedule("rope", head_dim=args.d, base=1e4).theta
    v = np.random.default_rng(0).standard_normal(args.d)
    lengths = [n // 100, n // 10, n]
    res = {"device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind,
           "cpu_count": os.cpu_count(), "machine": platform.machine(), "n": n, "d": args.d,
           "positions_per_step": args.positions_per_step,
           "seconds": {}}
    lams = {}
    vv = jnp.asarray(v / np.linalg.norm(v))
    chunk = args.positions_per_step

    def rows_stream(phases, ls):
        return sp.stream_gram_curve(th, ramp_rows, (vv,), ls, positions_per_step=chunk, phases=phases)["lam"]

    def phase_sums(ls, step=chunk, block=1):
        # the kernel of rt.rank1_stream_curve: weighted phase sums, one product on a fixed table per step or
        # (block > 1) one product per block of steps
        return sp.phase_stream.rank1_phase_stream_kernel(
            jnp.asarray(turn_chunks(th)), jnp.asarray(ls), vv, (), sp.stream._callable_weights(ramp), step,
            block=block)[0]

    ps = sp.phase_stream
    big = ps.MAX_DEFAULT_STEP[platform_class()]
    res["phase_blocks_step"], res["phase_blocks_block"] = big, ps.phase_block(big, args.d)
    variants = {"anchored": lambda ls: rows_stream("anchored", ls), "exact": lambda ls: rows_stream("exact", ls),
                "phase_sums": phase_sums,
                "phase_blocks": lambda ls: phase_sums(ls, big, res["phase_blocks_block"])}
    flops = 2.0 * n * args.d ** 2
    for name, go in variants.items():
        go([chunk * (k + 1) for k in range(len(lengths))])  # compile for as many lengths as are timed
        t0 = time.perf_counter()
        lams[name] = np.asarray(go(lengths))
        res["seconds"][name] = time.perf_counter() - t0
        res[f"{name}_tflops"] = flops / res["seconds"][name] / 1e12
        line = (f"{name:10s}: {res['seconds'][name]:.3f} s to n = {n:.0e} "
                f"({res[f'{name}_tflops']:.2f} TFLOP/s on the 2 n d^2 of G += Y^T Y")
        if args.peak_tflops:
            res[f"{name}_peak_fraction"] = res[f"{name}_tflops"] / args.peak_tflops
            line += f", {100 * res[f'{name}_peak_fraction']:.0f}% of {args.peak_tflops:g}"
        print(line + ")", flush=True)
    # a block forms one triangle of the pair products (half the 2 n d^2 counted above): the rate of the work
    # the device actually performs
    res["phase_blocks_tflops_performed"] = res["phase_blocks_tflops"] / 2
    if args.peak_tflops:
        res["phase_blocks_peak_fraction_performed"] = res["phase_blocks_tflops_performed"] / args.peak_tflops
    res["phase_blocks_over_phase_sums"] = res["seconds"]["phase_sums"] / res["seconds"]["phase_blocks"]
    res["max_rel_diff_lam_phase_blocks"] = float(np.max(np.abs(lams["phase_blocks"] - lams["exact"]) / lams["exact"]))
    print(f"phase sums in blocks of {res['phase_blocks_block']} steps ({big} positions) are "
          f"{res['phase_blocks_over_phase_sums']:.2f}x one product per step; top eigenvalues agree with exact "
          f"phases to {res['max_rel_diff_lam_phase_blocks']:.1e}")
    res["phase_sums_over_anchored"] = res["seconds"]["anchored"] / res["seconds"]["phase_sums"]
    res["max_rel_diff_lam_phase_sums"] = float(np.max(np.abs(lams["phase_sums"] - lams["exact"]) / lams["exact"]))
    print(f"phase sums are {res['phase_sums_over_anchored']:.2f}x faster than anchored rows; top eigenvalues "
          f"agree with exact phases to {res['max_rel_diff_lam_phase_sums']:.1e}")
    res["speedup"] = res["seconds"]["exact"] / res["seconds"]["anchored"]
    res["max_rel_diff_lam"] = float(np.max(np.abs(lams["anchored"] - lams["exact"]) / lams["exact"]))
    print(f"anchored is {res['speedup']:.2f}x faster; top eigenvalues agree to {res['max_rel_diff_lam']:.1e}")
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
