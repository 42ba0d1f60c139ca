"""The boundary policy (docs/conventions.md, "What each argument accepts"): numbers, integers, booleans,
paths and configs are accepted or refused the same way by every entry point, and extreme but valid
magnitudes give the same answers as moderate ones."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

import ropetheory as rt
from ropetheory import spectra
from ropetheory.core import checks
from ropetheory.schedules import hf, model_config
from strategies import examples

#: float64 rotation of one plane by a reduced angle: a few ulps of the plane's norm
ROTATION_RTOL = 1e-14
#: the top eigenvalue of a rescaled matrix, divided back, against eigvalsh of the moderate one
SCALED_EIG_RTOL = 1e-12


# ---------------------------------------------------------------------------------------------------
# numbers, integers, booleans
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x", [2, 2.0, np.float32(2.0), np.float64(2.0), np.int32(2), np.array(2.0), np.array(2)])
def test_numpy_scalars_and_0d_arrays_are_numbers(x):
    assert checks.check_number("x", x) == 2.0
    assert checks.check_integer("x", x) == 2
    theta = rt.schedule("rope", head_dim=8, base=x * 50).theta
    np.testing.assert_array_equal(theta, rt.schedule("rope", head_dim=8, base=100.0).theta)


@pytest.mark.parametrize("x", [True, np.bool_(False), "2", b"2", 2j, None, [2], np.array([2.0])])
def test_booleans_strings_complex_and_none_are_never_numbers(x):
    with pytest.raises(TypeError, match="x must be"):
        checks.check_number("x", x)
    with pytest.raises(TypeError, match="x must be an integer"):
        checks.check_integer("x", x)


@pytest.mark.parametrize("x", [2.5, float("nan"), float("inf"), -0.5])
def test_fractional_integers_are_refused_never_floored(x):
    with pytest.raises(ValueError, match=r"x must be a whole number.*never rounded"):
        checks.check_integer("x", x)


@pytest.mark.parametrize("x", ["no", "false", 0, 1, None])
def test_a_boolean_slot_takes_only_booleans(x):
    with pytest.raises(TypeError, match="flag must be true or false"):
        checks.check_bool("flag", x)
    assert checks.check_bool("flag", np.bool_(True)) is True


def test_a_string_boolean_in_a_rope_config_is_refused_not_read_as_true():
    cfg = {"head_dim": 64, "max_position_embeddings": 8192,
           "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048,
                            "truncate": "no"}}
    with pytest.raises(TypeError, match="'truncate' must be true or false"):
        rt.from_config(cfg)


def test_affine_weights_refuse_booleans():
    with pytest.raises(TypeError, match="AffineWeights.intercept"):
        spectra.AffineWeights(intercept=True)


@pytest.mark.parametrize("cfg, match", [
    ({"head_dim": 64, "max_position_embeddings": 1}, "max_position_embeddings"),
    ({"head_dim": 64, "max_position_embeddings": 4096, "sliding_window": -4}, "sliding_window"),
    ({"head_dim": 64, "max_position_embeddings": 4096.5}, "max_position_embeddings"),
    ({"head_dim": 64, "max_position_embeddings": 4096, "use_sliding_window": "yes", "sliding_window": 8},
     "use_sliding_window"),
])
def test_degenerate_configs_are_refused_naming_the_key(cfg, match):
    with pytest.raises((TypeError, ValueError), match=match):
        model_config.read_model_config(cfg)


# ---------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------
def test_config_paths_name_the_path_for_a_directory_a_missing_file_and_non_utf8(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no config.json"):
        rt.from_config(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        rt.from_config(tmp_path / "nope.json")
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"head_dim": 64, "name": "\xe9"}')
    with pytest.raises(ValueError, match="not UTF-8"):
        rt.from_config(bad)
    with pytest.raises(ValueError, match="not UTF-8"):
        rt.schedule_from_spec(str(bad))


def test_from_config_reads_a_mapping_a_path_a_checkpoint_folder_and_a_transformers_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Qwen2Config(hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=4096, rope_theta=1e6)
    cfg.save_pretrained(tmp_path / "ckpt")
    raw = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    ref = rt.from_config(raw).theta
    for src in (cfg, tmp_path / "ckpt", str(tmp_path / "ckpt" / "config.json")):
        np.testing.assert_array_equal(rt.from_config(src).theta, ref)
    np.testing.assert_allclose(ref, rt.schedule("rope", head_dim=64, base=1e6).theta, rtol=1e-15)  # 1/b**x vs b**-x


# ---------------------------------------------------------------------------------------------------
# one config reader
# ---------------------------------------------------------------------------------------------------
YARN_TWICE = {"head_dim": 128, "max_position_embeddings": 32768, "original_max_position_embeddings": 8192,
              "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}}


def test_the_training_length_is_the_one_the_frequencies_use():
    """A top-level original_max_position_embeddings wins over the rope dict's (as in transformers), for
    the frequencies and for L alike; the report and the model analysis read the same L."""
    from ropetheory.models.forward import training_length
    from ropetheory.studies.report_sources import load_source
    facts = model_config.read_model_config(YARN_TWICE)
    used = hf.load_rope_config(YARN_TWICE).params["original_max_position_embeddings"]
    assert facts.train_len == used == 8192
    assert training_length(YARN_TWICE) == 8192
    assert load_source(json.dumps(YARN_TWICE))["train_len"] == 8192


@pytest.mark.parametrize("name", sorted(rt.data.fixture_configs()))
def test_every_command_reads_the_same_length_window_and_frequencies_from_a_config(name):
    from ropetheory.models.forward import layer_schedules, training_length
    from ropetheory.studies.report_sources import load_source
    cfg = json.loads(rt.data.fixture_config(name).read_text())
    facts = model_config.read_model_config(cfg)
    src = load_source(name)
    assert src["train_len"] == facts.train_len == training_length(cfg)
    per_layer = layer_schedules({**cfg, "num_hidden_layers": len(facts.layer_types)}, facts.train_len)
    for sc in src["schedules"]:
        key = sc["layer_type"]
        layers = [p for p in per_layer if facts.rope_key(p["layer_type"]) == key]
        assert layers
        for p in layers:
            np.testing.assert_array_equal(p["theta"], sc["theta"])
            assert p["window"] == facts.window_for(p["layer_type"])
        if key is None:
            np.testing.assert_array_equal(rt.from_config(cfg).theta, sc["theta"])


def test_qwen2_without_use_sliding_window_has_no_window_and_mistral_windows_every_layer():
    qwen = {"head_dim": 64, "max_position_embeddings": 32768, "sliding_window": 4096, "use_sliding_window": False}
    mistral = {"head_dim": 64, "max_position_embeddings": 32768, "sliding_window": 4096, "num_hidden_layers": 2}
    assert model_config.read_model_config(qwen).window is None
    m = model_config.read_model_config(mistral)
    assert [m.window_for(t) for t in m.layer_types] == [4096, 4096]


# ---------------------------------------------------------------------------------------------------
# extreme magnitudes
# ---------------------------------------------------------------------------------------------------
def _numpy_rope(A, theta, offset):
    n = A.shape[-2]
    ang = (np.arange(n) + offset)[:, None] * theta[None, :]
    c, s = np.cos(ang), np.sin(ang)
    ref = np.empty_like(A)
    ref[..., 0::2] = c * A[..., 0::2] - s * A[..., 1::2]
    ref[..., 1::2] = s * A[..., 0::2] + c * A[..., 1::2]
    return ref


@examples(40)
@given(exp=st.integers(-1070, 1020), offset=st.integers(0, 50), seed=st.integers(0, 2 ** 16))
@example(exp=1020, offset=3, seed=0)
@example(exp=-1070, offset=7, seed=1)
def test_the_operator_is_scale_equivariant_from_subnormal_to_near_the_float64_maximum(exp, offset, seed):
    """Rope(2^k X) = 2^k Rope(X) exactly wherever 2^k Rope(X) is representable: the operator rotates
    planes at an exactly rescaled magnitude, so neither overflow nor XLA's flushed subnormals change it."""
    theta = rt.schedule("rope", head_dim=8, base=100.0).theta
    X = np.random.default_rng(seed).uniform(-1, 1, (3, 8))
    big = np.ldexp(X, exp)
    out = np.asarray(rt.apply_rope(theta, big, offset=offset))
    ref = np.ldexp(np.asarray(rt.apply_rope(theta, X, offset=offset)), exp)
    assert np.all(np.isfinite(out))
    tiny = np.ldexp(1.0, -1074)
    np.testing.assert_allclose(out, ref, rtol=ROTATION_RTOL, atol=2 * tiny)


