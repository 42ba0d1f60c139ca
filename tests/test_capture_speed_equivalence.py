"""The chunked capture's statistics equal the same statistics computed the simple way, in one go, from the
q and k the layers had (a tiny random Llama, three passes of unequal length, grid lengths inside passes)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_hook import tiny_llama

from ropetheory.models.forward import attention_scale, capture_streams, chunked_passes, pass_edges
from ropetheory.models.hook import attention_hook
from ropetheory.models.stream import SINK_QUERIES
from ropetheory.theory.sink import sink_log_odds

#: the stream sums in float64 chunk by chunk (Grams compensated, the sink's softmax an online log-sum-exp
#: over key blocks), the reference in one go over all positions: the same terms in another order, which moves
#: a sum of ~100 terms by a few units of 2^-52 of its largest term; the eigenvalues and ratios built on them
#: stay within this relative distance
REORDERED_SUM_REL = 1e-11
#: the cosines and shares lie in [-1, 1]: the same reordering moves them by at most this much
REORDERED_SUM_ABS = 1e-12
N, PASS, L = 96, 40, 32


@pytest.fixture(scope="module")
def captured():
    torch.manual_seed(3)
    ids = torch.randint(0, 97, (1, N))
    m = tiny_llama()
    cap = capture_streams(m, ids[0].tolist(), L=L, tokens_per_pass=PASS)
    seen: dict[int, list] = {}

    def keep(call):                         # the q, k the recorder reads, as it reads them (float32)
        c = call.query.shape[1]
        seen.setdefault(call.layer, []).append([t.float().numpy().astype(np.float64) for t in (
            call.query_pre(), call.key_pre(chunk_only=True), call.query, call.key[:, -c:])])
    with attention_hook(m, keep), torch.no_grad():
        for _ in chunked_passes(m, ids, pass_edges(N, PASS)):
            pass
    full = {li: [np.concatenate([ch[i] for ch in chunks], axis=1) for i in range(4)] for li, chunks in seen.items()}
    return cap, full, attention_scale(m.config.to_dict(), 16)


def _close(got, want, what):
    np.testing.assert_allclose(got, want, rtol=REORDERED_SUM_REL, atol=REORDERED_SUM_ABS, err_msg=what)


def _pair_cos(X):
    """Mean cosine over pairs i != j of the rows of X, from the full cosine matrix."""
    U = X / np.linalg.norm(X, axis=-1, keepdims=True)
    C = U @ U.T
    return (C.sum() - np.trace(C)) / (len(X) * (len(X) - 1))


def test_grams_cosines_and_centroids_at_every_grid_length_equal_the_one_shot_ones(captured):
    cap, full, _ = captured
    for li, st in enumerate(cap["streams"]):
        q_pre, k_pre, q_post, k_post = full[li]
        G = st.group_size
        for g, n in enumerate(cap["grid"]):
            for h in range(st.kv_heads):
                for t, K, Q in (("pre", k_pre, q_pre), ("post", k_post, q_post)):
                    Kn, Qn = K[h, :n], Q[h * G:(h + 1) * G, :n].reshape(-1, 16)
                    gram = Kn.T @ Kn
                    _close(st.snapshots[f"lam_{t}"][h, g], np.linalg.eigvalsh(gram)[-1], f"lam_{t} {li} {h} {n}")
                    _close(st.snapshots[f"tr_{t}"][h, g], np.trace(gram), f"tr_{t}")
                    _close(st.snapshots[f"cos_kk_{t}"][h, g], _pair_cos(Kn) if n > 1 else 0.0, f"cos_kk_{t}")
                    _close(st.snapshots[f"cos_qq_{t}"][h, g], _pair_cos(Qn), f"cos_qq_{t}")
                    Uk = Kn / np.linalg.norm(Kn, axis=-1, keepdims=True)
                    Uq = Qn / np.linalg.norm(Qn, axis=-1, keepdims=True)
                    _close(st.snapshots[f"cos_kq_{t}"][h, g], (Uq @ Uk.T).mean(), f"cos_kq_{t}")
                kc, qc = k_pre[h, :n].sum(0), q_pre[h * G:(h + 1) * G, :n].sum((0, 1))
                _close(st.snapshots["centroid_cos"][h, g], kc @ qc / np.linalg.norm(kc) / np.linalg.norm(qc),
                       "centroid_cos")


def test_the_sink_share_and_log_odds_terms_equal_a_direct_softmax_over_the_visible_keys(captured):
    cap, full, scale = captured
    for li, st in enumerate(cap["streams"]):
        q_pre, k_pre, q_post, k_post = full[li]
        G = st.group_size
        for g, n in enumerate(cap["grid"]):
            S = min(SINK_QUERIES, n)
            for key, Q, K in (("sink_rope", q_post, k_post), ("sink_norope", q_pre, k_pre)):
                for h in range(st.kv_heads):
                    rows = []
                    for i in range(n - S, n):                           # query i sees keys 0..i
                        lg = scale * Q[h * G:(h + 1) * G, i] @ K[h, :i + 1].T      # (G, i + 1)
                        rows.append(lg)
                    share = np.mean([np.exp(r[:, 0] - np.logaddexp.reduce(r, axis=1)) for r in rows])
                    _close(st.snapshots[key][h, g], share, f"{key} {li} {h} {n}")
                    two = [r for r in rows if r.shape[1] >= 2]
                    if two:
                        d = [sink_log_odds(r) for r in two]
                        for f in ("log_odds", "sink_logit", "others_mean", "dilution", "spread"):
                            want = np.mean([getattr(x, f) for x in d])
                            _close(st.snapshots[f"{key}_{f}"][h, g], want, f"{key}_{f} {li} {h} {n}")


def test_the_mean_logit_of_each_key_over_later_queries_equals_the_full_logit_matrix_mean(captured):
    cap, full, _ = captured
    for li, st in enumerate(cap["streams"]):
        q_post, k_post = full[li][2], full[li][3]
        G = st.group_size
        want = np.zeros((st.kv_heads, N - 1))
        for h in range(st.kv_heads):
            A = np.einsum("gid,jd->ij", q_post[h * G:(h + 1) * G], k_post[h])     # sum over the group
            want[h] = [A[j + 1:, j].sum() / (G * (N - 1 - j)) for j in range(N - 1)]
        np.testing.assert_allclose(st.key_logit_means(), want, rtol=REORDERED_SUM_REL,
                                   atol=REORDERED_SUM_REL * np.abs(want).max())


def test_the_captured_keys_are_the_layers_keys_bit_for_bit(captured):
    cap, full, _ = captured
    for li, st in enumerate(cap["streams"]):
        np.testing.assert_array_equal(st.keys["pre"][:, :], full[li][1])
        np.testing.assert_array_equal(st.keys["post"][:, :], full[li][3])
