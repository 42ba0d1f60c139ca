"""The top-eigenvalue method ``"cuda"``: a CUDA kernel behind an XLA FFI call, for batches of ``d x d``
symmetric float64 matrices, ``d <= 128``, on an NVIDIA GPU (sources: ``cuda/topeig_kernel.cuh``,
``cuda/topeig_ffi.cu``). The kernel takes 128 x 128 matrices; a smaller ``G`` is embedded first
(``embedded``: the same top eigenvalue, exactly).

For each matrix ``G`` one thread block holds ``G`` in registers, scaled by a power of two to a largest entry
in ``[1/2, 1)`` (exact where normal; the value is scaled back), and

1. runs ``FIRST_STEPS`` Lanczos steps from the fixed unit vector ``start_vector()``: a tridiagonal ``T``;
2. takes ``theta = lambda_max(T)`` by multisection on Sturm counts (the Gershgorin bracket shrunk 2^56), a
   Ritz value, so ``theta <= lambda_max(G)`` up to rounding;
3. certifies ``lambda_max(G) < theta (1 + CERT_RTOL)``: the LDL^T factorisation of
   ``theta (1 + CERT_RTOL) I - G`` has positive pivots (the test ``topeig.certified_below`` makes with
   cuSOLVER's Cholesky; the two agreed on every matrix of ``benchmarks/bench_topeig_cuda.py``). Both are
   floating-point factorisations, so "shown" holds to their rounding, about ``d`` ulps of ``lambda_max``: with
   40 first-pass steps one clustered matrix was certified at ``theta (1 + CERT_RTOL)`` 4e-16 below numpy's
   ``lambda_max`` (one H100, session 23); ``FIRST_STEPS = 48`` left every value inside.

A second launch redoes the matrices left uncertified with ``SECOND_STEPS`` (the whole Krylov space), and
``topeig`` answers any still uncertified with ``eigvalsh``, as for ``lanczos`` and ``subspace``.

The library is compiled by ``nvcc`` at first use, for the device's architecture and against the installed
jaxlib's FFI headers, into the user's cache (``$XDG_CACHE_HOME`` or ``~/.cache``, then
``ropetheory/cuda-<key>``); the key hashes the sources, the flags, jax's version, nvcc's version and the
architecture, so a library built from other code or for another device is never loaded.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata as md
import importlib.resources
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ..core.devices import user_cache_dir

__all__ = ["D", "TARGET", "TARGET_RANK1", "build", "embedded", "library_path", "rank1_top_and_certificate",
           "start_vector", "top_and_certificate", "unavailable_reason"]

#: the matrix size the kernel takes (one block of 512 threads, 32 entries a thread); smaller ones are embedded
D = 128
#: the smallest ``d`` for which ``topeig.default_method`` takes "cuda". Embedded, a ``d x d`` matrix costs the
#: kernel what a 128 x 128 one does, while "subspace" gets cheaper with ``d``. On one H100, Figure 7's RoPE Grams,
#: session 23's kernel: "cuda" ran 0.76x "subspace" at d = 48, 0.99x at 56, 1.15x at 64, 1.68x at 72, 1.89x at 80,
#: 2.46x at 96, 4.44x at 128 (``docs/benchmarks/bench_topeig_cuda_h100_s23.json``; 57-63 not measured)
DEFAULT_FROM_D = 64
#: Lanczos steps of the two launches, as ``cuda/topeig_ffi.cu`` defines them (stated here for the docs)
FIRST_STEPS, SECOND_STEPS = 48, 128
#: the FFI target's name and the handler's symbol in the library
TARGET, SYMBOL = "ropetheory_topeig", "RopetheoryTopEig"
#: the same for the handler that builds each rank-1 cloud's Gram in the kernel (``rank1_top_and_certificate``)
TARGET_RANK1, SYMBOL_RANK1 = "ropetheory_topeig_rank1", "RopetheoryTopEigRank1"
#: the library's sources (package data) and nvcc's flags besides the architecture and include path;
#: 940 and 2473 are warnings nvcc raises inside XLA's FFI headers
SOURCES = ("topeig_ffi.cu", "topeig_kernel.cuh", "topeig_rank1.cuh", "gram_block.cuh")
NVCC_FLAGS = ("-shared", "-Xcompiler", "-fPIC", "-std=c++17", "-O3", "-diag-suppress", "940,2473")
#: seconds nvcc may take (one build takes ~7 s on 2 cores)
BUILD_TIMEOUT_S = 600


def start_vector() -> np.ndarray:
    """The Lanczos start vector: a fixed Gaussian draw (seed 1), normalised; a fixed vector keeps results
    reproducible, and a random one is orthogonal to no eigenvector of a given G but with probability 0."""
    v = np.random.default_rng(1).standard_normal(D)
    return v / np.linalg.norm(v)


def sources() -> dict[str, bytes]:
    """The library's source files, read from the installed package."""
    root = importlib.resources.files("ropetheory.spectra") / "cuda"
    return {name: (root / name).read_bytes() for name in SOURCES}