def test_the_operator_refuses_an_output_beyond_the_float64_maximum_naming_x():
    theta = rt.schedule("rope", head_dim=8, base=100.0).theta
    X = np.array([[0, 0, 0, 0, 0, 0, -1.77e308, 1e308]])
    with pytest.raises(ValueError, match="X: the rotated value"):
        rt.apply_rope(theta, X, offset=3)


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-155, 1e155, 1e200, 1e300])
@pytest.mark.parametrize("method", [None, "tridiagonal", "lanczos", "subspace", "eigvalsh"])
def test_the_top_eigenvalue_is_right_from_1e_minus_300_to_1e300(scale, method):
    X = np.random.default_rng(0).standard_normal((40, 16))
    G = X.T @ X
    ref = np.linalg.eigvalsh(G)[-1]
    got = float(rt.top_eigenvalue(G * scale, method)) / scale
    assert abs(got - ref) <= SCALED_EIG_RTOL * ref


def test_a_non_symmetric_matrix_is_refused_naming_g():
    with pytest.raises(ValueError, match="G must be symmetric"):
        rt.top_eigenvalue(np.array([[1.0, 2.0], [0.0, 1.0]]))


@pytest.mark.parametrize("scale", [1e-300, 1e-160, 1e80, 1e160, 1e300])
def test_a_general_cloud_gives_the_same_curve_at_any_scale(scale):
    theta = rt.schedule("rope", head_dim=8, base=100.0).theta
    X = np.random.default_rng(1).standard_normal((50, 8))
    ref = spectra.rope_matrix_curve(theta, X, [10, 50])
    out = spectra.rope_matrix_curve(theta, X * scale, [10, 50])
    np.testing.assert_allclose(out["rho"], ref["rho"], rtol=1e-12)


