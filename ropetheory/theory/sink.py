"""The sink's attention, decomposed: why its share changes with the length.

For one query with logits ``s_0`` (the sink, key 0) and ``s_1, ..., s_{n-1}`` (the other keys), the
sink's share ``a_0 = e^{s_0} / sum_j e^{s_j}`` has log-odds

    log(a_0 / (1 - a_0)) = s_0 - LSE_{j>=1}(s_j) = (s_0 - mu) - log(n - 1) - kappa,

with ``mu`` the mean logit of the other keys and ``kappa = LSE_{j>=1}(s_j) - log(n - 1) - mu >= 0``
(Jensen: the log of a mean of exponentials is at least the mean of the logs). Three causes move it:
the sink's own **gap** ``s_0 - mu``, plain **dilution** ``log(n - 1)`` (more keys to share with: the
share falls even if nothing else changes), and the **spread** ``kappa`` of the other logits (their
dispersion and the most-aligned keys: the paper's Fig. 6, right). Between two lengths the change of the
log-odds is exactly ``Delta s_0 - Delta mu - Delta dilution - Delta spread`` (the gap's change split
into the sink's own logit and the others' mean).

A streaming caller that never holds a row of logits passes the row's sufficient statistics
(``s_0``, ``mu``, ``LSE_{j>=1} s_j`` and the number of other keys) to ``sink_log_odds_from_parts``;
``sink_log_odds`` reduces a row to them and calls it, so the formula lives in one place.

Imports numpy only.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..core.checks import check_finite_array
from ..core.errors import BadValue

__all__ = ["SinkLogOdds", "sink_log_odds", "sink_log_odds_from_parts", "share_from_log_odds", "attribute_change",
           "mean_terms"]


@dataclasses.dataclass(frozen=True)
class SinkLogOdds:
    """Per query (the leading axes of the logits): the sink's log-odds and its three terms,
    ``log_odds = gap - dilution - spread`` with ``gap = sink_logit - others_mean``; ``share`` is ``a_0``."""
    log_odds: np.ndarray
    gap: np.ndarray
    dilution: np.ndarray
    spread: np.ndarray
    share: np.ndarray
    sink_logit: np.ndarray
    others_mean: np.ndarray


def _lse(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1)
    return m + np.log(np.sum(np.exp(x - m[..., None]), axis=-1))


def sink_log_odds_from_parts(sink_logit: Any, others_mean: Any, others_lse: Any, n_others: Any) -> SinkLogOdds:
    """The decomposition from a row's sufficient statistics (float64, broadcast together): ``s_0``,
    ``mu = mean_{j>=1} s_j``, ``LSE_{j>=1} s_j`` and the number ``n - 1 >= 1`` of other keys."""
    s0, mu, lse, m = (check_finite_array(name, x, min_ndim=0) for name, x in (
        ("sink_logit", sink_logit), ("others_mean", others_mean), ("others_lse", others_lse), ("n_others", n_others)))
    if np.any(m < 1):
        raise BadValue(f"n_others must be >= 1 (the sink and at least one other key), got min {m.min()}")
    return _decompose(*np.broadcast_arrays(s0, mu, lse, m))


def share_from_log_odds(log_odds: Any) -> np.ndarray:
    """``a_0 = 1 / (1 + e^{-x})`` of log-odds ``x`` as ``exp(-logaddexp(0, -x))``: no overflow for ``x << 0``
    (a sink hundreds of nats below the others), 1 at ``x = +inf`` (no other key), 0 at ``x = -inf``."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(log_odds, dtype=np.float64)))


def _decompose(s0: np.ndarray, mu: np.ndarray, lse: np.ndarray, m: np.ndarray) -> SinkLogOdds:
    dilution = np.log(m)
    spread = np.maximum(lse - dilution - mu, 0.0)          # >= 0 exactly; rounding can give -1e-16
    log_odds = s0 - lse
    share = share_from_log_odds(log_odds)
    return SinkLogOdds(log_odds=log_odds, gap=s0 - mu, dilution=dilution, spread=spread, share=share,
                       sink_logit=s0, others_mean=mu)


def sink_log_odds(logits: Any) -> SinkLogOdds:
    """The decomposition (module docstring) of logits ``(..., n)`` whose column 0 is the sink's, ``n >= 2``;
    float64, log-sum-exp shifted by the largest logit (no overflow at any scale)."""
    s = check_finite_array("logits", logits)
    if s.shape[-1] < 2:
        raise BadValue(f"logits must have the sink and at least one other key on the last axis, got {s.shape}")
    rest = s[..., 1:]
    s0 = s[..., 0]
    return _decompose(s0, rest.mean(axis=-1), _lse(rest), np.full(s0.shape, float(rest.shape[-1])))


def mean_terms(d: SinkLogOdds, axis: Any = None) -> SinkLogOdds:
    """Each field's mean over ``axis``: the identity ``log_odds = gap - dilution - spread`` is linear, so it
    holds for the means as for each query (a median would break it)."""
    return SinkLogOdds(**{f.name: np.mean(getattr(d, f.name), axis=axis) for f in dataclasses.fields(d)})


def attribute_change(before: SinkLogOdds, after: SinkLogOdds) -> dict[str, np.ndarray]:
    """The change of the log-odds from ``before`` to ``after`` and its parts, which sum to it:
    ``d_log_odds = d_gap - d_dilution - d_spread`` and ``d_gap = d_sink_logit - d_others_mean``."""
    return {"d_log_odds": after.log_odds - before.log_odds, "d_gap": after.gap - before.gap,
            "d_sink_logit": after.sink_logit - before.sink_logit,
            "d_others_mean": after.others_mean - before.others_mean,
            "d_dilution": after.dilution - before.dilution, "d_spread": after.spread - before.spread}
