"""The retrofit (issue #37): only the rotary frequencies change; the control's frequencies give the original
logits; a tiny Llama fine-tunes on CPU, resumes after a real kill with the same weights, and evaluates past
L; the corpus builder is deterministic and never lets a document into both splits."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import ropetheory as rt
from ropetheory.core.errors import BadValue
from ropetheory.models import retrofit as R
from ropetheory.models import retrofit_cli as C
from ropetheory.models import retrofit_eval as E
from ropetheory.models.retrofit_corpus import (Document, build_corpus, check_disjoint, load_corpus, save_corpus,
                                               split_documents)

TESTS = pathlib.Path(__file__).parent
#: the tiny model's training length: short, so that 8L windows and the sink probes stay cheap on a CPU, and
#: long enough for RoPE-ID (train_len / cycles > min_wavelength = 32)
L = 128
VOCAB = 300


def tiny_llama(seed: int = 0, base: float = 10000.0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=L,
                      rope_parameters={"rope_type": "default", "rope_theta": base})
    return LlamaForCausalLM(cfg).eval()


def _docs(n_sources: int = 6, per_source: int = 5, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "rope", "sink", "token", "key", "query", "value"]
    return [Document(f"pkg{s}", f"m{f}.py", " ".join(rng.choice(words, 400)))
            for s in range(n_sources) for f in range(per_source)]


def _encode(texts: list[str]) -> list[list[int]]:
    return [[(ord(c) * 7 + i) % (VOCAB - 1) + 1 for i, c in enumerate(t)] for t in texts]


def _build(docs, **kw):
    kw = {"train_tokens": 20_000, "heldout_tokens": 4 * 8 * L, "heldout_size_range": (1000, 10 ** 6), **kw}
    return build_corpus(docs, _encode, 0, **kw)


def test_retrofit_changes_only_the_rotary_frequencies():
    m = tiny_llama()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    buffers = {k: v.clone() for k, v in m.named_buffers()}
    sched = R.variant_schedule("rope_id", m.config.to_dict())
    info = R.retrofit(m, sched)
    after = m.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    changed = [k for k, v in m.named_buffers() if not torch.equal(buffers[k], v)]
    assert changed and all(k.endswith("inv_freq") for k in changed)
    assert np.array_equal(m.model.rotary_emb.inv_freq.numpy(), np.asarray(sched.theta, dtype=np.float32))
    assert info["modules"] == 1


def test_the_controls_frequencies_give_the_original_logits_bit_for_bit():
    m = tiny_llama()
    ids = torch.randint(0, VOCAB, (1, 3 * L))
    with torch.no_grad():
        ref = m(input_ids=ids).logits
        R.retrofit(m, R.variant_schedule("rope", m.config.to_dict()))
        got = m(input_ids=ids).logits
    assert torch.equal(ref, got)


def test_rope_id_and_half_rope_make_half_the_planes_nope_and_change_the_logits():
    m = tiny_llama()
    cfg = m.config.to_dict()
    own = rt.from_config(cfg).theta
    rid, half = R.variant_schedule("rope_id", cfg), R.variant_schedule("half_rope", cfg)
    P = own.size
    assert np.count_nonzero(rid.theta == 0) == P // 2 and np.count_nonzero(half.theta == 0) == P // 2
    assert np.array_equal(half.theta[: P // 2], own[: P // 2])
    assert rid.theta[0] == pytest.approx(2 * np.pi / 32) and rid.theta[P // 2 - 1] == pytest.approx(4 * np.pi / L)
    ids = torch.randint(0, VOCAB, (1, 2 * L))
    with torch.no_grad():
        ref = m(input_ids=ids).logits
        R.retrofit(m, rid)
        assert not torch.equal(ref, m(input_ids=ids).logits)


def test_yarn_at_inference_is_the_registrys_yarn_with_its_attention_factor():
    m = tiny_llama()
    s = R.variant_schedule("rope+yarn", m.config.to_dict())
    assert s.name == "yarn" and s.attention_factor > 1
    R.retrofit(m, s)
    assert m.model.rotary_emb.attention_scaling == s.attention_factor


def test_retrofit_refuses_a_schedule_of_another_width_or_layout():
    m = tiny_llama()
    with pytest.raises(BadValue, match="planes"):
        R.retrofit(m, rt.schedule("rope", head_dim=32))
    with pytest.raises(BadValue, match="layout"):
        R.retrofit(m, rt.schedule("rope", head_dim=16, layout="interleaved"))


def test_the_length_temperature_leaves_logits_within_L_unchanged_and_scales_them_after():
    m = tiny_llama()
    ids = np.random.default_rng(0).integers(1, VOCAB, 4 * L)
    plain = E.window_pass(m, ids, L=L, temperature=False, tokens_per_pass=L)
    hot = E.window_pass(m, ids, L=L, temperature=True, tokens_per_pass=L)
    np.testing.assert_allclose(hot["nll"][:L - 1], plain["nll"][:L - 1], rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(hot["nll"][2 * L:] - plain["nll"][2 * L:])) > 1e-4


def test_the_chunked_window_pass_gives_the_models_own_loss():
    m = tiny_llama()
    ids = np.random.default_rng(1).integers(1, VOCAB, 3 * L)
    got = E.window_pass(m, ids, L=L, temperature=False, tokens_per_pass=L // 2, probe_at=[L, 2 * L])
    with torch.no_grad():
        x = torch.as_tensor(ids)[None]
        logp = torch.log_softmax(m(input_ids=x).logits[0].float(), -1)
    ref = -logp[:-1].gather(1, x[0, 1:, None])[:, 0].double().numpy()
    np.testing.assert_allclose(got["nll"], ref, rtol=1e-4, atol=1e-5)
    shares = [r["share"] for r in got["heads"]]
    assert len(got["heads"]) == 2 * 2 * 2 and all(0 <= s <= 1 for s in shares)     # layers x kv heads x lengths
    for r in got["heads"]:                                          # the decomposition is exact per row
        assert r["log_odds"] == pytest.approx(r["sink_logit"] - r["others_mean"] - r["dilution"] - r["spread"],
                                              abs=1e-9)


def test_the_corpus_builder_is_deterministic_and_fingerprints_its_arrays(tmp_path):
    a, b = _build(_docs()), _build(_docs())
    assert np.array_equal(a["train"], b["train"]) and a["manifest"] == b["manifest"]
    assert a["manifest"]["heldout_sources"] and a["train"].size == 20_000
    save_corpus(tmp_path, a)
    got = load_corpus(tmp_path)
    assert np.array_equal(got["train"], a["train"])
    raw = bytearray((tmp_path / "train.u16").read_bytes())
    raw[10] ^= 1
    (tmp_path / "train.u16").write_bytes(bytes(raw))
    with pytest.raises(BadValue, match="sha256"):
        load_corpus(tmp_path)


def test_the_corpus_never_repeats_a_document_and_splits_by_source():
    docs = _docs()
    dup = Document("pkg5", "copy.py", docs[0].text)                  # pkg0's text again in another source
    train, held = split_documents([*docs, dup], ["pkg0"])
    assert {d.source for d in held} == {"pkg0"} and "pkg0" not in {d.source for d in train}
    assert docs[0].digest not in {d.digest for d in train}           # held out everywhere it appears
    with pytest.raises(BadValue, match="both splits"):
        check_disjoint([dup], [docs[0]])
    with pytest.raises(BadValue, match="fewer than train_tokens"):
        _build(docs, train_tokens=10 ** 7)


def test_finetune_refuses_to_read_a_token_twice():
    m = tiny_llama()
    cfg = R.FinetuneConfig(steps=4, batch=2, seq_len=L)
    with pytest.raises(BadValue, match="no token may be read twice"):
        R.finetune(m, np.zeros(cfg.tokens - 1, dtype=np.uint16), cfg)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A tiny Llama saved with SmolLM2's tokenizer, and a corpus in the tiny vocabulary."""
    from ropetheory.models.registry import load_tokenizer
    root = tmp_path_factory.mktemp("retrofit")
    m = tiny_llama()
    m.config.vocab_size = VOCAB
    m.save_pretrained(root / "model")
    load_tokenizer("smollm2-135m").save_pretrained(root / "model")
    save_corpus(root / "corpus", _build(_docs()))
    return root


