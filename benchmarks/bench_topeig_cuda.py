"""The CUDA kernel of the certified top eigenvalue of 128 x 128 float64 Grams (``ropetheory/spectra/cuda``),
against ``eigvalsh``, ``subspace_top`` and cuSOLVER's Cholesky certificate on the same batch in the same run.

The package runs this kernel as the method "cuda" (``ropetheory.spectra.cuda_topeig``: nvcc-built, behind an
XLA FFI call, inside jit). This benchmark compiles the same source with NVRTC at run time, once per build
variant (Lanczos steps, certificate columns a barrier), and launches it through the CUDA driver API
(``ctypes``) on the buffers JAX allocated, to time its phases; it needs an NVIDIA GPU, ``libnvrtc`` and
``libcuda``. The kernel's value is checked against ``eigvalsh``, its certificate against cuSOLVER's, and its
certificate of values 1e-9 below ``lambda_max`` must fail.

Rows: on RoPE (base 1e4) Grams, each kernel build (Lanczos steps, certificate columns a barrier) alone, after
the multisection and with the certificate; then on every workload (those Grams, Figure 7's five schedules'
Grams, and matrices whose top two eigenvalues are 1e-6 to 1e-2 apart), the two-pass pipeline: every matrix
with the first build, the ones it cannot certify again with the second (more steps), end to end, beside the
package's ``top_eigenvalue`` with "cuda" and with "subspace".

    JAX_ENABLE_X64=1 python benchmarks/bench_topeig_cuda.py [--batch 4096] [--out results/bench_topeig_cuda.json]
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import importlib.resources
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench_topeig_gpu import DEVICE_PEAKS, best_time, report, scaled_grams  # noqa: E402
from ropetheory.spectra.topeig import CERT_RTOL, certified_below, subspace_top, top_eigenvalue  # noqa: E402
from ropetheory.studies import figure7  # noqa: E402

#: the kernel's source as the package ships it (the method "cuda"); NVRTC compiles it alone with -DK=steps
KERNEL = importlib.resources.files("ropetheory.spectra") / "cuda" / "topeig_kernel.cuh"
#: the kernel's compile-time constants (``topeig_kernel.cuh``): matrix size, threads a block
D, NT = 128, 512
#: relative distance below eigvalsh's top eigenvalue of the values the certificate must reject (mu I - G is then
#: indefinite: mu = value (1 + CERT_RTOL) < lambda_max, since BELOW is far above CERT_RTOL and eigvalsh's error)
BELOW = 1e-9


def _load(names: list[str], patterns: list[str]) -> ctypes.CDLL:
    for n in names:
        try:
            return ctypes.CDLL(n)
        except OSError:
            pass
    for pat in patterns:
        for p in sorted(glob.glob(pat), reverse=True):
            try:
                return ctypes.CDLL(p)
            except OSError:
                pass
    raise RuntimeError(f"none of {names} found (also tried {patterns})")


def _check(lib: str, rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"{lib} {what} returned {rc}")


def compile_cubin(src: str, arch: str, defines: dict[str, int]) -> tuple[bytes, str]:
    """The kernel compiled by NVRTC for ``arch`` (e.g. ``sm_90``) with the macros ``defines`` (``K``: Lanczos
    steps, ``P``: certificate columns a barrier): ``(cubin, compiler log)``."""
    pats = [p + "/libnvrtc.so*" for p in
            ["/usr/local/cuda*/lib64", "/usr/local/lib/python3*/*-packages/nvidia/cuda_nvrtc/lib",
             "/usr/lib/python3*/*-packages/nvidia/cuda_nvrtc/lib", "/usr/lib/x86_64-linux-gnu"]]
    pats += [os.path.dirname(jax.__file__) + "/../nvidia/cuda_nvrtc/lib/libnvrtc.so*"]
    nv = _load(["libnvrtc.so", "libnvrtc.so.12", "libnvrtc.so.13"], pats)
    prog = ctypes.c_void_p()
    _check("nvrtc", nv.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"topeig.cu", 0, None, None), "create")
    for extra in ([b"--ptxas-options=-v"], []):
        opts = [f"--gpu-architecture={arch}".encode(), b"-std=c++17"]
        opts += [f"-D{k}={v}".encode() for k, v in defines.items()] + extra
        rc = nv.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        nv.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nv.nvrtcGetProgramLog(prog, log)
        if rc == 0:
            break
        print(f"nvrtc options {opts}: rc {rc}\n{log.value.decode(errors='replace')}", flush=True)
    _check("nvrtc", rc, "compile")
    _check("nvrtc", nv.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "cubin size")
    cubin = ctypes.create_string_buffer(size.value)
    _check("nvrtc", nv.nvrtcGetCUBIN(prog, cubin), "cubin")
    return cubin.raw, log.value.decode(errors="replace")


class Kernel:
    """The compiled ``topeig`` kernel in JAX's (the primary) CUDA context of device 0."""

    def __init__(self, arch: str, defines: dict[str, int], source=KERNEL):
        self.cu = cu = _load(["libcuda.so.1", "libcuda.so"], [])
        self.cubin, self.log = compile_cubin(source.read_text(), arch, defines)
        _check("cuda", cu.cuInit(0), "init")
        dev, ctx = ctypes.c_int(), ctypes.c_void_p()
        _check("cuda", cu.cuDeviceGet(ctypes.byref(dev), 0), "device")
        _check("cuda", cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "primary context")
        _check("cuda", cu.cuCtxSetCurrent(ctx), "set context")
        self.mod, self.fn = ctypes.c_void_p(), ctypes.c_void_p()
        _check("cuda", cu.cuModuleLoadData(ctypes.byref(self.mod), self.cubin), "load module")
        _check("cuda", cu.cuModuleGetFunction(ctypes.byref(self.fn), self.mod, b"topeig"), "get function")
        self.attrs = {}
        for name, code in (("registers", 4), ("local_bytes", 3), ("static_shared_bytes", 1)):
            v = ctypes.c_int()
            cu.cuFuncGetAttribute(ctypes.byref(v), code, self.fn)
            self.attrs[name] = v.value
        cu.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
        cu.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
        cu.cuMemcpyHtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
        self.buffers: dict = {}

    def _outputs(self, B: int) -> tuple[ctypes.c_uint64, ctypes.c_uint64]:
        """Device buffers for ``B`` values and verdicts, allocated once per batch size (freed at exit)."""
        if B not in self.buffers:
            out = []
            for nbytes in (8 * B, 4 * B):
                p = ctypes.c_uint64()
                _check("cuda", self.cu.cuMemAlloc_v2(ctypes.byref(p), nbytes), "alloc")
                out.append(p)
            self.buffers[B] = (out[0], out[1])
        return self.buffers[B]

    def __call__(self, G: jax.Array, v0: jax.Array, cert: int) -> tuple[np.ndarray, np.ndarray]:
        """``(theta, ok)`` for every matrix of ``G (B, 128, 128)`` (a JAX array on the GPU)."""
        B = G.shape[0]
        th, ok = self._outputs(B)
        self.launch(G, v0, th, ok, cert)
        out_t, out_o = self.read(th, ok, B)
        return out_t, out_o.astype(bool)

    def read(self, th, ok, B: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``B`` values and verdicts in the device buffers ``th``, ``ok``."""
        out_t, out_o = np.empty(B), np.empty(B, np.int32)
        _check("cuda", self.cu.cuMemcpyDtoH_v2(out_t.ctypes.data, th, 8 * B), "copy")
        _check("cuda", self.cu.cuMemcpyDtoH_v2(out_o.ctypes.data, ok, 4 * B), "copy")
        return out_t, out_o

    def indices(self, idx: np.ndarray) -> ctypes.c_uint64:
        """``idx`` (int32) copied to a device buffer (one a length, reused)."""
        n = idx.size
        if ("idx", n) not in self.buffers:
            p = ctypes.c_uint64()
            _check("cuda", self.cu.cuMemAlloc_v2(ctypes.byref(p), 4 * n), "alloc")
            self.buffers[("idx", n)] = (p, p)
        p = self.buffers[("idx", n)][0]
        idx = np.ascontiguousarray(idx, np.int32)
        _check("cuda", self.cu.cuMemcpyHtoD_v2(p, idx.ctypes.data, 4 * n), "copy")
        return p

    def launch(self, G, v0, th, ok, cert: int, idx: ctypes.c_uint64 | None = None, n: int = 0) -> None:
        """One launch over every matrix of ``G``, or over the ``n`` matrices whose indices are at ``idx``."""
        jax.block_until_ready((G, v0))
        args = [ctypes.c_uint64(G.unsafe_buffer_pointer()), ctypes.c_uint64(v0.unsafe_buffer_pointer()),
                ctypes.c_uint64(th.value), ctypes.c_uint64(ok.value), ctypes.c_double(CERT_RTOL),
                ctypes.c_int(int(cert)), ctypes.c_uint64(idx.value if idx is not None else 0)]
        params = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])
        grid = n if idx is not None else G.shape[0]
        _check("cuda", self.cu.cuLaunchKernel(self.fn, grid, 1, 1, NT, 1, 1, 0, None, params, None), "launch")
        _check("cuda", self.cu.cuCtxSynchronize(), "synchronize")

    def certify(self, G: jax.Array, v0: jax.Array, theta: np.ndarray) -> np.ndarray:
        """The in-kernel certificate's verdict on given values ``theta (B,)`` (``cert == 3``)."""
        B = G.shape[0]
        th, ok = self._outputs(B)
        theta = np.ascontiguousarray(theta, np.float64)
        _check("cuda", self.cu.cuMemcpyHtoD_v2(th, theta.ctypes.data, 8 * B), "copy")
        self.launch(G, v0, th, ok, 3)
        out_o = np.empty(B, np.int32)
        _check("cuda", self.cu.cuMemcpyDtoH_v2(out_o.ctypes.data, ok, 4 * B), "copy")
        return out_o.astype(bool)

    def time(self, G, v0, cert: int, repeat: int) -> float:
        """The shortest of ``repeat`` launches (after one untimed), each until the device is idle."""
        th, ok = self._outputs(G.shape[0])
        self.launch(G, v0, th, ok, cert)
        best = np.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            self.launch(G, v0, th, ok, cert)
            best = min(best, time.perf_counter() - t0)
        return best


#: cuSOLVER's Cholesky certificate (``topeig.certified_below``), compiled once for every row that uses it
cert_jax = jax.jit(certified_below)


def clustered(batch: int, d: int) -> tuple[jax.Array, np.ndarray]:
    """``(G, ref)``: ``Q diag(lam) Q^T``, Q Haar-random, lam_1 = 1, lam_2 = 1 - gap (gap log-uniform in
    [1e-6, 1e-2]), the rest uniform in [0, 0.9]; scaled like ``scaled_grams``; ref by numpy's eigvalsh. The
    top Ritz value converges slowly, so these exercise the pipeline's second pass."""
    rng = np.random.default_rng(2)
    lam = np.concatenate([np.ones((batch, 1)), 1 - 10 ** rng.uniform(-6, -2, (batch, 1)),
                          rng.uniform(0, 0.9, (batch, d - 2))], axis=1)
    Q, _ = jnp.linalg.qr(jnp.asarray(rng.standard_normal((batch, d, d))))
    G = jnp.einsum("bij,bj,bkj->bik", Q, jnp.asarray(lam), Q)
    G = 0.5 * (G + jnp.swapaxes(G, 1, 2))
    G = G / jnp.max(jnp.abs(G), axis=(1, 2))[:, None, None]
    return G, np.linalg.eigvalsh(np.asarray(G))[:, -1]


def compute_bounds(kind: str, steps: int) -> dict:
    """Rates no float64 kernel could beat on the device ``kind`` (its data sheet's non-tensor fp64 peak, the
    kernel's operations cannot use the tensor cores), for ``D x D`` matrices: one Householder
    tridiagonalisation (4/3 D^3 flops, the issue's yardstick) and this kernel's own arithmetic (``steps``
    Lanczos steps at 2 D^2 + 10 D flops, ``ROUNDS`` rounds of 128 Sturm counts at 4 flops a step, and the
    LDL^T certificate's D^3 / 3)."""
    peak = next((v[0] for k, v in DEVICE_PEAKS.items() if k in kind), None)
    kernel_flops = steps * (2 * D ** 2 + 10 * D) + 8 * 128 * steps * 4 + D ** 3 / 3
    out = {"fp64_peak_tflops": peak, "tridiagonalisation_flops": 4 / 3 * D ** 3, "kernel_flops": kernel_flops}
    if peak:
        out["tridiagonalisation_bound_per_s"] = peak * 1e12 / out["tridiagonalisation_flops"]
        out["kernel_arithmetic_bound_per_s"] = peak * 1e12 / kernel_flops
    return out


def two_pass(first: Kernel, second: Kernel, G: jax.Array, v0: jax.Array) -> tuple[np.ndarray, np.ndarray, int]:
    """``(theta, ok, redone)``: every matrix through ``first``; those it does not certify through ``second``,
    which reads them in place and writes over their results in ``first``'s buffers."""
    B = G.shape[0]
    th_d, ok_d = first._outputs(B)
    first.launch(G, v0, th_d, ok_d, 1)
    _, ok = first.read(th_d, ok_d, B)
    bad = np.flatnonzero(ok == 0).astype(np.int32)
    if bad.size:
        second.launch(G, v0, th_d, ok_d, 1, second.indices(bad), bad.size)
    th, ok = first.read(th_d, ok_d, B)
    return th, ok.astype(bool), int(bad.size)


def kernel_rows(rows: dict, res: dict, k: Kernel, tag: str, G, ref, v0, repeat: int, given_values: bool) -> None:
    """``k`` alone (Lanczos), after the multisection and with its certificate, on ``G``."""
    B = G.shape[0]
    res["kernels"][tag] = {**k.attrs, "nvrtc_log": k.log[-1500:]}
    t = k.time(G, v0, 2, repeat)
    rows[f"{tag}: lanczos alone (timing)"] = {"seconds": t, "per_s": B / t}
    for cert in (0, 1):
        th, ok = k(G, v0, cert)
        t = k.time(G, v0, cert, repeat)
        row = {"seconds": t, "per_s": B / t, "max_rel_to_eigvalsh": float(np.max(np.abs(th - ref) / ref))}
        if cert:
            row["certified_share"] = float(np.mean(ok))
            row["agrees_with_cusolver"] = bool(np.array_equal(ok, np.asarray(cert_jax(G, jnp.asarray(th)))))
            if given_values:
                row["certificates_of_values_below_lambda_max"] = int(np.sum(k.certify(G, v0, ref * (1 - BELOW))))
            rows[f"{tag}: lanczos + sturm + in-kernel LDL certificate"] = row
        else:
            rows[f"{tag}: lanczos + sturm"] = row


#: eigvalsh's top eigenvalue, the reference every row is timed against
eigvalsh_top = jax.jit(lambda G: jnp.linalg.eigvalsh(G)[:, -1])


def package_rows(G, ref, repeat: int) -> tuple[float, dict]:
    """``(eigvalsh's seconds, rows)``: the package's ``top_eigenvalue`` inside jit with "cuda" and with
    "subspace" on ``G``, each row its rate, its speed-up over eigvalsh and its largest relative distance
    from ``ref`` (eigvalsh's values), on the same batch in the same run."""
    B = G.shape[0]
    jax.block_until_ready(eigvalsh_top(G))
    t_eig = best_time(eigvalsh_top, G, repeat)
    rows = {}
    for m in ("cuda", "subspace"):
        fn = jax.jit(lambda G, m=m: top_eigenvalue(G, m))
        val = np.asarray(fn(G))
        tm = best_time(fn, G, repeat)
        rows[m] = {"per_s": B / tm, "vs_eigvalsh": t_eig / tm,
                   "max_rel_to_eigvalsh": float(np.max(np.abs(val - ref) / np.abs(ref)))}
    return t_eig, rows


def pipeline_row(first: Kernel, second: Kernel, G, ref, v0, repeat: int) -> dict:
    """The two-pass pipeline on ``G`` end to end (launches, copies, the second pass over an index list),
    beside eigvalsh and the package's ``top_eigenvalue`` with the methods "cuda" (the same kernel behind an
    XLA FFI call, inside jit: scaling, both passes and the eigvalsh fallback) and "subspace", on the same
    batch in the same run."""
    B = G.shape[0]
    t_eig, package = package_rows(G, ref, repeat)
    th, ok, redone = two_pass(first, second, G, v0)
    t = best_time(lambda G: two_pass(first, second, G, v0)[0], G, repeat)
    good = ok & np.isfinite(th)
    return {"package_top_eigenvalue": package,
            "seconds": t, "per_s": B / t, "eigvalsh_per_s": B / t_eig, "vs_eigvalsh": t_eig / t,
            "first_pass_certified_share": 1 - redone / B, "certified_share": float(np.mean(ok)),
            "max_rel_to_eigvalsh_certified": float(np.max(np.abs(th[good] - ref[good]) / ref[good], initial=0.0)),
            "certified_not_above_eigvalsh_plus_rtol": bool(np.all(ref[good] <= th[good] * (1 + CERT_RTOL)))}


def head_dim_row(B: int, d: int, repeat: int) -> dict:
    """Figure 7's RoPE (base 1e4) Grams of head width ``d``: the package's ``top_eigenvalue`` with "cuda" (the
    matrices embedded in 128 x 128 ones, ``cuda_topeig.embedded``) and with "subspace", against eigvalsh, on
    the same batch in the same run (what ``cuda_topeig.DEFAULT_FROM_D`` is chosen from)."""
    G, ref, _ = scaled_grams(B, d, figure7.theta_of("rope_1e4", d))
    t_eig, package = package_rows(G, ref, repeat)
    return {"eigvalsh_per_s": B / t_eig, **package,
            "cuda_vs_subspace": package["cuda"]["per_s"] / package["subspace"]["per_s"]}


def rank1_row(clouds: int, d: int, key: str, repeat: int) -> dict:
    """Figure 7's ``clouds`` clouds of schedule ``key`` at its grid of lengths, head width ``d``: the certified top
    eigenvalues with the Grams built in memory by XLA (``assemble_gram``, then the kernel reads them) against the
    kernel building each Gram in its registers (``cuda_topeig.rank1_top_and_certificate``), end to end inside
    jit, on the same clouds in the same run, each checked against eigvalsh of the assembled Grams."""
    from ropetheory.spectra import cuda_topeig, gram
    from ropetheory.spectra.topeig import top_eigenvalue_or_flag
    from ropetheory.spectra.weights import CONSTANT, weighted_mean_phases
    theta = figure7.theta_of(key, d)
    V = jnp.asarray(figure7.clouds(d, clouds))
    grid = figure7.length_grid()
    assert cuda_topeig.unavailable_reason() is None, cuda_topeig.unavailable_reason()
    Dm, Sm = weighted_mean_phases(theta, CONSTANT, gram.pad_lengths(grid.astype(np.int64)))
    in_memory = jax.jit(lambda V: top_eigenvalue_or_flag(jax.vmap(gram._cloud_grams, (0, None, None))(V, Dm, Sm),
                                                         "cuda"))
    in_kernel = jax.jit(lambda V: cuda_topeig.rank1_top_and_certificate(V, Dm, Sm))
    G = np.asarray(jax.vmap(gram._cloud_grams, (0, None, None))(V[:64], Dm, Sm))
    ref = np.linalg.eigvalsh(G)[..., -1]
    row: dict = {"matrices": int(V.shape[0] * Dm.shape[0])}
    for name, fn in (("grams_in_memory", in_memory), ("grams_in_kernel", in_kernel)):
        lam, ok = (np.asarray(x) for x in fn(V))
        t = best_time(fn, V, repeat)
        row[name] = {"seconds": t, "per_s": row["matrices"] / t, "certified_share": float(ok.mean()),
                     "max_rel_to_eigvalsh_first_64_clouds": float(np.max(np.abs(lam[:64] - ref) / ref))}
    row["in_kernel_speedup"] = row["grams_in_memory"]["seconds"] / row["grams_in_kernel"]["seconds"]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", default="64,48", help="Lanczos steps of each kernel built (comma-separated)")
    ap.add_argument("--panels", default="4", help="certificate columns a barrier of each kernel built")
    ap.add_argument("--pipeline", default="48,128", help="the two-pass pipeline's first and second steps")
    ap.add_argument("--baseline-kernel", default="", help="another version of the kernel, built with "
                    "--baseline-steps and measured in the same run (e.g. an earlier commit's)")
    ap.add_argument("--baseline-steps", type=int, default=64, help="Lanczos steps of the --baseline-kernel build")
    ap.add_argument("--kernels-only", action="store_true", help="measure the kernel builds alone (no pipeline)")
    ap.add_argument("--head-dims", default="", help="other head widths d (comma-separated): the package's 'cuda' "
                    "(embedded in 128 x 128) against 'subspace' on Figure 7's RoPE Grams of each")
    ap.add_argument("--only-head-dims", action="store_true", help="measure the --head-dims rows alone")
    ap.add_argument("--rank1", default="", help="clouds (e.g. 4096): Figure 7's curves with the Grams built in "
                    "memory against built in the kernel, each schedule at d = 128 and 80, alone")
    ap.add_argument("--out", default="results/bench_topeig_cuda.json")
    args = ap.parse_args(argv)
    if jax.default_backend() != "gpu":
        print(f"bench_topeig_cuda needs an NVIDIA GPU; JAX's backend here is {jax.default_backend()}", file=sys.stderr)
        return 2
    B = args.batch
    dev = jax.devices()[0]
    res: dict = {"device": dev.device_kind, "jax": jax.__version__, "batch": B, "d": D, "threads": NT,
                 "cert_rtol": CERT_RTOL, "bounds": compute_bounds(dev.device_kind, 48), "kernels": {}, "rows": {},
                 "pipeline": {}, "head_dims": {}}
    if args.rank1:
        res["rank1"] = {}
        for d in (D, 80):
            for key in figure7.SCHEDULES:
                res["rank1"][f"{key} d={d}"] = rank1_row(int(args.rank1), d, key, args.repeat)
                print(f"rank1 {key} d={d}:", res["rank1"][f"{key} d={d}"], flush=True)
        report(res, args.out)
        return 0
    for d in (int(x) for x in args.head_dims.split(",") if x):
        res["head_dims"][str(d)] = head_dim_row(B, d, args.repeat)
        print(f"d = {d}:", res["head_dims"][str(d)], flush=True)
    if args.only_head_dims:
        report(res, args.out)
        return 0
    G, ref, v0 = scaled_grams(B, D)
    arch = "sm_" + str(getattr(dev, "compute_capability", "9.0")).replace(".", "")
    rows = res["rows"]
    sub = jax.jit(subspace_top)
    for name, fn in (("eigvalsh", eigvalsh_top), ("subspace_top with its certificate", sub)):
        jax.block_until_ready(fn(G))
        t = best_time(fn, G, args.repeat)
        rows[name] = {"seconds": t, "per_s": B / t}
    th_ref = jnp.asarray(ref)
    jax.block_until_ready(cert_jax(G, th_ref))
    t = best_time(lambda G: cert_jax(G, th_ref), G, args.repeat)
    rows["cuSOLVER Cholesky certificate alone"] = {"seconds": t, "per_s": B / t}
    if args.baseline_kernel:
        src = pathlib.Path(args.baseline_kernel)
        kernel_rows(rows, res, Kernel(arch, {"K": args.baseline_steps}, src),
                    f"baseline kernel {src.name}, {args.baseline_steps} steps",
                    G, ref, v0, args.repeat, False)
    for k in (int(x) for x in args.steps.split(",")):
        for p in (int(x) for x in args.panels.split(",")):
            kernel_rows(rows, res, Kernel(arch, {"K": k, "P": p}), f"cuda kernel, {k} steps, {p} columns a barrier",
                        G, ref, v0, args.repeat, True)
    base = rows["eigvalsh"]["per_s"]
    for row in rows.values():
        row["vs_eigvalsh"] = row["per_s"] / base
    if args.kernels_only:
        report(res, args.out)
        return 0
    k1, k2 = (int(x) for x in args.pipeline.split(","))
    first, second = Kernel(arch, {"K": k1}), Kernel(arch, {"K": k2})
    res["pipeline"]["steps"] = [k1, k2]
    res["pipeline"]["rope_1e4"] = pipeline_row(first, second, G, ref, v0, args.repeat)
    del G
    workloads = {f"figure7 {key}": lambda key=key: scaled_grams(B, D, figure7.theta_of(key, D))[:2]
                 for key in figure7.SCHEDULES}
    workloads["clustered top pair"] = lambda: clustered(B, D)
    for name, make in workloads.items():
        G, ref = make()
        res["pipeline"][name] = pipeline_row(first, second, G, ref, v0, args.repeat)
        print(name, res["pipeline"][name], flush=True)
        del G
    report(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
