"""The audit catches planted RoPE bugs and passes correct implementations; the derived floors hold
against brute-force rounding; the built-in adapters that install on CPU run at small sizes."""
from __future__ import annotations

import json
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given

import ropetheory as rt
from ropetheory.schedules.hf_facts import rope_type_of
from ropetheory import testing as rtt
from ropetheory.testing import adapters
from ropetheory.testing import strategies as rs
from strategies import examples

THETA = rt.schedule("rope", head_dim=32, base=5e5).theta
NP_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float64": np.float64}
#: the floor is a worst case; a correctly rounded implementation reaches at least this share of it
FLOOR_ATTAINED = 0.25


def rotation(theta, tables, *, layout="half", dtype=np.float32, offset=0):
    """A RoPE in ``dtype`` from ``tables(theta, positions) -> (cos, sin)``: the planted-bug factory."""
    def fn(x, pos):
        c, s = tables(theta, pos + offset)
        c, s = np.asarray(c).astype(dtype), np.asarray(s).astype(dtype)
        P = x.shape[-1] // 2
        a, b = (x[:, :P], x[:, P:]) if layout == "half" else (x[:, 0::2], x[:, 1::2])
        ya, yb = c * a - s * b, s * a + c * b
        if layout == "half":
            return np.concatenate([ya, yb], axis=-1)
        return np.stack([ya, yb], axis=-1).reshape(x.shape)
    return fn


def exact_tables(theta, pos):
    return rtt.exact_cos_sin(theta, pos)


def float32_position_tables(theta, pos):
    ang = pos.astype(np.float32)[:, None] * theta.astype(np.float32)[None]
    return np.cos(ang), np.sin(ang)


def bf16_inv_freq_tables(theta, pos):
    inv = theta.astype(ml_dtypes.bfloat16).astype(np.float64)
    return np.cos(pos[:, None] * inv[None]), np.sin(pos[:, None] * inv[None])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_a_correct_implementation_is_within_its_dtypes_floor_at_every_position(dtype):
    fn = rotation(THETA, exact_tables, dtype=NP_DTYPES[dtype])
    a = rtt.assert_rope_matches(fn, schedule=THETA, dtype=dtype, max_position=2 ** 20)
    assert a.within_floor and a.worst_floor_ratio >= FLOOR_ATTAINED


def test_a_float64_implementation_passes_at_int64_positions():
    fn = rotation(THETA, exact_tables, dtype=np.float64)
    rtt.assert_rope_matches(fn, schedule=THETA, dtype="float64", positions=np.array([0, 1, 5, 2 ** 20 + 1]))


@pytest.mark.parametrize("bug, tables, kw, dtype", [
    ("float32 positions", float32_position_tables, {}, "float32"),
    ("bf16 inverse frequencies", bf16_inv_freq_tables, {}, "float32"),
    ("layout mix-up", exact_tables, {"layout": "interleaved"}, "float32"),
    ("off-by-one offset", exact_tables, {"offset": 1}, "float32"),
    ("wrong base", lambda th, pos: exact_tables(rt.schedule("rope", head_dim=32, base=1e4).theta, pos), {}, "float32"),
    ("float32 positions at long context in bf16", float32_position_tables, {}, "bfloat16"),
])
def test_the_audit_catches_planted_bugs_naming_where_they_are_worst(bug, tables, kw, dtype):
    fn = rotation(THETA, tables, dtype=NP_DTYPES[dtype], **kw)
    with pytest.raises(AssertionError, match=r"x the .* floor .* position \d+ \(plane \d+, .* absolute, .* ulp\)"):
        rtt.assert_rope_matches(fn, schedule=THETA, dtype=dtype, max_position=2 ** 22)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_the_floor_holds_and_is_nearly_attained_by_brute_force_rounding(dtype):
    """Every way of rounding: random planes, correctly rounded cos/sin, products and sum rounded to the
    dtype; the worst error over 20000 planes is below the derived floor and above FLOOR_ATTAINED of it."""
    T = NP_DTYPES[dtype]
    rng = np.random.default_rng(1)
    n = 20000
    x = rng.standard_normal((n, 2)).astype(T).astype(np.float64)
    ang = rng.uniform(0, 2 * math.pi, n)
    c, s = np.cos(ang), np.sin(ang)
    ya = c * x[:, 0] - s * x[:, 1]
    xa, xb, cT, sT = (v.astype(T) for v in (x[:, 0], x[:, 1], c, s))
    got = (cT * xa - sT * xb).astype(np.float64)
    ratio = np.abs(got - ya) / rtt.rotation_floor(np.hypot(x[:, 0], x[:, 1]), dtype)
    assert ratio.max() <= 1.0 and ratio.max() >= FLOOR_ATTAINED


