"""Men et al.'s base bound, searched so that no feasible window can be missed.

Definition (Men et al. 2024, "Base of RoPE Bounds Context Length", as restated in docs/theory.md):
for a head width ``d = 2P`` and a base ``b``, ``theta_j = b^(-2j/d)`` (``j = 0 .. P-1``) and

    B(m; b) = sum_j cos(m theta_j),

the expected score advantage of a similar key at relative distance ``m``. The *feasible set*
for a context length ``L`` is ``F_L = {b : B(m; b) >= 0 for every integer 0 <= m <= L}``.
``B(0; b) = P``, so only ``1 <= m <= L`` are checked, every one of them (no sampling of m).

Search (branch and bound over ``t = ln b``). For an interval ``T = [t_lo, t_hi]`` (centre
``t_c``, half-width ``h``) and each integer ``m`` we compute a rigorous enclosure
``B(m; t) in [lo, hi]`` for *all* ``t`` in ``T`` as the intersection of two enclosures:

* per plane: with ``theta_j(t) in [theta_cj - delta_j, theta_cj + delta_j]`` (``theta_cj`` the
  float64 value at ``t_c``), ``cos(m theta) = c cos(m e) - s sin(m e)`` gives
  ``|cos(m theta_j(t)) - c_j| <= |s_j| x_j + |c_j| x_j^2 / 2``, ``x_j = m delta_j``, clipped to [-1, 1];
* Taylor in ``t`` (keeps the cancellation between planes, so roots are resolved quadratically):
  ``B(m; t) = B_0 + B_1 (t - t_c) + R`` with ``B_0 = sum c_j``, ``B_1 = sum_j s_j m theta_cj a_j``
  (``a_j = 2j/d``), and ``|R|`` bounded by the second-order terms of ``cos`` and of
  ``e^{-a u} - 1 = -a u + rho``, ``|rho| <= (a h)^2 e^{a h} / 2``, plus ``theta_cj``'s own error.

An interval is *proven infeasible* if some ``m`` has ``hi < 0`` (that ``m`` is its witness),
*proven feasible* if every ``m`` has ``lo >= 0``, and is split in two otherwise; a child only
re-checks the ``m`` whose enclosure in the parent was not already ``>= 0`` (a proof over the
parent holds over the child). Intervals narrower than ``min_width`` (in ``ln b``) are reported
as *undecided* with their width: they are where ``min_m B(m; b)`` crosses 0 (window ends) or
touches it.

Rigour. The float64 inputs are exact; every rounding is bounded by a named constant below:
``theta_cj = fl(exp(-a_j t_c))`` is within ``REL_THETA_ERR`` of the true value; the angle
``m theta_cj`` is formed exactly (``theta`` split into 26 + 27 significant bits, ``m < 2^22``)
and reduced by ``2 pi = C1 + C2 + C3`` (``C1`` 33 bits, so ``k C1`` and ``m theta_h - k C1`` are
exact; Sterbenz), leaving an error below ``5e-15`` rad; XLA's float64 ``cos``/``sin`` are within
2 ulp on ``[-4, 4]``. ``TERM_ABS_ERR`` covers both per term, and the sums carry a
rounding slack of ``4 P u`` times the sum of absolute values. The enclosures are tested
against 50-digit mpmath values.

This module holds the mathematics (enclosures, plain values, the result type); the
branch-and-bound engine that runs it on a device is ``ropetheory.theory.base_search``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..schedules import rope as rope_schedule
from ..core.devices import compute_platform
from ..core.checks import check_head_dim, pad_to_bucket
from ..core.errors import BadValue
from ..core.renamed import renamed_fields

__all__ = ["B_values", "enclose_B", "pair_bounds", "interval_inputs",
           "BaseSearchResult", "MEN_TABLE2", "MAX_L", "MAX_LN_B", "PAIR_CHUNK_CPU", "PAIR_CHUNK_ACCEL", "MIN_CHUNK",
           "CHUNK_PLANES", "pair_chunk",
           "WITNESS_CANDIDATES",
           "REL_THETA_ERR", "TERM_ABS_ERR", "DEFAULT_MIN_WIDTH"]

#: Men et al. (2024) Table 2 as restated in docs/theory.md: their smallest base for d = 128
MEN_TABLE2 = {4096: 2.7e4, 8192: 8.4e4, 65536: 2.1e6, 131072: 7.8e6}

#: largest context length: ``m theta_h`` must be exact (26-bit ``theta_h``, ``m < 2^22`` -> 48 bits)
#: and ``k = rint(m theta / 2 pi) < 2^20`` so that ``k C1`` (33-bit ``C1``) is exact
MAX_L = 2 ** 22
#: relative error of ``fl(exp(-a t))`` for ``|a t| < 64``: the argument's rounding ``|a t| u`` plus
#: exp's last-bit error, below ``66 u = 1.5e-14``; taken 7x larger
REL_THETA_ERR = 1e-13
#: error of one computed ``cos``/``sin`` of the reduced angle: reduction ``< 5e-15`` rad plus 2 ulp
TERM_ABS_ERR = 1e-14
#: default width (in ln b) below which an interval is reported as undecided: 1e-9 relative in b
DEFAULT_MIN_WIDTH = 1e-9
#: pairs (interval, m) evaluated per kernel call on a CPU / an accelerator (an accelerator needs
#: large calls to amortise launches and transfers); a short tail is padded to the next power of
#: two from ``MIN_CHUNK``, so the kernel compiles for a few sizes only
PAIR_CHUNK_CPU = 1 << 16
PAIR_CHUNK_ACCEL = 1 << 21
#: the planes the chunks above were sized for (d = 128): a call's working set is pairs x planes, so a wider
#: head gets proportionally fewer pairs per call (``pair_chunk``) and memory stays what it is at d = 128
CHUNK_PLANES = 64
MIN_CHUNK = 1 << 9
#: the interval axis of every kernel is padded to a power of two of at least this many intervals: the
#: blocks of a search mostly hold 1 to 16, and each count was one more compiled program of every kernel (a base
#: search to b = 3e16 compiled 69 programs in 15.5 s, 2 cores); the padded intervals cost a few rows of
#: per-plane inputs and empty segments
MIN_INTERVALS = 16
#: at most this many m of low upper enclosure in a parent are tried first on its children (cheap witnesses)
WITNESS_CANDIDATES = 32
_U = 2.0 ** -53
#: largest ``t = ln b`` searched: ``|a_j t| < 64`` keeps ``REL_THETA_ERR`` valid (b < e^64)
MAX_LN_B = 64.0


def _two_pi_parts() -> tuple[float, float, float]:
    """``2 pi = C1 + C2 + C3`` with ``C1`` of 33 significant bits (Cody-Waite), from 200-bit mpmath."""
    import mpmath
    with mpmath.workprec(200):
        tp = 2 * mpmath.pi
        c1 = mpmath.floor(tp * 2 ** 30) / 2 ** 30
        c2 = float(tp - c1)
        c3 = float(tp - c1 - mpmath.mpf(c2))
        return float(c1), c2, c3


C1, C2, C3 = _two_pi_parts()


def _split26(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x = hi + lo`` exactly, ``hi`` with 26 significant bits, ``lo`` with at most 27."""
    mant, ex = np.frexp(x)
    hi = np.ldexp(np.rint(mant * 2.0 ** 26), ex - 26)
    return hi, x - hi