def test_streaming_weights_near_the_float64_maximum_give_the_constant_weight_curve():
    theta = rt.schedule("rope", head_dim=8, base=100.0).theta
    v = np.random.default_rng(2).standard_normal(8)
    ref = spectra.rank1_stream_curve(theta, v, [10, 100])
    for w in (np.full(100, 1.7e308), np.full(100, 5e-324)):
        out = spectra.rank1_stream_curve(theta, v, [10, 100], w)
        np.testing.assert_allclose(out["rho"], ref["rho"], rtol=1e-12)
    with pytest.raises(ValueError, match="weights: their sum"):
        spectra.rank1_stream_curve(theta, v, [10, 100], lambda p: 1.7e308 + 0.0 * p)


# ---------------------------------------------------------------------------------------------------
# the package data ships with the package
# ---------------------------------------------------------------------------------------------------
ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_packaged_data_is_the_committed_data():
    assert rt.data.base_table().read_bytes() == (ROOT / "docs/figures/base_bound.csv").read_bytes()
    for label in ("smollm2-135m", "gemma3-270m"):
        assert rt.data.analysis(label).read_bytes() == \
            (ROOT / "docs/figures/models" / label / "analysis.json").read_bytes()
    names = sorted(p.name for p in (ROOT / "examples/configs").glob("*.json"))
    assert sorted(f"{k}.json" for k in rt.data.fixture_configs()) == names
    for k, p in rt.data.fixture_configs().items():
        assert p.read_bytes() == (ROOT / "examples/configs" / f"{k}.json").read_bytes()


