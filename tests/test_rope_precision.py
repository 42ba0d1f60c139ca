"""The exact rotary for transformers models (issue #38 items 3-4): its tables are float64 cos/sin rounded
once; a float32 model under it stays within float32 rounding of a float64 reference, while transformers'
own float32 angles drift where their error bound grows; the cost table compares each mode with exact."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ropetheory.core.errors import BadValue
from ropetheory.core.checks import MAX_ABS_POSITION
from ropetheory.models.rope_precision import (TABLE_BLOCK, _exact_tables, exact_cos_sin_compiled, exact_tables,
                                              forget_exact_tables, precision_cost, rotary_frequencies,
                                              rotary_precision)
from ropetheory.testing import exact_cos_sin

#: a float32 value carries one rounding of 2^-24 relative; cos and sin are at most the attention factor (1)
FLOAT32_ROUNDING = 2.0 ** -24
#: bfloat16 keeps 8 significant bits: one rounding is at most 2^-9 relative
BF16_ROUNDING = 2.0 ** -9
N = 4096
#: a KL divergence computed from float32 log-probabilities carries their rounding (a few 2^-24 per term,
#: summed over a 97-token vocabulary): below this it is rounding, and it may be slightly negative
KL_ROUNDING = 1e-6


def tiny_llama(dtype=torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=N,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return LlamaForCausalLM(cfg).to(dtype).eval()


def _tables(model, mode):
    pos = torch.arange(N)[None]
    x = torch.zeros(1, dtype=next(model.parameters()).dtype)
    with torch.no_grad(), rotary_precision(model, mode):
        return model.model.rotary_emb(x, pos)


def test_the_exact_tables_are_float64_cos_and_sin_rounded_once():
    m = tiny_llama()
    cos, sin = _tables(m, "exact")
    theta = 10000.0 ** (-np.arange(0, 16, 2) / 16)
    c, _ = exact_cos_sin(theta, np.arange(N))
    ref = np.concatenate([c, c], axis=1)
    assert np.max(np.abs(cos[0].double().numpy() - ref)) <= FLOAT32_ROUNDING
    own, _ = _tables(m, "transformers")
    # transformers' float32 angle p * inv_freq errs by up to ~p theta 2^-24: far above one rounding at the end
    assert np.max(np.abs(own[0, -512:].double().numpy() - ref[-512:])) > 16 * FLOAT32_ROUNDING
    bf, _ = _tables(m, "bf16-cache")
    err = np.max(np.abs(bf[0].double().numpy() - ref))
    assert FLOAT32_ROUNDING < err <= BF16_ROUNDING


#: q and k weights scaled so the random model's attention is sharp and its logits depend on the angles (a
#: random model at init attends almost uniformly, which hides any angle error)
SHARPEN = 30.0


def sharp(model):
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(SHARPEN)
            layer.self_attn.k_proj.weight.mul_(SHARPEN)
    return model


def test_a_float32_model_under_the_exact_rotary_stays_near_the_float64_reference_and_transformers_drifts():
    ids = torch.randint(0, 97, (1, N))
    ref_model = sharp(tiny_llama(torch.float64))
    m = sharp(tiny_llama())
    with torch.no_grad():
        with rotary_precision(ref_model, "exact"):
            ref = ref_model(input_ids=ids).logits
        with rotary_precision(m, "exact"):
            exact = m(input_ids=ids).logits.double()
        own = m(input_ids=ids).logits.double()
    late = slice(N - 512, N)
    e_exact = float((exact[0, late] - ref[0, late]).abs().max())
    e_own = float((own[0, late] - ref[0, late]).abs().max())
    assert e_exact < 1e-4                                           # float32 rounding through two layers
    assert e_own > 10 * e_exact                                     # the angle error, grown with position
    early = slice(0, 32)                                            # where p theta 2^-24 is below one rounding
    assert float((own[0, early] - exact[0, early]).abs().max()) < 1e-5


def test_the_rotary_patch_is_removed_after_the_block():
    m = tiny_llama()
    before, _ = _tables(m, "transformers")
    with rotary_precision(m, "bf16-cache"):
        pass
    assert not m.model.rotary_emb._forward_hooks
    assert "forward" not in m.model.rotary_emb.__dict__           # the class's own forward again
    assert torch.equal(before, _tables(m, "transformers")[0])
    with pytest.raises(BadValue, match="mode"), rotary_precision(m, "float16"):
        pass


def test_the_cost_table_compares_each_mode_with_exact():
    m = tiny_llama()
    ids = np.random.default_rng(0).integers(0, 97, 1024)
    rows = precision_cost(m, ids, L=128, tokens_per_pass=256)
    exact = [r for r in rows if r["mode"] == "exact"]
    assert [(r["start"], r["end"]) for r in exact] == [(0, 128), (128, 256), (256, 512), (512, 1023)]
    assert all(r["mean_kl"] == 0 and r["top1_agreement"] == 1 for r in exact)
    bf = [r for r in rows if r["mode"] == "bf16-cache"]
    assert all(r["mean_kl"] >= -KL_ROUNDING and r["table_error"] > FLOAT32_ROUNDING for r in bf)
    assert all(np.isfinite(r["ppl"]) for r in rows)
    with pytest.raises(BadValue, match="first mode"):
        precision_cost(m, ids, L=128, modes=("transformers",))


#: float64 logits of the same float32 vectors summed in another order: a few ulps of |q| |k| scaling
LOGIT_REORDER_REL = 1e-12
#: the post-RoPE q and k are rounded to float32 in each mode: a logit carries a few 2^-24 of |q| |k| scaling
#: beside the tables' own error (64 such roundings is generous for head_dim 16)
LOGIT_F32_SLACK = 64 * FLOAT32_ROUNDING


def _sampled_logits(m, ids, mode, edges, cuts):
    """Each mode run alone: ``{(pass, layer, range): S}`` of the pass's last query in each range it overlaps,
    with the largest |q| and |k| seen, computed here independently of ``precision_cost``."""
    from ropetheory.models.forward import chunked_passes
    from ropetheory.models.hook import attention_hook
    rows, norms, cur = {}, [0.0, 0.0], {}

    def grab(call):
        s, e = cur["pass"]
        for r, (a, b) in enumerate(edges):
            if s < b and e > a:
                j = min(e, b) - 1 - s
                q = call.query[:, j].double()                               # (Hq, d)
                k = call.key[:, call.visible()[j]].double()                 # (Hkv, n, d)
                kk = k.repeat_interleave(call.groups, dim=0)
                rows[(s, call.layer, r)] = torch.einsum("hd,hnd->hn", q, kk) * call.scaling
                norms[0] = max(norms[0], float(q.norm(dim=-1).max()))
                norms[1] = max(norms[1], float(k.norm(dim=-1).max()))

    x = torch.as_tensor(ids)[None]
    with torch.no_grad(), attention_hook(m, grab), rotary_precision(m, mode):
        gen = chunked_passes(m, x, cuts)
        for s, e in zip(cuts[:-1], cuts[1:], strict=True):
            cur["pass"] = (s, e)
            next(gen)
    return rows, norms


@pytest.mark.parametrize("layers", [1, 2])
def test_the_attention_logit_error_is_what_each_mode_alone_gives_and_one_layer_keeps_the_table_bound(layers):
    """``logit_error``: zero for ``exact``; for the others the largest |S - S_exact| over the sampled rows,
    as recomputed from each mode run alone; with one layer (nothing upstream differs) within the bound the
    tables' error gives, ``|q| |k| scaling (4 eps + 4 eps^2)``, eps the two tables' combined error."""
    from ropetheory.models.forward import pass_edges
    m = sharp(tiny_llama())
    m.model.layers = m.model.layers[:layers]
    m.config.num_hidden_layers = layers
    ids = np.random.default_rng(2).integers(0, 97, 512)
    rows = precision_cost(m, ids, L=64, tokens_per_pass=96)
    edges = sorted({(r["start"], r["end"]) for r in rows})
    cuts = pass_edges(ids.size, 96)
    ref, norms = _sampled_logits(m, ids, "exact", edges, cuts)
    te = {(r["mode"], r["start"]): r["table_error"] for r in rows}
    for r in rows:
        if r["mode"] == "exact":
            assert r["logit_error"] == 0.0
            continue
        got, _ = _sampled_logits(m, ids, r["mode"], edges, cuts)
        i = edges.index((r["start"], r["end"]))
        want = max(float((got[key] - ref[key]).abs().max()) for key in ref if key[2] == i)
        scale = norms[0] * norms[1] * m.model.layers[0].self_attn.scaling
        assert r["logit_error"] == pytest.approx(want, rel=LOGIT_REORDER_REL, abs=LOGIT_REORDER_REL * scale)
        assert r["logit_error"] > 0
        if layers == 1:
            eps = te[(r["mode"], r["start"])] + te[("exact", r["start"])]
            assert r["logit_error"] <= scale * (4 * eps + 4 * eps ** 2 + LOGIT_F32_SLACK), r


def test_the_modes_run_in_lockstep_give_the_numbers_of_each_mode_run_alone():
    from ropetheory.models.forward import chunked_passes, pass_edges
    m = sharp(tiny_llama())
    ids = np.random.default_rng(1).integers(0, 97, 1024)
    rows = precision_cost(m, ids, L=128, tokens_per_pass=256)
    x = torch.as_tensor(ids)[None]
    alone = {}
    for mode in ("exact", "transformers", "bf16-cache"):
        with torch.no_grad(), rotary_precision(m, mode):
            logits = torch.cat([out.logits[0] for _, _, out in chunked_passes(m, x, pass_edges(1024, 256))])
        alone[mode] = torch.log_softmax(logits.float(), -1)[:-1]
    tgt = x[0, 1:, None]
    for r in rows:
        a, b = r["start"], r["end"]
        logp = alone[r["mode"]][a:b]
        nll = -logp.gather(1, tgt[a:b])[:, 0].double().numpy()
        assert r["ppl"] == float(np.exp(nll.mean()))
        ref = alone["exact"][a:b].double()
        kl = (ref.exp() * (ref - logp.double())).sum(-1).numpy()
        assert r["mean_kl"] == float(kl.mean())
        assert r["top1_agreement"] == float((alone["exact"][a:b].argmax(-1) == logp.argmax(-1)).double().mean())
    assert any(r["mean_kl"] > KL_ROUNDING for r in rows if r["mode"] == "bf16-cache")


def test_the_exact_table_is_built_once_per_model_and_reused_across_calls_and_blocks():
    m = tiny_llama()
    rot = m.model.rotary_emb
    x = torch.zeros(1)
    assert exact_tables(m) == []
    with torch.no_grad(), rotary_precision(m, "exact"):
        rot(x, torch.arange(100)[None])
        (table,) = exact_tables(m)
        cos = table.cos
        rot(x, torch.arange(50, 150)[None])
    with torch.no_grad(), rotary_precision(m, "exact"):
        rot(x, torch.arange(TABLE_BLOCK)[None])
    assert exact_tables(m) == [table] and table.builds == 1 and table.cos is cos
    assert len(table) == TABLE_BLOCK
    with torch.no_grad(), rotary_precision(m, "exact"):
        rot(x, torch.tensor([[TABLE_BLOCK]]))                      # one position past the table
    assert table.builds == 2 and len(table) == 2 * TABLE_BLOCK
    with torch.no_grad(), rotary_precision(m, "exact"):
        rot(x.to(torch.bfloat16), torch.arange(10)[None])          # another dtype: its own table
    with torch.no_grad(), rotary_precision(m, "bf16-cache"):
        rot(x, torch.arange(10)[None])                             # another mode: its own table
    assert len(exact_tables(m)) == 3 and table.builds == 2
    forget_exact_tables(m)
    assert exact_tables(m) == []


def test_the_exact_rotary_refuses_frequencies_it_cannot_keep_or_that_are_not_the_config():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=N,
                      rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0})
    with pytest.raises(BadValue, match="dynamic"), rotary_precision(LlamaForCausalLM(cfg), "exact"):
        pass
    m = tiny_llama()
    with torch.no_grad():
        m.model.rotary_emb.attention_scaling = 2.0                    # what a retrofit to YaRN would change
    with pytest.raises(BadValue, match="attention_scaling"), rotary_precision(m, "bf16-cache"):
        pass
    with pytest.raises(BadValue, match="rotary embedding"), rotary_precision(torch.nn.Linear(2, 2), "exact"):
        pass


def test_the_exact_table_refuses_negative_positions():
    m = tiny_llama()
    with torch.no_grad(), rotary_precision(m, "exact"), pytest.raises(BadValue, match="position_ids"):
        m.model.rotary_emb(torch.zeros(1), torch.tensor([[-1, 0]]))


@contextlib.contextmanager
def per_call_tables(model, cache_dtype):
    """The exact rotary computed afresh for each call's positions (no table): the reference the cached
    tables must reproduce bit for bit."""
    rot = model.model.rotary_emb
    theta, scaling = rotary_frequencies(model, rot)

    def hook(module, args, kwargs, output):
        pos = kwargs["position_ids"] if "position_ids" in kwargs else args[1]
        return _exact_tables(pos, theta, scaling, output[0].dtype, cache_dtype)
    h = rot.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        h.remove()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["exact", "bf16-cache"])
def test_the_cached_exact_rotary_leaves_the_logits_unchanged_bit_for_bit(mode, dtype):
    from transformers import DynamicCache

    from ropetheory.models.forward import cached_forward
    m = sharp(tiny_llama(dtype))
    ids = torch.randint(0, 97, (1, 1536))
    cache_dtype = torch.bfloat16 if mode == "bf16-cache" else None
    out = {}
    for name, ctx in (("per call", per_call_tables(m, cache_dtype)), ("cached", rotary_precision(m, mode))):
        with torch.no_grad(), ctx:
            whole = m(input_ids=ids).logits
            kv = DynamicCache(config=m.config)
            chunks = [cached_forward(m, ids, s, s + 512, kv).logits for s in range(0, 1536, 512)]
        out[name] = (whole, torch.cat(chunks, dim=1))
    assert torch.equal(out["cached"][0], out["per call"][0])
    assert torch.equal(out["cached"][1], out["per call"][1])
    assert exact_tables(m)[0].builds == 1                            # the whole call built it; chunks reused it


@pytest.mark.parametrize("base, head_dim", [(1e5, 64), (5e5, 128)])
def test_the_compiled_reduction_gives_exact_cos_sin_bit_for_bit(base, head_dim):
    theta = base ** (-np.arange(0, head_dim, 2) / head_dim)
    rng = np.random.default_rng(0)
    pos = np.concatenate([np.arange(32768), rng.integers(-MAX_ABS_POSITION, MAX_ABS_POSITION, 4096)])
    for got, want in zip(exact_cos_sin_compiled(theta, pos), exact_cos_sin(theta, pos), strict=True):
        assert got.dtype == np.float64 and np.array_equal(got, want)


@pytest.mark.parametrize("model, ranges", [("gemma3-270m", 3), ("qwen2.5-coder-1.5b", 2)])
def test_the_readme_quotes_the_committed_precision_cost_per_mode_and_range(model, ranges):
    """The README's "changes x% of top-1 predictions" for float32 angles and a bfloat16 cache are the
    committed ``cost.csv``'s token-weighted means over windows, and its attention-logit errors the worst
    window's per range, to two significant digits."""
    import csv
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    rows = list(csv.DictReader((root / "docs" / "audit" / "precision" / model / "cost.csv").open()))
    readme = " ".join((root / "README.md").read_text().split())
    for mode in ("transformers", "bf16-cache"):
        starts = sorted({int(r["start"]) for r in rows if r["mode"] == mode})
        assert len(starts) == ranges
        for a in starts:
            sel = [r for r in rows if r["mode"] == mode and int(r["start"]) == a]
            n = np.array([int(r["end"]) - a for r in sel], dtype=float)
            changed = np.array([1.0 - float(r["top1_agreement"]) for r in sel]) @ n / n.sum()
            assert f"{float(f'{100 * changed:.2g}')}%" in readme, (model, mode, a, 100 * changed)
        err = [max(float(r["logit_error"]) for r in rows if r["mode"] == mode and int(r["start"]) == a)
               for a in starts]                                     # the logit error, worst window per range
        worst = ", ".join(f"{e:.2g}" for e in err)
        assert worst in readme, (model, mode, worst)
