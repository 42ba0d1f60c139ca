"""Closed-form Gram matrices of rank-1 RoPE clouds and their metrics, batched over lengths and clouds.

``G_n = sum_{i<n} w_i R_i v v^T R_i^T``: block ``(j, k)`` is linear in the weighted mean phases
``D_jk`` (at ``f_j - f_k``) and ``S_jk`` (at ``f_j + f_k``) (``.weights``), with the block formula
of ``.derived``. ``rho_n^2 = lambda_max(G_n) / W_n``, ``srank = tr G_n / lambda_max`` and the
Frobenius ratio ``sqrt(tr G_n / W_n)`` (1 by Lemma 2).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .derived import gram_block
from .topeig import check_method, default_method, host_top, top_eigenvalue, top_eigenvalue_or_flag
from . import cuda_topeig
from ..core.checks import (check_cloud_vector, check_clouds, check_integer, check_length, check_lengths,
                           check_rounded, from_theta, pad_edge)
from ..core.devices import compute_platform, one_blas_thread
from ..core.layouts import check_layout, to_interleaved
from ..rope import apply_rope
from .weights import AffineWeights, CONSTANT, TrigWeights, check_weights, weighted_mean_phases
from ..core.checks import check_callable, check_offset
from ..core.schedule import Schedule, as_schedule, schedule_layout
from .results import Curve
from ..core.errors import BadValue
from ..core.renamed import renamed


#: most lengths one grid may hold (each costs a d x d eigenproblem; more is a typo, not a study)
MAX_GRID_POINTS = 10 ** 6


def log_grid(n_max: float = 1e12, num: int = 200, n_min: int = 1) -> np.ndarray:
    """``num`` distinct integer lengths, log-spaced from ``n_min`` to ``n_max`` (both included)."""
    n_max = check_length(check_rounded("n_max", n_max, lo=1.0), "n_max")
    num = check_integer("num", num, lo=2, hi=MAX_GRID_POINTS)
    n_min = check_length(n_min, "n_min")
    if n_min > n_max:
        raise BadValue(f"n_min must be <= n_max, got n_min={n_min} > n_max={n_max}")
    if n_max - n_min + 1 < num:
        return np.arange(n_min, n_max + 1, dtype=np.int64)
    g = np.round(np.geomspace(n_min, n_max, num)).astype(np.int64)
    for i in range(1, num):                      # strictly increasing from the left ...
        g[i] = max(g[i], g[i - 1] + 1)
    g[-1] = n_max
    for i in range(num - 2, -1, -1):             # ... and ending at n_max
        g[i] = min(g[i], g[i + 1] - 1)
    return g


def length_bucket(n: int) -> int:
    """The size the lengths axis of the rank-1 kernels is padded to (the last length repeated; padded results
    are computed and dropped): ``n`` rounded up to a multiple of a sixteenth of the power of two above it
    (``n`` itself up to 16), so at most 1/8 of the eigenproblems are padding and a kernel compiles for
    at most 8 sizes per octave. Each length costs a ``d x d`` eigenproblem, which is why these are finer
    than ``core.checks.bucket``'s powers of two below 1024 (the report's 65 lengths ran as 128)."""
    n = max(int(n), 1)
    step = 1 << max((n - 1).bit_length() - 4, 0)
    return -(-n // step) * step


def pad_lengths(lengths: np.ndarray) -> np.ndarray:
    """``lengths`` padded to ``length_bucket`` of its size by repeating its last length."""
    return pad_edge(lengths, length_bucket(lengths.size))


def assemble_gram(v_il, Dm, Sm, xp: Any = jnp):
    """``G / W`` ``(..., d, d)`` from interleaved unit ``v (..., d)`` and mean phases ``Dm, Sm (..., P, P)``
    (complex, or real where the imaginary parts are 0), broadcast over the leading axes; ``xp`` the array module
    (``jax.numpy`` inside programs, ``numpy`` on the host)."""
    P = v_il.shape[-1] // 2
    x0, x1 = v_il[..., 0::2, None], v_il[..., 1::2, None]
    y0, y1 = v_il[..., None, 0::2], v_il[..., None, 1::2]
    g = gram_block(x0, x1, y0, y1, Dm.real, Dm.imag, Sm.real, Sm.imag)
    G = xp.stack([xp.stack([g[0], g[1]], -1), xp.stack([g[2], g[3]], -1)], -2)  # (..., P, P, 2, 2)
    G = xp.swapaxes(G, -3, -2).reshape(G.shape[:-4] + (2 * P, 2 * P))
    return 0.5 * (G + xp.swapaxes(G, -1, -2))


#: ``assemble_gram`` compiled, for a caller outside ``jit``: one program per head width, not one per operation
assemble_gram_jit = jax.jit(assemble_gram, static_argnames="xp")


def metrics_from_gram(G, W=1.0, method=None):
    """FSV ratio, stable rank and Frobenius ratio from Gram matrices ``G (..., d, d)`` of clouds with
    ``||X||_2^2 = W``; only the top eigenvalue is computed (``.topeig.top_eigenvalue``, ``method``)."""
    lam = top_eigenvalue(G, method)
    tr = jnp.trace(G, axis1=-2, axis2=-1)
    return {"rho": jnp.sqrt(lam / W), "rho2": lam / W, "srank": tr / lam, "frob_ratio": jnp.sqrt(tr / W)}


def _cloud_grams(v_il, Dm, Sm):
    """``G_n / W_n`` of one cloud ``v_il`` at every length whose mean phases are ``Dm, Sm``: ``(len, d, d)``."""
    return jax.vmap(lambda D, S: assemble_gram(v_il, D, S))(Dm, Sm)


#: ``_cloud_grams`` compiled, for callers outside ``jit``
_assemble_batch = jax.jit(_cloud_grams)


_metrics_batch = jax.jit(metrics_from_gram, static_argnames=("method",))   # every length in one call


def rotate_to_offset(theta: Schedule | np.ndarray, V_il: np.ndarray, offset: Any, n_max: int) -> np.ndarray:
    """Rows of ``V_il`` (interleaved) rotated by ``R_offset``: a cloud at positions ``offset + i``.

    Rotations of one schedule commute, so ``R_{offset+i} v = R_i (R_offset v)``: every Gram over
    positions ``offset .. offset+n-1`` is the Gram over ``0 .. n-1`` of the rotated rows."""
    off = check_offset(offset, 0, max(int(n_max) - 1, 0))
    if not off:
        return V_il
    V = np.atleast_2d(V_il)
    out = np.asarray(apply_rope(from_theta(theta), V, np.full(V.shape[0], off, dtype=np.int64), layout="interleaved"))
    return out.reshape(np.shape(V_il))


def prepare_rank1(theta, v, layout, offset, n_max=1):
    theta = as_schedule(theta)
    th = theta.theta
    P = th.size
    vv = check_cloud_vector(v, P)
    check_layout(layout)
    v_il = to_interleaved(np.asarray(vv), layout)
    return th, rotate_to_offset(theta, v_il, offset, n_max)


def rank1_gram(theta: Any, v: Any, n: Any, *, weights: AffineWeights | TrigWeights | None = None,
               layout: str | None = None, offset: int = 0) -> np.ndarray:
    """``G_n / W_n`` for ``X = u v^T`` (closed-form weights), in the interleaved channel order, ``(d, d)``."""
    layout = schedule_layout(theta, layout)
    n = check_length(n)
    w = check_weights(weights, [n])
    th, v_il = prepare_rank1(theta, v, layout, offset, n)
    D, S = weighted_mean_phases(theta, w, np.array([n], dtype=np.int64))
    return np.asarray(_assemble_batch(v_il, D, S))[0]


def rank1_curve(theta: Any, v: Any, lengths: Any, *, weights: AffineWeights | TrigWeights | None = None,
                layout: str | None = None, offset: int = 0, method: str | None = None) -> Curve:
    """FSV ratio ``rho_n``, stable rank and Frobenius ratio of ``Rope(u v^T)`` at each length.

    Closed form (constant, affine or trigonometric weights): the cost per length
    is independent of ``n``; 200 lengths up to ``10^12`` take well under a second
    after compilation (d = 128). Returns numpy arrays keyed
    ``n, rho, rho2, srank, frob_ratio``. ``method``: how the top eigenvalue is found
    (``ropetheory.spectra.topeig.top_eigenvalue``; ``None`` picks the fastest for the backend).
    """
    layout = schedule_layout(theta, layout)
    L = check_lengths(lengths)
    w = check_weights(weights, L)
    theta = as_schedule(theta)
    vv = check_cloud_vector(v, theta.planes)
    check_layout(layout)
    if method is not None:
        check_method(method)
    return checked_rank1_curve(theta, vv, L, weights=w, layout=layout, offset=offset, method=method)


def checked_rank1_curve(theta: Schedule, v: np.ndarray, lengths: np.ndarray, *, weights: AffineWeights | TrigWeights,
                        layout: str, offset: int = 0, method: str | None = None) -> Curve:
    """``rank1_curve`` for arguments a public function has already validated, checking none of them
    again: a ``Schedule``, the unit ``v`` of ``check_cloud_vector``, the int64 lengths of
    ``check_lengths``, the weights of ``check_weights``, a checked ``layout`` and ``method``."""
    L = lengths
    v_il = rotate_to_offset(theta, to_interleaved(np.asarray(v), layout), offset, int(L.max()))
    # three jitted stages, each over every length at once: fused into one program, XLA:CPU runs the
    # phases and the assembly about 10x slower (d = 128, 200 lengths)
    # the lengths padded to a bucket (last length repeated): one compilation per bucket, lengths independent
    D, S = weighted_mean_phases(theta, weights, pad_lengths(L))
    with one_blas_thread(compute_platform() == "cpu", lapack=method != "numpy"):   # LAPACK under XLA's threads
        out = _metrics_batch(_assemble_batch(v_il, D, S), method=method)
        return Curve(n=L, **{k: np.asarray(x)[:L.size] for k, x in out.items()})


def builds_grams_in_kernel(method: str | None, d: int) -> bool:
    """Whether the batched, flagged ``rho2_for_clouds`` hands the clouds and mean phases to the CUDA kernel,
    which builds each Gram in its registers (``cuda_topeig.rank1_top_and_certificate``), instead of building
    the Grams in memory: where the method (given, or the default for ``d``) is ``"cuda"``, ``2 < d <= 128``."""
    return 2 < d <= cuda_topeig.D and (method or default_method(d)) == "cuda"


def rho2_for_clouds_traced(V_il, Dm, Sm, batched_eig=False, method=None, one_at_a_time=False, flagged=False):
    """``rho_n^2`` for each cloud ``V (nv, d)`` and length: ``(nv, len)``; tr(G/W) = 1 for unit v.
    ``method``, ``one_at_a_time``: how the top eigenvalue is found (``.topeig.top_eigenvalue``). ``flagged``:
    ``(rho2, ok)`` with no branch in the program (``.topeig.top_eigenvalue_or_flag``; ``rho2`` unvouched for
    where ``ok`` is False, for the caller to answer: ``resolve_on_host``)."""
    def top(G):
        if flagged:
            return top_eigenvalue_or_flag(G, method)
        return top_eigenvalue(G, method, one_at_a_time=one_at_a_time)
    if batched_eig:            # accelerators: one batched top eigenvalue over clouds x lengths
        if flagged and builds_grams_in_kernel(method, V_il.shape[-1]):
            if method is not None:                 # a method asked for by name: refused here if it cannot run,
                check_method(method)               # and its FFI targets registered where it can
            return cuda_topeig.rank1_top_and_certificate(V_il, Dm, Sm)
        return top(jax.vmap(_cloud_grams, (0, None, None))(V_il, Dm, Sm))
    return jax.lax.map(lambda v: top(_cloud_grams(v, Dm, Sm)), V_il)


#: ``rho2_for_clouds_traced``, jitted (the traced function is for callers that trace it themselves,
#: e.g. inside ``shard_map``)
rho2_for_clouds = functools.partial(jax.jit, static_argnames=("batched_eig", "method", "one_at_a_time", "flagged"))(
    rho2_for_clouds_traced)


def resolve_on_host(rho2: np.ndarray, ok: np.ndarray, V_il: np.ndarray, Dm: Any, Sm: Any) -> np.ndarray:
    """``rho2 (nv, len)`` with each entry where ``ok`` is False replaced by the top of numpy's ``eigvalsh`` of
    that cloud's Gram at that length (rebuilt from ``V_il (nv, d)`` and the mean phases ``Dm, Sm``); a copy
    where some entry is replaced, ``rho2`` itself where none is."""
    if ok.all():
        return rho2
    rho2 = rho2.copy()
    for c in np.flatnonzero(~ok.all(axis=1)):
        cols = np.flatnonzero(~ok[c])
        padded = pad_edge(cols, length_bucket(cols.size))           # one compilation per bucket, as the lengths
        rho2[c, cols] = host_top(np.asarray(_assemble_batch(V_il[c], Dm[padded], Sm[padded]))[:cols.size])
    return rho2


#: bytes of Gram matrices one call of ``rank1_curves_batch`` may hold on an accelerator where the Grams are built
#: in memory (clouds x lengths x d^2 float64): 8192 Grams of d = 128
ACCELERATOR_CALL_BYTES = 1 << 30
#: clouds per call on the CPU, where the clouds run one after another inside the call anyway
CPU_CLOUDS_PER_CALL = 16
#: matrices one call may hold where the kernel builds the Grams itself (``builds_grams_in_kernel``: 12 bytes of
#: output a matrix, no Gram in memory): Figure 7's 4096 clouds x 64 lengths, ~0.2 s of the kernel on one H100, in
#: one call, where 1 GiB of Grams took 8192 (the host waited 2.7 ms a call to queue each, session 25)
KERNEL_CALL_MATRICES = 1 << 18


@renamed("0.3.0", chunk="clouds_per_call")
def rank1_curves_batch(theta: Any, V: Any, lengths: Any, *, layout: str | None = None, offset: int = 0,
                       clouds_per_call: int | None = None, progress=None, method: str | None = None) -> Curve:
    """``rho_n`` for many rank-1 clouds (rows of ``V``, constant weights) at every length: a ``Curve`` whose
    ``rho`` and ``rho2`` are ``(nv, len)`` (one row per cloud).

    The mean phases do not depend on ``v``: they are computed once; each cloud then costs one
    block assembly and one top eigenvalue per length; ``clouds_per_call`` clouds go to the jitted kernel at
    a time (default: ``CPU_CLOUDS_PER_CALL`` on CPU; on an accelerator the largest power of two whose Grams fit
    ``ACCELERATOR_CALL_BYTES``, or, where the CUDA kernel builds the Grams itself (``builds_grams_in_kernel``),
    whose matrices number at most ``KERNEL_CALL_MATRICES``). The program returns each value with its method's check
    (``.topeig.top_eigenvalue_or_flag``); the few values no check vouched for are recomputed here with numpy's
    ``eigvalsh`` (``resolve_on_host``). ``progress(k)`` is called with the ``k`` clouds just done.
    """
    return start_rank1_curves(theta, V, lengths, layout=layout, offset=offset, clouds_per_call=clouds_per_call,
                              progress=progress, method=method)()


def _clouds_per_call(clouds_per_call: int | None, d: int, n_lengths: int, method: str | None, batched: bool) -> int:
    """``clouds_per_call`` checked, or the default: on an accelerator the largest power of two of clouds whose
    ``n_lengths`` Grams fit ``ACCELERATOR_CALL_BYTES``, or number at most ``KERNEL_CALL_MATRICES`` where the kernel
    builds them (even calls); on CPU ``CPU_CLOUDS_PER_CALL``."""
    if clouds_per_call is not None:
        return check_length(clouds_per_call, "clouds_per_call")
    if not batched:
        return CPU_CLOUDS_PER_CALL
    if builds_grams_in_kernel(method, d):
        fit = max(1, KERNEL_CALL_MATRICES // n_lengths)
    else:
        fit = max(1, ACCELERATOR_CALL_BYTES // (8 * n_lengths * d ** 2))
    return 1 << (fit.bit_length() - 1)


def start_rank1_curves(theta: Any, V: Any, lengths: Any, *, layout: str | None = None, offset: int = 0,
                       clouds_per_call: int | None = None, progress=None, method: str | None = None
                       ) -> Callable[[], Curve]:
    """``rank1_curves_batch`` in two halves: the arguments are checked now and the returned function, called
    without arguments, gives the ``Curve``.

    On an accelerator every chunk of clouds is dispatched now (as far as the device's queue takes them) and the
    function reads them back, so a caller that starts the next batch before finishing this one keeps the device
    busy while the host reads, saves and computes. On CPU nothing is computed until the function is called, in
    the device scope of the start.
    """
    layout = schedule_layout(theta, layout)
    theta = as_schedule(theta)
    Vi, L = check_clouds(V, theta.theta.size, layout), check_lengths(lengths)
    if progress is not None:
        check_callable("progress", progress)
    Vi = rotate_to_offset(theta, Vi, offset, int(L.max()))
    if method is not None:
        check_method(method)
    batched = compute_platform() != "cpu"
    padded = pad_lengths(L)                                              # padded: see rank1_curve
    chunk = _clouds_per_call(clouds_per_call, Vi.shape[1], padded.size, method, batched)

    def dispatch(Dm: Any, Sm: Any, k: int) -> tuple[np.ndarray, Any, Any, Any]:
        # no branch in the program (``top_eigenvalue_or_flag``) makes its dispatch wait for the device; the rare
        # values no check vouched for are answered on the host, by ``read``
        v = Vi[k:k + chunk]
        return v, Dm, Sm, rho2_for_clouds(jnp.asarray(v), Dm, Sm, batched_eig=batched, method=method, flagged=True)

    def read(v: np.ndarray, Dm: Any, Sm: Any, flagged: Any) -> np.ndarray:
        out = resolve_on_host(np.asarray(flagged[0]), np.asarray(flagged[1]), v, Dm, Sm)
        if progress is not None:
            progress(v.shape[0])
        return out

    def curve(parts: list[np.ndarray]) -> Curve:
        rho2 = np.clip(np.concatenate(parts)[:, :L.size], 0, None)
        return Curve(n=L, rho=np.sqrt(rho2), rho2=rho2)

    if batched:                                          # every program dispatched now, read back when asked
        Dm, Sm = weighted_mean_phases(theta, CONSTANT, padded)
        queued = [dispatch(Dm, Sm, k) for k in range(0, Vi.shape[0], chunk)]
        return lambda: curve([read(*q) for q in queued])

    scope = jax.config.jax_default_device  # type: ignore[attr-defined]  # the device in scope at the start

    def on_host() -> Curve:
        with jax.default_device(scope):
            Dm, Sm = weighted_mean_phases(theta, CONSTANT, padded)    # on CPU, only when asked
            parts = []
            for k in range(0, Vi.shape[0], chunk):
                with one_blas_thread(True, lapack=method != "numpy"):   # LAPACK under XLA's threads: core.devices
                    parts.append(read(*dispatch(Dm, Sm, k)))
        return curve(parts)
    return on_host
