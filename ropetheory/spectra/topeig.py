"""The largest eigenvalue of symmetric matrices, batched, without the rest of the spectrum.

Every FSV ratio needs ``lambda_max(G)`` of a ``d x d`` PSD Gram matrix and nothing else. The method:

1. Householder tridiagonalisation ``G = Q T Q^T`` (LAPACK ``sytrd`` on CPU, cuSOLVER on GPU; through
   ``jax.lax.linalg.tridiagonal``), batched over every leading axis;
2. multisection on Sturm counts of ``T`` for its largest eigenvalue only: from the Gershgorin interval,
   ``SECTIONS`` - 1 shifts per step, ``SECTION_STEPS`` steps (a fixed cost; the bracket shrinks by
   ``SECTIONS ** SECTION_STEPS = 2^64``, below one ulp of the value), vectorised over the batch.

Step 1 is the same backward-stable reduction ``eigvalsh`` starts with; step 2 replaces the QR/divide and
conquer on all ``d`` eigenvalues by ``O(d)`` work per bisection step. Both steps are backward stable, so
the value carries ``eigvalsh``'s error bound ``O(d eps ||G||)`` (no approximation to check a posteriori:
a Sturm count is itself the proof that no eigenvalue of ``T`` lies above the value returned).
A posteriori check that is still cheap and catches a broken reduction: the trace of ``T`` equals the
trace of ``G`` (orthogonal similarity) to ``TRACE_RTOL``; where it does not, or where the value is not
finite, that matrix takes ``eigvalsh`` instead (one branch on the device, taken only if some check fails).

Measured (``benchmarks/bench_eig.py``, ``benchmarks/bench_topeig_gpu.py``, d = 128, RoPE Grams): on 2 CPU
cores 6.6x ``eigvalsh`` (batch 2048), the CPU default; on an H100 cuSOLVER's ``sytrd`` runs one matrix at a
time (0.03x its batched ``eigh``), so GPUs take, for 64 <= d <= 128 where nvcc can build it, the method
``"cuda"`` (``cuda_topeig``: a CUDA kernel holding each matrix in registers, Lanczos, Sturm multisection and an
LDL^T certificate, behind an XLA FFI call; smaller matrices embedded in 128 x 128): 1.14-1.28M/s inside jit
on two H100 hosts (session 23; session 21's kernel 0.92-0.99M/s on an H200), 4.1-4.5x the next method, and
``ropetheory fig7 --clouds 4096`` 13.2 s against 18.2 s with ``subspace`` (session 20, same lease, its CSV 1e-15
apart); otherwise one
block subspace step on tensor cores (``subspace_top``, certified, ``eigvalsh`` where the certificate fails):
293k/s on an H100, 360k/s on an H200 (3.96x batched ``eigvalsh`` in the same run). Lanczos in plain JAX
(certified the same way) ran 0.98x ``eigvalsh`` there.
``"householder"`` is the same two steps as ``"tridiagonal"`` with the reduction written in plain JAX,
batched (``.tridiag``), with an a priori enclosure of the value (``.tridiag.householder_top``): 157k/s on the
H200; memory bound, each column reads the trailing matrix. What bounds the GPU rate (the certificate alone
1.8M/s, the squarings' batched products at 26% of the peak, a Pallas Lanczos kernel that streams the matrix
each step): docs/findings.md.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core.checks import check_finite_array
from ..core.devices import compute_platform, one_blas_thread, platform_class
from ..core.errors import BadValue
from . import cuda_topeig
from .tridiag import SECTION_STEPS, SECTIONS, TRACE_RTOL, householder_top, sturm_bracket  # noqa: F401

#: Lanczos steps (capped at d): 48 certified every length of the 200-point RoPE curves tried at d = 128
#: (32 left up to 117 of 200 uncertified)
LANCZOS_STEPS = 64
#: seed of the fixed start vectors of Lanczos and of the subspace step. Any fixed value would do (the
#: Cholesky certificate, not the start, vouches for the value); this one is kept because changing it
#: changes the last bits of every Lanczos and subspace result computed so far
LANCZOS_SEED = 20261124
#: certificate slack: lambda_max is certified below theta (1 + CERT_RTOL); Cholesky's backward error at
#: d = 128 is ~1e-14 relative, so a true gap of 1e-13 is still resolved
CERT_RTOL = 1e-13
#: ``(unroll, unroll_sturm)`` of ``householder_top`` by platform. GPUs: the Sturm count's pivot loop unrolled
#: (fused kernels instead of one launch per pivot: the bracket ran 2.0M/s unrolled against 0.22M/s as loops,
#: H100, 4096 x 128 x 128); the panels' column loops stay loops (unrolled: 1.15x faster, 3x the compile
#: time); CPU: loops
HOUSEHOLDER_UNROLL = {"cpu": (1, False), "gpu": (1, True)}
#: a Lanczos residual below this fraction of the trace is an invariant subspace (restart)
BREAKDOWN_RTOL = 1e-14


def sturm_top(a, b):
    """Largest eigenvalue of symmetric tridiagonal matrices (diagonals ``a (B, d)``, off-diagonals
    ``b (B, d-1)``): the midpoint of ``.tridiag.sturm_bracket`` (multisection on Sturm counts, a bracket
    of ``2^-64`` of the Gershgorin interval)."""
    lo, hi = sturm_bracket(a, b)
    return 0.5 * (lo + hi)


def _tridiagonal_top(G):
    """``(lambda_max, ok)`` of each symmetric ``(d, d)`` matrix in the batch ``G (B, d, d)``, ``d >= 2``:
    ``ok`` where the value is finite and the reduction kept the trace."""
    gd = jnp.diagonal(G, axis1=1, axis2=2)
    _, diag, off, _ = jax.lax.linalg.tridiagonal(G, lower=True)        # reads the lower triangle only
    top = sturm_top(diag, off)
    ok = jnp.isfinite(top) & (jnp.abs(jnp.sum(diag, 1) - jnp.sum(gd, 1)) <= TRACE_RTOL * jnp.sum(jnp.abs(gd), 1))
    return top, ok


def lanczos_top(G, steps: int):
    """Certified ``lambda_max`` of each PSD ``(d, d)`` matrix in ``G (B, d, d)`` by Lanczos; ``(lam, ok)``.

    ``steps`` Lanczos steps from one fixed start vector, fully reorthogonalised (twice, so ``Q`` stays
    orthonormal to ~eps); an invariant subspace found early (``beta`` below ``BREAKDOWN_RTOL`` of the
    trace) restarts from the next fixed vector with ``beta = 0``. The top eigenvalue ``theta`` of
    ``T = Q^T G Q`` is a lower bound of ``lambda_max`` (Cauchy interlacing; ``sturm_top``).
    Certificate: the Cholesky factorisation of ``theta (1 + CERT_RTOL) I - G`` exists (finite) iff that
    matrix is positive definite, i.e. ``lambda_max < theta (1 + CERT_RTOL)`` (up to Cholesky's backward
    error ``O(d eps ||G||)``). ``ok`` is False where the factorisation breaks down.
    """
    B, d, _ = G.shape
    k = min(steps, d)
    R = jnp.asarray(np.random.default_rng(LANCZOS_SEED).standard_normal((k + 1, d)))
    R = R / jnp.linalg.norm(R, axis=1, keepdims=True)
    scale = jnp.sum(jnp.abs(jnp.diagonal(G, axis1=1, axis2=2)), axis=1)

    def orth(Q, w):
        for _ in range(2):
            w = w - jnp.einsum("bk,bkd->bd", jnp.einsum("bkd,bd->bk", Q, w), Q)
        return w

    def step(j, st):
        Q, al, be = st
        q = Q[:, j]
        w = jnp.einsum("bij,bj->bi", G, q)
        a = jnp.einsum("bi,bi->b", w, q)
        w = orth(Q, w)
        b = jnp.linalg.norm(w, axis=1)
        broke = b <= BREAKDOWN_RTOL * scale
        alt = orth(Q, jnp.broadcast_to(R[j + 1], (B, d)))
        alt = alt / jnp.linalg.norm(alt, axis=1, keepdims=True)
        nq = jnp.where(broke[:, None], alt, w / jnp.where(broke, 1.0, b)[:, None])
        Q = jax.lax.dynamic_update_index_in_dim(Q, jnp.where(j + 1 < k, nq, Q[:, k - 1]),
                                                jnp.minimum(j + 1, k - 1), 1)
        return Q, al.at[:, j].set(a), be.at[:, j].set(jnp.where(broke, 0.0, b))

    Q0 = jnp.zeros((B, k, d), G.dtype).at[:, 0].set(R[0])
    _, al, be = jax.lax.fori_loop(0, k, step, (Q0, jnp.zeros((B, k), G.dtype), jnp.zeros((B, k), G.dtype)))
    theta = sturm_top(al, be[:, :k - 1])
    return theta, certified_below(G, theta)


def certified_below(G, theta):
    """Per matrix of ``G (B, d, d)`` (lower triangle read): True where the Cholesky factorisation of
    ``theta (1 + CERT_RTOL) I - G`` exists (is finite), i.e. that matrix is positive definite and
    ``lambda_max(G) < theta (1 + CERT_RTOL)`` (up to Cholesky's backward error ``O(d eps ||G||)``); False
    where it breaks down or ``theta`` is not finite, and wherever ``theta <= 0``. The factorisation bounds
    ``lambda_max`` from above only; the callers' ``theta`` bounds it from below as a Ritz value of an
    orthonormal basis, which a basis with dropped (zero) columns is not: there ``theta`` can be the 0 of a
    zero column, above every eigenvalue of a negative definite matrix, and the factorisation would pass.
    For ``theta > 0`` a zero column's 0 lies below the Ritz values of the rest, so the lower bound holds.
    A zero matrix is never certified; a matrix with no positive eigenvalue takes the caller's fallback."""
    d = G.shape[-1]
    mu = theta * (1.0 + CERT_RTOL)
    C = jnp.linalg.cholesky(mu[:, None, None] * jnp.eye(d, dtype=G.dtype) - G, symmetrize_input=False)
    return jnp.all(jnp.isfinite(C), axis=(1, 2)) & jnp.isfinite(theta) & (theta > 0)


def _orthonormal_columns(X, rtol):
    """Columns spanning ``X (B, d, b)``'s range above ``rtol`` of its largest singular value, orthonormal
    (eigen-whitening of ``X^T X``, twice: the second pass brings ``Q^T Q`` to ~eps); dropped directions
    are zero columns."""
    for _ in range(2):
        w, V = jnp.linalg.eigh(jnp.einsum("bdi,bdj->bij", X, X))
        keep = w > (rtol * rtol) * w[:, -1:]
        X = jnp.einsum("bdi,bij->bdj", X, V) * jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, w, 1.0)), 0.0)[:, None, :]
    return X


