"""Throughput of the batched top-eigenvalue step (128 x 128 float64 Gram matrices) on this device.

Figure-7 style sweeps spend their time in one eigvalsh per (cloud, length). This compares
``lax.map`` (one matrix at a time) with ``vmap`` (batched) on the current JAX backend.
    python benchmarks/bench_eig.py [--batch 2048]
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

import ropetheory  # noqa: E402,F401


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--d", type=int, default=128)
    args = ap.parse_args(argv)
    A = np.random.default_rng(0).standard_normal((args.batch, args.d, args.d))
    A = jnp.asarray(A @ A.transpose(0, 2, 1))
    out = {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "batch": args.batch, "d": args.d}
    for name, fn in (("lax_map", jax.jit(lambda A: jax.lax.map(lambda G: jnp.linalg.eigvalsh(G)[-1], A))),
                     ("vmap", jax.jit(lambda A: jnp.linalg.eigvalsh(A)[:, -1]))):
        fn(A).block_until_ready()
        t0 = time.perf_counter()
        fn(A).block_until_ready()
        dt = time.perf_counter() - t0
        out[f"{name}_matrices_per_s"] = args.batch / dt
        print(f"{name:8s}: {args.batch / dt:10.0f} eigvalsh/s ({dt:.3f} s for {args.batch})", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
