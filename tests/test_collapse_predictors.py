"""What predicts the sink's collapse (ropetheory.models.predictors): on planted analyses the candidate that
explains the change of the log-odds gets rank correlation 1 and the others do not; a missing candidate is
reported missing; the phase drift is the unseen angle range of the slow planes; and on a short real run of
the packaged SmolLM2 (its first two layers) the pipeline writes finite, self-consistent numbers and a figure."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ropetheory.core.errors import BadType, BadValue
from ropetheory.models.predictors import CANDIDATES, collapse_predictors, phase_drift, plane_energy

#: float64 rank correlation of a strictly monotone relation: exactly 1 up to the rounding of one corrcoef
EXACT_ATOL = 1e-12
#: a candidate unrelated to the target (independent draws, 30 points or more, seed fixed) stays below this
#: |rank correlation|; its chance of reaching it is < 1e-4 (|r| sqrt(n - 1) is about standard normal)
UNRELATED_MAX = 0.8
NAMES = [c[0] for c in CANDIDATES]
L = 100
GRID = [50, 100, 200, 400, 800]


def planted(explains: str, relation=lambda x: x ** 3 + 2 * x, heads: int = 10, seed: int = 3) -> dict:
    """An analysis whose heads' log-odds change from L to kL is ``relation`` of ``explains``' change."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in range(heads):
        vals = {name: rng.standard_normal(len(GRID)) for name in NAMES}
        vals["phase_drift"][:2] = 0.0                                 # no drift up to L
        lo = rng.standard_normal(len(GRID))
        x = vals[explains]
        for i in range(2, len(GRID)):
            lo[i] = lo[1] + relation(x[i] - x[1])
        rows.append({"layer": h // 2, "kv_head": h % 2, "window": None, "layer_type": "full_attention",
                     "rho_measured": vals["fsv_ratio"].tolist(), "cos_kq_post": vals["cos_kq_post"].tolist(),
                     "sink_rope_others_mean": vals["others_mean"].tolist(), "phase_drift": vals["phase_drift"].tolist(),
                     "clusters": [{"n": n, "silhouette_post": float(s)} for n, s in zip(GRID, vals["silhouette"],
                                                                                         strict=True)],
                     "sink_rope_log_odds": lo.tolist(), "sink_rope": (1 / (1 + np.exp(-lo))).tolist()})
    return {"grid": GRID, "train_len": L, "heads": rows}


@pytest.mark.parametrize("explains", NAMES)
def test_the_candidate_that_explains_the_change_gets_rank_correlation_one_and_the_others_do_not(explains):
    cp = collapse_predictors(planted(explains), resamples=200)
    assert cp["from_n"] == L and cp["to_n"] == [200, 400, 800] and cp["head_set"]["heads"] == 10
    for name in NAMES:
        c = cp["candidates"][name]
        assert c["available"] and c["points"] == 30
        if name == explains:
            assert c["spearman"] == pytest.approx(1.0, abs=EXACT_ATOL)
            assert c["spearman_ci"] == pytest.approx([1.0, 1.0], abs=EXACT_ATOL)
            assert c["r2"] < 1 - 1e-3                      # monotone, not linear: the line misses
            assert c["spearman_within_k"] == pytest.approx({"2": 1.0, "4": 1.0, "8": 1.0}, abs=EXACT_ATOL)
        else:
            assert abs(c["spearman"]) < UNRELATED_MAX, name


def test_a_linear_relation_gets_r2_one_with_its_slope():
    cp = collapse_predictors(planted("others_mean", relation=lambda x: -1.5 * x))
    c = cp["candidates"]["others_mean"]
    assert c["r2"] == pytest.approx(1.0, abs=EXACT_ATOL) and c["slope"] == pytest.approx(-1.5, abs=1e-10)
    assert c["spearman"] == pytest.approx(-1.0, abs=EXACT_ATOL)


def test_a_candidate_that_only_grows_with_k_correlates_pooled_but_not_within_each_k():
    """Target: pure dilution, -log k for every head; candidate: k plus head noise below the step between k."""
    rng = np.random.default_rng(4)
    res = planted("fsv_ratio", heads=40)                     # 40 points within each k (UNRELATED_MAX)
    for h in res["heads"]:
        h["sink_rope_log_odds"] = [0.0, 0.0, -math.log(2), -math.log(4), -math.log(8)]
        h["sink_rope_log_odds"][2:] = [v + 1e-3 * rng.standard_normal() for v in h["sink_rope_log_odds"][2:]]
        h["phase_drift"] = [0.0, 0.0, *(k + 0.1 * rng.standard_normal() for k in (2, 4, 8))]
    c = collapse_predictors(res, resamples=50)["candidates"]["phase_drift"]
    assert c["spearman"] < -0.8
    assert all(abs(r) < UNRELATED_MAX for r in c["spearman_within_k"].values())


