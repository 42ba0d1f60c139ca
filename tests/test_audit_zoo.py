"""The diagnosis names every re-created public RoPE bug in its class, in each dtype the bug applies to,
and never flags a correct implementation (any dtype, any rope type of the registry); the zoo command
prints and saves its table."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ropetheory import testing as rtt
from ropetheory.schedules.hf import ROPE_TYPES, frequencies_from_config, rope_parameters
from ropetheory.testing import adapters, zoo

#: one random vector per position is enough for every signature and keeps the zoo to a few seconds
VECTORS = 1
ALL_DTYPES = ("float64", "float32", "bfloat16", "float16")
THETA = 1e4 ** (-np.arange(zoo.HEAD_DIM // 2) / (zoo.HEAD_DIM // 2))


def correct_rope(theta, scale=1.0):
    """Exact tables scaled by the attention factor, rounded once to the dtype; rotate_half planes."""
    def fn(x, pos):
        c, s = (np.asarray(t * scale).astype(x.dtype) for t in rtt.exact_cos_sin(theta, pos))
        a, b = x[:, : theta.size], x[:, theta.size:]
        return np.concatenate([c * a - s * b, s * a + c * b], axis=-1)
    return fn


@pytest.mark.parametrize("name, dtype", [(b.name, dt) for b in zoo.ZOO for dt in b.dtypes])
def test_every_zoo_bug_is_caught_and_named_in_its_class_in_each_dtype_it_applies_to(name, dtype):
    bug = zoo.zoo_bug(name)
    d = zoo.diagnose_bug(bug, dtype, n_vectors=VECTORS)
    assert d.bug and d.first_over_floor is not None, d.verdict()
    assert d.cls == bug.expected, d.verdict()


def test_every_zoo_bug_but_the_synthetic_control_cites_a_public_thread():
    assert all(b.sources for b in zoo.ZOO if b.name != "off-by-one")
    assert all("#" in s or "ggml_rope_cache_init" in s for b in zoo.ZOO for s in b.sources)


@pytest.mark.parametrize("name, kind", [("yarn-factor-missing", "missing"), ("yarn-factor-twice", "applied twice"),
                                        ("yarn-mscale-ignored", "YaRN default"),
                                        ("yarn-explicit-factor-dropped", "YaRN default")])
def test_an_attention_factor_bug_is_named_by_its_ratio_to_the_registrys_factor(name, kind):
    d = zoo.diagnose_bug(zoo.zoo_bug(name), "float32", n_vectors=VECTORS)
    assert (d.cls, d.kind) == ("attention factor", kind), d.verdict()
    assert d.first_over_floor == 0


@pytest.mark.parametrize("name", [b.name for b in zoo.CONTROLS])
def test_the_zoos_correct_controls_are_never_diagnosed_in_any_dtype(name):
    bug = zoo.zoo_bug(name)
    for dt in bug.dtypes:
        d = zoo.diagnose_bug(bug, dt, n_vectors=VECTORS)
        assert not d.bug and d.cls == "correct" and d.first_over_floor is None, d.verdict()


def _registry_config(rope_type):
    return {"head_dim": zoo.HEAD_DIM, "hidden_size": zoo.HEAD_DIM, "num_attention_heads": 1,
            "max_position_embeddings": 8192,
            "rope_parameters": rope_parameters(rope_type, rope_theta=1e4, factor=4.0,
                                               original_max_position_embeddings=2048, head_dim=zoo.HEAD_DIM)}


@pytest.mark.parametrize("rope_type", sorted(ROPE_TYPES))
def test_a_correct_implementation_of_every_rope_type_is_not_diagnosed_in_any_dtype(rope_type):
    """Frequencies and attention factor from the registry at the audited length, exact tables rounded once:
    the diagnosis checks both against the registry and finds nothing in float64, float32, bf16 or fp16."""
    cfg = _registry_config(rope_type)
    f = frequencies_from_config(cfg, seq_len=4096)
    fn = correct_rope(f.theta, f.attention_factor)
    for dt in ALL_DTYPES:
        d = rtt.diagnose(fn, schedule=cfg, dtype=dt, max_position=4095, n_vectors=VECTORS)
        assert not d.bug, d.verdict()


def test_the_float32_positions_adapter_is_diagnosed_as_float32_angle_precision():
    ad = adapters.build("float32-positions", head_dim=16, base=1e4, max_position=2 ** 20)
    d = rtt.diagnose(ad.fn, schedule=ad.theta, dtype="float32", max_position=2 ** 20, n_vectors=VECTORS)
    assert (d.cls, d.kind) == ("angle precision", "float32"), d.verdict()


def test_bad_diagnose_arguments_are_named():
    fn = correct_rope(THETA)
    with pytest.raises(ValueError, match="layer_type"):
        rtt.diagnose(fn, schedule=THETA, layer_type="full_attention")
    with pytest.raises(ValueError, match="dtype"):
        rtt.diagnose(fn, schedule=THETA, dtype="int8")
    with pytest.raises(ValueError, match="positions"):
        rtt.diagnose(fn, schedule=THETA, positions=[])
    with pytest.raises(ValueError, match="call"):
        rtt.diagnose(fn, schedule=THETA, call="q")
    with pytest.raises(ValueError, match="zoo entry"):
        zoo.zoo_bug("no-such-bug")


def test_the_zoo_command_prints_the_table_and_writes_csv_and_json(tmp_path, capsys, monkeypatch):
    from ropetheory import cli
    monkeypatch.setattr(zoo, "ZOO", (zoo.zoo_bug("hard-coded-base"),))
    monkeypatch.setattr(zoo, "CONTROLS", (zoo.zoo_bug("yarn-registry"),))
    assert cli.main(["audit", "--zoo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "deepspeedai/DeepSpeed#4442" in out and "frequency selection (wrong base)" in out
    assert "7 of 7 caught" in out
    res = json.loads((tmp_path / "zoo" / "zoo.json").read_text())
    assert {r["bug"] for r in res["rows"]} == {"hard-coded-base", "yarn-registry"}
    assert all(r["caught"] for r in res["rows"])
    assert (tmp_path / "zoo" / "zoo.csv").read_text().startswith("bug,description,source,dtype,expected,diagnosed")


def test_the_audit_command_wants_a_target_or_the_zoo_not_both(tmp_path):
    from ropetheory import cli
    assert cli.main(["audit", "--out", str(tmp_path)]) == 2
    assert cli.main(["audit", "reference", "--zoo", "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize("config", ["llama-3.1-8b", "qwen2-7b-instruct-yarn", "phi-3.5-mini-instruct", "gemma-3-270m"])
def test_the_transformers_adapter_uses_the_registrys_frequencies_and_attention_factor(config):
    pytest.importorskip("transformers")
    from ropetheory.studies import audit
    cfg = audit._config(config)
    top = 2 * cfg["max_position_embeddings"]
    ad = adapters.build("transformers", head_dim=0, base=0.0, max_position=top, config=cfg)
    chk = rtt.check_config(ad.theta, ad.attention_factor, cfg, seq_len=top + 1)
    assert chk.agrees, chk.verdict()


def test_the_config_check_flags_frequencies_or_an_attention_factor_off_the_registry():
    cfg = _registry_config("yarn")
    f = frequencies_from_config(cfg, seq_len=4096)
    theta, att = f.theta, f.attention_factor
    assert rtt.check_config(theta, att, cfg, seq_len=4096).agrees
    assert not rtt.check_config(theta * (1 + 2 ** -16), att, cfg, seq_len=4096).agrees
    assert not rtt.check_config(theta, 1.0, cfg, seq_len=4096).agrees
    with pytest.raises(ValueError, match="theta"):
        rtt.check_config(theta[:4], att, cfg, seq_len=4096)


@pytest.mark.parametrize("theta, cls, kind, words", [
    (THETA / 4, "frequency selection", "uniform scale", "scaled by 0.25"),
    (2e4 ** (-np.arange(16) / 16), "frequency selection", "wrong frequencies", "base 2e+04"),
    (0.5 * 3e4 ** (-np.arange(16) / 16), "frequency selection", "wrong frequencies", "e+04 scaled by 0.5"),
    (THETA * (1 + 1e-3 * np.random.default_rng(0).standard_normal(16)), "frequency precision", "bfloat16", "scattered"),
])
def test_frequencies_no_alternative_names_are_diagnosed_from_the_linear_angle_error(theta, cls, kind, words):
    """Frequencies off a plain schedule in ways no exact alternative spells out: the angle error is linear
    in the position, so the per-plane fit names a uniform scale, another base (and scale) or rounding."""
    for dt in ("float32", "bfloat16"):
        d = rtt.diagnose(correct_rope(theta), schedule=THETA, dtype=dt, max_position=32768, n_vectors=VECTORS)
        assert (d.cls, d.kind) == (cls, kind) and words in d.findings[0].detail, d.verdict()


def test_a_config_check_refuses_a_non_positive_attention_factor_by_name():
    cfg = _registry_config("default")
    with pytest.raises(ValueError, match="attention_factor"):
        rtt.check_config(THETA, 0.0, cfg, seq_len=16)