def subspace_top(G, block: int = 16, squarings: int = 7):
    """Certified ``lambda_max`` of each PSD matrix in ``G (B, d, d)`` by one block subspace step on tensor
    cores; ``(lam, ok)``.

    ``S = G^(2^squarings)`` by repeated squaring (normalised by its trace, so nothing overflows), the
    block ``X = S R`` (``block`` fixed random vectors) made orthonormal, and the Rayleigh-Ritz value
    ``theta = lambda_max(Q^T G Q)`` (a lower bound, Cauchy interlacing) with the same Cholesky certificate
    as ``lanczos_top``. All of it is batched matrix products, which GPUs run on float64 tensor cores.
    """
    B, d, _ = G.shape
    b = min(block, d)
    tr = jnp.trace(G, axis1=1, axis2=2)
    S = G / jnp.where(tr > 0, tr, 1.0)[:, None, None]
    for _ in range(squarings):
        S = S @ S
        t = jnp.trace(S, axis1=1, axis2=2)
        S = S / jnp.where(t > 0, t, 1.0)[:, None, None]
    R = jnp.asarray(np.random.default_rng(LANCZOS_SEED).standard_normal((d, b)))
    Q = _orthonormal_columns(S @ R, 1e-7)
    T = jnp.einsum("bdi,bde,bej->bij", Q, G, Q)
    theta = jnp.linalg.eigvalsh(T)[:, -1]
    return theta, certified_below(G, theta)


