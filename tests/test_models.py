"""Real models: streaming statistics equal brute force; packaged SmolLM2 and Gemma 3 end to end; bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ropetheory import spectra
from ropetheory.models.rotation import hf_to_interleaved
from ropetheory.models import corpus, registry, study
from ropetheory.models.stream import LayerStream

#: float64 sums of O(n d) float32 products vs a direct float64 evaluation
STREAM_RTOL = 1e-9


def _brute(K, Q, n, G, scale, window, S):
    """O(n^2) reference for one key head: cosines, FSV ratio inputs, sink share."""
    Kn = K[:n] / np.linalg.norm(K[:n], axis=1, keepdims=True)
    Qn = Q[:, :n].reshape(-1, K.shape[1])
    Qn = Qn / np.linalg.norm(Qn, axis=1, keepdims=True)
    C = Kn @ Kn.T
    kk = (C.sum() - n) / (n * (n - 1))
    Cq = Qn @ Qn.T
    qq = (Cq.sum() - len(Qn)) / (len(Qn) * (len(Qn) - 1))
    kq = (Qn @ Kn.T).mean()
    shares = []
    for g in range(G):
        for i in range(max(0, n - S), n):
            lo = 0 if window is None else max(0, i - window + 1)
            if lo > 0:
                continue
            lg = scale * (K[:i + 1] @ Q[g, i])
            w = np.exp(lg - lg.max())
            shares.append(w[0] / w.sum())
    return kk, qq, kq, (np.mean(shares) if shares else np.nan)


@pytest.mark.parametrize("window", [None, 40])
def test_streamed_statistics_equal_brute_force(window):
    rng = np.random.default_rng(0)
    N, H, G, d = 150, 2, 3, 8
    Kp = rng.standard_normal((H, N, d)).astype(np.float32) + 2.0
    Qp = rng.standard_normal((H * G, N, d)).astype(np.float32) - 1.0
    Ko, Qo = (Kp * 1.1).astype(np.float32), (Qp[:, ::-1] * 0.9).astype(np.float32).copy()
    grid = np.array([2, 17, 33, 100, 150])
    st = LayerStream(n_total=N, grid=grid, kv_heads=H, q_heads=H * G, head_dim=d, scale=0.3, window=window,
                     sink_queries=5)
    for s, e in ((0, 7), (7, 40), (40, 41), (41, 150)):           # chunks cut across grid points
        st.add(Qp[:, s:e], Kp[:, s:e], Qo[:, s:e], Ko[:, s:e])
    for gi, n in enumerate(grid):
        for h in range(H):
            kk, qq, kq, sh = _brute(Kp[h].astype(np.float64), Qp[h * G:(h + 1) * G].astype(np.float64), n, G, 0.3,
                                    window, 5)
            np.testing.assert_allclose([st.snapshots["cos_kk_pre"][h, gi], st.snapshots["cos_qq_pre"][h, gi],
                                        st.snapshots["cos_kq_pre"][h, gi]], [kk, qq, kq], rtol=STREAM_RTOL, atol=1e-12)
            _, _, _, sho = _brute(Ko[h].astype(np.float64), Qo[h * G:(h + 1) * G].astype(np.float64), n, G, 0.3,
                                  window, 5)
            for got, want in ((st.snapshots["sink_norope"][h, gi], sh), (st.snapshots["sink_rope"][h, gi], sho)):
                if np.isnan(want):
                    assert np.isnan(got)
                else:
                    assert got == pytest.approx(want, rel=STREAM_RTOL)
            K0, K1 = Kp[h, :n].astype(np.float64), Ko[h, :n].astype(np.float64)
            assert st.snapshots["lam_pre"][h, gi] == pytest.approx(np.linalg.norm(K0, 2) ** 2, rel=STREAM_RTOL)
            assert st.snapshots["lam_post"][h, gi] == pytest.approx(np.linalg.norm(K1, 2) ** 2, rel=STREAM_RTOL)
    # mean logit of each key over later queries (post-RoPE), against the direct sum
    lm = st.key_logit_means()
    for h in range(H):
        Q = Qo[h * G:(h + 1) * G].astype(np.float64)
        for j in (0, 5, 148):
            want = np.mean([Q[g, i] @ Ko[h, j] for g in range(G) for i in range(j + 1, N)])
            assert lm[h, j] == pytest.approx(want, rel=STREAM_RTOL)


def test_planted_rank1_head_matches_the_prediction_when_streamed():
    """Keys on one direction with varying weights, rotated exactly: measured rho == rank-1 prediction."""
    from ropetheory.models.rotation import rotate_like_hf
    rng = np.random.default_rng(3)
    N, d = 300, 16
    theta = 10000.0 ** (-np.arange(0, d, 2) / d)
    c = rng.standard_normal(d)
    c /= np.linalg.norm(c)
    u = 1 + 0.3 * rng.random(N)
    Kp = (u[:, None] * c[None, :])[None]
    Ko = rotate_like_hf(Kp, theta, d, np.arange(N))
    Qp = -Kp.repeat(2, axis=0)
    Qo = rotate_like_hf(Qp, theta, d, np.arange(N))
    grid = np.array([10, 100, 300])
    st = LayerStream(n_total=N, grid=grid, kv_heads=1, q_heads=2, head_dim=d, scale=d ** -0.5)
    st.add(Qp.astype(np.float32), Kp.astype(np.float32), Qo.astype(np.float32), Ko.astype(np.float32))
    cap = {"streams": [st], "schedules": [{"layer_type": "full_attention", "theta": theta, "rotary_dim": d,
                                           "attention_factor": 1.0, "window": None}],
           "grid": grid, "nll": np.zeros(N - 1), "seconds": 0.0}
    res = study.analyze_streams(cap, L=100)
    h = res["heads"][0]
    assert h["pc1_var"] > 0.999999
    np.testing.assert_allclose(h["rho_measured"], h["rho_predicted"], atol=1e-6)
    ref = spectra.rank1_stream_curve(theta, hf_to_interleaved(c, d), grid, weights=u ** 2)["rho"]
    np.testing.assert_allclose(h["rho_predicted"], ref, atol=1e-9)
    assert h["cos_kq_pre"][-1] == pytest.approx(-1.0, abs=1e-6)


@pytest.fixture(scope="module")
def smollm2_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("an")
    res = study.run("smollm2-135m", out=out, n_tokens=256, tokens_per_pass=100, train_len=64, quiet=True)
    return out / "smollm2-135m", res


def test_smollm2_end_to_end_writes_finite_numbers_figures_and_claims(smollm2_result):
    from ropetheory.models.figures import plot_all
    d, res = smollm2_result
    assert res["n"] == 256 and len(res["heads"]) == 30 * 3
    text = (d / "analysis.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    js = json.loads(text)
    assert js["meta"]["quantised"] and js["meta"]["text"]["first_token"]
    for h in js["heads"]:
        assert h["rotation_within_bound"] is True and h["rotation_positions_checked"] > 0, h["rotation_worst_ratio"]
        assert 0 < h["pc1_var"] <= 1 and h["C1"] in (True, False)
    assert {c["verdict"] for c in js["claims"]} and len(js["claims"]) == 8
    paths = plot_all(d)
    assert len(paths) == 7 and all(p.stat().st_size > 5000 for p in paths)


def test_smollm2_streamed_rho_equals_a_direct_capture(smollm2_result):
    """The chunked, cached capture gives the same keys as one plain forward pass (layer 0, n = 256)."""
    import torch
    from ropetheory.models.capture import capture
    _, res = smollm2_result
    m, tok, _ = registry.load_model("smollm2-135m")
    ids, _ = corpus.text_tokens(tok, 256)
    dump = capture(m, torch.tensor([ids]), check=False)
    for h in range(3):
        K0, K1 = dump["keys_pre"][0, h].astype(np.float64), dump["keys_post"][0, h].astype(np.float64)
        want = np.linalg.norm(K1, 2) / np.linalg.norm(K0, 2)
        assert res["heads"][h]["rho_measured"][-1] == pytest.approx(want, rel=1e-4)   # float32 model, cache vs not


#: Gemma 3 tokens captured: past the grid's first length (16) by a few, so the analysis grid holds 5
#: lengths (each a (d = 256)-wide eigenvalue per layer), in 3 passes of GEMMA3_PASS tokens through the KV cache
GEMMA3_TOKENS, GEMMA3_PASS = 20, 8


def test_gemma3_layers_get_their_own_schedules_and_windows():
    m, tok, label = registry.load_model("gemma3-270m")
    ids, _ = corpus.text_tokens(tok, GEMMA3_TOKENS)
    cap = study.capture_streams(m, ids, L=32768, tokens_per_pass=GEMMA3_PASS)
    assert len(cap["grid"]) == 5 and cap["computed"] == 3
    types = [s["layer_type"] for s in cap["schedules"]]
    assert types.count("full_attention") == 3 and [i for i, t in enumerate(types) if t == "full_attention"] == [
        5,
        11,
        17,
    ]
    bases = {s["layer_type"]: s["rope_theta"] for s in cap["schedules"]}
    assert bases == {"sliding_attention": 10000.0, "full_attention": 1000000.0}
    assert {s["window"] for s in cap["schedules"]} == {512, None}
    for st in cap["streams"]:                        # the rotation matches each layer's own schedule
        assert st.rotation.within_bound, st.rotation


def test_packaged_models_are_listed_and_bad_models_are_named(tmp_path):
    rows = {r["name"]: r for r in registry.list_models()}
    assert rows["smollm2-135m"]["installed"] and rows["gemma3-270m"]["installed"]
    with pytest.raises(ValueError, match="unknown model 'llama-7b'"):
        registry.resolve("llama-7b")
    src, name, _ = registry.resolve("smollm2-135m")
    cut = tmp_path / "cut.gguf"
    with open(src / name, "rb") as fh:
        cut.write_bytes(fh.read(3_000_000))
    with pytest.raises(ValueError, match="truncated|not a readable GGUF"):
        registry.resolve(cut)
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"NOTGGUF" * 10)
    with pytest.raises(ValueError, match="not a GGUF file"):
        registry.resolve(bad)
    other = tmp_path / "weights.bin"
    other.write_text("x")
    with pytest.raises(ValueError, match="not a .gguf"):
        registry.resolve(other)


def test_a_gguf_without_rope_is_refused(tmp_path):
    import gguf
    p = tmp_path / "norope.gguf"
    w = gguf.GGUFWriter(str(p), "gpt2")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert not registry.gguf_has_rope(p)
    with pytest.raises(ValueError, match="does not use RoPE"):
        registry.load_model(p)


def test_a_cache_folder_published_by_another_process_is_kept_and_an_unfinished_one_replaced(tmp_path):
    """Two processes converting the same model both publish: the second keeps the first's finished folder
    (a reader may be loading it), and a folder without ``COMPLETE`` is replaced by the finished one."""
    def fill(text):
        return lambda tmp: (tmp / "weights").write_text(text)
    done = tmp_path / "converted" / "m-0123"
    assert registry._publish(done, fill("first"), "first") is None
    assert registry._publish(done, fill("second"), "second") is None
    assert (done / "weights").read_text() == "first" and (done / "COMPLETE").read_text() == "first\n"
    partial = tmp_path / "converted" / "m-4567"
    partial.mkdir()
    (partial / "weights").write_text("cut off")
    assert registry._publish(partial, fill("whole"), "whole") is None
    assert (partial / "weights").read_text() == "whole" and (partial / "COMPLETE").exists()
    assert sorted(p.name for p in done.parent.iterdir()) == ["m-0123", "m-4567"]      # no temporary left


def test_a_text_shorter_than_asked_for_is_named(tmp_path):
    tok = registry.load_tokenizer("smollm2-135m")          # the GGUF's vocabulary, parsed once and kept
    f = tmp_path / "t.txt"
    f.write_text("A short text.")
    with pytest.raises(ValueError, match=r"has \d+ tokens, fewer than the 100 asked for"):
        corpus.text_tokens(tok, 100, text_file=f)
    ids, desc = corpus.text_tokens(tok, 100, text_file=f, repeat=True)
    assert len(ids) == 100 and desc["repeats_from_position"] is not None
    with pytest.raises(ValueError, match="n_tokens"):
        corpus.text_tokens(tok, 1)


def test_inference_time_pi_rescales_the_schedule_and_the_rotation_still_matches():
    m, tok, _ = registry.load_model("smollm2-135m")
    base = study.layer_schedules(m.config.to_dict(), 64)[0]["theta"]
    with pytest.raises(ValueError, match="rope_type"):
        study.override_rope(m, {"factor": 2})
    assert study.override_rope(m, {"rope_type": "linear", "factor": 2}) == "linear-x2"
    ids, _ = corpus.text_tokens(tok, 64)
    cap = study.capture_streams(m, ids, L=32, tokens_per_pass=64)
    np.testing.assert_allclose(cap["schedules"][0]["theta"], base / 2, rtol=1e-12)   # PI: every frequency / s
    assert all(st.rotation.within_bound for st in cap["streams"])


def _arrays(obj, seen=None):
    """Every numpy array held in memory by ``obj`` (attributes, dicts, lists), not the key files."""
    from ropetheory.models.stream import KeyStore
    if isinstance(obj, KeyStore):
        return
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _arrays(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _arrays(v)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("ropetheory"):
        yield from _arrays(vars(obj))


def test_layer_stream_memory_does_not_grow_with_n_times_d():
    """Keys go to their files; what stays in memory is O(d^2 + n) (scalars per position), never n x d."""
    rng = np.random.default_rng(5)
    N, H, G, d = 6000, 1, 2, 32
    st = LayerStream(n_total=N, grid=np.array([100, 3000, 6000]), kv_heads=H, q_heads=H * G, head_dim=d,
                     scale=0.2, query_stride=4)
    for _ in range(0, N, 1000):
        K = rng.standard_normal((H, 1000, d)).astype(np.float32)
        Q = rng.standard_normal((H * G, 1000, d)).astype(np.float32)
        st.add(Q, K, Q, K)
    sample = {id(a) for a in st.query_samples.values()}      # the strided query sample: ceil(N / stride) rows a head
    assert all(a.size == H * G * (N // 4) * d for a in st.query_samples.values())
    biggest = max(a.size for a in _arrays(st) if id(a) not in sample)
    assert biggest <= 2 * H * N, biggest                  # O(n) scalars (logit sums) and O(d^2) Grams only
    assert st.sink_norm_ratio().shape == (H,) and np.isfinite(st.key_logit_means()).all()


def test_key_store_reopens_its_file_and_refuses_one_of_another_shape(tmp_path):
    from ropetheory.models.stream import KeyStore
    ks = KeyStore(tmp_path / "k.npy", (2, 10, 4))
    ks[:, 0:10] = np.arange(80, dtype=np.float32).reshape(2, 10, 4)
    ks.flush()
    back = KeyStore.open(tmp_path / "k.npy", (2, 10, 4))
    np.testing.assert_array_equal(back[1, 3:5], np.arange(80).reshape(2, 10, 4)[1, 3:5])
    assert [(a, b) for a, b, _ in back.blocks(0, 10, block=4)] == [(0, 4), (4, 8), (8, 10)]
    np.save(tmp_path / "k.npy", np.zeros((2, 9, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="expected"):
        KeyStore.open(tmp_path / "k.npy", (2, 10, 4))


def test_a_layer_stream_saved_mid_run_and_restored_finishes_identically(tmp_path):
    """A capture checkpoint holds ``LayerStream.state`` (arrays and JSON, no pickle): a stream restored
    from it and fed the remaining chunks ends with the same statistics as one that never stopped."""
    from ropetheory.models.stream import LayerStream
    from ropetheory.store import load_checkpoint, save_checkpoint
    rng = np.random.default_rng(5)
    H, G, d, N = 2, 2, 8, 96
    chunks = [(rng.standard_normal((H * G, 32, d)).astype(np.float32),
               rng.standard_normal((H, 32, d)).astype(np.float32)) for _ in range(N // 32)]

    def stream(folder):
        return LayerStream(n_total=N, grid=np.array([10, 50, 96]), kv_heads=H, q_heads=H * G, head_dim=d, scale=0.3,
                           window=40, key_dir=folder)
    ref, cut = stream(tmp_path / "ref"), stream(tmp_path / "cut")
    for Q, K in chunks:
        ref.add(Q, K, Q, K)
    Q0, K0 = chunks[0]
    cut.add(Q0, K0, Q0, K0)
    arrays, meta = cut.state()
    save_checkpoint(tmp_path / "ck.npz", "k", arrays, **meta)
    back = load_checkpoint(tmp_path / "ck.npz", "k", LayerStream.from_state)
    for Q, K in chunks[1:]:
        back.add(Q, K, Q, K)
    for name, v in ref.snapshots.items():
        np.testing.assert_array_equal(back.snapshots[name], v)
    np.testing.assert_array_equal(back.key_logit_means(), ref.key_logit_means())


def test_a_layer_stream_state_of_another_version_is_refused_and_recomputed_not_misread(tmp_path):
    """Checkpoints written with the single-letter names (version 1) are reported and recomputed."""
    from ropetheory.models.stream import STATE_VERSION, LayerStream
    from ropetheory.store import load_checkpoint, save_checkpoint
    st = LayerStream(n_total=8, grid=np.array([4, 8]), kv_heads=1, q_heads=1, head_dim=4, scale=0.5,
                     key_dir=tmp_path / "keys")
    arrays, meta = st.state()
    save_checkpoint(tmp_path / "old.npz", "k", arrays, **{**meta, "state_version": STATE_VERSION - 1})
    with pytest.warns(UserWarning, match="old.npz.*damaged.*version"):
        assert load_checkpoint(tmp_path / "old.npz", "k", LayerStream.from_state) is None


def test_a_layer_streams_public_attributes_are_spelled_out(tmp_path):
    from ropetheory.models.stream import LayerStream
    st = LayerStream(n_total=8, grid=np.array([4, 8]), kv_heads=1, q_heads=2, head_dim=4, scale=0.5,
                     key_dir=tmp_path / "keys")
    public = [k for k in vars(st) if not k.startswith("_")]
    assert public and all(len(k) > 3 for k in public), public


#: the numpy silhouette / Davies-Bouldin against scikit-learn's: the same sums in another order
CLUSTER_SCORE_ATOL = 1e-12


@pytest.mark.parametrize("shift", [0.0, 0.5, 3.0])
def test_cluster_scores_equal_scikit_learns(shift):
    from sklearn.metrics import davies_bouldin_score, silhouette_score
    rng = np.random.default_rng(int(shift * 10))
    K = rng.standard_normal((120, 16)) + shift
    Q = rng.standard_normal((90, 16)) - shift
    X = np.concatenate([K, Q])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    lab = np.r_[np.zeros(len(K)), np.ones(len(Q))]
    sil, db = study._silhouette(K, Q)
    assert sil == pytest.approx(silhouette_score(X, lab, metric="cosine"), abs=CLUSTER_SCORE_ATOL)
    assert db == pytest.approx(davies_bouldin_score(X, lab), abs=CLUSTER_SCORE_ATOL)


def test_the_fast_gguf_parse_reads_what_gguf_reads_and_the_swap_is_undone():
    import gguf
    src, name, _ = registry.resolve("smollm2-135m")
    registry._cached_reader.cache_clear()
    original = gguf.GGUFReader
    with registry.one_gguf_parse():                                       # first parse inside the swap
        fast = gguf.GGUFReader(str(src / name))
    assert gguf.GGUFReader is original
    ref = gguf.GGUFReader(str(src / name))
    assert registry.gguf_reader(src / name) is fast                      # parsed once per process
    assert list(fast.fields) == list(ref.fields) and len(fast.tensors) == len(ref.tensors) > 0
    for k in ref.fields:
        assert all(np.array_equal(a, b) for a, b in zip(fast.fields[k].parts, ref.fields[k].parts, strict=False)), k
    for a, b in zip(fast.tensors, ref.tensors, strict=False):
        assert (a.name, a.tensor_type, a.data_offset) == (b.name, b.tensor_type, b.data_offset)
        assert np.array_equal(a.data, b.data)
    with registry.one_gguf_parse():
        assert gguf.GGUFReader(str(src / name)) is fast
    assert gguf.GGUFReader is original
