"""Does Pallas's Mosaic GPU backend lower float64? Three kernels over 4096 float64 128 x 128 matrices, one
program a matrix: a scale by 2, a matrix-vector product, and 64 power-iteration steps with the matrix held by
the program (Mosaic stages each block in shared memory). Each prints OK with its rate, or FAILED with the error.

Session 19, one H100, jax 0.11.2: all three FAILED (``AssertionError()`` from the lowering), so the route of
issue #39 item 1 through Mosaic GPU is closed (``docs/benchmarks/mosaic_f64_h100_s19.json``).

    JAX_ENABLE_X64=1 python benchmarks/bench_mosaic_f64.py
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

B, D, STEPS = 4096, 128, 64


def call(kern, out_shape, out_spec):
    from jax.experimental.pallas import mosaic_gpu as plgpu
    return pl.pallas_call(kern, out_shape=out_shape, grid=(B,),
                          in_specs=[pl.BlockSpec((None, D, D), lambda i: (i, 0, 0)),
                                    pl.BlockSpec((D,), lambda i: (0,))],
                          out_specs=out_spec, compiler_params=plgpu.CompilerParams())


def k_scale(x_ref, v_ref, o_ref):
    o_ref[...] = x_ref[...] * 2.0


def k_matvec(x_ref, v_ref, o_ref):
    o_ref[...] = jnp.sum(x_ref[...] * v_ref[...][None, :], axis=1)


def k_power(x_ref, v_ref, o_ref):
    def body(i, q):
        w = jnp.sum(x_ref[...] * q[None, :], axis=1)
        return w / jnp.sqrt(jnp.sum(w * w))
    o_ref[...] = jax.lax.fori_loop(0, STEPS, body, v_ref[...])


def main() -> int:
    jax.config.update("jax_enable_x64", True)
    X = np.random.default_rng(0).standard_normal((B, D, 8))
    G = jnp.asarray(X @ np.swapaxes(X, 1, 2))
    G = G / jnp.max(jnp.abs(G), axis=(1, 2))[:, None, None]
    v = jnp.ones((D,), jnp.float64) / np.sqrt(D)
    tests = [("f64 scale", k_scale, jax.ShapeDtypeStruct((B, D, D), jnp.float64),
              pl.BlockSpec((None, D, D), lambda i: (i, 0, 0))),
             ("f64 matvec", k_matvec, jax.ShapeDtypeStruct((B, D), jnp.float64),
              pl.BlockSpec((None, D), lambda i: (i, 0))),
             ("f64 64-step power iteration, matrix in SMEM", k_power, jax.ShapeDtypeStruct((B, D), jnp.float64),
              pl.BlockSpec((None, D), lambda i: (i, 0)))]
    for name, k, o, s in tests:
        try:
            f = jax.jit(call(k, o, s))
            f(G, v).block_until_ready()
            t0 = time.perf_counter()
            f(G, v).block_until_ready()
            print(name, "OK", f"{B / (time.perf_counter() - t0):.3g} matrices/s", flush=True)
        except Exception as e:                     # a lowering that refuses float64 is the result
            print(name, "FAILED:", repr(e)[:500], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