def test_the_logit_error_of_a_correct_implementation_is_within_the_logit_floor():
    fn = rotation(THETA, exact_tables)
    lg = rtt.logit_errors(fn, schedule=THETA, distances=[0, 100, 2 ** 20], dtype="float32")
    assert np.all(lg.max_floor_ratio <= 1.0)
    bad = rtt.logit_errors(rotation(THETA, float32_position_tables), schedule=THETA, distances=[2 ** 20 + 3],
                           dtype="float32")
    assert bad.max_floor_ratio[0] > 10


@examples(10)
@given(sched=rs.schedules(head_dims=[8, 16]), pos=rs.positions(max_len=2 ** 24, size=8))
def test_the_strategies_draw_schedules_and_positions_a_correct_rope_passes(sched, pos):
    theta, d = sched
    assert theta.size == d // 2 and np.all(np.diff(pos) > 0)
    rtt.assert_rope_matches(rotation(theta, exact_tables), schedule=theta, positions=pos, dtype="float32")


@examples(10)
@given(cfg=rs.rope_configs(head_dims=[16]))
def test_rope_configs_of_every_type_read_as_transformers_reads_them(cfg):
    f = rt.from_config(cfg)
    assert rope_type_of(f) == cfg["rope_parameters"]["rope_type"] and np.all(np.isfinite(f.theta))


def test_bad_audit_arguments_are_named():
    fn = rotation(THETA, exact_tables)
    with pytest.raises(ValueError, match="dtype"):
        rtt.audit_rope(fn, schedule=THETA, dtype="int8")
    with pytest.raises(ValueError, match="layout"):
        rtt.audit_rope(fn, schedule=THETA, layout="halves")
    with pytest.raises(ValueError, match="returned shape"):
        rtt.audit_rope(lambda x, p: x[:, :4], schedule=THETA)
    with pytest.raises(ValueError, match="head_dim"):
        rtt.audit_rope(fn, schedule="rope", head_dim=31)


CPU_ADAPTERS = ["reference", "float32-positions", "transformers", "torchtune", "torchtune-llama3",
                "rotary-embedding-torch", "x-transformers"]


@pytest.mark.parametrize("name", CPU_ADAPTERS)
def test_each_cpu_adapter_matches_the_operator_at_short_positions_and_reports_long_ones(name):
    """At positions 0-7 every implementation is within 2x its float32 floor (so its layout and
    frequencies are read right); the verdict at 8x a 512 context is a finite number either way."""
    ad = adapters.build(name, head_dim=16, base=1e4, max_position=4096)
    short = rtt.audit_rope(ad.fn, schedule=ad.theta, dtype="float32", layout=ad.layout, framework=ad.framework,
                           positions=np.arange(8), n_vectors=2)
    assert short.worst_floor_ratio <= 2.0, short.verdict()
    long = rtt.audit_rope(ad.fn, schedule=ad.theta, dtype="bfloat16", layout=ad.layout, framework=ad.framework,
                          max_position=4096, n_vectors=1)
    assert math.isfinite(long.worst_floor_ratio)