def _checked_or_eigvalsh(theta, ok, G):
    """``theta`` where its check holds (``ok``, per matrix), ``eigvalsh`` elsewhere; ``eigvalsh`` runs
    (one branch on the device) only when some check failed."""
    return jax.lax.cond(jnp.all(ok), lambda: theta,
                        lambda: jnp.where(ok, theta, jnp.linalg.eigvalsh(G, symmetrize_input=False)[:, -1]))


def default_method(d: int | None = None) -> str:
    """The fastest measured method for the platform in scope and matrices of size ``d`` (``None``: 128):
    ``"tridiagonal"`` on CPU (2 cores: 6.6x batched ``eigvalsh``, ``benchmarks/bench_eig.py``); on an NVIDIA
    GPU, ``"cuda"`` for ``cuda_topeig.DEFAULT_FROM_D <= d <= 128`` where it can run
    (``cuda_topeig.unavailable_reason``: nvcc builds it at first use; 1.14-1.28M certified top eigenvalues/s
    inside jit on an H100, 10-16x batched ``eigvalsh``,
    ``docs/benchmarks/bench_topeig_cuda_h100_s23.json``), else ``"subspace"`` (certified, ``eigvalsh``
    where its certificate fails: 3.96x batched ``eigvalsh`` on an H200, ``bench_topeig_gpu.py``); cuSOLVER
    runs ``sytrd`` one matrix at a time (2.4k/s)."""
    if compute_platform() == "cpu":
        return "tridiagonal"
    if (d is None or cuda_topeig.DEFAULT_FROM_D <= d <= cuda_topeig.D) and cuda_topeig.unavailable_reason() is None:
        return "cuda"
    return "subspace"


