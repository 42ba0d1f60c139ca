"""The top-eigenvalue method ``"cuda"`` (``ropetheory.spectra.cuda_topeig``): where it refuses, that its
library compiles from the installed sources (with the nvcc of the machine: CI has one, no GPU), and, on an
NVIDIA GPU, that it equals eigvalsh's top eigenvalue for every kind of symmetric matrix."""
from __future__ import annotations

import ctypes
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_topeig import EIG_RTOL, _symmetric_batch

import ropetheory as rt
from ropetheory.core.checks import check_clouds
from ropetheory.core.errors import BadValue
from ropetheory.schedules.paper import rope_frequencies
from ropetheory.spectra import cuda_topeig, topeig
from ropetheory.spectra.weights import CONSTANT, weighted_mean_phases
from ropetheory.studies import figure7

ON_NVIDIA_GPU = cuda_topeig._cuda_device() is not None


@pytest.mark.skipif(ON_NVIDIA_GPU, reason="checks the refusal where no NVIDIA GPU is in scope")
def test_the_cuda_method_refuses_naming_itself_where_no_nvidia_gpu_is_in_scope(monkeypatch):
    G = np.eye(cuda_topeig.D)
    with pytest.raises(BadValue, match=r"method 'cuda' cannot run here: it needs an NVIDIA GPU"):
        rt.top_eigenvalue(G, "cuda")
    with pytest.raises(BadValue, match=r"method 'cuda' cannot run here"):
        rt.rank1_curves_batch(rt.schedule("rope", head_dim=8), np.ones((1, 8)), [1, 10], method="cuda")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")      # a GPU backend that is not an NVIDIA device
    assert topeig.default_method() == "subspace" and topeig.default_method(cuda_topeig.D) == "subspace"


def test_the_cuda_method_takes_matrices_up_to_128_and_is_the_default_from_its_measured_size(monkeypatch):
    monkeypatch.setattr(cuda_topeig, "unavailable_reason", lambda: None)
    with pytest.raises(BadValue, match=r"method 'cuda' takes d x d matrices with d <= 128 only, got d = 130"):
        rt.top_eigenvalue(np.eye(130), "cuda")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    lo = cuda_topeig.DEFAULT_FROM_D
    assert [topeig.default_method(d) for d in (lo - 1, lo, cuda_topeig.D, cuda_topeig.D + 1, None)] == \
        ["subspace", "cuda", "cuda", "subspace", "cuda"]


def test_a_concrete_matrix_gets_the_default_for_its_own_size_not_for_128(monkeypatch):
    """On a GPU where 'cuda' runs, a concrete matrix the kernel cannot take (d > 128), or one below
    ``DEFAULT_FROM_D``, is answered by the default for its size (``subspace``), as inside jit, never refused
    for a method the caller did not choose (here on the CPU, the GPU's choices stood in)."""
    monkeypatch.setattr(cuda_topeig, "unavailable_reason", lambda: None)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    for d in (cuda_topeig.D + 2, cuda_topeig.DEFAULT_FROM_D - 1):
        G = _symmetric_batch(d, 3, "wishart")
        ref = np.linalg.eigvalsh(G)[:, -1]
        np.testing.assert_allclose(np.asarray(rt.top_eigenvalue(G)), ref, rtol=EIG_RTOL, atol=0)


@pytest.mark.parametrize("kind", ["wishart", "rank1", "double_top", "zero", "indefinite", "negative_definite",
                                  "identity_multiple", "diagonal"])
@pytest.mark.parametrize("d", [1, 3, 80, 127])
def test_a_smaller_matrix_embedded_for_the_kernel_keeps_its_top_eigenvalue_and_its_scale(kind, d):
    """``[[G, 0], [0, s I]]`` with ``s = min_i G_ii`` (checked here with eigvalsh, on the CPU): the same top
    eigenvalue for every kind (negative definite and indefinite included), the same largest entry (the
    kernel's scaling), symmetric, and the kernel's size."""
    G = _symmetric_batch(d, d + 5, kind)
    E = np.asarray(cuda_topeig.embedded(jnp.asarray(G)))
    assert E.shape == (G.shape[0], cuda_topeig.D, cuda_topeig.D) and np.array_equal(E, E.transpose(0, 2, 1))
    assert np.array_equal(E[:, :d, :d], G)
    assert np.array_equal(np.max(np.abs(E), axis=(1, 2)), np.max(np.abs(G), axis=(1, 2)))
    ref = np.linalg.eigvalsh(G)[:, -1]
    got = np.linalg.eigvalsh(E)[:, -1]
    assert np.all(np.abs(got - ref) <= EIG_RTOL * np.maximum(np.abs(ref), np.max(np.abs(G), axis=(1, 2))))