def test_the_audit_command_writes_json_csv_and_figures_and_a_verdict_per_dtype(tmp_path, capsys):
    from ropetheory import cli
    rc = cli.main(["audit", "float32-positions", "--context", "512", "--head-dim", "16", "--dtypes",
                   "float32,bfloat16", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "float32: over the float32 floor from position" in out and "bfloat16:" in out
    res = json.loads((tmp_path / "float32-positions" / "audit.json").read_text())
    assert res["max_position"] == 4096 and not res["dtypes"]["float32"]["within_floor"]
    for f in ("audit.csv", "audit.png", "audit.pdf"):
        assert (tmp_path / "float32-positions" / f).stat().st_size > 0


@pytest.mark.parametrize("config", ["llama-3.1-8b", "qwen2-7b-instruct-yarn", "phi-3.5-mini-instruct", "gemma-3-270m"])
def test_the_transformers_adapter_builds_each_configs_rope_type_and_matches_at_short_positions(config, tmp_path,
                                                                                                 capsys):
    """Every rope type through its model config (llama3, yarn with its attention factor divided out,
    longrope at the frequencies of its longest position, per-layer-type Gemma 3): within 2x the float32
    floor at positions 0-7, so layout, frequencies and scaling are read right."""
    from ropetheory.studies import audit
    cfg = audit._config(config)
    ad = adapters.build("transformers", head_dim=0, base=0.0, max_position=2 * cfg["max_position_embeddings"],
                        config=cfg)
    short = rtt.audit_rope(ad.fn, schedule=ad.theta, dtype="float32", layout=ad.layout, framework=ad.framework,
                           positions=np.concatenate([np.arange(8), [2 * cfg["max_position_embeddings"]]]),
                           n_vectors=1)
    assert short.max_floor_ratio[:8].max() <= 2.0, short.verdict()


def test_importing_the_testing_module_needs_no_torch_or_transformers():
    import subprocess
    import sys
    code = "import sys, ropetheory.testing, ropetheory.testing.strategies; " \
           "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


#: stacks whose packages make test does not install (keras-hub pulls TensorFlow, 2.4 GB; litgpt pulls
#: lightning, torchmetrics and jsonargparse): their adapters must then refuse with the install command
NOT_INSTALLED_BY_MAKE_TEST = {"keras-hub": "pip install keras-hub", "litgpt": "pip install litgpt"}


@pytest.mark.parametrize("name", ["mlx", "keras-hub", "litgpt", "gemma-jax"])
def test_each_optional_stack_adapter_matches_at_short_positions_or_names_its_install(name):
    """MLX and Google DeepMind's JAX Gemma library (installed by make test), keras-hub and litgpt: each adapter
    runs when its package is installed and is within 2x its float32 floor at positions 0-7; its diagnosis to
    position 4096 is correct or the float32 angle (the only error a float32 phase leaves). Where a package is
    absent, the adapter refuses naming the command that installs it."""
    try:
        ad = adapters.build(name, head_dim=16, base=1e4, max_position=4096)
    except adapters.MissingDependency as e:
        assert name in NOT_INSTALLED_BY_MAKE_TEST and NOT_INSTALLED_BY_MAKE_TEST[name] in str(e), str(e)
        return
    short = rtt.audit_rope(ad.fn, schedule=ad.theta, dtype="float32", layout=ad.layout, framework=ad.framework,
                           positions=np.arange(8), n_vectors=2)
    assert short.worst_floor_ratio <= 2.0, short.verdict()
    d = rtt.diagnose(ad.fn, schedule=ad.theta, dtype="float32", layout=ad.layout, framework=ad.framework,
                     max_position=4096, n_vectors=1)
    assert d.cls in ("correct", "angle precision"), d.verdict()


@pytest.mark.parametrize("dtype, bits", [(np.float32, 24), (np.dtype("float16"), 11), (np.float64, 53), ("bf16", 8)])
def test_numpy_dtypes_are_accepted_where_the_message_says_they_are(dtype, bits):
    assert rtt.unit_roundoff(dtype) == 2.0 ** -bits
