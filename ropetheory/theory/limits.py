"""The limits of Theorem 1 (``Gbar = lim G_n / W_n`` and its top eigenvalue ``lambda``), one cloud or many.

The time average of ``R_i G R_i^T`` keeps exactly the Gram-block terms whose frequency is 0 mod 2 pi, so
``Gbar`` is the block formula (``ropetheory.spectra.derived``) at the limits of the mean phases
(``limit_mean_phases``); ``ropetheory.theory.theorems`` states and checks the claims built on them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import spectra
from ..core.angles import pair_frequencies
from ..core.checks import check_cloud_vector
from ..core.errors import BadType
from ..core.layouts import to_interleaved
from ..core.schedule import Schedule, as_schedule, schedule_layout
from ..spectra.gram import assemble_gram, assemble_gram_jit
from ..spectra.weights import AffineWeights

__all__ = ["limit_mean_phases", "limit_gram", "checked_limit_gram", "coupling_classes", "limit_lambdas", "class_tops",
           "LIMIT_BLOCK_BYTES", "limit_clouds_per_block"]


def limit_mean_phases(theta: Any, weights: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Limits ``(Dbar, Sbar)`` of the weighted mean phases, ``(P, P)`` each.

    Monotone-type weights (``None``, ``AffineWeights``): the indicator of
    resonance, ``[omega == 0 mod 2 pi]``. ``TrigWeights``
    ``w_i = sum_c coef_c e^{i phi_c i}``: ``sum_c coef_c [omega + phi_c == 0] / sum_c coef_c [phi_c == 0]``,
    the exact limit when ``TV_n = o(W_n)`` fails in this way.
    """
    theta = as_schedule(theta)
    if weights is not None and not isinstance(weights, (AffineWeights, spectra.TrigWeights)):
        raise BadType(f"weights must be None, AffineWeights or TrigWeights, got {weights!r}")
    comps = weights.components() if isinstance(weights, spectra.TrigWeights) else [(1.0, 0.0)]
    D: Any = 0.0
    S: Any = 0.0
    W = 0.0
    for coef, shift in comps:
        pf = pair_frequencies(theta, shift)
        D = D + coef * pf.res_diff
        S = S + coef * pf.res_sum
        W += coef * float(spectra.nope_planes([abs(shift)])[0])
    return np.asarray(D, dtype=float) / W, np.asarray(S, dtype=float) / W


def limit_gram(theta: Any, v: Any, *, layout: str | None = None, weights: Any = None) -> np.ndarray:
    """``Gbar = lim G_n / W_n`` for any schedule (degenerate included), interleaved order, ``(d, d)``.

    Keeps the terms whose frequency ``theta_j -+ theta_k`` is 0 mod 2 pi (resonant
    within ``ropetheory.spectra.RESONANCE_TOL_TURNS``); see ``limit_mean_phases``
    for oscillating weights.
    """
    layout = schedule_layout(theta, layout)
    theta = as_schedule(theta)
    return checked_limit_gram(theta, check_cloud_vector(v, theta.planes), layout, weights)


def checked_limit_gram(theta: Schedule, vv: np.ndarray, layout: str, weights: Any) -> np.ndarray:
    """``limit_gram`` for arguments already checked (a ``Schedule``, the vector of ``check_cloud_vector``)."""
    vi = to_interleaved(np.asarray(vv), layout)
    D, S = limit_mean_phases(theta, weights)
    return np.asarray(assemble_gram_jit(vi, np.asarray(D, dtype=np.complex128), np.asarray(S, dtype=np.complex128)))


#: bytes of class Grams ``limit_lambdas`` holds at a time: 4096 clouds' 2 x 2 blocks at d = 128 in one call (the
#: 256-cloud blocks before cost 16 calls of numpy's eigvalsh a schedule: 1.3 s of Figure 7 on a 16-core host)
LIMIT_BLOCK_BYTES = 32 << 20