#: where ``nvcc()`` looks, in order (for the messages that say it was not found)
NVCC_PLACES = "PATH, $CUDA_HOME/bin, /usr/local/cuda/bin"


def nvcc() -> str | None:
    """The ``nvcc`` to build with: on ``PATH``, else under ``$CUDA_HOME`` or ``/usr/local/cuda``."""
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and (pathlib.Path(root) / "bin" / "nvcc").is_file():
            return str(pathlib.Path(root) / "bin" / "nvcc")
    return None


@functools.cache
def _nvcc_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


def library_path(arch: str, compiler: str) -> pathlib.Path:
    """Where the library built by ``compiler`` (an nvcc) for ``arch`` (e.g. ``sm_90``) from the current
    sources lives."""
    h = hashlib.sha256()
    for name, data in sorted(sources().items()):
        h.update(name.encode() + b"\0" + data + b"\0")
    for part in (*NVCC_FLAGS, arch, md.version("jax"), md.version("jaxlib"), _nvcc_version(compiler)):
        h.update(part.encode() + b"\0")
    return user_cache_dir() / f"cuda-{h.hexdigest()[:20]}" / "libropetheory_topeig.so"


def build(arch: str, compiler: str | None = None) -> pathlib.Path:
    """The library for ``arch``, compiled now unless already in the cache; a ``RuntimeError`` carrying
    nvcc's output when it cannot be built."""
    compiler = compiler or nvcc()
    if compiler is None:
        raise RuntimeError(f"nvcc was not found ({NVCC_PLACES})")
    if not re.fullmatch(r"sm_\d+[a-z]?", arch):
        raise RuntimeError(f"not a CUDA architecture: {arch!r}")
    out = library_path(arch, compiler)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.write(f"ropetheory: compiling the top-eigenvalue method 'cuda' for {arch} with {compiler} (once, "
                     f"~10 s; kept in {out.parent})\n")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        for name, data in sources().items():
            (pathlib.Path(tmp) / name).write_bytes(data)
        part = pathlib.Path(tmp) / out.name
        cmd = [compiler, *NVCC_FLAGS, f"-arch={arch}", "-I", jax.ffi.include_dir(), "-o", str(part),
               str(pathlib.Path(tmp) / SOURCES[0])]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if res.returncode != 0:
            raise RuntimeError(f"nvcc failed ({res.returncode}): {(res.stderr or res.stdout)[-2000:]}")
        os.replace(part, out)                      # whole or absent: a killed build leaves no library
    return out


def _cuda_device() -> jax.Device | None:
    """The device in scope (``jax.default_device``, else the default backend's first) if it is an NVIDIA
    GPU, else ``None``."""
    scoped = jax.config.jax_default_device  # type: ignore[attr-defined]  # (options are untyped attributes)
    try:
        dev = scoped if isinstance(scoped, jax.Device) else jax.devices(scoped)[0]
    except RuntimeError:                                # a platform named in scope that this process lacks
        return None
    version = getattr(getattr(dev, "client", None), "platform_version", "") or ""
    return dev if dev.platform == "gpu" and "cuda" in version.lower() else None


@functools.cache
def _register(arch: str) -> str | None:
    """Build and register the FFI target for ``arch`` once a process: ``None``, or why it failed (said
    once, as a warning)."""
    try:
        lib = ctypes.CDLL(str(build(arch)))
        for target, symbol in ((TARGET, SYMBOL), (TARGET_RANK1, SYMBOL_RANK1)):
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="CUDA")
    except (RuntimeError, OSError, subprocess.TimeoutExpired, AttributeError) as e:
        return _said(str(e))
    _LIBS.append(lib)
    return None


@functools.cache
def _said(reason: str) -> str:
    """``reason``, said once a process as a warning: on an NVIDIA GPU the faster default is not taken."""
    warnings.warn(f"ropetheory: the top-eigenvalue method 'cuda' is unavailable ({reason}); 'subspace' is the "
                  f"GPU default instead", RuntimeWarning, stacklevel=4)
    return reason


_LIBS: list[ctypes.CDLL] = []          # loaded libraries stay loaded while XLA may call into them