def _reduced_angle(m, th_h, th_l, rint):
    """``m (th_h + th_l) mod 2 pi`` in ``[-pi, pi]`` up to 5e-15 rad: ``m th_h`` exact, Cody-Waite ``2 pi``.

    ``th_h`` has 26 significant bits and ``th_l`` at most 27 (``_split26``), ``m < 2^22``;
    ``rint`` is numpy's or jax.numpy's.
    """
    x_h = m * th_h                                           # exact (48 bits)
    k = rint(x_h * (1.0 / (2.0 * np.pi)))
    return (((x_h - k * C1) - k * C2) - k * C3) + m * th_l


def pair_bounds(m, idx, th_h, th_l, th_c, delta, ga, lin, h):
    """Enclosures ``[lo, hi]`` of ``B(m; t)`` over intervals ``idx`` for pairs ``(m, idx)``, shape ``(N,)``.

    Per interval ``(K, P)``: ``th_h + th_l = th_c`` (split), ``delta``, ``ga = th_c a``,
    ``lin = theta_err (1 + a h) + th_c (1 + REL) (a h)^2 e^{a h} / 2``; ``h`` is ``(K,)``.
    """
    m = m.astype(jnp.float64)[:, None]
    hh = h[idx][:, None]
    r = _reduced_angle(m, th_h[idx], th_l[idx], jnp.rint)
    c, s = jnp.cos(r), jnp.sin(r)
    ac, as_ = jnp.abs(c), jnp.abs(s)
    # per plane: theta in [th_c - delta, th_c + delta]
    x = m * delta[idx] * (1 + 4 * _U)
    x2 = ac * x * x / 2
    e = as_ * x + x2 + TERM_ABS_ERR * (1 + x)
    lo_p = jnp.sum(jnp.maximum(-1.0, c - e), axis=1)
    hi_p = jnp.sum(jnp.minimum(1.0, c + e), axis=1)
    # Taylor in t around t_c
    g = m * ga[idx]                                           # m theta_c a_j
    B0 = jnp.sum(c, axis=1)
    B1 = jnp.sum(s * g, axis=1)
    E2 = jnp.sum(as_ * (m * lin[idx] + x * x * x / 6) + x2 + TERM_ABS_ERR * (1 + g * hh), axis=1)
    lin1 = jnp.abs(B1) * hh[:, 0]
    slack = 4 * c.shape[1] * _U * (jnp.sum(ac + as_ * g * hh + 1, axis=1) + E2)
    lo = jnp.maximum(lo_p, B0 - lin1 - E2) - slack
    hi = jnp.minimum(hi_p, B0 + lin1 + E2) + slack
    return lo, hi


