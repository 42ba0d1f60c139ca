"""The FSV curve with its tail certified: Grams only where the certified bound does not yet pin ``rho_n``.

Theorem 1 with its certified bound (``.theorems``, docs/theory.md) says ``|rho_n^2 - lambda| <= eps_n``
with

    eps_n^2 = sum_m A_m min(1, c_n / s_m)^2,   A_m = e_j e_k / 2,   s_m = |sin(omega_m / 2)|,

over the non-resonant pair frequencies ``omega_m = theta_j -+ theta_k`` (resonant ones contribute 0)
and ``c_n = (w_{n-1} + TV_n) / W_n`` (affine weights). Once ``eps_n <= rtol lambda`` the limit answers
``rho_n`` within that relative tolerance and no Gram is needed: ``certified_curve`` computes Grams
(``spectra.rank1_curve``) only at the other lengths and marks which points were certified.

``.theorems.certified_bound`` evaluates ``eps_n`` in Arb balls: ``O(P^2)`` Arb sines, longer than the
whole curve it would save. Here the same sum is bounded in float64 with outward margins (IEEE-754
round to nearest, the standard model ``fl(x op y) = (x op y)(1 + delta)``, ``|delta| <= u = 2^-53``):

* ``s_m`` from below, without a sine: ``omega_m / 2 = pi t_m`` with ``t_m`` the pair frequency in turns,
  reduced to ``[-1/2, 1/2)`` and correctly rounded (``core.angles.pair_frequencies``, built from
  exact fixed-point turns), and on ``[0, pi/2]`` ``sin x >= max(2x/pi, x - x^3/6)`` (Jordan; Taylor
  with alternating remainder) evaluated at a lower bound of ``|t_m|``;
* every other quantity is a sum or product of non-negative floats, so a relative margin of
  ``(M + 16) u`` on the ``M``-term sums covers their rounding (Higham, Thm 4.1).

The bound is looser than the Arb one (by at most ``pi/2`` per pair, ``1 + O(t^2)`` for the small ``s_m``
that dominate it); the tests check it is never below the Arb value. ``lambda`` itself comes from a
float64 ``eigvalsh`` of ``Gbar`` (Theorem 1's limit): its error, ``theorems.FLOAT_SLACK``, is added to the
certified radius when deciding, never folded into ``eps``.

That bound is Weyl's with the Frobenius norm of the whole perturbation ``E = G_n / W_n - Gbar``: about 1e3
times the true error on a Gaussian cloud at d = 128. ``certified_curve`` also uses a gap-aware one
(``gap_certified_eps``). Split the planes into ``T``, the resonance class (planes coupled in ``Gbar`` by a
resonant pair) holding ``lambda``, and the rest ``R``; ``Gbar`` has no ``T``-``R`` block, so with
``A = Gbar_TT + E_TT``, ``B = Gbar_RR + E_RR``, ``C = E_RT``, Cauchy interlacing and the Schur complement give,
whenever ``g = lambda - ||E_TT|| - lambda_max(B) > 0``,

    lambda - ||E_TT||  <=  rho_n^2  <=  lambda + ||E_TT|| + ||C||^2 / g,

because ``rho_n^2 = mu`` is then an eigenvalue of ``A + C^T (mu - B)^{-1} C`` with ``mu - lambda_max(B) >= g``.
``lambda_max(B)`` is bounded by block Gershgorin (Feingold-Varga) over the classes of ``R``: ``lambda_max(Gbar_QQ)
+ ||E_QQ|| + sum_{Q' != Q} ||E_QQ'|| d_Q' / d_Q``, maximised over ``Q`` for each energy weighting ``d`` of
``GERSHGORIN_POWERS`` (``D^-1 B D`` has ``B``'s eigenvalues), the smallest of those maxima kept. Each block
norm is bounded by its Frobenius norm, whose square is the per-pair sum of Theorem 1's bound restricted to
that block (``||E_jk||_F^2 = e_j e_k (|dD_jk|^2 + |dS_jk|^2) / 2``: the two parts are Frobenius-orthogonal).
The first-order term ``||E_TT||`` involves only the top class's own frequencies and the coupling enters
squared, so the bound follows the true error within a small factor once the top plane is resolved
(``g > 0``); before that it is infinite and the Frobenius bound stands.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import spectra
from ..core.checks import check_number
from ..core.devices import one_blas_thread
from ..core.schedule import as_schedule, schedule_layout
from . import theorems
from .limits import class_tops, coupling_classes, limit_mean_phases

__all__ = ["CURVE_CERTIFIED_RTOL", "certified_curve", "float_certified_eps", "gap_certified_eps"]

#: relative tolerance on ``rho_n^2`` (hence at most half of it on ``rho_n`` and ``rtol / (1 - rtol)`` on
#: the stable rank) within which the certified limit stands in for a computed point. 1e-3: a tenth of a
#: percent is below what a log-log FSV plot resolves (a figure's line width spans ~1% of a decade); the
#: bound is loose (``eps_n`` ~ 3e3 / n for d = 128 against true errors ~1e3 times smaller), so a tighter
#: value certifies almost nothing on a grid to 10^12 (1e-6: the last ~13 of 200 points).
CURVE_CERTIFIED_RTOL = 1e-3

_U = 2.0 ** -53          # unit roundoff of float64
#: |t_true - t| for a pair frequency ``t`` in turns: ``fixed_turns`` keeps 156 fractional bits of each
#: frequency (two of them per pair) and the 300-bit 1/(2 pi) adds less than 2^-290 turns; 2^-150 covers both
_TURN_ABS_ERR = 2.0 ** -150


def _sin_pi_lower(t: np.ndarray) -> np.ndarray:
    """Rigorous lower bounds of ``|sin(pi t)|`` for float ``t`` in ``[-1/2, 1/2]`` (pair turns)."""
    y = np.abs(t) * (1 - 2 * _U) - _TURN_ABS_ERR            # <= |t_true| (sin(pi y) increases on [0, 1/2])
    y = np.clip(y, 0.0, 0.5)
    x = y * (math.pi * (1 - 2 * _U))                          # float(pi) < pi; the product rounds once
    taylor = x - x * x * x / 6                                # sin x >= x - x^3/6 for x >= 0
    lower = np.maximum(2 * y, taylor)                         # sin(pi y) >= 2 y on [0, 1/2] (Jordan)
    return lower * (1 - 16 * _U)                              # a few roundings, each relative <= u / 0.9


def _inv_sin_bounds(pf, A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper bounds of ``1/s`` for the difference and the sum frequency of every plane pair, ``(P, P)`` each:
    ``inf`` where the lower bound of ``s`` is 0, and 0 (no term; a true ``1/s`` is at least 1) where the pair
    is resonant or carries no amplitude (``A = 0``)."""
    out = []
    for t, res in ((pf.t_diff, pf.res_diff), (pf.t_sum, pf.res_sum)):
        with np.errstate(divide="ignore"):
            out.append(np.where(res | (A == 0), 0.0, (1 / _sin_pi_lower(t)) * (1 + 2 * _U)))
    return out[0], out[1]


