"""Throughput of the batched top eigenvalue of d x d float64 PSD Grams, every method against ``eigvalsh`` on
the same batch in the same run, beside the device's bounds, with the Cholesky certificate's pass rate.

Batch 4096 x 128 x 128 on an accelerator, 64 x 128 x 128 on CPU (a smoke run). For each method: matrices/s,
the ratio to ``eigvalsh``, the largest relative difference to ``eigvalsh``, and the share of matrices whose
value ``theta`` passes ``topeig.certified_below`` (Cholesky of ``theta (1 + CERT_RTOL) I - G``). For
``householder`` also the share of ``eigvalsh`` values inside its a priori enclosure ``[lo, hi]``. Bounds:
``compute_bound_per_s`` = float64 vector peak / (4/3 d^3 flops of a tridiagonalisation);
``memory_bound_per_s`` = memory bandwidth / the bytes ``householder`` streams per matrix (the trailing
matrix read once per column, read and written once per panel). Writes ``DIR/bench_topeig_<machine>.json``.

    JAX_ENABLE_X64=1 python benchmarks/bench_topeig_gpu.py --out docs/benchmarks [--batch 4096] [--d 128]
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

from bench_eig import grams  # noqa: E402
from ropetheory import spectra as sp  # noqa: E402
from ropetheory.spectra import topeig, tridiag  # noqa: E402

#: float64 vector (non-tensor-core) peak TFLOP/s and memory bandwidth TB/s, NVIDIA data sheets (SXM parts);
#: Householder's symmetric matrix-vector products cannot use the float64 tensor cores
DEVICE_PEAKS = {"H100": (34.0, 3.35), "H200": (34.0, 4.8)}


def machine_tag(dev) -> str:
    """``cpu``, or the accelerator's model (``h100``, ``h200``), else its ``device_kind`` in lower case."""
    if dev.platform == "cpu":
        return "cpu"
    return kind_tag(getattr(dev, "device_kind", dev.platform))


def kind_tag(kind: str) -> str:
    """An accelerator's name (JAX's ``device_kind``, torch's ``get_device_name``) as a file-name tag:
    ``h100``, ``h200``, else the name in lower case with ``_`` for anything not alphanumeric."""
    for k in DEVICE_PEAKS:
        if k in kind:
            return k.lower()
    return "".join(c if c.isalnum() else "_" for c in kind.lower())


def householder_bytes(d: int, panel: int = tridiag.PANEL) -> int:
    """float64 bytes ``householder_tridiagonal`` streams per matrix: per panel on a trailing ``n x n``, one
    read of it per column and one read + write at the panel's end."""
    total, n = 0, d
    while n > 1:
        cols = min(panel, n - 1)
        total += (cols + 2) * n * n
        n -= cols
    return 8 * total


def scaled_grams(batch: int, d: int, theta=None) -> tuple[jax.Array, np.ndarray, jax.Array]:
    """``(G, ref, v0)``: ``batch`` Grams (``bench_eig.grams``; RoPE unless ``theta``), each divided by its
    largest ``|entry|`` (so no product over- or underflows, as ``top_eigenvalue``'s power-of-two scaling
    ensures), their top eigenvalues by ``numpy.linalg.eigvalsh``, and a fixed unit start vector ``(d,)`` for
    the kernels' Lanczos."""
    G = grams(batch, d, theta)
    G = G / jnp.max(jnp.abs(G), axis=(1, 2))[:, None, None]
    v0 = jnp.asarray(np.random.default_rng(1).standard_normal(d))
    return G, np.linalg.eigvalsh(np.asarray(G))[:, -1], v0 / jnp.linalg.norm(v0)


def report(res: dict, out: str) -> None:
    """Print each row of ``res["rows"]`` and write ``res`` as JSON to ``out`` (its folder made)."""
    for name, row in res["rows"].items():
        print(f"{name}: {row}", flush=True)
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(out).write_text(json.dumps(res, indent=1))


def best_time(fn, G, repeat: int) -> float:
    """The shortest of ``repeat`` timed calls ``fn(G)``, each until every array of its result is ready."""
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(G))
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    gpu = jax.default_backend() != "cpu"
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4096 if gpu else 64)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--methods", default="householder,eigvalsh,tridiagonal,lanczos,subspace")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="docs/benchmarks")
    ap.add_argument("--note", default="", help="what else ran on the machine (kept in the JSON)")
    args = ap.parse_args(argv)
    if not jax.config.jax_enable_x64:
        ap.error("set JAX_ENABLE_X64=1 (the benchmark is float64)")
    dev = jax.devices()[0]
    G = grams(args.batch, args.d)
    d = args.d
    peak = next((v for k, v in DEVICE_PEAKS.items() if k in getattr(dev, "device_kind", "")), None)
    res = {"device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}", "machine": platform.node(),
           "cpu_count": os.cpu_count(), "jax": jax.__version__, "note": args.note, "batch": args.batch, "d": d,
           "default_method": sp.default_method(), "flops_per_matrix": 4 / 3 * d ** 3,
           "householder_bytes_per_matrix": householder_bytes(d), "methods": {}}
    if peak:
        res["compute_bound_per_s"] = peak[0] * 1e12 / res["flops_per_matrix"]
        res["memory_bound_per_s"] = peak[1] * 1e12 / res["householder_bytes_per_matrix"]
    methods = args.methods.split(",")
    methods = ["eigvalsh"] + [m for m in methods if m != "eigvalsh"]      # the baseline first
    cert = jax.jit(topeig.certified_below)
    for m in methods:
        fn = jax.jit(lambda G, m=m: sp.top_eigenvalue(G, m))
        t0 = time.perf_counter()
        val = np.asarray(fn(G))
        compile_s = time.perf_counter() - t0
        t = best_time(fn, G, 1 if m == "tridiagonal" and gpu else args.repeat)
        r = {"per_s": args.batch / t, "seconds": t, "first_call_s": compile_s,
             "certified_share": float(np.mean(np.asarray(cert(G, jnp.asarray(val)))))}
        if peak:
            r["share_of_compute_bound"] = r["per_s"] / res["compute_bound_per_s"]
            r["share_of_memory_bound"] = r["per_s"] / res["memory_bound_per_s"]
        if m != "eigvalsh":
            ref = res["methods"]["eigvalsh"]
            r["ratio_to_eigvalsh"] = r["per_s"] / ref["per_s"]
            r["max_rel_diff_to_eigvalsh"] = float(np.max(np.abs(val - ref["value"]) / ref["value"]))
        r["value"] = val
        res["methods"][m] = r
        print(f"{m:12s} {r['per_s']:12.0f} /s  {r.get('ratio_to_eigvalsh', 1.0):6.2f}x eigvalsh  "
              f"certified {r['certified_share']:.1%}  max rel diff {r.get('max_rel_diff_to_eigvalsh', 0.0):.1e}",
              flush=True)
    if "householder" in methods:
        enc = jax.jit(tridiag.householder_top)(G)
        ref = res["methods"]["eigvalsh"]["value"]
        res["householder_enclosure_holds_eigvalsh"] = float(np.mean((enc.lo <= ref) & (ref <= enc.hi)))
        res["householder_enclosure_max_rel_radius"] = float(np.max((enc.hi - enc.lo) / 2 / ref))
    for r in res["methods"].values():
        del r["value"]
    if peak:
        print(f"bounds: {res['compute_bound_per_s']:.3g}/s compute (float64 vector peak), "
              f"{res['memory_bound_per_s']:.3g}/s memory (householder's traffic)")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_topeig_{machine_tag(dev)}.json"
    path.write_text(json.dumps(res, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
