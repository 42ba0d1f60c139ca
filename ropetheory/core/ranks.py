"""Spearman's rank correlation and its two-sided p-value, computed as ``scipy.stats.spearmanr`` computes them
(average ranks for ties, Pearson's correlation of the ranks, Student's t with ``n - 2`` degrees of freedom),
without importing ``scipy.stats``: that import alone took 0.7 s on 2 CPU cores, longer than Figure 7's eight
correlations of eleven points and the training report's together."""
from __future__ import annotations

import math

import numpy as np


def average_ranks(x) -> np.ndarray:
    """Ranks ``1 .. n`` of the values ``x`` (1-D), tied values given the mean of the ranks they span
    (``scipy.stats.rankdata``'s ``"average"``)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])     # first sorted index of each run of ties
    ends = np.r_[starts[1:], x.size]                             # one past its last
    group = np.repeat(np.arange(starts.size), ends - starts)
    ranks = np.empty(x.size)
    ranks[order] = (0.5 * (starts + 1 + ends))[group]          # mean of the ranks starts+1 .. ends
    return ranks


def rank_correlation(x, y) -> float:
    """Spearman's ``rho_s`` of paired values ``x, y`` (1-D, the same length): the Pearson correlation of their
    average ranks; ``nan`` where fewer than three pairs or either side holds a single value."""
    rx, ry = average_ranks(x), average_ranks(y)
    if rx.size != ry.size:
        raise ValueError(f"x and y must pair up, got {rx.size} and {ry.size} values")
    if rx.size < 3 or np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman(x, y) -> tuple[float, float]:
    """``(rho_s, p)`` of paired values ``x, y`` (1-D, the same length): ``rho_s`` the Pearson correlation of
    their average ranks, ``p`` the two-sided p-value ``2 P(T > |t|)``, ``t = rho_s sqrt((n-2) / ((1+rho_s)
    (1-rho_s)))``, ``T`` Student's t with ``n - 2`` degrees of freedom. ``(nan, nan)`` where fewer than three
    pairs or either side holds a single value (no ranking to correlate)."""
    rho = rank_correlation(x, y)
    if math.isnan(rho):
        return math.nan, math.nan
    from scipy.special import stdtr        # 46 ms once scipy.linalg is loaded, as jaxlib's LAPACK loads it
    dof = np.size(x) - 2
    t = rho * math.sqrt(max(dof / ((rho + 1.0) * (1.0 - rho)), 0.0)) if abs(rho) < 1 else math.inf
    return rho, float(2 * stdtr(dof, -abs(t)))