def _argv(root: pathlib.Path, *args: str) -> list[str]:
    return ["retrofit", *args, "--model", str(root / "model"), "--corpus", str(root / "corpus"),
            "--out", str(root / "out")]


def _killed(root: pathlib.Path, fault: str, *args: str) -> subprocess.CompletedProcess:
    """The command in a fresh process that kills itself (``fault_runner``): a real SIGKILL."""
    return subprocess.run([sys.executable, str(TESTS / "fault_runner.py"), fault, *_argv(root, *args)],
                          capture_output=True, text=True, timeout=600)


def _run(root: pathlib.Path, *args: str) -> int:
    """The command in this process (its imports are paid once per test session)."""
    from ropetheory import cli
    return cli.main(_argv(root, *args))


def test_a_killed_finetune_resumes_to_the_same_weights_as_an_uninterrupted_one(tiny_setup, tmp_path):
    from safetensors.numpy import load_file
    root = tiny_setup
    train = ["train", "--variant", "rope_id", "--steps", "6", "--batch", "2", "--seq-len", str(L),
             "--warmup", "2", "--checkpoint-every", "0"]
    killed = _killed(root, "SIGKILL:3", *train)
    assert killed.returncode == -9, killed.stderr
    folder = root / "out" / "model" / "rope_id"
    assert (folder / "checkpoint.npz").exists() and not (folder / "model.safetensors").exists()
    assert _run(root, *train) == 0
    resumed = load_file(folder / "model.safetensors")
    log = json.loads((folder / "train.json").read_text())
    assert [r["step"] for r in log["log"]] == list(range(1, 7))
    # the same fine-tune without a kill, in this process
    m = tiny_llama()
    R.retrofit(m, R.variant_schedule("rope_id", m.config.to_dict()))
    corpus = load_corpus(root / "corpus")
    R.finetune(m, corpus["train"], R.FinetuneConfig(steps=6, batch=2, seq_len=L, warmup=2))
    for k, v in m.state_dict().items():
        if k in resumed:
            assert np.array_equal(resumed[k], v.numpy()), k
    assert _run(root, "evaluate", "--variant", "rope_id+temp", "--passkey-trials", "0") == 0
    res = json.loads((root / "out" / "model" / "eval-rope_id+temp.json").read_text())
    ranges = res["windows"][0]["ranges"]
    assert [(r["start"], r["end"]) for r in ranges][:4] == [(L // 2, L), (L, 2 * L), (2 * L, 4 * L), (4 * L, 8 * L)]
    assert all(np.isfinite(r["ppl"]) and r["ppl"] > 1 for r in ranges)
    assert {r["n"] for r in res["heads"]} == {L, 2 * L, 4 * L, 8 * L}
    # the fine-tuned keys' geometry over the first held-out window of 8L, with the frequencies retrofitted
    assert _run(root, "geometry", "--variant", "rope_id", "--tokens-per-pass", str(2 * L)) == 0
    geo = json.loads((root / "out" / "model" / "geometry-rope_id.json").read_text())
    assert len(geo["heads"]) == 2 * 2 and geo["n"] == 8 * L and geo["variant"] == "rope_id"
    assert all(h["rotation_within_bound"] for h in geo["heads"])
    assert {L, 2 * L, 4 * L, 8 * L} <= set(geo["grid"])
    from ropetheory.models.retrofit_report import geometry_rows, geometry_table
    row, = geometry_rows(root / "out" / "model")
    i = geo["grid"].index(8 * L)
    assert row["fsv_ratio_8L"] == np.median([h["rho_measured"][i] for h in geo["heads"]])
    assert row["C2_heads"] == sum(h["C2"] for h in geo["heads"]) and row["rotation_within_bound"]
    assert "RoPE-ID" in geometry_table([row])


def test_a_retrofitted_capture_passes_its_rotation_check_only_against_the_frequencies_it_was_given():
    from ropetheory.models.forward import capture_streams
    m = tiny_llama()
    sched = R.variant_schedule("rope_id", m.config.to_dict())
    R.retrofit(m, sched)
    ids = list(np.random.default_rng(0).integers(1, VOCAB, 2 * L))
    told = capture_streams(m, ids, L=L, tokens_per_pass=L,
                           schedules=R.retrofitted_schedules(m.config.to_dict(), sched, len(ids)))
    assert all(st.rotation.within_bound for st in told["streams"])
    assert all(np.array_equal(sc["theta"], sched.theta) for sc in told["schedules"])
    config_only = capture_streams(m, ids, L=L, tokens_per_pass=L)
    assert not any(st.rotation.within_bound for st in config_only["streams"])
    with pytest.raises(BadValue, match="schedules has 1 entries, the model 2 layers"):
        capture_streams(m, ids, L=L, schedules=told["schedules"][:1])


def test_the_passkey_prompt_has_the_asked_length_and_the_key_at_its_depth():
    from ropetheory.models.registry import load_tokenizer
    tok = load_tokenizer("smollm2-135m")
    for depth in (0.1, 0.9):
        prompt, answer = E.passkey_prompt(tok, 512, depth, 12345)
        assert len(prompt) + len(answer) == 512
        text = tok.decode(prompt)
        at = text.index("The pass key is 12345")
        assert abs(at / len(text) - depth) < 0.15
        assert tok.decode(answer).strip() == "12345"
    with pytest.raises(BadValue, match="no room"):
        E.passkey_prompt(tok, 40, 0.5, 12345)


def test_documents_are_separated_by_end_of_text_even_where_it_is_also_the_unknown_token():
    from ropetheory.models.registry import load_tokenizer
    tok = load_tokenizer("smollm2-135m")
    assert tok.unk_token == C.END_OF_TEXT                            # SmolLM2 gives it both roles
    assert C.document_separator(tok) == tok.convert_tokens_to_ids(C.END_OF_TEXT)

    class NoEndOfText:
        eos_token_id = 7

        def convert_tokens_to_ids(self, t):
            return 3                                                 # the unknown token's id

        def convert_ids_to_tokens(self, i):
            return "<unk>"
    assert C.document_separator(NoEndOfText()) == 7


@pytest.mark.parametrize("base", [1e4, 1e5])      # 1e5: SmolLM2's; YaRN must be built on the model's own base
def test_the_control_with_yarn_is_transformers_own_yarn(base):
    from transformers import LlamaConfig, LlamaForCausalLM
    m = tiny_llama(base=base)
    cfg = m.config.to_dict()
    yarn = {"rope_type": "yarn", "factor": R.YARN_FACTOR, "original_max_position_embeddings": L, "rope_theta": base}
    hf = LlamaForCausalLM(LlamaConfig(**{**cfg, "rope_parameters": yarn})).eval()
    hf.load_state_dict(m.state_dict())
    R.retrofit(m, R.variant_schedule("rope+yarn", cfg))
    assert m.model.rotary_emb.attention_scaling == pytest.approx(hf.model.rotary_emb.attention_scaling, rel=1e-12)
    ids = torch.randint(0, VOCAB, (1, 4 * L))
    with torch.no_grad():
        a, b = hf(input_ids=ids).logits, m(input_ids=ids).logits
    # both rotate in float32 from float32 frequencies that agree to INV_FREQ_REL: the logits agree to float32
    # rounding of O(1) values through two layers
    assert float((a - b).abs().max()) < 1e-5


COMMITTED = TESTS.parent / "docs" / "models" / "retrofit" / "smollm2-135m"


def test_the_committed_retrofit_table_is_what_the_committed_evaluations_give():
    import csv
    from ropetheory.models.retrofit_report import markdown_table, verdict_rows
    rows = verdict_rows(COMMITTED)
    with open(COMMITTED / "table.csv") as fh:
        saved = list(csv.DictReader(fh))
    assert [r["evaluation"] for r in rows] == [r["evaluation"] for r in saved]
    for got, want in zip(rows, saved, strict=True):
        for k, v in got.items():
            if isinstance(v, float):
                assert float(want[k]) == pytest.approx(v, rel=1e-12), (got["evaluation"], k)
            else:
                assert str(v) == want[k], (got["evaluation"], k)
    table = markdown_table(COMMITTED)
    assert (COMMITTED / "table.md").read_text().strip() == table
    assert table in (TESTS.parent / "docs" / "guide" / "retrofit.md").read_text()


def test_the_committed_geometry_table_is_what_the_committed_analyses_give():
    import csv
    from ropetheory.models.retrofit_report import geometry_rows, geometry_table
    rows = geometry_rows(COMMITTED)
    with open(COMMITTED / "geometry.csv") as fh:
        saved = list(csv.DictReader(fh))
    assert [r["variant"] for r in rows] == [r["variant"] for r in saved] == ["rope", "rope_id", "half_rope"]
    for got, want in zip(rows, saved, strict=True):
        for k, v in got.items():
            assert (float(want[k]) == pytest.approx(v, rel=1e-12)) if isinstance(v, float) else str(v) == want[k]
        assert got["rotation_within_bound"] and got["heads"] == 90
    table = geometry_table(rows)
    assert (COMMITTED / "geometry.md").read_text().strip() == table
    assert table in (TESTS.parent / "docs" / "guide" / "retrofit.md").read_text()


def test_the_decomposition_parts_add_up_to_the_change_and_the_committed_table_is_what_the_evaluations_give():
    from ropetheory.models.retrofit_report import DECOMPOSITION_TERMS, decomposition_rows, decomposition_table
    rows = decomposition_rows(COMMITTED)
    assert len(rows) == 6
    for r in rows:
        # the identity holds per head (theory.sink), so the means' parts add up to the mean change
        assert sum(r[f"from_{t}"] for t in DECOMPOSITION_TERMS) == pytest.approx(r["change"], abs=1e-9)
    # dilution depends on the query positions alone: the same for every evaluation, about -log 8
    assert len({round(r["from_dilution"], 9) for r in rows}) == 1
    assert rows[0]["from_dilution"] == pytest.approx(-np.log(8), rel=1e-2)
    table = decomposition_table(rows)
    assert (COMMITTED / "decomposition.md").read_text().strip() == table
    assert table in (TESTS.parent / "docs" / "guide" / "retrofit.md").read_text()


def test_the_readme_retrofit_row_quotes_the_committed_numbers():
    from ropetheory.models.retrofit_report import summarise, load_results
    evals, _ = load_results(COMMITTED)
    readme = (TESTS.parent / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| RoPE-ID keeps a real model's sink"))
    temp, control = summarise(evals["rope_id+temp"]), summarise(evals["rope"])
    for s, idx in ((temp, (0, 1, 2, 3)), (control, (0, 1, 2, 3))):
        for i in idx:
            v = s["ppl"][i]["mean"]
            assert f"{v:.2g}" in row or f"{v:.1f}" in row or f"{v:.0f}" in row, (s["evaluation"], i, v)
    share = {r["n"] // temp["L"]: r["median_share"] for r in temp["sink"]}
    assert f"{share[1]:.3g}" in row and f"{share[8]:.3g}" in row
    yarn = summarise(evals["rope+yarn"])
    yarn_ppl = "; ".join(f"{r['mean']:.1f}" for r in yarn["ppl"][:4])
    assert f"flat to 8L ({yarn_ppl})" in row
    heads = {r["n"] // yarn["L"]: r["sink_heads"] for r in yarn["sink"]}
    assert f"({heads[1]:.2g} → {heads[8]:.2g})" in row
    # every corpus fingerprint in the results is the committed manifest's
    manifest = json.loads((COMMITTED / "corpus-manifest.json").read_text())
    assert all(ev["corpus"]["heldout_sha256"] == manifest["heldout_sha256"] for ev in evals.values())


def test_the_committed_predictor_table_is_what_the_committed_geometry_gives():
    from ropetheory.models.retrofit_report import collapse_rows, predictor_table
    rows = collapse_rows(COMMITTED)
    table = predictor_table(rows)
    assert (COMMITTED / "predictors.md").read_text().strip() == table
    assert table in (TESTS.parent / "docs" / "guide" / "retrofit.md").read_text()
    fsv = next(r for r in rows if r["variant"] == "rope" and r["candidate"] == "fsv_ratio")
    assert fsv["ci_low"] < 0 < fsv["ci_high"]           # the guide's statement: the FSV ratio explains nothing


@pytest.mark.parametrize("action", [["train", "--variant", "rope", "--steps", "1"], ["evaluate", "--variant", "rope"],
                                    ["geometry", "--variant", "rope"]])
def test_every_action_that_needs_L_takes_train_len_as_its_error_message_says(action):
    from ropetheory.models.retrofit_cli import _parser
    assert _parser().parse_args([*action, "--train-len", "64"]).train_len == 64