def unavailable_reason() -> str | None:
    """``None`` where the method can run (an NVIDIA GPU in scope and the library built and registered),
    else why not."""
    dev = _cuda_device()
    if dev is None:
        return "it needs an NVIDIA GPU, and JAX's device here is not one"
    if nvcc() is None:
        return _said(f"nvcc, which builds it at first use, was not found ({NVCC_PLACES})")
    cc = str(getattr(dev, "compute_capability", "")).replace(".", "")
    if not cc.isdigit():
        return _said(f"the device's compute capability is unknown ({getattr(dev, 'compute_capability', None)!r})")
    return _register(f"sm_{cc}")


def embedded(G):
    """Matrices ``G (B, d, d)``, ``d <= D``, as ``D x D`` matrices ``[[G, 0], [0, s I]]`` with ``s = min_i G_ii``
    (traceable), whose top eigenvalue is ``G``'s exactly:

    - ``s <= max_i G_ii = max_i e_i^T G e_i <= lambda_max(G)``, so the block ``s I`` adds no larger eigenvalue;
    - ``s`` is an entry of ``G`` (no rounding), and ``|s| <= max |G|``, so the kernel's power-of-two scaling
      is ``G``'s own;
    - ``s >= lambda_min(G)``: the added eigenvalue lies inside ``G``'s spectrum, and as it is one multiple
      eigenvalue Lanczos sees one direction of it, so the convergence to ``lambda_max`` is ``G``'s;
    - ``mu I - [[G, 0], [0, s I]]`` is positive definite exactly when ``mu I - G`` is and ``mu > s``, which
      ``mu > lambda_max(G)`` implies: the certificate certifies what it certifies for ``G``.
    """
    d = G.shape[-1]
    if d == D:
        return G
    s = jnp.min(jnp.diagonal(G, axis1=-2, axis2=-1), axis=-1)
    tail = s[:, None, None] * jnp.eye(D - d, dtype=G.dtype)
    return jnp.concatenate([jnp.pad(G, ((0, 0), (0, 0), (0, D - d))), jnp.pad(tail, ((0, 0), (0, 0), (d, 0)))],
                           axis=1)


def top_and_certificate(G):
    """``(theta, ok)`` for matrices ``G (B, d, d)``, ``d <= D`` (traceable; the target registered, as
    ``unavailable_reason() is None`` ensures): ``ok`` where ``lambda_max(G) < theta (1 + CERT_RTOL)`` was
    shown."""
    from .topeig import CERT_RTOL
    G = embedded(G)
    B = G.shape[0]
    call = jax.ffi.ffi_call(TARGET, (jax.ShapeDtypeStruct((B,), jnp.float64), jax.ShapeDtypeStruct((B,), jnp.int32)))
    theta, ok = call(G.astype(jnp.float64), jnp.asarray(start_vector()), rtol=np.float64(CERT_RTOL))
    return theta, ok > 0


def rank1_top_and_certificate(V_il, Dm, Sm):
    """``(theta, ok)``, each ``(C, N)``, for the Grams ``G_n / W_n`` of the unit rank-1 clouds ``V_il (C, d)``
    (interleaved, ``d <= D``) at the ``N`` lengths whose mean phases are ``Dm, Sm (N, d/2, d/2)`` (complex, or
    real where the imaginary parts are 0), as ``top_and_certificate`` of the Grams ``assemble_gram`` builds
    (traceable; the target registered, as ``unavailable_reason() is None`` ensures).

    The kernel builds each Gram in its registers from the cloud and the mean phases (``cuda/topeig_rank1.cuh``,
    the block formula of ``cuda/gram_block.cuh``, generated with ``derived.py`` by ``proofs/gram_blocks.py``),
    so no Gram is written to or read from the device's memory. Its entries are the formula's, each evaluated
    once for the pair in the upper triangle, where ``assemble_gram`` averages the two triangles: the matrices
    agree to rounding, and each value is certified for the matrix the kernel holds."""
    from .topeig import CERT_RTOL
    C, N = V_il.shape[0], Dm.shape[0]
    DS = jnp.stack([jnp.real(Dm), jnp.imag(Dm), jnp.real(Sm), jnp.imag(Sm)], axis=-1).astype(jnp.float64)
    call = jax.ffi.ffi_call(TARGET_RANK1, (jax.ShapeDtypeStruct((C, N), jnp.float64),
                                           jax.ShapeDtypeStruct((C, N), jnp.int32)))
    theta, ok = call(jnp.asarray(V_il, jnp.float64), DS, jnp.asarray(start_vector()), rtol=np.float64(CERT_RTOL))
    return theta, ok > 0