_pair_kernel = jax.jit(pair_bounds)


def interval_inputs(t_lo: np.ndarray, t_hi: np.ndarray, d: int) -> dict[str, np.ndarray]:
    """Per interval and plane: centre frequencies (split), radius ``delta`` and the Taylor inputs."""
    a = np.arange(d // 2, dtype=np.float64) * (2.0 / d)                 # 2j/d (exact for power-of-2 d)
    t_c = 0.5 * (t_lo + t_hi)
    h = np.maximum(t_hi - t_c, t_c - t_lo) * (1 + 4 * _U)
    th_c = np.exp(-a[None, :] * t_c[:, None])
    th_max = np.exp(-a[None, :] * t_lo[:, None]) * (1 + REL_THETA_ERR)
    th_min = np.exp(-a[None, :] * t_hi[:, None]) * (1 - REL_THETA_ERR)
    delta = np.maximum(th_max - th_c, th_c - th_min) * (1 + 4 * _U)
    th_h, th_l = _split26(th_c)
    ah = a[None, :] * h[:, None]
    lin = th_c * REL_THETA_ERR * (1 + ah) + th_c * (1 + REL_THETA_ERR) * ah * ah * np.exp(ah) / 2
    out = dict(th_h=th_h, th_l=th_l, th_c=th_c, delta=delta, ga=th_c * a[None, :], lin=lin * (1 + 8 * _U), h=h)
    # the interval axis padded to a power of two, at least MIN_INTERVALS (last interval repeated)
    return {k: pad_to_bucket(v, minimum=MIN_INTERVALS, power_of_two=True) for k, v in out.items()}


def enclose_B(m: Any, t_lo: Any, t_hi: Any, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Rigorous ``[lo, hi]`` with ``lo <= B(m_i; e^t) <= hi`` for every ``t`` in ``[t_lo_i, t_hi_i]``.

    ``m``, ``t_lo``, ``t_hi`` broadcast to one shape ``(N,)``; ``t = ln b``.
    """
    d = check_head_dim(d)
    m, t_lo, t_hi = np.broadcast_arrays(np.asarray(m), np.asarray(t_lo, np.float64), np.asarray(t_hi, np.float64))
    if not np.issubdtype(m.dtype, np.integer) or m.min(initial=0) < 0 or m.max(initial=0) >= MAX_L:
        raise BadValue(f"m must be integers in [0, {MAX_L}), got {m.dtype} in [{m.min()}, {m.max()}]")
    if not (np.all(np.isfinite(t_lo)) and np.all(np.isfinite(t_hi)) and np.all(t_lo <= t_hi)
            and np.all(t_lo >= 0) and np.all(t_hi <= MAX_LN_B)):
        raise BadValue(f"t_lo <= t_hi must lie in [0, {MAX_LN_B}] (ln b), got [{t_lo.min()}, {t_hi.max()}]")
    ar = interval_inputs(t_lo.ravel(), t_hi.ravel(), d)
    idx = np.arange(m.size)
    lo, hi = _evaluate(m.ravel(), idx, ar)
    return lo.reshape(m.shape), hi.reshape(m.shape)


def pair_chunk(planes: int) -> int:
    """Pairs per kernel call for heads of ``planes`` rotating planes on this device: ``PAIR_CHUNK_CPU`` or
    ``PAIR_CHUNK_ACCEL`` scaled by ``CHUNK_PLANES / planes`` (down to a power of two, at least ``MIN_CHUNK``)."""
    base = PAIR_CHUNK_CPU if compute_platform() == "cpu" else PAIR_CHUNK_ACCEL
    if planes <= CHUNK_PLANES:
        return base
    return max(MIN_CHUNK, 1 << ((base * CHUNK_PLANES // planes).bit_length() - 1))


def _evaluate(m: np.ndarray, idx: np.ndarray, ar: dict) -> tuple[np.ndarray, np.ndarray]:
    """Run the kernel over pairs in fixed-size chunks (the last one padded)."""
    n = m.size
    lo, hi = np.empty(n), np.empty(n)
    dev = {k: jnp.asarray(v) for k, v in ar.items()}
    chunk = pair_chunk(int(np.shape(ar["th_c"])[-1]))
    idx = idx.astype(np.int32, copy=False)
    m = m.astype(np.int32, copy=False)                       # exact: m < MAX_L; half the transfer of float64
    for s in range(0, n, chunk):
        mm, ii = m[s:s + chunk], idx[s:s + chunk]
        k = mm.size
        mm, ii = (pad_to_bucket(x, minimum=MIN_CHUNK, power_of_two=True) for x in (mm, ii))
        l_, h_ = _pair_kernel(jnp.asarray(mm), jnp.asarray(ii), dev["th_h"], dev["th_l"], dev["th_c"],
                              dev["delta"], dev["ga"], dev["lin"], dev["h"])
        lo[s:s + k] = np.asarray(l_)[:k]
        hi[s:s + k] = np.asarray(h_)[:k]
    return lo, hi


def B_values(b: float, d: int, m: Any) -> np.ndarray:
    """``B(m; b)`` in plain float64 (for plots and checks; not certified)."""
    d = check_head_dim(d)
    th = rope_schedule(d, float(b)).theta
    th_h, th_l = _split26(th)
    m = np.asarray(m, dtype=np.float64)[..., None]
    return np.cos(_reduced_angle(m, th_h, th_l, np.rint)).sum(-1)


@renamed_fields("0.3.0", L="train_len", d="head_dim")
@dataclasses.dataclass(frozen=True)
class BaseSearchResult:
    """Outcome of ``search_feasible_bases`` for one training length ``L = train_len`` and head width
    ``d = head_dim``; intervals are ``[b_lo, b_hi]``.

    ``feasible``: merged proven-feasible windows; ``undecided``: merged intervals narrower than
    ``min_width`` that were neither proven; everything else in ``[b_min, b_max]`` is proven
    infeasible. ``smallest`` is the left end of the first feasible window and ``smallest_lower``
    the left end of the first interval not proven infeasible, so ``inf F_L`` (within the domain)
    lies in ``[smallest_lower, smallest]``.
    """
    train_len: int
    head_dim: int
    b_min: float
    b_max: float
    min_width: float
    feasible: list
    undecided: list
    smallest: float | None
    smallest_lower: float | None
    evaluations: int
    leaves: int
    seconds: float

    def feasible_measure_per_decade(self) -> dict[int, float]:
        """Share of each decade ``[10^k, 10^(k+1)]`` (in log10 b, within the domain) proven feasible."""
        out = {}
        for k in range(math.floor(math.log10(self.b_min)), math.ceil(math.log10(self.b_max))):
            a, b = max(10.0 ** k, self.b_min), min(10.0 ** (k + 1), self.b_max)
            if b <= a:
                continue
            tot = sum(max(0.0, math.log10(min(hi, b)) - math.log10(max(lo, a))) for lo, hi in self.feasible)
            out[k] = tot / (math.log10(b) - math.log10(a))
        return out

    def as_row(self) -> dict[str, Any]:
        """The result as ``base_bound.json`` holds it (``L`` and ``d``: the keys of the committed rows)."""
        return {"L": self.train_len, "d": self.head_dim, "b_min": self.b_min, "b_max": self.b_max,
                "min_width_ln_b": self.min_width,
                "smallest": self.smallest, "smallest_lower": self.smallest_lower,
                "windows": len(self.feasible), "feasible": self.feasible,
                "undecided_count": len(self.undecided),
                "undecided_ln_measure": sum(math.log(b / a) for a, b in self.undecided),
                "undecided": self.undecided, "measure_per_decade": self.feasible_measure_per_decade(),
                "evaluations": self.evaluations, "leaves": self.leaves, "seconds": self.seconds,
                "men_table2": MEN_TABLE2.get(self.train_len) if self.head_dim == 128 else None}
