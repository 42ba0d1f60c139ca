"""``core.ranks``: Spearman's rank correlation and p-value without importing scipy.stats, equal to
``scipy.stats.spearmanr`` (the reference, imported here only)."""
from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.stats
from hypothesis import example, given, strategies as st

from ropetheory.core.ranks import average_ranks, rank_correlation, spearman

#: both compute the same ranks and correlation in float64; the p-value goes through the same stdtr
SAME_RTOL = 1e-13

values = st.lists(st.sampled_from([-1.5, 0.0, 0.25, 2.0, 7.0]) | st.floats(-1e6, 1e6), min_size=1, max_size=40)


@given(values, st.data())
@example([1.0, 2.0, 3.0, 4.0], None)        # a perfect correlation: t infinite, p = 0
@example([3.0, 3.0, 3.0], None)             # no spread: no ranking to correlate
def test_spearman_equals_scipys_with_ties_and_at_the_extremes(x, data):
    y = list(reversed(x)) if data is None else data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.0]) | st.floats(-10, 10),
                                                                  min_size=len(x), max_size=len(x)))
    np.testing.assert_array_equal(average_ranks(x), scipy.stats.rankdata(x))
    rho, p = spearman(x, y)
    assert rank_correlation(x, y) == rho or (math.isnan(rho) and math.isnan(rank_correlation(x, y)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)   # scipy's way of saying nan
        ref = scipy.stats.spearmanr(x, y) if len(x) >= 3 else None
    if ref is None or math.isnan(float(ref.statistic)):
        assert math.isnan(rho) and math.isnan(p)
        return
    assert rho == pytest.approx(float(ref.statistic), rel=SAME_RTOL, abs=SAME_RTOL)
    assert p == pytest.approx(float(ref.pvalue), rel=SAME_RTOL, abs=1e-300)


def test_unpaired_values_are_refused():
    with pytest.raises(ValueError, match="x and y must pair up, got 3 and 2"):
        spearman([1, 2, 3], [1, 2])


def test_figure7s_and_the_training_reports_correlations_load_no_scipy_stats():
    code = ("import sys; from ropetheory.core.ranks import spearman; spearman([1, 2, 3, 5], [2, 1, 4, 3]); "
            "import ropetheory.studies.figure7, ropetheory.studies.train_report, ropetheory.models.predictors; "
            "print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
