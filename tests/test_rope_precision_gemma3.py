"""The exact rotary on Gemma 3 (issue #38 items 3-4): its rotary embedding holds one frequency set per layer
type (``sliding_attention``: base 1e4; ``full_attention``: base 1e6 with linear factor 8 in this config) and
is called with the layer type. Each layer type gets its own exact table, reduced once and reused; a float32
model under it stays within float32 rounding of a float64 reference built here from the config's formula,
while transformers' own float32 angles drift where their error bound grows."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from transformers import DynamicCache, Gemma3ForCausalLM, Gemma3TextConfig

from ropetheory.core.errors import BadValue
from ropetheory.models.forward import cached_forward
from ropetheory.models.rope_precision import (_exact_tables, exact_tables, precision_cost, rotary_frequencies,
                                              rotary_layer_types, rotary_precision)
from ropetheory.testing import exact_cos_sin

#: a float32 value carries one rounding of 2^-24 relative; cos and sin are at most the attention factor (1)
FLOAT32_ROUNDING = 2.0 ** -24
#: bfloat16 keeps 8 significant bits: one rounding is at most 2^-9 relative
BF16_ROUNDING = 2.0 ** -9
N = 4096
HEAD_DIM = 16
SLIDING_BASE, FULL_BASE, FULL_FACTOR = 1e4, 1e6, 8.0
#: the frequencies each layer type should rotate by, written out from the config's formula (not read from
#: ropetheory's registry, which is what is under test): base^(-2k/d), and for the linear type divided by
#: the factor
THETA = {"sliding_attention": SLIDING_BASE ** (-np.arange(0, HEAD_DIM, 2) / HEAD_DIM),
         "full_attention": FULL_BASE ** (-np.arange(0, HEAD_DIM, 2) / HEAD_DIM) / FULL_FACTOR}
#: Gemma 3 normalises q and k (RMSNorm, weight stored as ``1 + w``) before rotating them: at init every
#: logit is about ``query_pre_attn_scalar^-1/2 sqrt(d)`` in size and the attention nearly uniform, which
#: hides any angle error; the norms' gain is set to this so the attention is sharp and the logits depend on
#: the angles
GAIN = 4.0
#: float32 rounding carried through two layers of the tiny model (logits below 1, a few hundred roundings of
#: 2^-24 relative on the way; 1.6e-6 measured): the exact rotary's logits stay within this of the float64
#: reference
LOGIT_ROUNDING = 1e-5
#: over the first positions ``p theta 2^-24`` is below one float32 rounding, so transformers' own angles and
#: the exact ones agree there up to rounding of the same size
EARLY, EARLY_ROUNDING = 32, 1e-5
#: a KL divergence computed from float32 log-probabilities carries their rounding (a few 2^-24 per term,
#: summed over a 97-token vocabulary): below this it is rounding, and it may be slightly negative
KL_ROUNDING = 1e-6


def tiny_gemma3(dtype=torch.float32, layers: int = 2) -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=HEAD_DIM,
                           max_position_embeddings=N, sliding_window=64,
                           layer_types=["sliding_attention", "full_attention"] * (layers // 2),
                           rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": SLIDING_BASE},
                                            "full_attention": {"rope_type": "linear", "rope_theta": FULL_BASE,
                                                               "factor": FULL_FACTOR}})
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.fill_(GAIN - 1)
            layer.self_attn.k_norm.weight.fill_(GAIN - 1)
    return model.to(dtype)


def _tables(model, mode, layer_type):
    pos = torch.arange(N)[None]
    x = torch.zeros(1, dtype=next(model.parameters()).dtype)
    with torch.no_grad(), rotary_precision(model, mode):
        return model.model.rotary_emb(x, pos, layer_type)


def _half(table):
    """transformers' layout repeats each plane's value in both halves: the planes."""
    return table[0, :, : HEAD_DIM // 2].double().numpy()


def test_the_registry_gives_each_layer_type_its_own_frequencies_and_factor():
    m = tiny_gemma3()
    rot = m.model.rotary_emb
    assert set(rotary_layer_types(rot)) == set(THETA)
    for layer_type, want in THETA.items():
        theta, factor = rotary_frequencies(m, rot, layer_type)
        np.testing.assert_allclose(theta, want, rtol=1e-15)
        assert factor == 1.0
    with pytest.raises(BadValue, match="layer_type"):
        rotary_frequencies(m, rot, None)


@pytest.mark.parametrize("layer_type", sorted(THETA))
def test_each_layer_type_gets_its_own_float64_tables_rounded_once(layer_type):
    m = tiny_gemma3()
    cos, sin = _tables(m, "exact", layer_type)
    c, s = exact_cos_sin(THETA[layer_type], np.arange(N))
    assert np.max(np.abs(_half(cos) - c)) <= FLOAT32_ROUNDING
    assert np.max(np.abs(_half(sin) - s)) <= FLOAT32_ROUNDING
    other, _ = exact_cos_sin(THETA[({*THETA} - {layer_type}).pop()], np.arange(N))
    assert np.max(np.abs(_half(cos) - other)) > 0.1                # the other layer type's table is far off
    own, _ = _tables(m, "transformers", layer_type)
    # transformers' float32 angle p * inv_freq errs by up to ~p theta 2^-24: far above one rounding at the end
    assert np.max(np.abs(_half(own)[-512:] - c[-512:])) > 16 * FLOAT32_ROUNDING
    bf, _ = _tables(m, "bf16-cache", layer_type)
    err = np.max(np.abs(_half(bf) - c))
    assert FLOAT32_ROUNDING < err <= BF16_ROUNDING


@contextlib.contextmanager
def reference_rotary(model):
    """The rotary replaced by float64 cos and sin of the exactly reduced angles (``ropetheory.testing``'s
    reference reduction, uncompiled) of the frequencies written out in ``THETA`` for the layer type it is
    called with: a reference that does not go through ``rotary_precision``."""
    def hook(module, args, kwargs, output):
        pos = args[1][0].numpy()
        c, s = exact_cos_sin(THETA[args[2]], pos)
        return tuple(torch.as_tensor(np.concatenate((t, t), axis=-1))[None] for t in (c, s))
    h = model.model.rotary_emb.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        h.remove()


def test_a_float32_gemma3_under_the_exact_rotary_stays_near_the_float64_reference_and_transformers_drifts():
    ids = torch.randint(0, 97, (1, N), generator=torch.Generator().manual_seed(1))
    ref_model = tiny_gemma3(torch.float64)
    m = tiny_gemma3()
    with torch.no_grad():
        with reference_rotary(ref_model):
            ref = ref_model(input_ids=ids).logits
        with rotary_precision(m, "exact"):
            exact = m(input_ids=ids).logits.double()
        own = m(input_ids=ids).logits.double()
    late = slice(N - 512, N)
    e_exact = float((exact[0, late] - ref[0, late]).abs().max())
    e_own = float((own[0, late] - ref[0, late]).abs().max())
    assert e_exact < LOGIT_ROUNDING
    assert e_own > 10 * e_exact                                     # the angle error, grown with position
    early = slice(0, EARLY)
    assert float((own[0, early] - exact[0, early]).abs().max()) < EARLY_ROUNDING


def test_one_table_per_layer_type_is_built_once_and_reused_by_every_layer_and_chunk():
    m = tiny_gemma3(layers=4)                                       # two layers of each type
    ids = torch.randint(0, 97, (1, 1536))
    with torch.no_grad(), rotary_precision(m, "exact"):
        m(input_ids=ids)
        tables = exact_tables(m)
        kv = DynamicCache(config=m.config)
        for s in range(0, 1536, 512):
            cached_forward(m, ids, s, s + 512, kv)
    assert sorted(t.layer_type for t in tables) == sorted(THETA)
    assert exact_tables(m) == tables and all(t.builds == 1 for t in tables)
    for t in tables:
        np.testing.assert_array_equal(t.theta, rotary_frequencies(m, m.model.rotary_emb, t.layer_type)[0])
    with torch.no_grad(), rotary_precision(m, "bf16-cache"):
        m(input_ids=ids[:, :10])                                     # another mode: a table per layer type
    assert len(exact_tables(m)) == 4 and all(t.builds == 1 for t in tables)


@contextlib.contextmanager
def per_call_tables(model, cache_dtype):
    """The exact rotary computed afresh for each call's positions and layer type (no table): the reference the
    cached tables must reproduce bit for bit."""
    rot = model.model.rotary_emb

    def hook(module, args, kwargs, output):
        theta, scaling = rotary_frequencies(model, module, args[2])
        return _exact_tables(args[1], theta, scaling, output[0].dtype, cache_dtype)
    h = rot.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        h.remove()


@pytest.mark.parametrize("mode", ["exact", "bf16-cache"])
def test_the_cached_exact_rotary_gives_gemma3_the_logits_of_per_call_tables_bit_for_bit(mode):
    m = tiny_gemma3()
    ids = torch.randint(0, 97, (1, 1024))
    cache_dtype = torch.bfloat16 if mode == "bf16-cache" else None
    out = {}
    for name, ctx in (("per call", per_call_tables(m, cache_dtype)), ("cached", rotary_precision(m, mode))):
        with torch.no_grad(), ctx:
            out[name] = m(input_ids=ids).logits
    assert torch.equal(out["cached"], out["per call"])


def test_the_exact_rotary_refuses_an_unknown_layer_type_and_frequencies_that_are_not_the_config():
    m = tiny_gemma3()
    rot = m.model.rotary_emb
    with torch.no_grad(), rotary_precision(m, "exact"), pytest.raises(BadValue, match="layer_type"):
        rot(torch.zeros(1), torch.arange(4)[None], "chunked_attention")
    with torch.no_grad():
        rot.full_attention_inv_freq.mul_(2.0)                         # what a retrofit would do
    with pytest.raises(BadValue, match="full_attention"), rotary_precision(m, "exact"):
        pass


def test_the_cost_table_covers_both_layer_types():
    m = tiny_gemma3()
    ids = np.random.default_rng(0).integers(0, 97, 1024)
    rows = precision_cost(m, ids, L=128, tokens_per_pass=512)
    exact = [r for r in rows if r["mode"] == "exact"]
    assert all(r["mean_kl"] == 0 and r["top1_agreement"] == 1 and r["table_error"] <= FLOAT32_ROUNDING
               for r in exact)
    bf = [r for r in rows if r["mode"] == "bf16-cache"]
    assert all(r["mean_kl"] >= -KL_ROUNDING and FLOAT32_ROUNDING < r["table_error"] <= BF16_ROUNDING for r in bf)
    assert all(np.isfinite(r["ppl"]) for r in rows)
