"""One value for a schedule (``rt.Schedule``) and one registry of names (issue: the public contract)."""
import json
import warnings

import numpy as np
import pytest

import ropetheory as rt
from ropetheory import figstyle
from ropetheory.core import checks
from ropetheory.schedules import names

#: a registry spec for each canonical name (head_dim added), covering every way of making a schedule
SPECS = {
    "rope": {"base": 5e5}, "partial": {"base": 1e4, "fraction": 0.25}, "high_frequency": {"train_len": 4096},
    "rope_id": {"train_len": 4096}, "nope": {},
    "linear": {"rope_theta": 1e4, "factor": 4.0},
    "dynamic": {"rope_theta": 1e4, "factor": 2.0, "max_position_embeddings": 4096, "seq_len": 16384},
    "yarn": {"rope_theta": 5e5, "factor": 4.0, "original_max_position_embeddings": 8192},
    "longrope": {"rope_theta": 1e4, "factor": 4.0, "original_max_position_embeddings": 4096,
                 "short_factor": [1.0] * 32, "long_factor": list(np.linspace(1, 4, 32)), "seq_len": 8192},
    "llama3": {"rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192},
    "proportional": {"rope_theta": 1e4, "factor": 1.0, "partial_rotary_factor": 0.5},
}


def test_every_canonical_name_is_registered_and_has_a_spec_here():
    assert set(rt.SCHEDULES) == set(names.CANONICAL)
    assert set(SPECS) | {"theta"} == set(names.CANONICAL)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_registry_entry_returns_a_schedule_its_spec_rebuilds(name):
    s = rt.schedule(name, head_dim=64, **SPECS[name])
    assert isinstance(s, rt.Schedule) and s.name == name and s.head_dim == 64
    assert rt.schedule_from_spec(s.spec) == s
    assert rt.schedule_from_spec(json.loads(json.dumps(s.spec))) == s          # the spec survives JSON
    assert json.loads(json.dumps(s.to_dict()))["theta"] == s.theta.tolist()


def test_nope_is_registered_with_every_plane_at_zero():
    s = rt.schedule("none", head_dim=16)                                        # an alias
    assert s.name == "nope" and not s.theta.any() and s.planes == 8


def test_explicit_theta_is_a_schedule_too():
    s = rt.schedule("theta", theta=[1.0, 0.5, 0.0])
    assert s.name == "theta" and s.head_dim == 6 and rt.schedule_from_spec(s.spec) == s
    with pytest.raises(ValueError, match="planes but head_dim"):
        rt.schedule("theta", theta=[1.0, 0.5], head_dim=8)


def test_a_schedules_theta_cannot_be_changed_from_outside():
    src = np.array([1.0, 0.5])
    s = rt.schedule("theta", theta=src)
    src[0] = 7.0
    assert s.theta[0] == 1.0
    with pytest.raises(ValueError):
        s.theta[0] = 2.0


@pytest.mark.parametrize("alias,canonical", sorted(names.ALIASES.items()))
def test_every_alias_resolves_in_one_place_and_shares_its_colour(alias, canonical):
    assert names.canonical(alias) == canonical
    assert figstyle.color(alias) == figstyle.color(canonical)


def test_unknown_name_is_refused_naming_it():
    with pytest.raises(ValueError, match="'ropex'"):
        rt.schedule("ropex", head_dim=8)


def test_variant_labels_have_colours_of_their_own():
    assert figstyle.color("rope_id+temp") != figstyle.color("rope_id")
    assert figstyle.color("rope_id_temp") == figstyle.color("rope_id+temp")


def test_fixture_configs_give_schedules_their_specs_rebuild():
    import pathlib
    paths = sorted(pathlib.Path(__file__).parent.parent.joinpath("examples", "configs").glob("*.json"))
    assert paths
    for p in paths:
        cfg = json.loads(p.read_text())
        if any(isinstance(v, dict) for v in (cfg.get("rope_parameters") or {}).values()):
            keys = [k for k, v in cfg["rope_parameters"].items() if isinstance(v, dict)]
            scheds = [rt.from_config(cfg, layer_type=k) for k in keys]
        else:
            scheds = [rt.from_config(cfg)]
        for s in scheds:
            assert rt.schedule_from_spec(s.spec) == s, p.name


def test_public_functions_take_a_schedule_and_agree_with_its_frequencies():
    s = rt.schedule("rope_id", head_dim=32, train_len=512)
    v = np.random.default_rng(0).standard_normal(32)
    grid = rt.log_grid(1e6, 12)
    a, b = rt.rank1_curve(s, v, grid), rt.rank1_curve(s.theta, v, grid)
    np.testing.assert_array_equal(a["rho"], b["rho"])
    assert rt.predicted_limit(s, v).rho == rt.predicted_limit(s.theta, v).rho


def test_a_hugging_face_schedule_rotates_in_its_own_layout():
    s = rt.from_config({"head_dim": 16, "rope_theta": 1e4, "max_position_embeddings": 64})
    assert s.layout == "half"
    X = np.random.default_rng(1).standard_normal((5, 16))
    np.testing.assert_array_equal(np.asarray(rt.apply_rope(s, X)),
                                  np.asarray(rt.apply_rope(s.theta, X, layout="half")))
    with pytest.raises(ValueError, match="contradicts"):
        rt.apply_rope(s, X, layout="interleaved")


def test_a_partial_rotary_schedule_is_refused_where_no_layout_expresses_it():
    s = rt.from_config({"head_dim": 16, "rope_theta": 1e4, "partial_rotary_factor": 0.5, "model_type": "gpt_neox"})
    assert s.rotary_dim == 8 and s.name == "partial"
    with pytest.raises(ValueError, match="rotary_dim|first 8 channels"):
        rt.apply_rope(s, np.ones((2, 16)))


def test_llama_ignores_partial_rotary_factor_as_transformers_does():
    cfg = {"model_type": "llama", "head_dim": 16, "max_position_embeddings": 64,
           "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}}
    with pytest.warns(UserWarning, match="ignored"):
        s = rt.from_config(cfg)
    np.testing.assert_array_equal(s.theta, rt.schedule("rope", head_dim=16, base=1e4).theta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        neox = rt.from_config({**cfg, "model_type": "gpt_neox"})
    assert np.count_nonzero(neox.theta) == 4


def test_the_hugging_face_default_type_is_the_papers_rope_formula_bit_for_bit():
    cfg = {"head_dim": 128, "rope_theta": 5e5, "max_position_embeddings": 8192}
    np.testing.assert_array_equal(rt.from_config(cfg).theta, rt.schedule("rope", head_dim=128, base=5e5).theta)


def test_predicted_limit_and_check_rank1_claims_validate_a_schedule_once(monkeypatch):
    calls = []
    real = checks.checked_theta
    # counted: checks of this theta (4 planes); the limit also reads a weight shift through the same check
    monkeypatch.setattr(checks, "checked_theta", lambda t: (calls.append(1) if np.size(t) == 4 else None) or real(t))
    theta = np.array([1.0, 0.3, 0.01, 0.0])
    v = np.random.default_rng(2).standard_normal(8)
    rt.predicted_limit(theta, v)
    assert len(calls) == 1
    calls.clear()
    rt.check_rank1_claims(theta, v, rate_grid=rt.log_grid(1e12, 8, 10 ** 3))
    assert len(calls) == 1
    sched = rt.schedule("theta", theta=theta)
    calls.clear()
    rt.check_rank1_claims(sched, v, rate_grid=rt.log_grid(1e12, 8, 10 ** 3))
    assert calls == []                                    # the schedule was validated when made, not again


def test_check_rank1_claims_refuses_weights_it_cannot_certify_at_entry():
    with pytest.raises(TypeError, match="weights"):
        rt.check_rank1_claims(np.array([1.0, 0.5]), np.ones(4), weights=rt.TrigWeights(1.0, ((1.0, 0.5),)))


def _count_calls(monkeypatch, name):
    """Count calls of ``core.checks.<name>`` wherever the package imported it (every module's binding)."""
    import sys
    real = getattr(checks, name)
    calls = []

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    for mod in [m for k, m in sys.modules.items() if k.startswith("ropetheory") and m is not None]:
        if getattr(mod, name, None) is real:
            monkeypatch.setattr(mod, name, counting)
    return calls


def test_predicted_limit_and_check_rank1_claims_validate_v_and_the_length_grid_once(monkeypatch):
    v_calls = _count_calls(monkeypatch, "check_cloud_vector")
    grid_calls = _count_calls(monkeypatch, "check_lengths")
    theta = rt.schedule("rope", head_dim=8, base=1e4)
    v = np.random.default_rng(5).standard_normal(8)
    rt.predicted_limit(theta, v)
    assert (len(v_calls), len(grid_calls)) == (1, 0)
    v_calls.clear()
    rt.check_rank1_claims(theta, v, rate_grid=rt.log_grid(1e12, 8, 10 ** 3))
    assert (len(v_calls), len(grid_calls)) == (1, 1)      # the user's rate grid, checked at entry
    v_calls.clear()
    grid_calls.clear()
    rt.check_rank1_claims(theta, v)
    assert (len(v_calls), len(grid_calls)) == (1, 0)      # the default grid is made valid, not checked


def test_check_rank1_claims_refuses_a_bad_rate_grid_at_entry_naming_it():
    with pytest.raises(ValueError, match="length"):
        rt.check_rank1_claims(rt.schedule("rope", head_dim=4), np.ones(4), rate_grid=[10, -3])


def test_every_study_series_label_resolves_through_the_one_name_table():
    from ropetheory.studies import beyond, extension, figure7, verify
    from ropetheory.testing import strategies as rs
    labels = {**{k: names.spec_of(k, **p)["name"] for k, p in verify.SCHEDULE_CASES.items()},
              **{k: names.spec_of(k, **p)["name"] for k, p in beyond.SCHEDULES.items()},
              **{k: names.spec_of(k, **p)["name"] for k, (_, p) in figure7.SCHEDULES.items()}}
    assert labels == {"rope": "rope", "partial": "partial", "high_frequency": "high_frequency", "rope_id": "rope_id",
                      "half_rope": "partial", "high_freq": "high_frequency", "rope_1e4": "rope", "rope_5e5": "rope"}
    assert [names.label_schedule(m) for m in extension.UNEXTENDED] == ["rope", "rope_id"]
    assert set(extension.METHODS) <= set(names.HF_TYPES)
    assert set(rs.PAPER_PARAMS) == set(names.PAPER)
    assert set(rs.ROPE_TYPES) - {"default"} <= set(names.HF_TYPES)
    assert names.label_schedule("rope_id+temp") == names.label_schedule("RoPE-ID_temp") == "rope_id"
    with pytest.raises(ValueError, match="rope_9e9"):
        names.label_schedule("rope_9e9")


def test_the_training_claims_rank_the_papers_schedules_and_leave_out_nope_and_inference_reads():
    from ropetheory.studies import train_report
    tab = [{"variant": v, "acc_2L": x} for v, x in
           [("rope", 0.1), ("half_rope", 0.3), ("high_freq_rope", 0.2), ("rope_id", 0.4), ("rope_id+temp", 0.5),
            ("nope", 0.9), ("rope+pi", 0.95)]]
    (claim,) = train_report.claims(tab, multiples=(2,))[:1]
    assert claim["best"] == "rope_id+temp" and claim["worst"] == "rope" and claim["holds"]
    assert claim["best_of_all_variants"] == "rope+pi"
