"""Pallas kernels for the certified top eigenvalue of 128 x 128 float64 Grams, against
``eigvalsh``, ``subspace_top`` and cuSOLVER's Cholesky certificate on the same batch in the same run.

A prototype measured for issue #39 item 1, not a method of the package. One program per matrix, the matrix
held by the program: Lanczos without reorthogonalisation (three vectors of state; the Cholesky certificate
``topeig.certified_below``, not the recurrence, vouches for the value), Sturm multisection on its
tridiagonal (in the kernel, or in JAX), and an LDL^T certificate in the kernel (``mu I - G`` is positive
definite iff every pivot is positive). On CPU the kernels run in Pallas's interpreter: a correctness check at
a small batch; the timings mean something on a GPU only. Measured with the Triton backend
(``docs/benchmarks/bench_topeig_pallas_h200_s18.json``); ``--backend mosaic`` (Mosaic GPU) does not lower float64
(session 19, jax 0.11.2, H100: every kernel of a smoke test failed, a scale by 2 included). The kernel that
holds the matrix on chip is ``bench_topeig_cuda.py``.

    JAX_ENABLE_X64=1 python benchmarks/bench_topeig_pallas.py [--batch 4096] [--backend triton|mosaic]
        [--out results/bench_topeig_pallas.json]
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.experimental import pallas as pl  # noqa: E402

from bench_topeig_gpu import best_time, report, scaled_grams  # noqa: E402
from ropetheory.spectra.topeig import CERT_RTOL, certified_below, subspace_top  # noqa: E402
from ropetheory.spectra.tridiag import sturm_bracket  # noqa: E402

#: Lanczos steps: 64, as ``topeig.LANCZOS_STEPS`` (Pallas's Triton lowering takes power-of-two shapes only)
STEPS = 64
#: in-kernel multisection: 64 shifts a round, 11 rounds (the bracket shrinks by 64^11 = 2^66, below an ulp)
NS, ROUNDS = 64, 11
EPS, TINY = float(np.finfo(np.float64).eps), float(np.finfo(np.float64).tiny)
INTERPRET = jax.default_backend() == "cpu"


#: the Pallas GPU backend the kernels are compiled for (``--backend``): ``"triton"`` (measured: the matrix is
#: streamed from memory each step) or ``"mosaic"`` (Mosaic GPU, which stages each block in shared memory)
BACKEND = {"name": "triton"}


def _params(warps):
    if INTERPRET:
        return None
    if BACKEND["name"] == "mosaic":
        from jax.experimental.pallas import mosaic_gpu as plgpu
        return plgpu.CompilerParams()
    from jax.experimental.pallas import triton as plt
    return plt.CompilerParams(num_warps=warps)


def _lanczos(load, q, K):
    """``K`` Lanczos steps on the matrix ``load()`` from the unit vector ``q``: ``(alpha, beta)``, each (K,)."""
    kidx = jax.lax.broadcasted_iota(jnp.int32, (K,), 0)

    def body(k, c):
        q, qp, beta, al, be = c
        w = jnp.sum(load() * q[None, :], axis=1)
        a = jnp.sum(w * q)
        w = w - a * q - beta * qp
        w = w - jnp.sum(w * q) * q                       # one local reorthogonalisation against q
        b = jnp.sqrt(jnp.sum(w * w))
        qn = w * jnp.where(b > 0, 1.0 / jnp.where(b > 0, b, 1.0), 0.0)
        return qn, q, b, jnp.where(kidx == k, a, al), jnp.where(kidx == k, b, be)
    z = jnp.zeros((K,), jnp.float64)
    _, _, _, al, be = jax.lax.fori_loop(0, K, body, (q, jnp.zeros_like(q), jnp.float64(0), z, z))
    return al, be


def _sturm(al, be, K):
    """Top eigenvalue of the tridiagonal ``(al, be[:K-1])`` by multisection on Sturm counts, in the kernel:
    the scheme of ``tridiag.sturm_bracket`` (LAPACK's pivmin) with a looser Gershgorin interval."""
    kidx = jax.lax.broadcasted_iota(jnp.int32, (K,), 0)
    babs = jnp.where(kidx < K - 1, jnp.abs(be), 0.0)
    bm = jnp.max(babs)
    lo, hi = jnp.min(al) - 2 * bm, jnp.max(al) + 2 * bm
    hi = hi + 4 * EPS * jnp.maximum(jnp.abs(hi), jnp.abs(lo))
    b2 = babs * babs
    pivmin = TINY * jnp.maximum(1.0, jnp.max(b2))
    frac = (jax.lax.broadcasted_iota(jnp.int32, (NS,), 0).astype(jnp.float64) + 1.0) / NS

    def rnd(_, st):
        lo, hi = st
        x = lo + (hi - lo) * frac

        def piv(k, c):
            q, cnt = c
            q = (jnp.sum(jnp.where(kidx == k, al, 0.0)) - x - jnp.sum(jnp.where(kidx == k - 1, b2, 0.0)) / q)
            q = jnp.where(jnp.abs(q) < pivmin, -pivmin, q)
            return q, cnt + (q < 0).astype(jnp.int32)
        _, cnt = jax.lax.fori_loop(0, K, piv, (jnp.ones((NS,), jnp.float64), jnp.zeros((NS,), jnp.int32)))
        above = cnt >= K
        return jnp.max(jnp.where(above, lo, x)), jnp.min(jnp.where(above, x, hi))
    lo, hi = jax.lax.fori_loop(0, ROUNDS, rnd, (lo, hi))
    return 0.5 * (lo + hi)


def _specs(d):
    return [pl.BlockSpec((1, d, d), lambda i: (i, 0, 0)), pl.BlockSpec((1, d), lambda i: (0, 0))]


def lanczos_call(B, d, K=STEPS, warps=8, reload=False):
    """``(G (B, d, d), v0 (1, d)) -> (alpha, beta)``, each (B, K); ``reload``: read the matrix from memory
    each step instead of holding it."""
    def kern(g_ref, v_ref, a_ref, b_ref):
        G = None if reload else g_ref[0]
        al, be = _lanczos((lambda: g_ref[0]) if reload else (lambda: G), v_ref[0], K)
        a_ref[0], b_ref[0] = al, be
    out = jax.ShapeDtypeStruct((B, K), jnp.float64)
    return pl.pallas_call(kern, grid=(B,), out_shape=(out, out), in_specs=_specs(d),
                          out_specs=(pl.BlockSpec((1, K), lambda i: (i, 0)),) * 2,
                          compiler_params=_params(warps), interpret=INTERPRET)


def lanczos_multi_call(B, d, M, K=STEPS, warps=8):
    """``lanczos_call`` with ``M`` matrices a program, read from memory each step: M independent recurrences
    interleaved, to hide each step's latency behind the others'."""
    def kern(g_ref, v_ref, a_ref, b_ref):
        kidx = jax.lax.broadcasted_iota(jnp.int32, (M, K), 1)

        def body(k, c):
            q, qp, beta, al, be = c
            w = jnp.sum(g_ref[...] * q[:, None, :], axis=2)
            a = jnp.sum(w * q, axis=1, keepdims=True)
            w = w - a * q - beta * qp
            w = w - jnp.sum(w * q, axis=1, keepdims=True) * q
            b = jnp.sqrt(jnp.sum(w * w, axis=1, keepdims=True))
            qn = w * jnp.where(b > 0, 1.0 / jnp.where(b > 0, b, 1.0), 0.0)
            return qn, q, b, jnp.where(kidx == k, a, al), jnp.where(kidx == k, b, be)
        q0 = jnp.broadcast_to(v_ref[...], (M, d))
        z = jnp.zeros((M, K), jnp.float64)
        _, _, _, al, be = jax.lax.fori_loop(0, K, body, (q0, jnp.zeros_like(q0), jnp.zeros((M, 1), jnp.float64), z, z))
        a_ref[...], b_ref[...] = al, be
    out = jax.ShapeDtypeStruct((B, K), jnp.float64)
    return pl.pallas_call(kern, grid=(B // M,), out_shape=(out, out),
                          in_specs=[pl.BlockSpec((M, d, d), lambda i: (i, 0, 0)),
                                    pl.BlockSpec((1, d), lambda i: (0, 0))],
                          out_specs=(pl.BlockSpec((M, K), lambda i: (i, 0)),) * 2,
                          compiler_params=_params(warps), interpret=INTERPRET)


def fused_call(B, d, K=STEPS, warps=8):
    """``(G, v0) -> theta (B,)``: Lanczos and the Sturm multisection in one kernel."""
    def kern(g_ref, v_ref, t_ref):
        G = g_ref[0]
        t_ref[0] = _sturm(*_lanczos(lambda: G, v_ref[0], K), K)
    return pl.pallas_call(kern, grid=(B,), out_shape=jax.ShapeDtypeStruct((B,), jnp.float64), in_specs=_specs(d),
                          out_specs=pl.BlockSpec((1,), lambda i: (i,)), compiler_params=_params(warps),
                          interpret=INTERPRET)


def ldl_call(B, d, warps=8):
    """``(G, mu (B,)) -> ok (B,)``: 1 where every pivot of ``mu I - G = L D L^T`` is positive."""
    def kern(g_ref, mu_ref, o_ref):
        ii = jax.lax.broadcasted_iota(jnp.int32, (d, d), 0)
        jj = jax.lax.broadcasted_iota(jnp.int32, (d, d), 1)
        A = jnp.where(ii == jj, mu_ref[0], 0.0) - g_ref[0]
        ri = jax.lax.broadcasted_iota(jnp.int32, (d,), 0)

        def body(j, c):
            A, ok = c
            col = jnp.sum(jnp.where(jj == j, A, 0.0), axis=1)
            p = jnp.sum(jnp.where(ri == j, col, 0.0))
            A = A - col[:, None] * (col * (1.0 / jnp.where(p > 0, p, 1.0)))[None, :]
            return A, ok & (p > 0)
        o_ref[0] = jax.lax.fori_loop(0, d, body, (A, jnp.bool_(True)))[1].astype(jnp.int32)
    return pl.pallas_call(kern, grid=(B,), out_shape=jax.ShapeDtypeStruct((B,), jnp.int32),
                          in_specs=[pl.BlockSpec((1, d, d), lambda i: (i, 0, 0)), pl.BlockSpec((1,), lambda i: (i,))],
                          out_specs=pl.BlockSpec((1,), lambda i: (i,)), compiler_params=_params(warps),
                          interpret=INTERPRET)


def sturm_jax(a, b):
    """The package's multisection (``tridiag.sturm_bracket``, pivots unrolled) on the Lanczos tridiagonal."""
    lo, hi = sturm_bracket(a, b[:, :-1], unroll=True)
    return 0.5 * (lo + hi)


def _variants(B, d, K, warps_list, mu):
    """name -> (jitted function of (G, v0), kind of its output); ``mu`` the certificate's shifts for the LDL
    kernel alone (eigvalsh's values times ``1 + CERT_RTOL``)."""
    v = {"eigvalsh": (jax.jit(lambda G, v0: jnp.linalg.eigvalsh(G)[:, -1]), "theta"),
         "subspace_top with its certificate": (jax.jit(lambda G, v0: subspace_top(G)), "certified")}
    for w in warps_list:
        v[f"lanczos warps={w}"] = (jax.jit(lanczos_call(B, d, K, w)), "tridiagonal")
        v[f"lanczos warps={w} reload"] = (jax.jit(lanczos_call(B, d, K, w, reload=True)), "tridiagonal")
        for M in (2, 4):
            v[f"lanczos warps={w} {M} matrices a program"] = (jax.jit(lanczos_multi_call(B, d, M, K, w)), "tridiagonal")
        v[f"lanczos+sturm fused warps={w}"] = (jax.jit(fused_call(B, d, K, w)), "theta")
        C = ldl_call(B, d, w)
        v[f"ldl certificate warps={w}"] = (jax.jit(lambda G, v0, C=C: C(G, mu)), "ok")
        L, F = lanczos_call(B, d, K, w), fused_call(B, d, K, w)
        v[f"pipeline: lanczos warps={w} + JAX sturm + cuSOLVER certificate"] = (jax.jit(
            lambda G, v0, L=L: (lambda th: (th, certified_below(G, th)))(sturm_jax(*L(G, v0)))), "certified")
        v[f"pipeline: fused warps={w} + cuSOLVER certificate"] = (jax.jit(
            lambda G, v0, F=F: (lambda th: (th, certified_below(G, th)))(F(G, v0))), "certified")
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16 if INTERPRET else 4096)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--warps", default="8,16")
    ap.add_argument("--backend", choices=("triton", "mosaic"), default="triton",
                    help="Pallas GPU backend (mosaic: Mosaic GPU; --warps is then ignored, one warpgroup a program)")
    ap.add_argument("--out", default="results/bench_topeig_pallas.json")
    args = ap.parse_args(argv)
    B, d = args.batch, args.d
    BACKEND["name"] = args.backend
    G, ref, v0 = scaled_grams(B, d)
    v0 = v0[None, :]                                                   # the kernels' (1, d) block
    res = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "backend": args.backend, "batch": B, "d": d,
           "steps": STEPS,
           "rows": {}}
    stj = jax.jit(sturm_jax)
    cert = jax.jit(lambda G: certified_below(G, jnp.asarray(ref)))
    warps = [0] if args.backend == "mosaic" else [int(w) for w in args.warps.split(",")]
    timed = dict(_variants(B, d, STEPS, warps, jnp.asarray(ref * (1 + CERT_RTOL))))
    timed["cuSOLVER Cholesky certificate alone"] = (lambda G, v0: cert(G), "ok")
    for name, (f, kind) in timed.items():
        try:
            out = jax.block_until_ready(f(G, v0))
            t = best_time(lambda G, f=f: f(G, v0), G, 3)
            row = {"seconds": t, "per_s": B / t}
            th = {"theta": out, "certified": out[0] if kind == "certified" else None,
                  "tridiagonal": stj(*out) if kind == "tridiagonal" else None}.get(kind)
            if th is not None:
                row["max_rel_to_eigvalsh"] = float(np.max(np.abs(np.asarray(th) - ref) / ref))
            if kind in ("certified", "ok"):
                row["certified_share"] = float(np.mean(np.asarray(out[1] if kind == "certified" else out)))
        except Exception as e:                           # a lowering the Triton backend refuses is a result too
            row = {"failed": repr(e)[:300]}
        res["rows"][name] = row
    report(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
