"""Hugging Face rope types: ropetheory's frequencies == transformers' own functions (live cross-check)."""
import contextlib
import json
import math

import numpy as np
import pytest

from ropetheory.schedules import hf as rt_types

import torch  # noqa: E402  (the test extra installs it; a missing install fails here, it never skips)
from transformers import GPTNeoXConfig, LlamaConfig  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding  # noqa: E402

#: transformers in float64 (its float32 dtype patched) vs ours: same formula, same order
F64_RTOL = 1e-12
#: vs transformers' real float32 output: the exponent 2k/d is rounded to float32 (relative 2^-24),
#: which moves base^x by x ln(base) 2^-24 <= 13.2 * 6e-8 = 7.9e-7 for base 5e5; the power, the
#: reciprocal and the factor add a few float32 ulps (6e-8 each): 2e-6 covers both with margin
F32_RTOL = 2e-6


@contextlib.contextmanager
def torch_float64():
    """Make transformers' hard-coded float32 (torch.float, torch.float32, Tensor.float) mean float64."""
    saved = (torch.float, torch.float32, torch.Tensor.float)
    torch.float = torch.float64
    torch.float32 = torch.float64
    torch.Tensor.float = torch.Tensor.double
    try:
        yield
    finally:
        torch.float, torch.float32, torch.Tensor.float = saved


def hf_frequencies(cfg_dict, seq_len, f64):
    rp = cfg_dict["rope_parameters"]
    kw = {k: v for k, v in cfg_dict.items() if k != "rope_parameters"}
    ctx = torch_float64() if f64 else contextlib.nullcontext()
    with ctx:
        if rp["rope_type"] == "default":
            conf = GPTNeoXConfig(**kw, rope_parameters=dict(rp))
            inv, att = GPTNeoXRotaryEmbedding.compute_default_rope_parameters(conf)
        else:
            conf = LlamaConfig(**kw, rope_parameters=dict(rp))
            inv, att = ROPE_INIT_FUNCTIONS[rp["rope_type"]](conf, "cpu", seq_len=seq_len)
    if f64:
        assert inv.dtype == torch.float64
    return inv.numpy().astype(np.float64), float(att)


def _cases():
    out = []
    for hd in (128, 80):
        for theta in (1e4, 5e5):
            for prf in (1.0, 0.5):
                base = dict(head_dim=hd, hidden_size=hd * 8, num_attention_heads=8, max_position_embeddings=8192)
                dim = int(hd * prf)
                n = len(range(0, dim, 2))
                rp0 = dict(rope_theta=theta, partial_rotary_factor=prf)
                specs = {
                    "default": [dict()],
                    "linear": [dict(factor=4.0)],
                    "proportional": [dict(factor=1.0), dict(factor=2.0)],
                    "dynamic": [dict(factor=4.0)],
                    "yarn": [
                        dict(factor=4.0, original_max_position_embeddings=8192),
                        dict(
                            factor=8.0,
                            original_max_position_embeddings=4096,
                            beta_fast=16,
                            beta_slow=2,
                            mscale=0.707,
                            mscale_all_dim=0.707,
                            truncate=False,
                        ),
                    ],
                    "longrope": [
                        dict(
                            short_factor=list(np.linspace(1.0, 1.5, n)),
                            long_factor=list(np.linspace(1.0, 6.0, n)),
                            original_max_position_embeddings=4096,
                        )
                    ],
                    "llama3": [
                        dict(
                            factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
                        )
                    ],
                }
                for rtype, extra in specs.items():
                    for e in extra:
                        lens = [None]
                        if rtype == "dynamic":
                            lens = [4096, 8192, 32768]
                        if rtype == "longrope":
                            lens = [2048, 4096, 4097, 16384]
                        for L in lens:
                            cfg = dict(base, rope_parameters=dict(rope_type=rtype, **rp0, **e))
                            out.append(pytest.param(cfg, L, id=f"{rtype}-hd{hd}-b{theta:g}-prf{prf}-{len(e)}-L{L}"))
    return out


CASES = _cases()


def _inv_freq(sched, ref_inv):
    """transformers' ``inv_freq`` inside a schedule: its first ``len(ref_inv)`` planes, NoPE (0) after."""
    assert not sched.theta[len(ref_inv):].any()
    return sched.theta[:len(ref_inv)]


@pytest.mark.parametrize("cfg,seq_len", CASES)
def test_inv_freq_and_attention_factor_match_transformers_in_float64(cfg, seq_len):
    ours = rt_types.frequencies_from_config(cfg, seq_len=seq_len)
    ref_inv, ref_att = hf_frequencies(cfg, seq_len, f64=True)
    np.testing.assert_allclose(_inv_freq(ours, ref_inv), ref_inv, rtol=F64_RTOL, atol=0)
    assert math.isclose(ours.attention_factor, ref_att, rel_tol=F64_RTOL)