METHODS = ("tridiagonal", "householder", "lanczos", "subspace", "eigvalsh", "numpy", "cuda")


def unavailable_reason(method: str) -> str | None:
    """Why ``method`` cannot run in this process, or None: ``"cuda"`` needs an NVIDIA GPU and nvcc
    (``cuda_topeig.unavailable_reason``), ``"numpy"`` JAX's CPU backend for its host callback."""
    if method == "cuda":
        return cuda_topeig.unavailable_reason()
    if method == "numpy":
        try:
            jax.devices("cpu")
        except RuntimeError:
            return "its host callback needs JAX's CPU backend, which JAX_PLATFORMS leaves out"
    return None


def check_method(method) -> str:
    """``method`` if it names a top-eigenvalue method that can run here, else a ValueError naming it."""
    if not isinstance(method, str) or method not in METHODS:
        raise BadValue(f"method must be one of {', '.join(map(repr, METHODS))} or None, got {method!r}")
    if (reason := unavailable_reason(method)) is not None:
        raise BadValue(f"method {method!r} cannot run here: {reason}")
    return method


def top_eigenvalue(G, method: str | None = None, *, one_at_a_time: bool = False):
    """``lambda_max`` of symmetric matrices ``G (..., d, d)`` (traceable; use inside ``jit``).

    ``method``: ``"tridiagonal"`` (Householder + Sturm bisection for the top eigenvalue only),
    ``"householder"`` (the same two steps, the reduction batched in plain JAX instead of LAPACK's
    ``sytrd``: ``.tridiag.householder_top``, for accelerators; same trace check and fallback),
    ``"lanczos"`` (``LANCZOS_STEPS`` Lanczos steps, certified by a Cholesky factorisation, ``eigvalsh`` for
    the matrices whose certificate fails: fast for PSD matrices, exact for any symmetric one, as a matrix with
    no positive eigenvalue is never certified), ``"subspace"`` (``subspace_top``, the same certificate and
    fallback), ``"cuda"`` (``cuda_topeig``: a CUDA kernel, matrices up to 128 x 128 on an NVIDIA GPU only,
    smaller ones embedded in 128 x 128 with the same top eigenvalue; the same certificate and fallback),
    ``"eigvalsh"`` (the whole spectrum; the reference the benchmarks and tests compare against), ``"numpy"``
    (numpy's ``eigvalsh`` on the host, ``numpy_top``: no LAPACK program to build) or ``None``
    (``default_method``).
    Only the lower triangle is read (the matrix is taken to be symmetric, as every Gram here is built;
    symmetrising a copy first cost a third of the time, measured).

    ``one_at_a_time=True`` hands LAPACK one matrix per call (``lax.map``; same numbers). Needed where
    several CPU devices run at once: jaxlib's batched LAPACK kernels split a batch over XLA's intra-op
    thread pool and block until its tasks finish, so when every pool thread is itself such a kernel (one
    per device) no thread is left to run the tasks and the program never ends (about 1 run in 15 of a
    4-virtual-device sweep on 2 cores; every ``tf_XLAEigen`` thread waits in ``ParallelBatchMap``'s
    ``BlockingCounter::Wait``). A batch of one runs inline on the calling thread.
    """
    if not isinstance(G, jax.core.Tracer):                # concrete input: check it (traced: the caller did)
        A = check_finite_array("G", G, min_ndim=2)
        if A.shape[-1] != A.shape[-2] or A.shape[-1] == 0:
            raise BadValue(f"G must hold square matrices (..., d, d) with d >= 1, got shape {A.shape}")
        check_symmetric(A)
        method = default_method(A.shape[-1]) if method is None else check_method(method)
        k = _scale_exponent_host(A)                      # exact on the host, subnormal maxima included
        with one_blas_thread(compute_platform() == "cpu", lapack=method != "numpy"):   # LAPACK under XLA's threads
            lam = np.asarray(_top_eigenvalue_scaled_jit(jnp.asarray(np.ldexp(A, -k[..., None, None])), method,
                                                        one_at_a_time))
        with np.errstate(over="ignore"):
            out = np.ldexp(lam, k)
        if not np.all(np.isfinite(out)):              # finite entries, but lambda_max > the float64 maximum
            raise BadValue(f"G: its top eigenvalue, 2^{int(np.max(k))} x {float(np.max(lam)):.6g}, exceeds the "
                           f"float64 maximum; rescale G, e.g. by a power of two")
        return jnp.asarray(out)
    method = default_method(G.shape[-1]) if method is None else check_method(method)
    return _in_unit_scale(lambda A: _top_eigenvalue_scaled(A, method, one_at_a_time), G,
                          method == "cuda" and not one_at_a_time)


