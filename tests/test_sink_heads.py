"""The sink's log-odds decomposition on heads, streamed: equal to the directly computed log-odds on a
planted cloud and on a short run of a tiny random Llama, its terms summing to it, and written out."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ropetheory.models.analyze import analyze_dump, main as analyze_main
from ropetheory.models.capture import capture, save_dump
from ropetheory.models.stream import SINK_TERMS, LayerStream
from ropetheory.theory.sink import sink_log_odds

#: float64 online log-sum-exp over key blocks against a direct float64 row: a few ulps of the largest
#: |logit| (the planted logits are O(10)), far below any effect the decomposition is read for
DECOMPOSITION_ATOL = 1e-12


def _direct(K, Q, n, G, scale, S, window=None):
    """Per row (query head g, position i in the last S before n): the log-odds log(a0 / (1 - a0)) from
    the softmax itself, and the terms from ``ropetheory.theory.sink.sink_log_odds`` of the whole row."""
    lo, terms = [], []
    for g in range(G):
        for i in range(max(0, n - S), n):
            lo_key = 0 if window is None else max(0, i - window + 1)
            if lo_key > 0 or i == 0:
                continue
            s = scale * (K[: i + 1] @ Q[g, i])
            a = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
            lo.append(np.log(a[0]) - np.log(a[1:].sum()))
            terms.append(sink_log_odds(s))
    if not lo:
        return np.nan, {}
    return np.mean(lo), {f: np.mean([getattr(t, f) for t in terms]) for f in SINK_TERMS}


def _stream(Kp, Qp, Ko, Qo, grid, window=None, S=6, scale=0.4):
    H, N, d = Kp.shape
    st = LayerStream(n_total=N, grid=grid, kv_heads=H, q_heads=Qp.shape[0], head_dim=d, scale=scale,
                     window=window, sink_queries=S)
    for s, e in ((0, 9), (9, 50), (50, N)):
        st.add(Qp[:, s:e], Kp[:, s:e], Qo[:, s:e], Ko[:, s:e])
    return st


@pytest.mark.parametrize("window", [None, 70])
def test_the_streamed_decomposition_equals_the_directly_computed_log_odds_on_a_planted_cloud(window):
    """Keys in a tight cluster opposed to the queries, key 0 small: a sink with a0 well inside (0, 1)."""
    rng = np.random.default_rng(7)
    N, H, G, d = 120, 2, 2, 8
    c = rng.standard_normal(d)
    Kp = (2.0 * c + 0.3 * rng.standard_normal((H, N, d))).astype(np.float32)
    Kp[:, 0] = 0.05 * rng.standard_normal((H, d))
    Qp = (-1.5 * c + 0.3 * rng.standard_normal((H * G, N, d))).astype(np.float32)
    Ko, Qo = (Kp[:, ::-1] * 0.8).astype(np.float32).copy(), (Qp * 1.2).astype(np.float32)
    grid = np.array([3, 20, 64, 120])
    st = _stream(Kp, Qp, Ko, Qo, grid, window)
    checked = 0
    for gi, n in enumerate(grid):
        for h in range(H):
            for K, Q, key in ((Kp, Qp, "sink_norope"), (Ko, Qo, "sink_rope")):
                lo, terms = _direct(K[h].astype(np.float64), Q[h * G:(h + 1) * G].astype(np.float64), n, G, 0.4, 6,
                                    window)
                if np.isnan(lo):
                    continue
                checked += 1
                got = {f: st.snapshots[f"{key}_{f}"][h, gi] for f in SINK_TERMS}
                assert got["log_odds"] == pytest.approx(lo, abs=DECOMPOSITION_ATOL)
                for f in SINK_TERMS:
                    assert got[f] == pytest.approx(terms[f], abs=DECOMPOSITION_ATOL), f
                gap = got["sink_logit"] - got["others_mean"]
                assert got["log_odds"] == pytest.approx(gap - got["dilution"] - got["spread"], abs=DECOMPOSITION_ATOL)
    assert checked >= 8


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=32,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    torch.manual_seed(2)
    d = capture(tiny_llama(), torch.randint(0, 97, (1, 130)))
    return d, analyze_dump(d), tmp_path_factory.mktemp("dec")


def test_the_decomposition_equals_the_directly_computed_log_odds_on_a_short_real_run(real_run):
    from ropetheory.models.stream import SINK_QUERIES
    d, res, _ = real_run
    scale = 16 ** -0.5
    for r in res["heads"]:
        li, h = r["layer"], r["kv_head"]
        for gi, n in enumerate(res["grid"]):
            for kind, kk, qq in (("rope", "keys_post", "queries_post"), ("norope", "keys_pre", "queries_pre")):
                K = d[kk][li, h].astype(np.float64)
                Q = d[qq][li, 2 * h:2 * h + 2].astype(np.float64)
                lo, terms = _direct(K, Q, n, 2, scale, SINK_QUERIES)
                assert r[f"sink_{kind}_log_odds"][gi] == pytest.approx(lo, abs=DECOMPOSITION_ATOL)
                for f in SINK_TERMS:
                    assert r[f"sink_{kind}_{f}"][gi] == pytest.approx(terms[f], abs=DECOMPOSITION_ATOL)


def test_the_change_from_L_to_kL_is_the_sum_of_its_parts_per_head_layer_and_median(real_run):
    from ropetheory.models.stream import SINK_QUERIES
    _, res, _ = real_run

    def dil(n):
        return np.log(np.arange(max(1, n - SINK_QUERIES), n)).mean()
    dec = res["sink_decomposition"]
    assert dec["train_len"] == 32 and dec["heads"] == 4
    ks = {(c["kind"], c["k"]) for c in dec["changes"]}
    assert ks == {(kind, k) for kind in ("rope", "norope") for k in (2, 4)}          # 64 and 128 on the grid
    for c in dec["changes"]:
        for x in c["heads"] + c["layers"]:
            parts = x["d_sink_logit"] - x["d_others_mean"] - x["d_dilution"] - x["d_spread"]
            assert x["d_log_odds"] == pytest.approx(parts, abs=DECOMPOSITION_ATOL)
            # query i has i other keys: dilution is the mean of log i over the last SINK_QUERIES queries
            assert x["d_dilution"] == pytest.approx(dil(c["to_n"]) - dil(c["from_n"]), abs=DECOMPOSITION_ATOL)


def test_analyze_writes_the_decomposition_csv_and_its_figure(real_run, tmp_path):
    d, _, _ = real_run
    p = save_dump(d, tmp_path / "keys.npz")
    assert analyze_main([str(p), "--out", str(tmp_path / "a")]) == 0
    with open(tmp_path / "a" / "sink_decomposition.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["kind"] for r in rows} == {"rope", "norope"} and len({(r["layer"], r["kv_head"]) for r in rows}) == 4
    js = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert js["sink_decomposition"]["median"]["rope"]["log_odds"][-1] is not None
    assert (tmp_path / "a" / "sink_decomposition.png").stat().st_size > 10_000
