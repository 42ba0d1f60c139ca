"""Position weights ``w_i`` of a cloud and their weighted mean phases ``sum_i w_i e^{2 pi i t i} / W_n``.

Affine weights ``w_i = a + b i`` (intercept ``a``, slope ``b``) have a closed form (with ``alpha = pi t``,
``c = (n-1)/2``, ``K(alpha) = sin(n alpha)/sin(alpha)``):

    sum_i w_i e^{2 alpha i i} = e^{2 i alpha c} [ (a + b c) K + i b T ],   T = -(1/2) dK/dalpha,

and ``W_n = n (a + b c)``; written with ``sinc`` and its derivative (series for small arguments)
it has no cancellation at any ``n`` or ``t``, and the phases are reduced exactly from the chunked
turns of ``ropetheory.core.angles``. Trigonometric weights are sums of such terms.
"""
from __future__ import annotations

import dataclasses
from typing import Any
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..core.angles import reduced_turns, pair_frequencies
from ..core.checks import check_number
from ..core.errors import BadValue, BadType
from ..core.renamed import renamed_fields


#: Below this |x| the sinc functions use their Taylor series (16 terms' worth, error < 1e-18).
_SINC_SERIES_BELOW = 0.5


@renamed_fields("0.3.0", a="intercept", b="slope")
@dataclasses.dataclass(frozen=True)
class AffineWeights:
    """Weights ``w_i = a + b i`` with intercept ``a`` and slope ``b`` (``a, b >= 0``): constant (``b = 0``)
    or a monotone ramp.

    ``W_n = n a + b n (n-1)/2``, ``w_{n-1} = a + b (n-1)``, ``TV_n = b (n-1)``.
    """
    intercept: float = 1.0
    slope: float = 0.0

    def __post_init__(self):
        for name in ("intercept", "slope"):
            object.__setattr__(self, name, check_number(f"AffineWeights.{name}", getattr(self, name), lo=0.0))
        if self.intercept == 0 and self.slope == 0:
            raise BadValue("AffineWeights(intercept=0, slope=0) gives all-zero weights")

    def total(self, n):
        return n * self.intercept + self.slope * n * (n - 1) / 2

    def last(self, n):
        return self.intercept + self.slope * (n - 1)

    def total_variation(self, n):
        return self.slope * (n - 1)


CONSTANT = AffineWeights(1.0, 0.0)


@dataclasses.dataclass(frozen=True)
class TrigWeights:
    """Oscillating weights ``w_i = a0 + sum_m a_m cos(i phi_m)`` (must stay >= 0: ``a0 >= sum |a_m|``).

    Their total variation grows like ``n``, so ``TV_n = o(W_n)`` fails (Remark 1):
    the counter-example family. The mean phase is exact in closed form:
    ``sum_i w_i e^{i omega i} = a0 S(omega) + sum_m a_m (S(omega + phi_m) + S(omega - phi_m)) / 2``.
    """
    a0: float = 1.0
    terms: tuple = ((1.0, 1.0),)          # ((a_m, phi_m), ...)

    def __post_init__(self):
        object.__setattr__(self, "a0", check_number("TrigWeights.a0", self.a0, lo=0.0, lo_open=True))
        if not isinstance(self.terms, (tuple, list)) or not all(
                isinstance(t, (tuple, list)) and len(t) == 2 for t in self.terms):
            raise BadType(f"TrigWeights.terms must be ((a_m, phi_m), ...), got {self.terms!r}")
        object.__setattr__(self, "terms", tuple(
            (check_number(f"TrigWeights.terms[{m}] amplitude", a), check_number(f"TrigWeights.terms[{m}] shift", phi,
                                                                                 lo=0.0))
            for m, (a, phi) in enumerate(self.terms)))
        if sum(abs(a) for a, _ in self.terms) > self.a0:
            raise BadValue(f"TrigWeights can go negative: a0={self.a0} < sum |a_m|")
        if self.a0 + sum(a for a, phi in self.terms if phi == 0) <= 0:
            raise BadValue(f"TrigWeights(a0={self.a0}, terms={self.terms}) are identically zero: no cloud to weigh")

    def components(self):
        """``[(coef, shift_rad)]`` with ``w_i = sum coef e^{i shift i}``."""
        out = [(self.a0, 0.0)]
        for a, phi in self.terms:
            out += [(a / 2, phi), (a / 2, -phi)]
        return out


# ---------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------
_SINC_COEF = [(-1) ** k / math.factorial(2 * k + 1) for k in range(9)]


def sinc(x, sin_x=None):
    """``sin(x)/x`` (unnormalised), series below |x| < 0.5; ``sin_x`` may carry an exactly reduced sine."""
    x = jnp.asarray(x)
    small = jnp.abs(x) < _SINC_SERIES_BELOW
    x2 = x * x
    ser = sum(c * x2 ** k for k, c in enumerate(_SINC_COEF))
    xs = jnp.where(small, 1.0, x)
    s = jnp.sin(x) if sin_x is None else sin_x
    return jnp.where(small, ser, s / xs)


def dsinc(x, sin_x=None, cos_x=None):
    """Derivative of ``sin(x)/x``: ``(x cos x - sin x)/x^2``, series below |x| < 0.5."""
    x = jnp.asarray(x)
    small = jnp.abs(x) < _SINC_SERIES_BELOW
    x2 = x * x
    ser = x * sum(c * 2 * k * x2 ** (k - 1) for k, c in enumerate(_SINC_COEF) if k > 0)
    xs = jnp.where(small, 1.0, x)
    s = jnp.sin(x) if sin_x is None else sin_x
    c = jnp.cos(x) if cos_x is None else cos_x
    return jnp.where(small, ser, c / xs - s / (xs * xs))