def test_on_an_nvidia_gpu_without_nvcc_the_default_is_subspace_and_says_why_once(monkeypatch):
    monkeypatch.setattr(cuda_topeig, "_cuda_device", lambda: object())       # as if an NVIDIA GPU were in scope
    monkeypatch.setattr(cuda_topeig, "nvcc", lambda: None)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    cuda_topeig._said.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=r"method 'cuda' is unavailable \(nvcc, which builds it"):
            assert topeig.default_method(cuda_topeig.D) == "subspace"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert topeig.default_method(cuda_topeig.D) == "subspace"          # said once, not at every call
    finally:
        cuda_topeig._said.cache_clear()


def test_a_build_that_fails_leaves_subspace_as_the_default_and_says_nvccs_words_once(monkeypatch):
    def failing(arch, compiler=None):
        raise RuntimeError("nvcc failed (1): topeig_ffi.cu(3): error: no such header")
    monkeypatch.setattr(cuda_topeig, "_cuda_device", lambda: type("Dev", (), {"compute_capability": "9.0"})())
    monkeypatch.setattr(cuda_topeig, "nvcc", lambda: "/usr/bin/nvcc")
    monkeypatch.setattr(cuda_topeig, "build", failing)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    cuda_topeig._register.cache_clear()
    cuda_topeig._said.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=r"unavailable \(nvcc failed \(1\): topeig_ffi.cu\(3\): error"):
            assert topeig.default_method(cuda_topeig.D) == "subspace"
        with pytest.raises(BadValue, match=r"method 'cuda' cannot run here: nvcc failed"):
            rt.top_eigenvalue(np.eye(cuda_topeig.D), "cuda")
    finally:
        cuda_topeig._register.cache_clear()
        cuda_topeig._said.cache_clear()


@pytest.mark.skipif(ON_NVIDIA_GPU, reason="names a platform this process lacks")
def test_a_platform_named_in_scope_that_this_process_lacks_is_no_nvidia_gpu():
    with jax.default_device("gpu"):                       # no GPU backend here: jax.devices("gpu") raises
        assert cuda_topeig._cuda_device() is None
        assert "needs an NVIDIA GPU" in cuda_topeig.unavailable_reason()


def test_the_steps_the_docs_state_are_the_kernels():
    src = cuda_topeig.sources()["topeig_ffi.cu"].decode()
    steps = {m[0]: int(m[1]) for m in re.findall(r"#define (FIRST_STEPS|SECOND_STEPS) (\d+)", src)}
    assert steps == {"FIRST_STEPS": cuda_topeig.FIRST_STEPS, "SECOND_STEPS": cuda_topeig.SECOND_STEPS}


@pytest.mark.skipif(cuda_topeig.nvcc() is None, reason="needs nvcc (CI's machine has one)")
def test_the_library_compiles_from_the_installed_sources_once_and_anew_for_other_sources(tmp_path, monkeypatch,
                                                                                        capsys):
    """Built into the cache folder by the machine's nvcc for sm_90 (no GPU needed), saying so, it exports
    the FFI handler; a second call reuses it, silently; other sources get another library."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lib = cuda_topeig.build("sm_90")
    assert "compiling the top-eigenvalue method 'cuda' for sm_90" in capsys.readouterr().err
    assert lib.is_relative_to(tmp_path) and lib.stat().st_size > 0
    assert all(hasattr(ctypes.CDLL(str(lib)), sym) for sym in (cuda_topeig.SYMBOL, cuda_topeig.SYMBOL_RANK1))
    stamp = lib.stat().st_mtime_ns
    assert cuda_topeig.build("sm_90") == lib and lib.stat().st_mtime_ns == stamp
    assert capsys.readouterr().err == ""
    real = cuda_topeig.sources()
    edited = {**real, "topeig_kernel.cuh": real["topeig_kernel.cuh"] + b"\n"}
    monkeypatch.setattr(cuda_topeig, "sources", lambda: edited)
    assert cuda_topeig.library_path("sm_90", cuda_topeig.nvcc()) != lib
    with pytest.raises(RuntimeError, match="not a CUDA architecture"):
        cuda_topeig.build("90; rm -rf /")


@pytest.mark.skipif(not ON_NVIDIA_GPU, reason="needs an NVIDIA GPU (run on the device machine)")
@pytest.mark.parametrize("kind", ["wishart", "rank1", "double_top", "graded", "zero", "indefinite",
                                  "negative_definite", "rank_deficient", "identity_multiple"])
@pytest.mark.parametrize("scale", [1.0, 2.0 ** 600, 2.0 ** -600])
@pytest.mark.parametrize("d", [cuda_topeig.D, 80])
def test_the_cuda_method_equals_the_largest_of_eigvalsh(kind, scale, d):
    """Certified in the kernel or answered by eigvalsh where no certificate can hold (no positive
    eigenvalue), every kind's top eigenvalue is eigvalsh's, as for the other methods, at any scale (the
    kernel scales each matrix by a power of two itself inside jit; the host does it for concrete input),
    for the kernel's size and a smaller one (embedded)."""
    G = _symmetric_batch(d, 7, kind) * scale
    ref = np.linalg.eigvalsh(G)[:, -1]
    tol = EIG_RTOL * np.maximum(np.abs(ref), 1e-300 * scale) + 1e-300 * scale
    got = np.asarray(jax.jit(lambda G: topeig.top_eigenvalue(G, "cuda"))(jnp.asarray(G)))
    assert np.all(np.abs(got - ref) <= tol)
    assert np.all(np.abs(np.asarray(rt.top_eigenvalue(G, "cuda")) - ref) <= tol)
    assert topeig.default_method(cuda_topeig.D) == "cuda"