@pytest.mark.parametrize("cfg,seq_len", CASES)
def test_inv_freq_matches_transformers_float32_within_float32_rounding(cfg, seq_len):
    ours = rt_types.frequencies_from_config(cfg, seq_len=seq_len)
    ref_inv, ref_att = hf_frequencies(cfg, seq_len, f64=False)
    np.testing.assert_allclose(_inv_freq(ours, ref_inv), ref_inv, rtol=F32_RTOL, atol=0)
    assert math.isclose(ours.attention_factor, ref_att, rel_tol=1e-6)


def test_every_globally_registered_rope_type_is_covered():
    assert set(ROPE_INIT_FUNCTIONS) | {"default"} <= set(rt_types.ROPE_TYPES)
    covered = {c.values[0]["rope_parameters"]["rope_type"] for c in CASES}
    assert covered == set(rt_types.ROPE_TYPES)


def test_theta_has_head_dim_planes_with_nope_tail():
    cfg = dict(head_dim=80, rope_parameters=dict(rope_type="default", rope_theta=1e4, partial_rotary_factor=0.5))
    f = rt_types.frequencies_from_config(cfg)
    assert f.theta.shape == (40,) and np.all(f.theta[20:] == 0) and np.all(f.theta[:20] > 0)
    # partial_rotary_factor truncated with int(): 80 * 0.33 = 26.4 -> 26 rotary channels, 13 planes
    cfg["rope_parameters"]["partial_rotary_factor"] = 0.33
    assert rt_types.frequencies_from_config(cfg).rotary_dim == 26


def test_both_spellings_and_a_config_file(tmp_path):
    new = dict(hidden_size=4096, num_attention_heads=32, max_position_embeddings=131072,
               rope_parameters=dict(rope_type="llama3", rope_theta=5e5, factor=8.0, low_freq_factor=1.0,
                                    high_freq_factor=4.0, original_max_position_embeddings=8192))
    old = dict(hidden_size=4096, num_attention_heads=32, max_position_embeddings=131072, rope_theta=5e5,
               rope_scaling=dict(type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                 original_max_position_embeddings=8192))
    p = tmp_path / "config.json"
    p.write_text(json.dumps(old))
    a = rt_types.frequencies_from_config(new)
    b = rt_types.frequencies_from_config(old)
    c = rt_types.frequencies_from_config(str(p))
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.theta, c.theta)
    assert a.head_dim == 128


def test_schedule_cli_prints_frequencies_and_attention_factor(tmp_path, capsys):
    from ropetheory.cli import main
    p = tmp_path / "config.json"
    p.write_text(json.dumps(dict(head_dim=128, max_position_embeddings=4096,
                                 rope_scaling=dict(rope_type="yarn", factor=4.0, rope_theta=1e4))))
    assert main(["schedule", "--config", str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["theta"]) == 64 and math.isclose(out["attention_factor"], 0.1 * math.log(4) + 1)


@pytest.mark.parametrize(
    "cfg, match",
    [
        (dict(head_dim=64, rope_scaling=dict(rope_type="linear")), "needs key 'factor'"),
        (
            dict(head_dim=64, rope_scaling=dict(rope_type="linear", factor=0.0)),
            "'factor' must be a finite number > 0, got 0.0",
        ),
        (
            dict(head_dim=64, rope_scaling=dict(rope_type="linear", factor="4")),
            "'factor' must be a finite number > 0, got '4'",
        ),
        (dict(head_dim=64, rope_scaling=dict(rope_type="ntk-by-parts")), "unknown rope_type 'ntk-by-parts'; known: "),
        (
            dict(
                head_dim=64,
                rope_scaling=dict(
                    rope_type="longrope",
                    short_factor=[1.0] * 3,
                    long_factor=[1.0] * 32,
                    original_max_position_embeddings=2048,
                ),
            ),
            "'short_factor' must be a list of 32 numbers .* got 3",
        ),
        (
            dict(head_dim=63, rope_scaling=dict(rope_type="default")),
            "'head_dim' must be a positive even integer, got 63",
        ),
        (dict(rope_scaling=dict(rope_type="default")), "needs 'head_dim' or both"),
        (dict(head_dim=64, rope_scaling=dict(rope_type="dynamic", factor=2.0)), "needs max_position_embeddings"),
        (dict(head_dim=64, rope_theta=-1.0), "'rope_theta' must be a finite number > 0, got -1.0"),
        (
            dict(
                head_dim=64,
                rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0),
            ),
            "needs key 'original_max_position_embeddings'",
        ),
        (dict(head_dim=64, rope_parameters=dict(full_attention=dict(rope_type="default"))), "pass layer_type"),
        (dict(head_dim=64, rope_scaling=[1, 2]), "must be a dict, got \\[1, 2\\]"),
    ],
)
def test_malformed_config_names_key_and_value(cfg, match):
    with pytest.raises((ValueError, TypeError), match=match):
        rt_types.frequencies_from_config(cfg, seq_len=100)


def test_malformed_config_file_is_named(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("{'rope_theta': 1e4")
    with pytest.raises(ValueError, match="config: .*config.json.* is not valid JSON"):
        rt_types.frequencies_from_config(str(p))