def _in_unit_scale(solve, G, scales_itself: bool):
    """``solve(G 2^-k)`` with ``k`` each matrix's ``_scale_exponent`` (its largest entry in ``[1/2, 1)``), its
    value (the first output of a tuple) multiplied back by ``2^k``: exact where normal, so no overflow or
    underflow inside ``solve``. ``scales_itself`` (the kernel of ``"cuda"``): ``solve(G)``, no pass over ``G``."""
    if scales_itself:
        return solve(G)
    k = _scale_exponent(G)
    out = solve(_times_power_of_two(G, -k))
    if isinstance(out, tuple):
        return (_times_power_of_two(out[0], k, 0), *out[1:])
    return _times_power_of_two(out, k, 0)


def _times_power_of_two(G, e, matrix_ndim: int = 2):
    """``G * 2^e`` per matrix (``e`` an integer per matrix; ``matrix_ndim = 0`` for one value per ``e``) as
    two products by normal powers of two, each exact where its result is normal, as ``jnp.ldexp(G, e)`` is
    (whose bit manipulation over every entry cost 12 ms against 2.3 ms for the products on 144 Grams of
    d = 128, 2 cores); results below the normal range are flushed by XLA:CPU either way and are below
    ``2^-1022`` of the largest entry. ``|e| <= 2 * 1021``, so both halves are normal exponents."""
    h = e // 2
    at = (...,) + (None,) * matrix_ndim
    return G * _power_of_two(h, G.dtype)[at] * _power_of_two(e - h, G.dtype)[at]