def test_the_kernel_builds_the_grams_itself_exactly_where_the_batched_method_is_cuda():
    """``rank1_curves_batch`` hands clouds and mean phases to the kernel (no Gram in memory) only for the method
    "cuda" (given, or the default) at 2 < d <= 128, and then holds up to ``KERNEL_CALL_MATRICES`` matrices a
    call instead of ``ACCELERATOR_CALL_BYTES`` of Grams."""
    from ropetheory.spectra import gram
    assert gram.builds_grams_in_kernel("cuda", 128) and gram.builds_grams_in_kernel("cuda", 4)
    assert not gram.builds_grams_in_kernel("cuda", 2) and not gram.builds_grams_in_kernel("cuda", 130)
    assert not gram.builds_grams_in_kernel("subspace", 128)
    assert gram.builds_grams_in_kernel(None, 128) == (topeig.default_method(128) == "cuda")
    assert gram._clouds_per_call(None, 128, 64, "cuda", True) == gram.KERNEL_CALL_MATRICES // 64
    fit = gram.KERNEL_CALL_MATRICES // 100
    assert gram._clouds_per_call(None, 80, 100, "cuda", True) == 1 << (fit.bit_length() - 1)
    assert gram._clouds_per_call(7, 128, 64, "cuda", True) == 7
    assert gram._clouds_per_call(None, 128, 64, "subspace", True) == gram.ACCELERATOR_CALL_BYTES // (8 * 64 * 128 ** 2)


@pytest.mark.skipif(ON_NVIDIA_GPU, reason="checks the refusal where no NVIDIA GPU is in scope")
def test_the_batched_program_asked_for_cuda_by_name_refuses_naming_it_where_it_cannot_run():
    """``rho2_for_clouds`` called directly with ``method="cuda"`` (the path that builds the Grams in the kernel)
    refuses with a ValueError naming the method, not an error from inside XLA about an unregistered target."""
    from ropetheory.spectra import gram
    V = np.eye(1, 8)
    Dm, Sm = weighted_mean_phases(figure7.theta_of("rope_1e4", 8), CONSTANT, np.array([1, 5], dtype=np.int64))
    with pytest.raises(BadValue, match="method 'cuda' cannot run here"):
        gram.rho2_for_clouds(jnp.asarray(V), Dm, Sm, batched_eig=True, method="cuda", flagged=True)


#: schedules whose limit Grams have every kind of block: generic, NoPE planes (D = S = 1), planes at pi
KERNEL_GRAM_SCHEDULES = {"rope": lambda d: figure7.theta_of("rope_1e4", d),
                         "rope_id": lambda d: figure7.theta_of("rope_id", d),
                         "nope_and_pi": lambda d: np.concatenate([np.zeros(2), np.full(1, np.pi),
                                                                  rope_frequencies(d - 6, 1e4)])}


@pytest.mark.skipif(not ON_NVIDIA_GPU, reason="needs an NVIDIA GPU (run on the device machine)")
@pytest.mark.parametrize("name", sorted(KERNEL_GRAM_SCHEDULES))
@pytest.mark.parametrize("d", [cuda_topeig.D, 80, 64, 8])
def test_grams_built_in_the_kernel_give_the_top_eigenvalues_of_the_grams_built_in_memory(name, d):
    """The kernel's own Grams (``rank1_top_and_certificate``, through ``rank1_curves_batch`` with "cuda") give
    eigvalsh's top eigenvalue of ``assemble_gram``'s Grams at every length, certified in the kernel, for every
    kind of block and for d below the kernel's size (the tail ``s I`` built in the kernel)."""
    from ropetheory.spectra import gram
    theta = KERNEL_GRAM_SCHEDULES[name](d)
    V = np.random.default_rng(3).standard_normal((37, d))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    lengths = np.unique(np.concatenate([[1, 2, 3, 7], rt.log_grid(1e9, 20)])).astype(np.int64)
    got = rt.rank1_curves_batch(theta, V, lengths, layout="interleaved", method="cuda")["rho2"]
    Dm, Sm = weighted_mean_phases(theta, CONSTANT, lengths)
    ref = np.array([np.linalg.eigvalsh(np.asarray(gram._assemble_batch(v, Dm, Sm)))[:, -1] for v in V])
    assert np.all(np.abs(got - ref) <= EIG_RTOL * ref), np.abs(got - ref).max()
    Vc = check_clouds(V, d // 2, "interleaved")            # the clouds as rank1_curves_batch holds them
    theta_k, ok = jax.jit(cuda_topeig.rank1_top_and_certificate)(jnp.asarray(Vc), Dm, Sm)
    assert np.asarray(ok).all() and np.array_equal(np.asarray(theta_k), got)
