"""Capture from real transformers models (random weights, no download) and analyse the keys."""
import json

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from ropetheory import spectra
from ropetheory.models.analyze import analyze_dump, hf_to_interleaved, main as analyze_main
from ropetheory.models.capture import capture, load_dump, save_dump


def llama(**kw):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **kw)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def ids():
    torch.manual_seed(1)
    return torch.randint(0, 97, (1, 160))


def test_capture_llama_records_every_layer_and_matches_exact_rotation(ids):
    d = capture(llama(), ids)
    assert d["keys_pre"].shape == (2, 2, 160, 16) and d["queries_pre"].shape == (2, 4, 160, 16)
    assert d["meta"]["rotation_check"]["within_bound"]


def test_capture_gpt_neox_partial_rotary(ids):
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
    )
    d = capture(GPTNeoXForCausalLM(cfg).eval(), ids)
    assert d["meta"]["rotary_dim"] == 8 and d["meta"]["rotation_check"]["within_bound"]
    np.testing.assert_array_equal(d["keys_pre"][..., 8:], d["keys_post"][..., 8:])   # pass-through channels


def test_planted_tight_cluster_matches_the_rank1_prediction(ids, tmp_path):
    """Keys forced onto one direction c (bias >> weights): measured FSV ratio == rank-1 theory."""
    m = llama(attention_bias=True)
    c = np.random.default_rng(5).standard_normal(16)
    c /= np.linalg.norm(c)
    with torch.no_grad():
        for layer in m.model.layers:
            att = layer.self_attn
            att.k_proj.weight.mul_(1e-6)
            att.k_proj.bias.copy_(torch.tensor(np.tile(c * 5.0, 2), dtype=torch.float32))
    d = capture(m, ids)
    res = analyze_dump(d)
    for r in res["heads"]:
        assert r["pc1_var"] > 0.9999
        np.testing.assert_allclose(r["rho_measured"], r["rho_predicted"], atol=1e-4)
    # the prediction is the closed-form curve of 1 c^T in ropetheory's layout
    theta = np.asarray(d["meta"]["theta"])
    ref = spectra.rank1_curve(theta, hf_to_interleaved(c, 16), res["grid"])["rho"]
    np.testing.assert_allclose(res["heads"][0]["rho_predicted"], ref, atol=1e-6)
    p = save_dump(d, tmp_path / "keys.npz")
    assert analyze_main([str(p), "--out", str(tmp_path / "a")]) == 0
    rows = json.loads((tmp_path / "a" / "analysis.json").read_text())["heads"]
    assert len(rows) == 4 and (tmp_path / "a" / "fig4_fsv.png").stat().st_size > 10_000


def test_model_without_rope_is_refused(ids):
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=32, n_layer=1, n_head=2, n_positions=256)).eval()
    with pytest.raises(ValueError, match="does not use RoPE|no usable RoPE"):
        capture(gpt2, ids)


def test_bad_dump_files_are_named(tmp_path, ids):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(ValueError, match="is not a key dump: missing"):
        load_dump(p)
    q = tmp_path / "y.npz"
    q.write_text("not a zip")
    with pytest.raises(ValueError, match="is not a key dump"):
        load_dump(q)
    d = capture(llama(), ids[:, :20])
    d["meta"]["head_dim"] = 32
    save_dump(d, tmp_path / "z.npz")
    with pytest.raises(ValueError, match=r"keys_pre has shape .* expected \(layers, heads, n, 32\)"):
        load_dump(tmp_path / "z.npz")
