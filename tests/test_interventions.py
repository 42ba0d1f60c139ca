"""Interventions past L through the one attention hook, on a tiny random Llama with L = 32: each changes
only the logits it targets (every other one bit for bit), leaves the model unchanged within L where it
should, sets its targets to the values it promises, and the control touches exactly one other key."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ropetheory.models.rotation import rotate_like_hf
from ropetheory.models.forward import layer_schedules
from ropetheory.models.hook import attention_hook, eager
from ropetheory.models.interventions import INTERVENTIONS, Intervention, measure

L = 32
N = 4 * L
#: a clamped logit against numpy's exact rotation of the same float64 pre-RoPE vectors: both float64,
#: angles up to 4L * theta_0 = 128 rad, so a few ulps of 128 in the angle times |q||k|
RELATIVE_LOGIT_ATOL = 1e-11
#: the mean log-odds the bias holds, against the unchanged pass's: float64 log-sum-exp of O(1) logits
HOLD_ATOL = 1e-12


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=L,
                      rope_parameters={"rope_type": "default", "rope_theta": 100.0})
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


@pytest.fixture(scope="module")
def ids():
    torch.manual_seed(3)
    return torch.randint(0, 97, (1, N))


def _targets(name: str, iv: Intervention, call):
    d = call.q_pos[:, None] - call.k_pos[None, :]
    sink = (call.k_pos == 0)[None, :]
    return {"clamp-sink": (d > L - 1) & sink, "clamp-control": (d > L - 1) & (call.k_pos == iv.control_key)[None, :],
            "clamp-all": d > L - 1, "clamp-slow": d > L - 1, "sink-to-mean": sink & (call.q_pos >= 1)[:, None],
            "sink-at-4L": sink & (call.q_pos >= 1)[:, None], "hold-sink-odds": sink & (call.q_pos >= L)[:, None],
            "window": ((d > L - 1) & sink) | ((d >= L - 1) & ~sink)}[name]


def _run(model, ids, handler):
    with attention_hook(model, handler, eager_mask=True), torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("name", INTERVENTIONS)
def test_each_intervention_changes_only_the_logits_it_targets(model, ids, name):
    iv = Intervention(name, L, layer_schedules(model.config.to_dict(), N))
    seen = {"changed": 0, "targets": 0, "columns": set()}

    def edit(call, h, S):
        before = S.clone()
        iv.edit(call, h, S)
        changed = (before != S).any(dim=0)
        T = _targets(name, iv, call) & call.visible()
        assert not (changed & ~T).any(), "a logit outside the target changed"
        seen["changed"] += int(changed.sum())
        seen["targets"] += int(T.sum())
        seen["columns"] |= set(call.k_pos[changed.any(dim=0)].tolist())
    _run(model, ids, lambda call: eager(call, edit=edit))
    assert seen["changed"] >= 0.95 * seen["targets"] > 0                  # and the targets did change
    if name == "clamp-control":
        assert seen["columns"] == {iv.control_key} and iv.control_key != 0
    elif name == "window":
        assert 0 in seen["columns"] and len(seen["columns"]) > 1      # the sink clamped, far keys hidden
    elif name != "clamp-all" and name != "clamp-slow":
        assert seen["columns"] == {0}


@pytest.mark.parametrize("name", INTERVENTIONS)
def test_the_model_within_L_is_unchanged_bit_for_bit_where_the_intervention_acts_past_L(model, ids, name):
    iv = Intervention(name, L, layer_schedules(model.config.to_dict(), N))
    ref = _run(model, ids, eager)
    got = _run(model, ids, lambda call: eager(call, edit=iv.edit))
    if name in ("sink-to-mean", "sink-at-4L"):                  # these break the sink within L on purpose
        assert not torch.equal(got[:, :L], ref[:, :L])
    else:
        assert torch.equal(got[:, :L], ref[:, :L])
    assert not torch.equal(got[:, L:], ref[:, L:])


@pytest.mark.parametrize("name, delta", [("clamp-sink", L - 1), ("sink-at-4L", 4 * L), ("clamp-all", L - 1),
                                         ("clamp-slow", L - 1), ("window", L - 1)])
def test_a_clamped_logit_is_the_logit_at_the_stated_distance(model, ids, name, delta):
    """Against numpy's exact rotation: plane j turned by delta_j theta_j (``clamp-slow``: delta only on the
    planes that do not complete a turn within L, the true distance on the others)."""
    iv = Intervention(name, L, layer_schedules(model.config.to_dict(), N))
    sc = iv.schedules[0]
    theta = np.asarray(sc["theta"])
    slow = theta * (L - 1) < 2 * np.pi if name == "clamp-slow" else np.ones(theta.shape, bool)
    assert name != "clamp-slow" or 0 < slow.sum() < slow.size             # both kinds of plane present
    checked = []

    def edit(call, h, S):
        iv.edit(call, h, S)
        if call.layer != 0 or h != 0:
            return
        q, k = call.query_pre().numpy(), call.key_pre().numpy()
        for i, j in ((N - 1, 0), (L + 3, 0), (N - 1, 5)):
            if name in ("clamp-sink", "sink-at-4L", "window") and j != 0:
                continue
            turn = theta * np.where(slow, delta, i - j)                  # each plane's angle, as position 1
            qr = rotate_like_hf(q[0, i][None], turn, sc["rotary_dim"], np.array([1]))[0]
            checked.append((float(S[0, i, j]), float(call.scaling * qr @ k[0, j])))
    _run(model, ids, lambda call: eager(call, edit=edit))
    assert checked
    for got, want in checked:
        assert got == pytest.approx(want, abs=RELATIVE_LOGIT_ATOL)


def test_the_window_shows_each_query_key_0_and_the_last_L_minus_1_keys_with_clamp_sinks_logits(model, ids):
    """Past L a query sees exactly L keys, key 0 (its logit at distance L - 1: ``clamp-sink``'s, bit for bit)
    and the keys at distances 0 .. L - 2 (their own logits); within L every key up to itself."""
    schedules = layer_schedules(model.config.to_dict(), N)
    win, sink = Intervention("window", L, schedules), Intervention("clamp-sink", L, schedules)
    rows = {"past": 0}

    def edit(call, h, S):
        ref = S.clone()
        sink.edit(call, h, ref)
        win.edit(call, h, S)
        seen = torch.isfinite(S.masked_fill(~call.visible(), -torch.inf))
        for r, i in enumerate(call.q_pos.tolist()):
            keys = set(call.k_pos[seen[0, r]].tolist())
            want = {0} | set(range(i - (L - 2), i + 1)) if i >= L else set(range(i + 1))
            assert keys == want and seen[:, r].sum(-1).tolist() == [min(i + 1, L)] * call.groups
            rows["past"] += i >= L
        assert torch.equal(S[seen], ref[seen])
    _run(model, ids, lambda call: eager(call, edit=edit))
    assert rows["past"] > 0


def test_holding_the_sink_log_odds_keeps_each_heads_value_at_L_and_measure_reports_both_runs(model, ids):
    res = measure(model, ids[0].tolist(), name="hold-sink-odds", L=L, tokens_per_pass=40)
    assert [r["start"] for r in res["runs"]["unchanged"]["nll_ranges"]] == [16, 32, 64]
    rows = {(r["run"], r["layer"], r["kv_head"], r["n"]): r for r in res["heads"]}
    for layer in range(2):
        for h in range(2):
            at_L = rows[("unchanged", layer, h, L)]["log_odds"]
            for m in (2 * L, 4 * L):
                assert rows[("intervened", layer, h, m)]["log_odds"] == pytest.approx(at_L, abs=HOLD_ATOL)
    assert rows[("unchanged", 1, 0, L)] == {**rows[("intervened", 1, 0, L)], "run": "unchanged"}
    assert len(res["ppl_ratio"]) == 3 and all(np.isfinite(r["ratio"]) for r in res["ppl_ratio"])


def test_bad_interventions_are_named():
    with pytest.raises(ValueError, match="intervention must be one of"):
        Intervention("clamp-everything", L, [])
    with pytest.raises(ValueError, match=r"train_len \(L\) must be"):
        Intervention("clamp-sink", 1, [])


def test_the_old_short_name_L_still_reads_train_len_with_a_deprecation_warning():
    iv = Intervention("clamp-sink", 64, [])
    with pytest.warns(DeprecationWarning, match="train_len"):
        assert iv.L == 64 == iv.train_len
    with pytest.warns(DeprecationWarning, match="train_len"):
        assert Intervention("clamp-sink", L=32, schedules=[]).train_len == 32


def test_analyze_runs_interventions_on_a_packaged_model_and_writes_both_runs_and_a_verdict(tmp_path, capsys):
    import csv
    import json
    from ropetheory.models.analyze import main as analyze_main
    with pytest.raises(ValueError, match="--intervention needs --model"):
        analyze_main(["--intervention", "clamp-sink", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="got 'clamp-nothing'"):
        analyze_main(["--model", "smollm2-135m", "--intervention", "clamp-sink,clamp-nothing", "--out", str(tmp_path)])
    argv = ["--model", "smollm2-135m", "--intervention", "clamp-control,sink-to-mean", "--max-tokens", "96",
            "--train-len", "24", "--tokens-per-pass", "40", "--text-distribution", "gguf", "--out", str(tmp_path),
            "--quiet"]
    assert analyze_main(argv) == 0
    base = tmp_path / "smollm2-135m"
    d = base / "intervention-clamp-control"
    res = json.loads((d / "intervention.json").read_text())
    assert res["train_len"] == 24 and 1 <= res["control_key"] < 24
    assert res["meta"]["text"]["source"].startswith("distribution gguf")
    with open(d / "ppl.csv") as fh:
        ppl = list(csv.DictReader(fh))
    assert {r["run"] for r in ppl} == {"unchanged", "intervened"}
    within = [r for r in ppl if int(r["end"]) <= 24]
    assert within[0]["ppl"] == within[1]["ppl"]                       # the control acts past L only
    verdict = json.loads((base / "verdict.json").read_text())
    assert verdict["verdict"] in ("incomplete", "no failure") and "hold-sink-odds" in verdict["missing"]
    assert "verdict:" in capsys.readouterr().out
    journal, = base.glob("interventions-*.jsonl")
    assert len(journal.read_text().splitlines()) == 3                 # one unchanged run, one per intervention