def mean_phase(t, half_chunks, n, a, b, constant: bool = False):
    """``sum_{i<n} (a + b i) e^{2 pi i t i} / W_n`` for turns ``t`` (exact, see module doc).

    ``t``: float array (reduced, correctly rounded); ``half_chunks``: chunks of ``t/2``
    with one more trailing axis; ``n``: int64, broadcasting against ``t`` (a scalar, or lengths along leading
    axes). Returns complex128 of the broadcast shape.
    ``constant`` (static; only with ``b = 0``) skips the ramp term ``T``, which is then multiplied by 0:
    the same numbers, a third less work.
    """
    nf = n.astype(jnp.float64)
    alpha = jnp.pi * t                                   # |alpha| <= pi/2
    x = nf * alpha                                       # n alpha, float (relative exact)
    v = reduced_turns(n, half_chunks)                    # n t / 2 mod 1: n alpha = 2 pi v mod 2 pi
    sx, cx = jnp.sin(2 * jnp.pi * v), jnp.cos(2 * jnp.pi * v)
    s_n, s_1 = sinc(x, sx), sinc(alpha)
    K_over_n = s_n / s_1                                  # sin(n alpha) / (n sin alpha)
    phase = 2 * jnp.pi * reduced_turns(n - 1, half_chunks)   # alpha (n - 1) mod 2 pi
    if constant:
        return jnp.exp(1j * phase) * (K_over_n + 0j)
    ds_n, ds_1 = dsinc(x, sx, cx), dsinc(alpha)
    # T = -(1/2) K'(alpha); K = n sinc(n alpha)/sinc(alpha)
    dK_over_n = (nf * ds_n * s_1 - s_n * ds_1) / (s_1 * s_1)
    c = (nf - 1.0) / 2.0
    T_over_n = -0.5 * dK_over_n
    denom = a + b * c
    val = K_over_n + 1j * (b / denom) * T_over_n
    return jnp.exp(1j * phase) * val


@functools.partial(jax.jit, static_argnames=("constant",))
def _mean_phases(t_diff, half_diff, t_sum, half_sum, lengths, a, b, constant=False):
    """``D_jk, S_jk`` at every length: ``(len, P, P)`` complex, vectorised over ``n``. ``S`` is symmetric
    (``t_sum`` is, bit for bit): computed on the upper triangle and mirrored, the same bits for half its
    work. ``D`` is Hermitian only to rounding, so it is computed whole."""
    P = t_sum.shape[0]
    iu = np.triu_indices(P)
    # every operation of mean_phase is elementwise: the lengths broadcast along a leading axis (no vmap,
    # whose batching rules cost about as much tracing as the operations themselves)
    n = lengths.astype(jnp.int64)
    tri = mean_phase(t_sum[iu], half_sum[iu], n[:, None], a, b, constant)
    S = jnp.zeros((n.size, P, P), tri.dtype).at[:, iu[0], iu[1]].set(tri).at[:, iu[1], iu[0]].set(tri)
    return mean_phase(t_diff, half_diff, n[:, None, None], a, b, constant), S


def check_weights(weights, lengths=None):
    if weights is None:
        return CONSTANT
    if isinstance(weights, AffineWeights):
        if lengths is not None and weights.intercept == 0 and np.any(np.asarray(lengths) == 1):
            raise BadValue("AffineWeights(intercept=0, ...) has W_1 = 0: the FSV ratio at n = 1 is undefined")
        return weights
    if isinstance(weights, TrigWeights):
        return weights
    raise BadType("closed forms take weights=None (constant), AffineWeights(intercept, slope) or TrigWeights; "
                    "for arbitrary weights use rank1_stream_curve")


def weighted_mean_phases(theta: Any, weights, lengths: np.ndarray):
    """``(D, S)``: ``sum_{i<n} w_i e^{i i (theta_j -+ theta_k)} / W_n``, each ``(len, P, P)`` complex."""
    L = np.asarray(lengths, dtype=np.int64)          # numpy: jnp.asarray would compile a copy program
    if isinstance(weights, AffineWeights):
        pf = pair_frequencies(theta)
        return _mean_phases(pf.t_diff, pf.half_diff, pf.t_sum, pf.half_sum, L,
                            float(weights.intercept), float(weights.slope), constant=weights.slope == 0)
    # trigonometric weights: superpose shifted constant-weight sums (each S/n), then divide by W_n/n
    D = S = 0.0
    for coef, shift in weights.components():
        pf = pair_frequencies(theta, shift)
        Dc, Sc = _mean_phases(pf.t_diff, pf.half_diff, pf.t_sum, pf.half_sum, L, 1.0, 0.0, constant=True)
        D, S = D + coef * Dc, S + coef * Sc
    Wn: Any = 0.0
    for coef, shift in weights.components():    # W_n / n = sum coef * mean(e^{i shift i})
        pf = pair_frequencies(np.zeros(1), shift)
        Wc, _ = _mean_phases(pf.t_diff, pf.half_diff, pf.t_sum, pf.half_sum, L, 1.0, 0.0, constant=True)
        Wn = Wn + coef * Wc[:, 0, 0].real
    Wn = Wn[:, None, None]
    return D / Wn, S / Wn
