"""A CUDA kernel for the certified top eigenvalue of 128 x 128 float64 Grams (``benchmarks/topeig_kernel.cu``),
against ``eigvalsh``, ``subspace_top`` and cuSOLVER's Cholesky certificate on the same batch in the same run.

A prototype measured for issue #39 item 1, not a method of the package: it asks whether a kernel that holds
the matrix on chip (in registers, one thread block a matrix) reaches the 1e6/s the Pallas kernels could not
(they stream the matrix from memory each Lanczos step). Compiled at run time with NVRTC and launched through
the CUDA driver API (``ctypes``), on the buffers JAX allocated; needs an NVIDIA GPU, ``libnvrtc`` and
``libcuda``. The kernel's value is checked against ``eigvalsh`` and its certificate against cuSOLVER's.

    JAX_ENABLE_X64=1 python benchmarks/bench_topeig_cuda.py [--batch 4096] [--out results/bench_topeig_cuda.json]
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench_topeig_gpu import best_time, report, scaled_grams  # noqa: E402
from ropetheory.spectra.topeig import CERT_RTOL, certified_below, subspace_top  # noqa: E402

KERNEL = pathlib.Path(__file__).with_name("topeig_kernel.cu")
#: the kernel's compile-time constants (``topeig_kernel.cu``): matrix size, threads a block
D, NT = 128, 512


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


def compile_cubin(src: str, arch: str, steps: int) -> tuple[bytes, str]:
    """The kernel compiled by NVRTC for ``arch`` (e.g. ``sm_90``) with ``steps`` Lanczos steps:
    ``(cubin, compiler log)``."""
    pats = [p + "/libnvrtc.so*" for p in
            ["/usr/local/cuda*/lib64", "/usr/local/lib/python3*/*-packages/nvidia/cuda_nvrtc/lib",
             "/usr/lib/python3*/*-packages/nvidia/cuda_nvrtc/lib", "/usr/lib/x86_64-linux-gnu"]]
    pats += [os.path.dirname(jax.__file__) + "/../nvidia/cuda_nvrtc/lib/libnvrtc.so*"]
    nv = _load(["libnvrtc.so", "libnvrtc.so.12", "libnvrtc.so.13"], pats)
    prog = ctypes.c_void_p()
    _check("nvrtc", nv.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"topeig.cu", 0, None, None), "create")
    for extra in ([b"--ptxas-options=-v"], []):
        opts = [f"--gpu-architecture={arch}".encode(), b"-std=c++17", f"-DK={steps}".encode()] + extra
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

    def __init__(self, arch: str, steps: int):
        self.cu = cu = _load(["libcuda.so.1", "libcuda.so"], [])
        self.cubin, self.log = compile_cubin(KERNEL.read_text(), arch, steps)
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
        self.buffers: dict[int, tuple[ctypes.c_uint64, ctypes.c_uint64]] = {}

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
        out_t, out_o = np.empty(B), np.empty(B, np.int32)
        _check("cuda", self.cu.cuMemcpyDtoH_v2(out_t.ctypes.data, th, 8 * B), "copy")
        _check("cuda", self.cu.cuMemcpyDtoH_v2(out_o.ctypes.data, ok, 4 * B), "copy")
        return out_t, out_o.astype(bool)

    def launch(self, G, v0, th, ok, cert: int) -> None:
        jax.block_until_ready((G, v0))
        args = [ctypes.c_uint64(G.unsafe_buffer_pointer()), ctypes.c_uint64(v0.unsafe_buffer_pointer()),
                ctypes.c_uint64(th.value), ctypes.c_uint64(ok.value), ctypes.c_double(CERT_RTOL),
                ctypes.c_int(int(cert))]
        params = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])
        _check("cuda", self.cu.cuLaunchKernel(self.fn, G.shape[0], 1, 1, NT, 1, 1, 0, None, params, None), "launch")
        _check("cuda", self.cu.cuCtxSynchronize(), "synchronize")

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", default="64,48", help="Lanczos steps of each kernel built (comma-separated)")
    ap.add_argument("--out", default="results/bench_topeig_cuda.json")
    args = ap.parse_args(argv)
    if jax.default_backend() != "gpu":
        print(f"bench_topeig_cuda needs an NVIDIA GPU; JAX's backend here is {jax.default_backend()}", file=sys.stderr)
        return 2
    B = args.batch
    G, ref, v0 = scaled_grams(B, D)
    dev = jax.devices()[0]
    cc = getattr(dev, "compute_capability", "9.0")
    res = {"device": dev.device_kind, "jax": jax.__version__, "batch": B, "d": D, "threads": NT, "kernels": {},
           "rows": {}}
    rows = res["rows"]
    cert_jax = jax.jit(certified_below)
    eig = jax.jit(lambda G: jnp.linalg.eigvalsh(G)[:, -1])
    sub = jax.jit(subspace_top)
    for name, fn in (("eigvalsh", eig), ("subspace_top with its certificate", sub)):
        jax.block_until_ready(fn(G))
        t = best_time(fn, G, args.repeat)
        rows[name] = {"seconds": t, "per_s": B / t}
    th_ref = jnp.asarray(ref)
    jax.block_until_ready(cert_jax(G, th_ref))
    t = best_time(lambda G: cert_jax(G, th_ref), G, args.repeat)
    rows["cuSOLVER Cholesky certificate alone"] = {"seconds": t, "per_s": B / t}
    for steps in [int(x) for x in args.steps.split(",")]:
        k = Kernel("sm_" + str(cc).replace(".", ""), steps)
        res["kernels"][steps] = {**k.attrs, "nvrtc_log": k.log[-1500:]}
        print(steps, k.attrs, k.log[-400:], flush=True)
        tag = f"cuda kernel, {steps} steps"
        t = k.time(G, v0, 2, args.repeat)
        rows[f"{tag}: lanczos alone (timing)"] = {"seconds": t, "per_s": B / t}
        for cert in (0, 1):
            th, ok = k(G, v0, cert)
            t = k.time(G, v0, cert, args.repeat)
            row = {"seconds": t, "per_s": B / t, "max_rel_to_eigvalsh": float(np.max(np.abs(th - ref) / ref))}
            if cert:
                row["certified_share"] = float(np.mean(ok))
                row["agrees_with_cusolver"] = bool(np.array_equal(ok, np.asarray(cert_jax(G, jnp.asarray(th)))))
                rows[f"{tag}: lanczos + sturm + in-kernel LDL certificate"] = row
            else:
                rows[f"{tag}: lanczos + sturm"] = row
                thj = jnp.asarray(th)
                tc = best_time(lambda G, thj=thj: cert_jax(G, thj), G, args.repeat)
                rows[f"{tag}: lanczos + sturm, then cuSOLVER certificate"] = {
                    "seconds": t + tc, "per_s": B / (t + tc),
                    "certified_share": float(np.mean(np.asarray(cert_jax(G, thj))))}
    base = rows["eigvalsh"]["per_s"]
    for row in rows.values():
        row["vs_eigvalsh"] = row["per_s"] / base
    report(res, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
