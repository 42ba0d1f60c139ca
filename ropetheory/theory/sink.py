"""The sink's attention, decomposed: why its share changes with the length.

For one query with logits ``s_0`` (the sink, key 0) and ``s_1, ..., s_{n-1}`` (the other keys), the
sink's share ``a_0 = e^{s_0} / sum_j e^{s_j}`` has log-odds

    log(a_0 / (1 - a_0)) = s_0 - LSE_{j>=1}(s_j) = (s_0 - mu) - log(n - 1) - kappa,

with ``mu`` the mean logit of the other keys and ``kappa = LSE_{j>=1}(s_j) - log(n - 1) - mu >= 0``
(Jensen: the log of a mean of exponentials is at least the mean of the logs). Three causes move it:
the sink's own **gap** ``s_0 - mu``, plain **dilution** ``log(n - 1)`` (more keys to share with: the
share falls even if nothing else changes), and the **spread** ``kappa`` of the other logits (their
dispersion and the most-aligned keys: the paper's Fig. 6, right). Between two lengths the change of the
log-odds is exactly ``Delta gap - Delta dilution - Delta spread``.

Imports numpy only.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..core.checks import check_finite_array
from ..core.checks import BadValue

__all__ = ["SinkLogOdds", "sink_log_odds", "attribute_change"]


@dataclasses.dataclass(frozen=True)
class SinkLogOdds:
    """Per query (the leading axes of the logits): the sink's log-odds and its three terms,
    ``log_odds = gap - dilution - spread``; ``share`` is ``a_0`` itself."""
    log_odds: np.ndarray
    gap: np.ndarray
    dilution: np.ndarray
    spread: np.ndarray
    share: np.ndarray


def _lse(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1)
    return m + np.log(np.sum(np.exp(x - m[..., None]), axis=-1))


def sink_log_odds(logits: Any) -> SinkLogOdds:
    """The decomposition (module docstring) of logits ``(..., n)`` whose column 0 is the sink's, ``n >= 2``;
    float64, log-sum-exp shifted by the largest logit (no overflow at any scale)."""
    s = check_finite_array("logits", logits)
    if s.shape[-1] < 2:
        raise BadValue(f"logits must have the sink and at least one other key on the last axis, got {s.shape}")
    s0, rest = s[..., 0], s[..., 1:]
    mu = rest.mean(axis=-1)
    lse = _lse(rest)
    dilution = np.full(s0.shape, np.log(rest.shape[-1]))
    spread = np.maximum(lse - dilution - mu, 0.0)          # >= 0 exactly; rounding can give -1e-16
    log_odds = s0 - lse
    share = 1.0 / (1.0 + np.exp(-log_odds))
    return SinkLogOdds(log_odds=log_odds, gap=s0 - mu, dilution=dilution, spread=spread, share=share)


def attribute_change(before: SinkLogOdds, after: SinkLogOdds) -> dict[str, np.ndarray]:
    """The change of the log-odds from ``before`` to ``after`` and its three parts, which sum to it:
    ``d_log_odds = d_gap - d_dilution - d_spread``."""
    return {"d_log_odds": after.log_odds - before.log_odds, "d_gap": after.gap - before.gap,
            "d_dilution": after.dilution - before.dilution, "d_spread": after.spread - before.spread}
