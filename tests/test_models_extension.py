"""Real-model extension table: perplexity ranges and rows computed from saved analyses."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ropetheory.models import extension as ext
from ropetheory.models.study import nll_ranges
from ropetheory.schedules import rope


def test_nll_ranges_average_exactly_the_predictions_in_each_range():
    nll = np.arange(1, 32, dtype=np.float64)            # n = 32 tokens -> 31 predictions
    r = {(x["start"], x["end"]): x for x in nll_ranges(nll, 8)}
    assert set(r) == {(4, 8), (8, 16), (16, 32)}           # [32, 64) is beyond the text: not reported
    assert r[(4, 8)]["mean_nll"] == pytest.approx(np.mean(nll[4:8]))
    assert r[(8, 16)]["count"] == 8 and r[(16, 32)]["count"] == 15      # the last prediction is of token 31
    assert r[(16, 32)]["ppl"] == pytest.approx(math.exp(np.mean(nll[16:])))


def _fake(theta, L=4, s=2, shares=(0.9, 0.1)):
    grid = [1, 2, L, s * L]
    heads = [{"rho_measured": [1, 1, 0.9, 0.8], "sink_rope": [1, 1, sh, sh / 2], "rotation_within_float32_bound": True,
              "clusters": [{"n": L, "silhouette_post": 0.5}, {"n": s * L, "silhouette_post": 0.3}]} for sh in shares]
    return {"train_len": L, "grid": grid, "heads": heads, "n": s * L,
            "nll_ranges": [{"start": 2, "end": L, "count": 2, "mean_nll": 1.0, "ppl": math.e},
                           {"start": L, "end": 2 * L, "count": 4, "mean_nll": 2.0, "ppl": math.e ** 2}],
            "meta": {"model": "m", "schedules": {"full_attention": {"theta": list(theta)}}}}


def test_extension_row_reads_medians_counts_and_the_drift_of_the_schedule():
    base = np.asarray(rope(16, base=10.0))
    row = ext.extension_row(_fake(base / 2), 2, base_theta=base)
    assert row["rho_L"] == 0.9 and row["rho_sL"] == 0.8 and row["silhouette_post_sL"] == 0.3
    assert row["sinks_L"] == 1 and row["sinks_sL"] == 0 and row["share_sL"] == pytest.approx(0.25)
    assert row["ppl_within_L"] == pytest.approx(math.e) and row["ppl_L_to_sL"] == pytest.approx(math.e ** 2)
    assert row["max_low_freq_drift"] == pytest.approx(1.0)          # PI at s = 2: theta / 2 -> drift ratio 1
    assert ext.extension_row(_fake(base), 2, base_theta=base)["max_low_freq_drift"] == pytest.approx(2.0)


def test_extension_row_refuses_a_length_the_run_did_not_reach():
    with pytest.raises(ValueError, match="not on the analysis grid"):
        ext.extension_row(_fake(np.asarray(rope(16))), 4)
    with pytest.raises(ValueError, match="method must be"):
        ext.scaling("ntk", 2)
