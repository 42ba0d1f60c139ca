"""Context-extension study: the paper's drift statement for PI / YaRN, float32 positions, a small run."""
import json

import pytest

from ropetheory.studies import extension as ext
from ropetheory.schedules import schedule

BASE = schedule("rope", head_dim=ext.D, base=ext.ROPE_THETA).theta


@pytest.mark.parametrize("method", ["linear", "yarn", "llama3"])
@pytest.mark.parametrize("s", ext.FACTORS)
def test_pi_yarn_llama3_keep_low_frequency_drift_within_training(method, s):
    """The paper (section 4): PI and YaRN 'limit the degree of drift in low-frequency channels to that
    seen during training'. Holds: every plane that does not finish a cycle in L drifts at sL at most
    as far as at L (PI exactly, ratio 1)."""
    th, _ = ext.extended_theta(method, s)
    d = ext.low_frequency_drift(BASE, th, s)
    assert d["holds"] and d["low_freq_planes"] > 0
    if method == "linear":
        assert abs(d["max_drift_ratio"] - 1) < 1e-12


def test_dynamic_ntk_exceeds_training_drift_at_s2_finding():
    """FINDING: dynamic NTK evaluated at 2L drifts ~9% further than training in the planes just past
    the one-cycle boundary; from s = 4 on it stays inside (the base grows faster than the length)."""
    r2 = ext.low_frequency_drift(BASE, ext.extended_theta("dynamic", 2)[0], 2)
    r4 = ext.low_frequency_drift(BASE, ext.extended_theta("dynamic", 4)[0], 4)
    assert not r2["holds"] and 1.0 < r2["max_drift_ratio"] < 1.2
    assert r4["holds"]


def test_float32_positions_lose_the_angle_at_a_million_tokens():
    e = {r["position"]: r for r in ext.float32_angle_error(BASE)}
    assert 1e-3 < e[10 ** 5]["max_angle_err_rad"] < 1e-2          # ulp(1e5 f32) * theta_0 / 2 ~ 4e-3
    assert e[10 ** 6]["max_angle_err_rad"] > 1e-2                  # ~5e-2 rad: the cos is off by ~4e-2
    assert e[10 ** 6]["max_angle_err_rad"] > 5 * e[10 ** 5]["max_angle_err_rad"]


def test_small_run_writes_numbers_then_figure(tmp_path):
    meta = ext.run(tmp_path, n_clouds=2, num=6, quiet=True)
    assert (tmp_path / "extension.csv").exists() and (tmp_path / "extension.json").exists()
    rows = {(r["method"], r["s"]): r for r in meta["rows"]}
    assert rows[("rope_id", 1)]["C1"] and rows[("rope_id", 1)]["C2_at_sL"]
    assert not any(rows[(m, s)]["C1"] for m in ext.METHODS for s in ext.FACTORS)   # no method keeps a floor
    assert rows[("linear", 8)]["in_distribution_at_sL"]
    p = ext.plot(tmp_path)
    assert p.stat().st_size > 10_000
    json.loads((tmp_path / "extension.json").read_text())