def limit_clouds_per_block(classes: int, m: int) -> int:
    """Clouds per call of ``limit_lambdas`` for ``classes`` classes of ``m`` planes: their ``2m x 2m`` class
    Grams within ``LIMIT_BLOCK_BYTES``, at least one cloud."""
    return max(1, LIMIT_BLOCK_BYTES // (8 * classes * (2 * m) ** 2))


def coupling_classes(coupled: np.ndarray) -> np.ndarray:
    """Connected components of the symmetric boolean ``(P, P)`` coupling: a label per plane (the smallest
    plane of its class)."""
    P = coupled.shape[0]
    label = np.full(P, -1)
    for start in range(P):
        if label[start] >= 0:
            continue
        label[start], stack = start, [start]
        while stack:
            j = stack.pop()
            for k in np.flatnonzero(coupled[j] & (label < 0)):
                label[k] = start
                stack.append(int(k))
    return label


def limit_lambdas(theta: Any, V: Any, *, layout: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Batched ``predicted_limit``: ``(lambda, max_j e_j)`` for every cloud (row of ``V``).

    Block ``(j, k)`` of ``Gbar`` is linear in ``(Dbar_jk, Sbar_jk)``, so it is exactly zero unless planes ``j``
    and ``k`` are joined by a chain of resonances: ``Gbar`` is block diagonal over those classes and
    ``lambda`` is the largest of the classes' top eigenvalues (``class_tops``; 2 x 2 blocks for a generic
    schedule)."""
    layout = schedule_layout(theta, layout)
    theta = as_schedule(theta)
    P = theta.planes
    Vi = spectra.check_clouds(V, P, layout)
    D, S = limit_mean_phases(theta)
    lam = class_tops(D, S, Vi, coupling_classes((D != 0) | (S != 0) | np.eye(P, dtype=bool)), reduce=True)
    e = Vi[:, 0::2] ** 2 + Vi[:, 1::2] ** 2
    return lam, e.max(axis=1)


def top_of_2x2(G: np.ndarray) -> np.ndarray:
    """The top eigenvalue of each symmetric ``2 x 2`` matrix ``[[p, q], [q, r]]`` of ``G (..., 2, 2)``, in closed
    form: ``(p + r) / 2 + hypot((p - r) / 2, q)``.

    Every operation is one rounding of exact inputs (``hypot`` avoids overflow and underflow in the square), so the
    error is a few ulps of ``max(|p|, |q|, |r|)``, within ``eigvalsh``'s ``O(eps ||G||)``; numpy's batched
    ``eigvalsh`` on 2 x 2 blocks spends most of its time in LAPACK's per-matrix calls (half of the floors of Figure
    7 at 4096 clouds). The off-diagonal is the mean of the two (the matrix is symmetric to rounding)."""
    p, r = G[..., 0, 0], G[..., 1, 1]
    q = 0.5 * (G[..., 0, 1] + G[..., 1, 0])
    return 0.5 * (p + r) + np.hypot(0.5 * (p - r), q)


def class_tops(D: np.ndarray, S: np.ndarray, Vi: np.ndarray, label: np.ndarray, *, reduce: bool = False
               ) -> np.ndarray:
    """``lambda_max(Gbar_QQ)`` for every cloud (row of the interleaved ``Vi``) and every class ``Q`` of planes
    (``label``, classes in ``np.unique(label)`` order): ``(clouds, classes)``, or with ``reduce`` the largest,
    ``(clouds,)``, which is ``lambda_max(Gbar)`` when no resonance joins two classes (``Gbar`` block diagonal).

    ``Gbar_QQ`` is the block formula at the limits ``(D, S)`` of the mean phases on the class's planes. A class
    resonant at every difference and sum (NoPE planes, planes at pi) does not turn at all: D = S = 1 gives
    ``v_Q v_Q^T``, whose top eigenvalue is ``||v_Q||^2``; a class of one plane (2 x 2, every class of a generic
    schedule) ``top_of_2x2``; numpy's ``eigvalsh`` the others, one batched call per class size and block of
    ``limit_clouds_per_block`` clouds."""
    classes = np.unique(label)
    members = [np.flatnonzero(label == q) for q in classes]
    out = np.full(Vi.shape[0] if reduce else (Vi.shape[0], classes.size), -np.inf)
    for m in sorted({x.size for x in members}):
        pick = np.array([i for i, x in enumerate(members) if x.size == m])
        planes = np.stack([members[i] for i in pick])                                 # (classes, m)
        channels = np.stack([2 * planes, 2 * planes + 1], -1).reshape(planes.shape[0], 2 * m)
        Dq, Sq = (X[planes[:, :, None], planes[:, None, :]] for X in (D, S))
        rigid = np.all(Dq == 1, axis=(1, 2)) & np.all(Sq == 1, axis=(1, 2))
        step = limit_clouds_per_block(planes.shape[0], m)
        for k in range(0, Vi.shape[0], step):
            vq = Vi[k:k + step][:, channels]                                         # (clouds, classes, 2m)
            top = np.empty(vq.shape[:2])
            top[:, rigid] = np.sum(vq[:, rigid] ** 2, axis=-1)
            if not rigid.all():
                G = assemble_gram(vq[:, ~rigid], Dq[~rigid], Sq[~rigid], xp=np)
                top[:, ~rigid] = top_of_2x2(G) if m == 1 else np.linalg.eigvalsh(G)[..., -1]
            if reduce:
                np.maximum(out[k:k + step], top.max(axis=1), out=out[k:k + step])
            else:
                out[k:k + step, pick] = top
    return out
