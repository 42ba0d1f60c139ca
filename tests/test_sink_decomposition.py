"""The sink's log-odds decomposition equals the directly computed log-odds, its spread term is never
negative, and the change between two lengths is the sum of its three parts."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from ropetheory.theory.sink import attribute_change, sink_log_odds
from strategies import examples

#: float64 log-sum-exp and a mean over <= 4096 logits: a few ulps of the largest |logit|
DECOMPOSITION_ATOL = 1e-12


def _direct(s):
    a0 = np.exp(s[..., 0] - s.max(-1)) / np.exp(s - s.max(-1, keepdims=True)).sum(-1)
    return np.log(a0 / (1 - a0)), a0


@examples(40)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(2, 4096), scale=st.sampled_from([0.1, 1.0, 5.0, 30.0]),
       sink=st.floats(-10, 10))
def test_the_decomposition_equals_the_directly_computed_log_odds(seed, n, scale, sink):
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((3, n)) * scale
    s[:, 0] += sink
    d = sink_log_odds(s)
    direct, a0 = _direct(s)
    ok = (a0 > 1e-300) & (a0 < 1 - 1e-4)     # the direct path cancels in 1 - a0: its error is ~ eps / (1 - a0)
    np.testing.assert_allclose(d.log_odds[ok], direct[ok], atol=DECOMPOSITION_ATOL * max(1.0, np.abs(s).max()))
    np.testing.assert_allclose(d.gap - d.dilution - d.spread, d.log_odds, atol=DECOMPOSITION_ATOL * max(1, scale))
    assert np.all(d.spread >= 0) and np.allclose(d.share, a0, rtol=1e-12, atol=1e-300)


def test_a_planted_cloud_separates_dilution_from_a_real_breakdown():
    """Same logit distribution at two lengths: the log-odds falls by exactly the dilution; a sink gap that
    shrinks by 2 falls by 2 more."""
    rng = np.random.default_rng(0)
    a = np.concatenate([[3.0], rng.standard_normal(1023)])
    b = np.concatenate([[3.0], np.tile(a[1:], 4)])                    # 4x the keys, the same distribution
    ch = attribute_change(sink_log_odds(a), sink_log_odds(b))
    assert ch["d_dilution"] == pytest.approx(np.log(4092 / 1023), rel=1e-12)
    assert abs(ch["d_gap"]) < 1e-12 and abs(ch["d_spread"]) < 1e-12
    assert ch["d_log_odds"] == pytest.approx(-np.log(4092 / 1023), abs=1e-12)
    c = b.copy()
    c[0] -= 2.0
    ch = attribute_change(sink_log_odds(a), sink_log_odds(c))
    assert ch["d_gap"] == pytest.approx(-2.0, abs=1e-12)
    np.testing.assert_allclose(ch["d_log_odds"], ch["d_gap"] - ch["d_dilution"] - ch["d_spread"], atol=1e-12)


@pytest.mark.parametrize("bad, match", [(np.ones(1), "at least one other key"), ([0.0, np.nan], "finite")])
def test_bad_logits_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        sink_log_odds(bad)


@pytest.mark.parametrize("gap", [800.0, -800.0, 1e5, -1e5])
def test_a_sink_thousands_of_nats_from_the_others_has_a_share_of_0_or_1_without_overflow(gap):
    """A real head's logits can differ by hundreds of nats (Qwen2.5's did): the share is ``sigmoid(log_odds)``
    computed without ``exp`` of a large positive number, so no overflow warning and no inf."""
    import warnings
    s = np.array([[gap, 0.0, 0.5, -0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = sink_log_odds(s)
    assert np.all(np.isfinite(d.share)) and np.all(np.isfinite(d.log_odds))
    assert d.share[0] == (1.0 if gap > 0 else pytest.approx(0.0, abs=1e-300))
    assert d.log_odds[0] == pytest.approx(gap - np.log(np.exp(0) + np.exp(0.5) + np.exp(-0.5)), rel=1e-12)


@pytest.mark.parametrize("gap", [800.0, -800.0, 3.0, -3.0])
def test_the_streamed_share_is_the_decompositions_share_including_no_other_key_and_a_hidden_sink(gap):
    """``models.stream`` (the analysis of real heads) and ``theory.sink`` give one share for one log-odds,
    without overflow; 1 where the sink is the only visible key, 0 where the sink is hidden."""
    import warnings
    from ropetheory.models.stream import _sink_share
    l0, lse = np.array([gap, 1.0, -np.inf]), np.array([0.0, -np.inf, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _sink_share(l0, lse)
    assert got[0] == sink_log_odds(np.array([[gap, 0.0]])).share[0] and got[1] == 1.0 and got[2] == 0.0