def _power_of_two(e, dtype):
    """``2^e`` in ``dtype`` (float32 or float64) from its exponent bits, for integers ``e`` in the normal
    exponent range (traced as two integer operations and a bit cast, where ``jnp.ldexp`` traces a program
    of its own)."""
    fi = jnp.finfo(dtype)
    itype = jnp.int64 if fi.bits == 64 else jnp.int32
    return jax.lax.bitcast_convert_type((jnp.asarray(e).astype(itype) + (fi.maxexp - 1)) << fi.nmant, dtype)


#: a matrix is taken as symmetric when ``|G - G^T| <= SYMMETRY_RTOL * max |G|`` entrywise: a Gram built
#: as ``sum y y^T`` in float64 is symmetric to rounding (~ d eps); beyond that the lower triangle alone
#: (which every method reads) would answer for a different matrix
SYMMETRY_RTOL = 1e-10


def check_symmetric(A: np.ndarray) -> None:
    """Refuse, naming ``G``, a matrix whose upper and lower triangles differ beyond ``SYMMETRY_RTOL``."""
    diff = np.abs(A - np.swapaxes(A, -1, -2))
    scale = np.max(np.abs(A), axis=(-1, -2), keepdims=True)
    bad = diff > SYMMETRY_RTOL * scale
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise BadValue(f"G must be symmetric (only its lower triangle is read); G{list(idx)} differs from its "
                         f"transpose by {float(diff[idx]):.3g}")


def _scale_exponent_host(A: np.ndarray) -> np.ndarray:
    """Per matrix, the binary exponent ``k`` of ``max |G|`` (0 for a zero matrix): ``2^-k G`` has its
    largest entry in ``[1/2, 1)``, so no square or product in any method over- or underflows."""
    m = np.max(np.abs(A), axis=(-1, -2)) if A.size else np.zeros(A.shape[:-2])
    return np.where(m > 0, np.frexp(m)[1], 0).astype(np.int64)


def _scale_exponent(G):
    """``_scale_exponent_host`` for traced matrices, read from the exponent bits of ``max |G|`` (normal
    maxima, as ``frexp``; a subnormal one, which XLA on CPU flushes anyway, gives the smallest normal
    exponent: a smaller scaling, still exact)."""
    m = jnp.max(jnp.abs(G), axis=(-1, -2))
    fi = jnp.finfo(G.dtype)
    itype = jnp.int64 if fi.bits == 64 else jnp.int32
    biased = (jax.lax.bitcast_convert_type(m, itype) >> fi.nmant) & ((1 << fi.nexp) - 1)
    return jnp.where(m > 0, jnp.maximum(biased, 1) - (fi.maxexp - 2), 0)


def _top_eigenvalue_scaled(G, method, one_at_a_time):
    """``top_eigenvalue`` of matrices already scaled to a largest entry in ``[1/2, 1)`` (or of any, for
    ``"cuda"``, whose kernel scales each matrix by the same power of two itself)."""
    d = G.shape[-1]
    method = _resolved(method, d)
    if one_at_a_time and G.ndim > 2:
        flat = G.reshape((-1, d, d))
        return jax.lax.map(lambda g: _top_eigenvalue_scaled(g, method, False), flat).reshape(G.shape[:-2])
    if method == "numpy":
        return numpy_top(G)
    if method == "eigvalsh" or d <= 2:
        return jnp.linalg.eigvalsh(G, symmetrize_input=False)[..., -1]
    Gb = G.reshape((-1, d, d))
    return _checked_or_eigvalsh(*_top_and_ok(Gb, method), Gb).reshape(G.shape[:-2])


