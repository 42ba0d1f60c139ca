"""Schedules: the definitions of THEORY.md, the registry, specs, and bad input."""
import json
import math

import numpy as np
import pytest

import ropetheory as rt
from ropetheory.schedules import names
from ropetheory.schedules import SCHEDULES

# float64 evaluation of base^(-2j/d) vs an independent formula: a few ulps
SCHEDULE_RTOL = 1e-14


def test_rope_is_base_power():
    th = rt.schedule("rope", head_dim=128, base=10000.0).theta
    j = np.arange(64)
    assert th.dtype == np.float64 and th.shape == (64,)
    np.testing.assert_allclose(th, [10000.0 ** (-2 * k / 128) for k in j], rtol=SCHEDULE_RTOL)


def test_partial_rotates_the_first_r_planes_with_rescaled_exponent():
    th = rt.schedule("partial", head_dim=128, base=10000.0, fraction=0.5).theta
    assert np.all(th[32:] == 0) and np.all(th[:32] > 0)
    np.testing.assert_allclose(th[:32], [10000.0 ** (-2 * k / 64) for k in range(32)], rtol=SCHEDULE_RTOL)


def test_high_frequency_slowest_plane_turns_cycles_times_in_L():
    for cycles in (1, 2):
        th = rt.schedule("high_frequency", head_dim=128, train_len=4096, cycles=cycles).theta
        assert math.isclose(th[-1] * 4096 / (2 * math.pi), cycles, rel_tol=1e-12)
        assert th[0] == 1.0


def test_rope_id_endpoints_and_nope_half():
    th = rt.schedule("rope_id", head_dim=128, train_len=4096).theta
    assert np.all(th[32:] == 0)
    assert math.isclose(th[0], 2 * math.pi / 32, rel_tol=1e-15)
    assert math.isclose(th[31], 2 * math.pi * 2 / 4096, rel_tol=1e-12)
    ratios = th[1:32] / th[:31]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-12)   # geometric


def test_rope_id_matches_the_fms_unrope_formula():
    # THEORY.md cross-check: theta_j = (2 pi/32) (2*32/4096)^(j/(D/2-1)), D = fraction*d
    th = rt.schedule("rope_id", head_dim=128, train_len=4096).theta
    ref = (2 * math.pi / 32) * (2 * 32 / 4096) ** (np.arange(32) / 31)
    np.testing.assert_allclose(th[:32], ref, rtol=SCHEDULE_RTOL)


def test_registry_spec_dict_json_string_and_file_agree(tmp_path):
    ref = rt.schedule("rope_id", head_dim=80, train_len=2048, fraction=0.25 * 2).theta
    spec = {"name": "rope_id", "head_dim": 80, "train_len": 2048, "fraction": 0.5}
    p = tmp_path / "s.json"
    p.write_text(json.dumps(spec))
    for s in (spec, json.dumps(spec), str(p), p):
        np.testing.assert_array_equal(rt.schedule_from_spec(s), ref)
    assert set(SCHEDULES) == set(names.CANONICAL)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="rope", head_dim=7), "head_dim must be a positive even integer, got 7"),
    (dict(name="rope", head_dim=0), "got 0"),
    (dict(name="rope", head_dim=-4), "got -4"),
    (dict(name="rope", head_dim="64"), "head_dim must be an integer"),
    (dict(name="nope_rope", head_dim=8), r"unknown schedule 'nope_rope'; known schedules: \['dynamic', "),
    (dict(name="partial", head_dim=8, fraction=0.3), "fraction=0.3 gives 1.2 rotating planes"),
    (dict(name="partial", head_dim=8, fraction=0.0), "fraction must lie in"),
    (dict(name="rope_id", head_dim=128, train_len=4096, fraction=1 / 3), "whole number of planes"),
    (dict(name="rope", head_dim=8, base=-3.0), "base must be a finite number > 0, got -3.0"),
    (dict(name="rope", head_dim=8, base=float("nan")), "base must be a finite number > 0, got nan"),
    (dict(name="rope", head_dim=8, bass=3.0), r"unknown parameter\(s\) \['bass'\]"),
    (dict(name="high_frequency", head_dim=2), "high_frequency needs head_dim >= 4"),
    (dict(name="rope_id", head_dim=8, train_len=0), "train_len must be a finite number > 0, got 0"),
])
def test_bad_schedule_arguments_name_the_bad_value(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises((ValueError, TypeError), match=match):
        rt.schedule(name, **kwargs)


def test_malformed_spec_file_is_named(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{name: rope,")
    with pytest.raises(ValueError, match="schedule spec: .*bad.json.* is not valid JSON"):
        rt.schedule_from_spec(str(p))
    with pytest.raises(ValueError, match="needs a 'name' key"):
        rt.schedule_from_spec({"head_dim": 8})
    with pytest.raises(TypeError, match="must be a mapping"):
        rt.schedule_from_spec("[1, 2]")


def test_explicit_theta_is_validated():
    with pytest.raises(ValueError, match=r"theta\[1\] = -1.0"):
        rt.schedule("theta", theta=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"theta\[0\] = nan"):
        rt.schedule("theta", theta=[float("nan")])


def test_length_temperature_is_one_inside_L_and_grows_after():
    t = rt.length_temperature([100, 4096, 8192], 4096)
    assert t[0] == t[1] == 1.0
    assert math.isclose(t[2], (1 + 0.1 * math.log(2)) ** 2, rel_tol=1e-15)


@pytest.mark.parametrize("rope", [
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},
    {"rope_type": "linear", "factor": 2.0}])
def test_one_registry_reads_a_pasted_rope_scaling_dict_as_transformers_does(rope):
    """schedule_from_spec takes a pasted rope_scaling dict (with the head width) and gives the same
    frequencies as the full config through schedules.hf."""
    import ropetheory as rt
    pasted = {**rope, "rope_theta": 5e5, "head_dim": 64}
    full = {"head_dim": 64, "rope_theta": 5e5, "max_position_embeddings": 131072, "rope_scaling": dict(rope)}
    a = rt.schedule_from_spec(pasted).theta
    b = rt.from_config(full).theta
    np.testing.assert_array_equal(a, b)
    assert np.array_equal(rt.schedule_from_spec(full).theta, b)