def test_a_missing_candidate_is_reported_missing_not_filled_in():
    res = planted("fsv_ratio")
    for h in res["heads"]:
        del h["phase_drift"]
        h["clusters"] = [c for c in h["clusters"] if c["n"] != L]             # silhouette never scored at L
    cp = collapse_predictors(res)
    for name in ("phase_drift", "silhouette"):
        c = cp["candidates"][name]
        assert not c["available"] and c["missing"] and c.get("spearman") is None
        assert all(p[name] is None for p in cp["points"])
    assert "phase_drift" in cp["candidates"]["phase_drift"]["missing"]
    assert cp["candidates"]["fsv_ratio"]["spearman"] == pytest.approx(1.0, abs=EXACT_ATOL)


def test_without_the_log_odds_terms_the_target_is_the_logit_of_the_mean_share_and_says_so():
    res = planted("fsv_ratio")
    for h in res["heads"]:
        del h["sink_rope_log_odds"]
    cp = collapse_predictors(res)
    assert "logit(mean sink share)" in cp["target"]
    assert cp["candidates"]["fsv_ratio"]["spearman"] == pytest.approx(1.0, abs=1e-9)


def test_sliding_window_heads_are_left_out_and_the_bootstrap_is_seeded():
    res = planted("cos_kq_post")
    res["heads"][0]["window"] = 64
    a, b = collapse_predictors(res, seed=5), collapse_predictors(res, seed=5)
    assert a["head_set"]["heads"] == 9 and len(a["points"]) == 27
    assert a["candidates"]["fsv_ratio"]["spearman_ci"] == b["candidates"]["fsv_ratio"]["spearman_ci"]
    lo, hi = a["candidates"]["fsv_ratio"]["spearman_ci"]
    assert -1 <= lo <= hi <= 1


def test_bad_input_is_refused_naming_the_argument():
    with pytest.raises(BadType, match="res"):
        collapse_predictors([1, 2])
    with pytest.raises(BadValue, match="'heads'"):
        collapse_predictors({"grid": GRID, "train_len": L})
    with pytest.raises(BadValue, match="seed"):
        collapse_predictors(planted("fsv_ratio"), seed=-1)


