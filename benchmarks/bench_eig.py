"""Throughput of the batched top eigenvalue of 128 x 128 float64 PSD Gram matrices, by method, same run.

Figure-7 style sweeps spend their time in one top eigenvalue per (cloud, length). Compares
``ropetheory.spectra.top_eigenvalue`` with each method (``tridiagonal``, ``lanczos``, ``eigvalsh`` = the
whole spectrum, the previous method) on RoPE Gram matrices of rank-1 clouds (the real workload) and
reports the agreement with ``eigvalsh``.

    python benchmarks/bench_eig.py [--batch 2048] [--d 128] [--methods tridiagonal,lanczos,eigvalsh]
"""
import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ropetheory as rt  # noqa: E402
from ropetheory import spectra as sp  # noqa: E402


def grams(batch: int, d: int, theta=None) -> jax.Array:
    """Grams of random rank-1 clouds at log-spaced lengths up to 1e12 under the angles ``theta`` (``(d/2,)``;
    default RoPE, base 1e4): ``(batch, d, d)``."""
    th = rt.schedule("rope", head_dim=d, base=1e4).theta if theta is None else theta
    L = sp.log_grid(1e12, 200)
    D, S = sp.weighted_mean_phases(th, sp.CONSTANT, L)
    V = np.random.default_rng(0).standard_normal((-(-batch // len(L)), d))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    G = jax.jit(jax.vmap(lambda v: jax.vmap(lambda a, b: sp.assemble_gram(v, a, b))(D, S)))(jnp.asarray(V))
    return G.reshape(-1, d, d)[:batch]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--methods", default="tridiagonal,lanczos,subspace,eigvalsh")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    G = grams(args.batch, args.d)
    out = {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "batch": args.batch, "d": args.d,
           "default_method": sp.default_method()}
    ref = None
    vals = {}
    for m in args.methods.split(","):
        fn = jax.jit(lambda G, m=m: sp.top_eigenvalue(G, m))
        vals[m] = np.asarray(fn(G))
        best = np.inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn(G).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        out[f"{m}_matrices_per_s"] = args.batch / best
        print(f"{m:12s}: {args.batch / best:10.0f} matrices/s ({best * 1e3:.1f} ms for {args.batch})", flush=True)
    if "eigvalsh" in vals:
        ref = vals["eigvalsh"]
        for m, v in vals.items():
            out[f"{m}_max_rel_diff"] = float(np.max(np.abs(v - ref) / ref))
            out[f"{m}_speedup_over_eigvalsh"] = out[f"{m}_matrices_per_s"] / out["eigvalsh_matrices_per_s"]
            print(f"{m:12s}: {out[f'{m}_speedup_over_eigvalsh']:.2f}x eigvalsh, max relative difference "
                  f"{out[f'{m}_max_rel_diff']:.1e}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
