"""The one attention hook: the model's numbers unchanged under it, q/k pre- and post-RoPE as the layer
had them, the chunked capture through the current cache API, and the model restored afterwards."""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from ropetheory.models.capture import capture
from ropetheory.models.forward import capture_streams, chunk_nll
from ropetheory.models.hook import attention_hook, eager

#: the pre-RoPE vectors come from inverting transformers' float32 rotation in float64: one float32
#: rounding of the rotated value, relative to the largest entry (2^-24 per product, two products)
PRE_ROPE_REL = 2.0 ** -22


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def ids():
    torch.manual_seed(1)
    return torch.randint(0, 97, (1, 96))


def test_the_hook_leaves_the_models_logits_bit_for_bit_unchanged_and_restores_it(ids):
    m = tiny_llama()
    with torch.no_grad():
        ref = m(input_ids=ids).logits
        with attention_hook(m, lambda call: None):
            assert m.config._attn_implementation == "ropetheory"
            got = m(input_ids=ids).logits
    assert torch.equal(ref, got)
    assert m.config._attn_implementation == "sdpa"
    assert not any(m._forward_pre_hooks for m in m.modules())


def test_the_eager_path_without_edits_equals_the_model_within_float32(ids):
    """``eager`` (float64 logits) against the model's own sdpa (float32): the same attention."""
    m = tiny_llama()
    with torch.no_grad():
        ref = m(input_ids=ids).logits
        with attention_hook(m, eager, eager_mask=True):
            got = m(input_ids=ids).logits
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_captured_q_k_are_what_the_layers_rope_took_and_returned(ids, monkeypatch):
    """The reference is recorded by wrapping transformers' ``apply_rotary_pos_emb`` here, in the test."""
    m = tiny_llama()
    mod = sys.modules[type(m).__module__]
    real, seen = mod.apply_rotary_pos_emb, []

    def wrapped(q, k, cos, sin, *a, **kw):
        qo, ko = real(q, k, cos, sin, *a, **kw)
        seen.append([t[0].detach().numpy() for t in (q, k, qo, ko)])
        return qo, ko
    monkeypatch.setattr(mod, "apply_rotary_pos_emb", wrapped)
    d = capture(m, ids)
    for i, name in enumerate(("queries_pre", "keys_pre", "queries_post", "keys_post")):
        want = np.stack([s[i] for s in seen])
        if name.endswith("post"):
            np.testing.assert_array_equal(d[name], want)
        else:
            np.testing.assert_allclose(d[name], want, rtol=0, atol=PRE_ROPE_REL * np.abs(want).max())


def test_the_chunked_capture_uses_the_cache_api_without_deprecation_warnings_and_the_same_loss(ids):
    m = tiny_llama()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        cap = capture_streams(m, ids[0].tolist(), L=32, tokens_per_pass=40)
    want = np.zeros(ids.shape[1] - 1)
    cache = DynamicCache(config=m.config)
    with torch.no_grad():                                                # the same chunks, no hook
        for s in range(0, ids.shape[1], 40):
            e = min(ids.shape[1], s + 40)
            chunk_nll(m(input_ids=ids[:, s:e], cache=cache, position_ids=torch.arange(s, e)[None]).logits, ids, s,
                      want)
    np.testing.assert_array_equal(cap["nll"], want)


def test_bad_handlers_and_models_without_rope_are_refused():
    m = tiny_llama()
    with pytest.raises(TypeError, match="handler"), attention_hook(m, 3):
        pass
    with pytest.raises(TypeError, match="model"), attention_hook(object(), lambda c: None):
        pass
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=32, n_layer=1, n_head=2, n_positions=64)).eval()
    with pytest.raises(ValueError, match="does not use RoPE"), attention_hook(gpt2, lambda c: None):
        pass
    with attention_hook(m, lambda c: None), pytest.raises(ValueError, match="do not nest"), \
            attention_hook(m, lambda c: None):
        pass
    assert m.config._attn_implementation == "sdpa"


def test_the_eager_path_refuses_a_layer_whose_attention_it_would_not_reproduce(ids):
    """Gemma 2 soft-caps its logits through the attention function's ``softcap``: refused, not ignored."""
    m = tiny_llama()

    def capped(call):
        call.extra["softcap"] = 50.0
        return eager(call)
    with pytest.raises(ValueError, match=r"passes \['softcap'\]"), attention_hook(m, capped, eager_mask=True), \
            torch.no_grad():
        m(input_ids=ids[:, :8])
    assert m.config._attn_implementation == "sdpa"


class _Cache:
    def __init__(self):
        self.n = 0

    def get_seq_length(self):
        return self.n


class _PastKeyValuesModel:
    """A model of an earlier transformers 5.x: the cache keyword is ``past_key_values``."""

    def forward(self, input_ids, past_key_values=None, use_cache=None, position_ids=None, **kwargs):
        if past_key_values is not None:
            past_key_values.n += input_ids.shape[1]
        return "logits"

    def __call__(self, **kwargs):
        return self.forward(**kwargs)


class _CacheDroppingModel(_PastKeyValuesModel):
    """A model that drops a keyword it does not know, the cache among them."""

    def forward(self, input_ids, use_cache=None, position_ids=None, **kwargs):
        return "logits"


def test_the_chunked_forward_gives_the_cache_under_the_keyword_the_model_reads_and_checks_it_was_used():
    import torch
    from ropetheory.models.forward import cached_forward
    ids = torch.arange(8)[None]
    cache = _Cache()
    cached_forward(_PastKeyValuesModel(), ids, 0, 4, cache)
    cached_forward(_PastKeyValuesModel(), ids, 4, 8, cache)
    assert cache.n == 8
    with pytest.raises(RuntimeError, match="did not use it"):
        cached_forward(_CacheDroppingModel(), ids, 0, 4, _Cache())