def test_the_phase_drift_is_the_unseen_angle_range_of_the_slow_planes():
    two_pi = 2 * math.pi
    theta = np.array([2 * two_pi / L, two_pi / (4 * L), 0.0])          # a turn in L/2, a quarter turn in L, NoPE
    e = np.array([0.5, 0.3, 0.2])
    got = phase_drift(theta, e, L, [L // 2, L, 2 * L, 8 * L])
    quarter = two_pi / 4
    assert got == pytest.approx([0.0, 0.0, 0.3 * quarter, 0.3 * (two_pi - quarter)], abs=1e-12)
    # a window shorter than L: no distance past it, no drift
    assert phase_drift(theta, e, L, [2 * L, 8 * L], window=L // 2) == pytest.approx([0.0, 0.0], abs=0)


def test_plane_energy_pairs_transformers_channels_j_and_j_plus_half():
    # rotary_dim 4 of head_dim 6: planes (0, 2), (1, 3), then the pass-through pair (4, 5)
    assert plane_energy([1.0, 2.0, 3.0, 4.0, 0.0, 10.0], 4) == pytest.approx([4 / 20, 6 / 20, 10 / 20], abs=1e-15)


# ---------------------------------------------------------------- a short real run of the packaged SmolLM2

#: a short real run: two layers of the packaged SmolLM2 (3 key heads each), n tokens, an explicit small L,
#: so that 2L, 4L and 8L are on the grid
REAL_N, REAL_L, REAL_LAYERS = 256, 32, 2


def smollm2_capture(n: int, L: int, layers: int) -> dict:
    """The packaged SmolLM2 cut to its first ``layers`` layers, run over ``n`` tokens of the default text."""
    from ropetheory.models.corpus import text_tokens
    from ropetheory.models.forward import capture_streams
    from ropetheory.models.registry import load_model
    m, tok, _ = load_model("smollm2-135m")
    m.model.layers = m.model.layers[:layers]
    m.config.num_hidden_layers = layers
    if getattr(m.config, "layer_types", None):
        m.config.layer_types = m.config.layer_types[:layers]
    ids, _ = text_tokens(tok, n)
    return capture_streams(m, ids, L=L, tokens_per_pass=n)


@pytest.fixture(scope="module")
def real():
    from ropetheory.models.study import analyze_streams
    cap = smollm2_capture(REAL_N, REAL_L, REAL_LAYERS)
    return cap, analyze_streams(cap, L=REAL_L)


def test_a_real_run_carries_finite_collapse_predictors_for_every_candidate(real):
    _, res = real
    cp = res["collapse_predictors"]
    assert cp["to_n"] == [2 * REAL_L, 4 * REAL_L, 8 * REAL_L] and cp["head_set"]["heads"] == 3 * REAL_LAYERS
    assert "sink_rope_log_odds" in cp["target"]
    for name in NAMES:
        c = cp["candidates"][name]
        assert c["available"] and c["points"] == 3 * 3 * REAL_LAYERS, name
        assert -1 <= c["spearman"] <= 1 and 0 <= c["r2"] <= 1 and math.isfinite(c["slope"])
        lo, hi = c["spearman_ci"]
        assert -1 <= lo <= hi <= 1


def test_a_real_runs_points_are_the_changes_of_its_own_head_rows(real):
    _, res = real
    cp = res["collapse_predictors"]
    rows = {(h["layer"], h["kv_head"]): h for h in res["heads"]}
    g = res["grid"]
    i0 = g.index(REAL_L)
    for p in cp["points"]:
        h, i = rows[(p["layer"], p["kv_head"])], g.index(p["k"] * REAL_L)
        assert p["d_log_odds"] == h["sink_rope_log_odds"][i] - h["sink_rope_log_odds"][i0]
        assert p["fsv_ratio"] == h["rho_measured"][i] - h["rho_measured"][i0]
        assert p["phase_drift"] == h["phase_drift"][i] and h["phase_drift"][i0] == 0.0
        sil = {c["n"]: c["silhouette_post"] for c in h["clusters"]}
        assert p["silhouette"] == sil[g[i]] - sil[REAL_L]


def test_a_real_runs_phase_drift_uses_the_heads_key_energy_and_the_layers_frequencies(real):
    cap, res = real
    st, sc = cap["streams"][0], cap["schedules"][0]
    K = np.concatenate([Kb for _, _, Kb in st.keys["pre"].blocks(0, st.n_total)])       # head 0's keys, float64
    e = plane_energy((K * K).sum(axis=0), sc["rotary_dim"])
    want = phase_drift(sc["theta"], e, REAL_L, res["grid"])
    assert res["heads"][0]["phase_drift"] == pytest.approx(want, rel=1e-9)
    assert 0 < want[-1] < 2 * math.pi


def test_the_saved_analysis_gives_the_same_predictors_and_a_figure(real, tmp_path):
    from ropetheory.models.predictor_figures import FIGURE_NAME, plot_collapse_predictors
    from ropetheory.store import write_json
    _, res = real
    write_json(tmp_path / "analysis.json", res)
    saved = json.loads((tmp_path / "analysis.json").read_text())
    assert collapse_predictors(saved) == saved["collapse_predictors"]
    del saved["collapse_predictors"]                   # an older analysis: the figure computes it
    (tmp_path / "analysis.json").write_text(json.dumps(saved))
    (path,) = plot_collapse_predictors(tmp_path)
    assert path.name == FIGURE_NAME and path.stat().st_size > 10_000


def test_the_table_has_one_row_per_candidate_with_its_numbers():
    from ropetheory.models.predictors import predictor_rows
    cp = collapse_predictors(planted("silhouette"), resamples=50)
    rows = predictor_rows(cp)
    assert [r["candidate"] for r in rows] == NAMES
    for r in rows:
        c = cp["candidates"][r["candidate"]]
        assert (r["spearman"], r["r2"], [r["ci_low"], r["ci_high"]]) == (c["spearman"], c["r2"], c["spearman_ci"])


def test_analyze_on_a_key_dump_writes_the_predictor_and_failure_mode_tables_and_figure(tmp_path):
    """``ropetheory analyze DUMP`` on a short run of a tiny random Llama (L = 32, n = 130)."""
    import csv

    import torch

    from ropetheory.models.analyze import main as analyze_main
    from ropetheory.models.capture import capture, save_dump
    from test_sink_heads import tiny_llama
    torch.manual_seed(2)
    p = save_dump(capture(tiny_llama(), torch.randint(0, 97, (1, 130))), tmp_path / "keys.npz")
    assert analyze_main([str(p), "--out", str(tmp_path / "a")]) == 0
    js = json.loads((tmp_path / "a" / "analysis.json").read_text())
    with open(tmp_path / "a" / "collapse_predictors.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["candidate"] for r in rows] == NAMES
    assert float(rows[0]["spearman"]) == pytest.approx(js["collapse_predictors"]["candidates"]["fsv_ratio"]["spearman"])
    with open(tmp_path / "a" / "failure_modes.csv") as fh:
        fm = list(csv.DictReader(fh))
    assert len(fm) == 4 * len(js["failure_modes"]["summary"]) == 4 * 2
    assert (tmp_path / "a" / "collapse_predictors.png").stat().st_size > 10_000