def _bound_pieces(theta: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(inv_s, prefix, suffix)``: ``1/s_m`` upper bounds ascending, ``sum_{m<k} A_m/s_m^2``, ``sum_{m>=k} A_m``."""
    A = np.outer(e, e) / 2
    inv = _inv_sin_bounds(spectra.pair_frequencies(theta), A)
    inv_s = np.concatenate([i[i > 0] for i in inv])
    amps = np.concatenate([A[i > 0] for i in inv])
    order = np.argsort(inv_s, kind="stable")
    inv_s, amps = inv_s[order], amps[order]
    with np.errstate(invalid="ignore"):                       # inf * 0 never occurs: A > 0 kept only
        terms = amps * inv_s * inv_s
    prefix = np.concatenate([[0.0], np.cumsum(terms)])
    suffix = np.concatenate([np.cumsum(amps[::-1])[::-1], [0.0]])
    return inv_s, prefix, suffix


def _abel_ratio(n: np.ndarray, weights: spectra.AffineWeights) -> np.ndarray:
    """Upper bounds of ``c_n = (w_{n-1} + TV_n) / W_n = (a + 2 b (n-1)) / (n a + b n (n-1) / 2)``."""
    nf = n.astype(np.float64)
    k = math.frexp(max(float(weights.intercept), float(weights.slope)))[1]   # c is scale-free: 2^-k a, 2^-k b
    a, b = math.ldexp(float(weights.intercept), -k), math.ldexp(float(weights.slope), -k)  # exact; no overflow below
    c = (a + 2 * b * (nf - 1)) / (nf * a + b * nf * (nf - 1) / 2)
    return c * (1 + 16 * _U)                                  # n rounded to float, then <= 8 roundings


def float_certified_eps(theta: Any, v: Any, lengths: Any, *, weights: spectra.AffineWeights | None = None,
                        layout: str = "interleaved") -> np.ndarray:
    """Rigorous upper bounds ``eps_n >= |rho_n^2 - lambda|`` at each length, in float64 (module doc).

    The same bound as ``theorems.certified_eps`` (which it never undercuts), ``O(P^2 log P)`` numpy work
    once and ``O(log P)`` per length instead of ``O(P^2)`` Arb sines. Affine weights only.
    """
    th, _, L, w = _affine_arguments("float_certified_eps", theta, v, lengths, weights, layout)
    return _eps(th, theorems.plane_energies(v, layout=layout), L, w)


def _affine_arguments(fn: str, theta: Any, v: Any, lengths: Any, weights: Any, layout: str):
    """``(theta, interleaved unit v, int64 lengths, weights)`` checked for a bound taking affine weights only."""
    th, v_il = spectra.prepare_rank1(theta, v, layout, 0)
    L = spectra.check_lengths(lengths)
    w = spectra.check_weights(weights, L)
    if not isinstance(w, spectra.AffineWeights):
        raise TypeError(f"{fn} takes AffineWeights (or None), got {type(w).__name__}")
    return th, v_il, L, w


def _eps(theta: np.ndarray, e: np.ndarray, L: np.ndarray, weights: spectra.AffineWeights) -> np.ndarray:
    inv_s, prefix, suffix = _bound_pieces(theta, e)
    c = _abel_ratio(L, weights)
    # split where c / s_m crosses 1: min(1, c/s) = c/s below it (inv_s <= 1/c), 1 above
    k = np.searchsorted(inv_s, 1 / c, side="right")
    e2 = c * c * prefix[k] + suffix[k]
    margin = 1 + (inv_s.size + 16) * _U                      # M-term sums of non-negative floats
    return np.sqrt(e2 * margin) * (1 + 2 * _U)


#: the gap-aware bound bounds lambda_max of the other planes by block Gershgorin on ``D^-1 B D`` with
#: ``D = diag(w_Q^p)`` (``w_Q`` a class's energy) for each ``p`` here: for one ``D`` the largest class radius
#: bounds it (a similarity leaves the eigenvalues), and the smallest of those bounds over ``p`` is kept.
#: Weighting by energy shrinks the radius of the strong planes, the ones near ``lambda``: d = 128, Gaussian
#: cloud, finite from n = 4.1e5 with these powers, 8.1e5 with (0, 1, 2), 1.1e6 with p = 0 alone
GERSHGORIN_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)

#: lengths per block of the gap-aware bound's ``(lengths, P, P)`` work arrays: 2^16 elements (512 KiB of
#: float64) at most, whatever the number of lengths. Blocks that stay in the L2 cache: the bound over 200
#: lengths at d = 128 took 10.1 ms in blocks of 2^16 elements, 18.2 ms in blocks of 2^22 (2 CPU cores);
#: the numbers do not depend on the block size (every operation is per length)
_GAP_ELEMENTS = 1 << 16


def gap_certified_eps(theta: Any, v: Any, lengths: Any, *, weights: spectra.AffineWeights | None = None,
                      layout: str = "interleaved") -> np.ndarray:
    """Rigorous upper bounds of ``|rho_n^2 - lambda|`` at each length from the gap-aware bound (module
    doc), ``inf`` where the top class is not yet separated (``g <= 0``). Affine weights only; ``v`` as the
    cloud stands (at offset 0: ``R_offset v`` for another offset)."""
    return _gap_eps(*_affine_arguments("gap_certified_eps", theta, v, lengths, weights, layout))


def _gap_eps(theta: np.ndarray, v_il: np.ndarray, L: np.ndarray, weights: spectra.AffineWeights) -> np.ndarray:
    pf = spectra.pair_frequencies(theta)
    e = theorems.plane_energies(v_il)
    P = e.size
    A = np.outer(e, e) / 2
    label = coupling_classes(((pf.res_diff | pf.res_sum) & (A > 0)) | np.eye(P, dtype=bool))
    classes = np.unique(label)                              # sorted: the order of the class blocks below
    D, S = limit_mean_phases(theta)
    lam_q = class_tops(D, S, v_il[None], label)[0]
    if classes.size == 1:                         # no R: rho_n^2 - lambda is bounded by ||E_TT|| = ||E||
        return _eps(theta, e, L, weights)
    top = int(np.argmax(lam_q))
    # planes in class order (each class contiguous), so class-block sums are two reduceat calls
    order = np.argsort(label, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(label[order]) != 0])
    inv = [i[np.ix_(order, order)] for i in _inv_sin_bounds(pf, A)]
    A = A[np.ix_(order, order)]
    margin = 1 + (P * P + 16) * _U                            # M-term sums of non-negative floats
    A8 = A * (1 + 8 * _U)                                    # the products and the sum of two squares below
    singletons = starts.size == P                            # no resonant coupling: class sums are the entries
    others = 1.0 - np.eye(classes.size)                      # masks, not differences: no cancellation
    others[:, top] = 0.0
    w = np.add.reduceat(e[order], starts)                    # class energies; a class of none has no blocks
    w = np.where(w > 0, w, 1.0)
    # d_Q' / d_Q for the scalings D = diag(w_Q^p) tried (p = 0: B itself); each gives a valid bound
    scalings = np.stack([others * (w[None, :] / w[:, None]) ** p for p in GERSHGORIN_POWERS])
    out = np.empty(L.size)
    step = max(1, _GAP_ELEMENTS // (P * P))
    for a in range(0, L.size, step):
        c = _abel_ratio(L[a:a + step], weights)[:, None, None]
        F = np.zeros((c.shape[0], P, P))                     # ||E_jk||_F^2 upper bounds, (len, P, P)
        for i in inv:                                        # min(1, c/s)^2: 0 where resonant, 1 where s = 0
            k = np.multiply(c, i)
            np.minimum(k, 1.0, out=k)
            F += k * k
        F *= A8
        Fc = (F if singletons else np.add.reduceat(np.add.reduceat(F, starts, axis=1), starts, axis=2)) * margin
        Bc = np.sqrt(Fc) * (1 + 2 * _U)                     # ||E_QQ'||_2 <= ||E_QQ'||_F, per class pair
        own = np.diagonal(Bc, axis1=1, axis2=2)                                     # ||E_QQ|| bounds
        e_tt = own[:, top]
        c2 = np.delete(Fc[:, :, top], top, axis=1).sum(1) * margin                  # ||C||_F^2 = ||E_RT||_F^2
        # block Gershgorin on D^-1 B D (B's eigenvalues) for each scaling D: the largest class radius bounds
        # lambda_max(B) for that D; the smallest of those bounds is kept (one D must serve every class)
        off = np.einsum("lqr,sqr->slq", Bc, scalings) * margin * (1 + 4 * _U)
        radius = (lam_q + theorems.FLOAT_SLACK + own + off) * (1 + 4 * _U)
        radius = np.min(np.max(np.delete(radius, top, axis=2), axis=2), axis=0)
        lam = lam_q[top] - theorems.FLOAT_SLACK
        g = lam - e_tt - radius
        g = g - 8 * _U * (lam + e_tt + np.abs(radius))        # the three subtractions' rounding, outward
        with np.errstate(divide="ignore"):
            out[a:a + step] = np.where(g > 0, (e_tt + c2 / np.where(g > 0, g, 1.0)) * (1 + 4 * _U), np.inf)
    return out


def certified_curve(theta: Any, v: Any, lengths: Any, *,
                    weights: spectra.AffineWeights | spectra.TrigWeights | None = None,
                    layout: str | None = None, offset: int = 0, method: str | None = None,
                    rtol: float = CURVE_CERTIFIED_RTOL) -> spectra.Curve:
    """``spectra.rank1_curve`` with the Grams past the certified point replaced by Theorem 1's limit.

    At each length where ``eps_n + FLOAT_SLACK <= rtol * lambda`` (``eps_n`` the smaller of
    ``float_certified_eps`` and ``gap_certified_eps``, both rigorous bounds on ``|rho_n^2 - lambda|``) the point is
    the limit: ``rho2 = lambda``, ``rho = sqrt(lambda)``, ``srank = 1 / lambda`` (``tr G_n / W_n = 1``,
    Lemma 2), ``frob_ratio = 1``; elsewhere it is computed exactly as ``rank1_curve`` does. Returns
    ``rank1_curve``'s ``Curve`` with ``certified`` (bool, which points were certified rather than
    computed) and ``eps`` (the certified radius on ``rho2``; NaN where no bound applies: oscillating
    weights, which ``TV_n = o(W_n)`` excludes, are always computed).
    """
    rtol = check_number("rtol", rtol, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    layout = schedule_layout(theta, layout)
    theta = as_schedule(theta)
    L = spectra.check_lengths(lengths)
    w = spectra.check_weights(weights, L)
    th, v_il = spectra.prepare_rank1(theta, v, layout, offset, int(L.max()))
    eps = np.full(L.size, np.nan)
    lam = math.nan
    if isinstance(w, spectra.AffineWeights):
        # R_offset v has the plane energies of v: the bound holds at any offset; the limit is v's at it.
        # OpenBLAS on one thread: its threads, woken by the small eigvalsh calls, would spin on into the
        # curve's XLA threads (the computed points took 135 ms instead of 72, 2 cores); numpy alone runs here
        with one_blas_thread(lapack=False):
            eps = np.minimum(_eps(th, theorems.plane_energies(v_il), L, w), _gap_eps(th, v_il, L, w))
            lam = float(theorems.limit_lambdas(th, v_il[None, :])[0][0])
    cert = eps + theorems.FLOAT_SLACK <= rtol * lam            # NaN compares False
    cols = {k: np.full(L.size, x) for k, x in
            (("rho", math.sqrt(lam)), ("rho2", lam), ("srank", 1 / lam), ("frob_ratio", 1.0))}
    todo = np.flatnonzero(~cert)
    if todo.size:                        # the all-computed curve's call, on the other lengths (padded by 1/8 at most)
        cur = spectra.rank1_curve(theta, v, L[todo], weights=weights, layout=layout, offset=offset, method=method)
        for k, col in cols.items():
            col[todo] = cur[k]
    return spectra.Curve(n=L, certified=cert, eps=eps, **cols)
