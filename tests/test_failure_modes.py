"""The second paper's failure modes on real heads (ropetheory.models.failure_modes): the score handed to the
theory is the logit the model forms at that distance (checked against captured post-RoPE logits), the
precision's eps is the paper's bf16 eps on its own Gaussian model, a position-free pair behaves as it must,
and a short real run of the packaged SmolLM2 gives finite, seeded, consistent numbers beside the Gaussian
prediction."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ropetheory.core.errors import BadType, BadValue
from ropetheory.models.failure_modes import (MODES, failure_rows, measure_failure_modes, modes_from_scores, modes_of,
                                             paper_vector, score_eps, score_table, table_scores)
from ropetheory.models.rotation import FLOAT32_UNIT_ROUNDOFF, rotation_bound
from ropetheory.theory import positions

from test_collapse_predictors import smollm2_capture

#: Monte Carlo check of an expectation: the sample mean within this many standard errors (false alarm < 1e-6)
MC_SIGMAS = 5.0
BF16_UNIT_ROUNDOFF = 2.0 ** -8
#: one score from the shared table against theory.positions.scores: float64 sums of P = 6 unit-size terms in
#: another order, a few ulps
SCORE_ATOL = 1e-12


def test_the_precisions_eps_is_the_papers_bf16_eps_on_its_gaussian_model():
    """E_m S(m)^2 = 2P for unit Gaussian q, k, so E[score_eps^2] = 2 u^2 2P = (2^-7 sqrt(P))^2 for bfloat16."""
    rng = np.random.default_rng(0)
    P, M = 8, 64
    theta = 10000.0 ** (-np.arange(P) / P)
    sq = np.array([score_eps(positions.scores(theta, rng.standard_normal(2 * P), rng.standard_normal(2 * P),
                                              np.arange(M)), BF16_UNIT_ROUNDOFF) ** 2 for _ in range(1500)])
    want = positions.bf16_eps(2 * P) ** 2
    assert abs(sq.mean() - want) < MC_SIGMAS * sq.std(ddof=1) / math.sqrt(sq.size)


@pytest.mark.parametrize("M", [2, 7, 64, 65])
def test_the_counts_from_one_score_table_equal_the_theory_modules_functions(M):
    rng = np.random.default_rng(M)
    P = 6
    theta = 100.0 ** (-np.arange(P) / P)
    table = score_table(theta, M)
    for _ in range(5):
        q, k1, k2 = (rng.standard_normal(2 * P) for _ in range(3))
        S = table_scores(table, q, k1)
        assert np.max(np.abs(S - positions.scores(theta, q, k1, np.arange(M)))) <= SCORE_ATOL
        eps = score_eps(S, BF16_UNIT_ROUNDOFF)
        got = modes_from_scores(S, S - table_scores(table, q, k2), eps)
        assert got == {
            "position_inversion": positions.position_inversion(theta, q, k1, M)["exact"],
            "position_aliasing": float(positions.position_aliasing(theta, q, k1, M, eps)["aliased"]),
            "token_inversion": positions.token_inversion(theta, q, k1, k2, M)["exact"],
            "token_aliasing": positions.token_aliasing(theta, q, k1, k2, M, eps)["share"]}


def test_a_position_free_pair_never_inverts_and_always_aliases_in_position():
    """q, k in NoPE planes only (theta_j = 0 there): S(m) is one constant, and two keys keep their order."""
    theta = np.array([1.0, 0.3, 0.0, 0.0])
    q, k1, k2 = np.zeros(8), np.zeros(8), np.zeros(8)
    q[4:] = [1.0, 2.0, -1.0, 0.5]
    k1[4:], k2[4:] = [0.5, 1.0, 0.0, 1.0], [0.1, -0.3, 0.2, 0.0]
    got = modes_of(theta, q, k1, k2, 40, FLOAT32_UNIT_ROUNDOFF)
    assert got == {"position_inversion": 0.0, "position_aliasing": 1.0, "token_inversion": 0.0, "token_aliasing": 0.0}


def test_bad_input_is_refused_naming_the_argument():
    with pytest.raises(BadType, match="cap"):
        measure_failure_modes({"streams": []}, L=8)
    with pytest.raises(BadValue, match="L"):
        measure_failure_modes({"streams": [], "schedules": []}, L=1)
    with pytest.raises(BadValue, match="pairs"):
        measure_failure_modes({"streams": [], "schedules": []}, L=8, pairs=0)


# ---------------------------------------------------------------- a short real run of the packaged SmolLM2

REAL_N, REAL_L = 256, 32


@pytest.fixture(scope="module")
def cap():
    return smollm2_capture(REAL_N, REAL_L, 1)


def test_the_score_at_distance_m_is_the_logit_the_model_forms(cap):
    """``S(m) = <F q, R_m F k>`` of the pre-RoPE vectors against the captured post-RoPE logit ``q_i . k_j``,
    ``m = i - j``, within the float32 rotation's bound on both vectors (``.rotation.rotation_bound``)."""
    st, sc = cap["streams"][0], cap["schedules"][0]
    r, theta = sc["rotary_dim"], sc["theta"]
    checked = 0
    for s in (5, 60, 200, 255):
        i = int(st.query_sample_positions[s])
        for j in (0, 1, i // 2, i):
            qp, qo = st.query_samples["pre"][0, s].astype(np.float64), st.query_samples["post"][0, s].astype(np.float64)
            kp, ko = st.keys["pre"][0, j], st.keys["post"][0, j]
            S = positions.scores(theta, paper_vector(qp, r), paper_vector(kp, r), np.array([i - j]))[0]
            dq = np.linalg.norm(rotation_bound(qp[None], theta, r, np.array([i])))
            dk = np.linalg.norm(rotation_bound(kp[None], theta, r, np.array([j])))
            tol = np.linalg.norm(qp) * dk + np.linalg.norm(kp) * dq + dq * dk
            assert abs(S - qo @ ko) <= tol, (i, j)
            checked += 1
    assert checked == 16


def test_a_real_run_gives_finite_seeded_modes_beside_the_gaussian_prediction(cap):
    a = measure_failure_modes(cap, L=REAL_L, pairs=2, gaussian_draws=2, seed=1)
    b = measure_failure_modes(cap, L=REAL_L, pairs=2, gaussian_draws=2, seed=1)
    assert a == b
    assert a["unit_roundoff"] == [FLOAT32_UNIT_ROUNDOFF]            # the packaged SmolLM2 runs in float32
    heads = cap["streams"][0].kv_heads
    assert len(a["heads"]) == heads * 2 and {r["M"] for r in a["heads"]} == {REAL_L, 8 * REAL_L}
    for r in a["heads"]:
        for src in ("measured", "gaussian"):
            assert set(r[src]) == set(MODES)
            assert all(0.0 <= v <= 1.0 for v in r[src].values())
            assert r[src]["position_aliasing"] in (0.0, 0.5, 1.0)       # the share of 2 pairs that alias
    (s1, s8) = a["summary"]
    assert (s1["k"], s8["k"], s1["heads"]) == (1, 8, heads)
    for s in (s1, s8):
        for src in ("measured", "gaussian"):
            med = np.median([r[src]["token_inversion"] for r in a["heads"] if r["k"] == s["k"]])
            assert s[f"{src}_median"]["token_inversion"] == med
    table = failure_rows(a)
    assert len(table) == 4 * len(a["summary"])
    assert [(r["k"], r["mode"], r["measured_median"]) for r in table[:4]] == [
        (1, m, s1["measured_median"][m]) for m in MODES]
    c = measure_failure_modes(cap, L=REAL_L, pairs=2, gaussian_draws=2, seed=2)
    assert c["heads"] != a["heads"]                                      # another seed, other pairs


def test_the_analysis_of_a_capture_carries_the_failure_modes(cap):
    from ropetheory.models.study import analyze_streams
    res = analyze_streams(cap, L=REAL_L)
    fm = res["failure_modes"]
    assert fm["pairs"] >= 1 and fm["multiples"] == [1, 8]
    assert all(math.isfinite(v) for r in fm["heads"] for src in ("measured", "gaussian") for v in r[src].values())