def test_degenerate_model_inputs_are_refused_naming_the_thing(tmp_path):
    """An empty text, a key dump whose meta has no head_dim, a training length of 0 (not "not given")."""
    from ropetheory.models import capture, corpus, study

    class Tok:
        bos_token_id = 1

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": []}

        def convert_ids_to_tokens(self, i):
            return "<s>"

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="has no tokens"):
        corpus.text_tokens(Tok(), 16, text_file=empty, repeat=True)
    p = tmp_path / "dump.npz"
    meta = json.dumps({"theta": [1.0]})
    np.savez(p, **{k: np.zeros((1, 1, 2, 2), np.float32) for k in ("keys_pre", "keys_post", "queries_pre",
                                                                    "queries_post")},
             positions=np.arange(2), meta=np.array(meta))
    with pytest.raises(ValueError, match="no 'head_dim'"):
        capture.load_dump(p)
    with pytest.raises(ValueError, match="train_len must be an integer >= 2, got 0"):
        study.run("smollm2-135m", n_tokens=8, train_len=0, out=tmp_path / "a", quiet=True)


def test_fractional_distances_and_lengths_of_the_inversion_probabilities_are_refused_not_floored():
    from ropetheory.theory import positions
    theta = rt.schedule("rope", head_dim=8, base=100.0).theta
    q = k = np.ones(8)
    with pytest.raises(ValueError, match="positions must be integers, got 2.5"):
        positions.scores(theta, q, k, [1, 2.5])
    with pytest.raises(ValueError, match="M must be a whole number"):
        positions.position_inversion(theta, q, k, 10.5)
    with pytest.raises(ValueError, match="q must be a vector of 8"):
        positions.scores(theta, np.ones(6), k, [1])
    np.testing.assert_allclose(positions.scores(theta, q, k, [0]), [8.0])


def test_no_module_checks_a_bool_or_an_integer_its_own_way():
    """One set of validators: outside ``core.checks`` no module tests ``isinstance(x, bool)`` before an
    ``isinstance(x, int)`` (the inline check that refused numpy integers and let ``np.bool_`` through)."""
    import pathlib
    import re
    import ropetheory
    root = pathlib.Path(ropetheory.__file__).parent
    inline = re.compile(r"isinstance\(\w+, bool\) or not isinstance\(")
    found = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if p.name != "checks.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if inline.search(line)]
    assert not found, found


def test_the_configs_and_helpers_that_had_their_own_checks_take_numpy_integers_and_refuse_booleans():
    from ropetheory.models.extension import scaling
    from ropetheory.theory.beyond import noisy_rank1_limit
    from ropetheory.training.loop import TrainConfig
    from ropetheory.training.model import ModelConfig
    m = ModelConfig(layers=np.int64(2))
    assert m.layers == 2 and type(m.layers) is int
    with pytest.raises(TypeError, match="layers"):
        ModelConfig(layers=True)
    with pytest.raises(TypeError, match="steps"):
        TrainConfig(steps=np.bool_(True))
    assert scaling("linear", np.int64(4)) == scaling("linear", 4)
    with pytest.raises(TypeError, match="s must be an integer"):
        scaling("linear", True)
    theta = rt.schedule("rope", head_dim=8, base=100.0)
    assert noisy_rank1_limit(theta, np.arange(1.0, 9.0), np.float32(2.0)) == noisy_rank1_limit(
        theta, np.arange(1.0, 9.0), 2.0)
    with pytest.raises(TypeError, match="snr"):
        noisy_rank1_limit(theta, np.arange(1.0, 9.0), True)