def numpy_top(G):
    """The method ``"numpy"``: the top of numpy's ``eigvalsh`` (LAPACK ``syevd``, reading the lower triangle)
    of ``G (..., d, d)``, run on the host through ``jax.pure_callback``. Its program holds no LAPACK call, so
    building it needs neither jaxlib's LAPACK initialisation (which imports ``scipy.linalg``) nor a lowered
    ``sytrd``: for one curve in a fresh process (the ``curve`` command, 200 Grams of d = 128, 2 cores) that
    is 0.3 s less, while a warm compiled ``"tridiagonal"`` runs the same Grams 2.4x faster."""
    return jax.pure_callback(host_top, jax.ShapeDtypeStruct(G.shape[:-2], G.dtype), G, vmap_method="expand_dims")


def host_top(G: np.ndarray) -> np.ndarray:
    """The top of numpy's ``eigvalsh`` of each matrix in ``G (..., d, d)`` (lower triangle), in ``G``'s dtype;
    NaN for a matrix with an entry that is not finite (where LAPACK would raise instead)."""
    G = np.asarray(G)
    out = np.full(G.shape[:-2], np.nan, dtype=G.dtype)
    finite = np.isfinite(G).all(axis=(-1, -2))
    out[finite] = np.linalg.eigvalsh(G[finite])[..., -1]
    return out


def _resolved(method, d: int) -> str:
    """``method``, or the default for ``d x d`` matrices; refuses ``"cuda"`` past its size."""
    method = default_method(d) if method is None else check_method(method)
    if method == "cuda" and d > cuda_topeig.D:
        raise BadValue(f"method 'cuda' takes d x d matrices with d <= {cuda_topeig.D} only, got d = {d}")
    return method


def _top_and_ok(Gb, method: str):
    """``(value, ok)`` of a resolved method other than ``"eigvalsh"`` on ``Gb (B, d, d)``, ``d >= 3``: the
    value is ``lambda_max`` where ``ok`` (the method's check held), unvouched for elsewhere."""
    if method == "tridiagonal":
        return _tridiagonal_top(Gb)
    if method == "householder":
        unroll, unroll_sturm = HOUSEHOLDER_UNROLL[platform_class()]
        enc = householder_top(Gb, unroll=unroll, unroll_sturm=unroll_sturm)
        return enc.value, enc.ok
    if method == "lanczos":
        return lanczos_top(Gb, LANCZOS_STEPS)
    if method == "cuda":
        return cuda_topeig.top_and_certificate(Gb)
    return subspace_top(Gb)


def top_eigenvalue_or_flag(G, method: str | None = None):
    """``(lam, ok)`` for symmetric matrices ``G (..., d, d)`` (traced; inside ``jit``), with no branch in
    the program: ``lam`` is ``lambda_max`` where ``ok``, as ``top_eigenvalue`` would return it, and is
    unvouched for where ``ok`` is False; the caller answers those matrices itself (``eigvalsh``).

    ``top_eigenvalue`` answers them inside the program with a ``lax.cond``, which XLA:GPU runs by copying
    its predicate to the host and waiting for the device (``ConditionalThunk``): the caller's next call
    cannot be queued before this one has finished. A batched caller that reads its results back anyway
    (``spectra.gram.rank1_curves_batch``) resolves the rare failed matrices on the host instead."""
    d = G.shape[-1]
    method = _resolved(method, d)
    if method in ("eigvalsh", "numpy") or d <= 2:                  # no check to fail: the value itself
        lam = top_eigenvalue(G, method)
        return lam, jnp.isfinite(lam)
    lam, ok = _in_unit_scale(lambda A: _top_and_ok(A, method), G.reshape((-1, d, d)), method == "cuda")
    return lam.reshape(G.shape[:-2]), ok.reshape(G.shape[:-2])


#: ``_top_eigenvalue_scaled`` compiled, for concrete input: one program per shape and method instead of
#: dispatching each of its operations alone (the tridiagonal path on 144 Grams: 0.49 s eager, 0.05 s jitted)
_top_eigenvalue_scaled_jit = jax.jit(_top_eigenvalue_scaled, static_argnames=("method", "one_at_a_time"))
