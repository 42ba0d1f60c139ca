"""The causal test's bookkeeping: several interventions share one unchanged run and a journal that a rerun
resumes from, the verdict follows the rule its module states (cause, casualty, undecided, no failure,
incomplete) at its named thresholds, and the text of an installed distribution is one fixed, stated text."""
from __future__ import annotations

import copy

import pytest

from ropetheory.models import intervention_report as rep
from ropetheory.models.interventions import measure, measure_many
from ropetheory.store import Journal

from test_interventions import L, N, tiny_llama  # noqa: F401  (the module's tiny model and sizes)


@pytest.fixture(scope="module")
def small():
    import torch
    torch.manual_seed(5)
    return tiny_llama(), torch.randint(0, 97, (N,)).tolist()


def test_several_interventions_share_one_unchanged_run_and_equal_single_measurements(small, tmp_path, monkeypatch):
    from ropetheory.models import interventions
    model, ids = small
    calls = []
    real = interventions._one_run
    monkeypatch.setattr(interventions, "_one_run", lambda *a: calls.append(a[-1]) or real(*a))
    store = Journal(tmp_path / "j.jsonl", code="c")
    many = measure_many(model, ids, names=["clamp-sink", "sink-to-mean"], L=L, tokens_per_pass=40, store=store)
    assert calls == ["unchanged", "intervened", "intervened"]
    for name in many:
        one = measure(model, ids, name=name, L=L, tokens_per_pass=40)
        assert many[name]["runs"] == one["runs"] and many[name]["ppl_ratio"] == one["ppl_ratio"]
    calls.clear()
    again = measure_many(model, ids, names=["sink-to-mean", "clamp-sink"], L=L, tokens_per_pass=40,
                         store=Journal(tmp_path / "j.jsonl", code="c"))
    assert calls == [] and again == many                      # resumed: nothing recomputed
    with pytest.warns(UserWarning, match="computed by other code"):
        measure_many(model, ids, names=["clamp-sink"], L=L, tokens_per_pass=40,
                     store=Journal(tmp_path / "j.jsonl", code="other"))
    assert calls == ["unchanged", "intervened"]


def _result(name: str, within: float, past: list[float], within_u: float = 2.0,
            past_u: tuple[float, ...] = (4.0, 5.0)) -> dict:
    """A result whose unchanged run has mean losses ``within_u`` then ``past_u`` and intervened ``within``, ``past``."""
    Lt = 100
    edges = [(50, Lt), (Lt, 2 * Lt), (2 * Lt, 4 * Lt)][: 1 + len(past_u)]
    import math

    def rng(vals):
        return [{"start": a, "end": b, "count": b - a, "mean_nll": v, "ppl": math.exp(v)}
                for (a, b), v in zip(edges, vals, strict=True)]
    med = {"share": [0.3, 0.01, 0.001]}
    return {"intervention": name, "train_len": Lt, "n": 4 * Lt, "grid": [Lt, 2 * Lt, 4 * Lt],
            "runs": {"unchanged": {"nll_ranges": rng([within_u, *past_u]), "median": med},
                     "intervened": {"nll_ranges": rng([within, *past]), "median": med}},
            "meta": {"model": "m", "text": {"source": "s", "sha256": "0" * 64, "ids_sha256": "1" * 64}}}


def _all(**over) -> dict:
    same = {"clamp-sink": (2.0, [4.0, 5.0]), "hold-sink-odds": (2.0, [4.0, 5.0]), "clamp-all": (2.0, [2.2, 2.3]),
            "clamp-slow": (2.0, [2.3, 2.4]), "sink-to-mean": (2.0, [4.0, 5.0]), "sink-at-4L": (2.5, [5.0, 6.0]),
            "clamp-control": (2.0, [4.0, 5.0])}
    same.update(over)
    return {k: _result(k, w, p) for k, (w, p) in same.items()}


def test_rescue_by_every_pair_but_not_by_the_sink_makes_the_sink_a_casualty():
    v = rep.verdict(_all())
    assert v["verdict"] == "casualty" and v["tests"]["clamp-all"]["rescues"]
    assert v["tests"]["clamp-all"]["rescued_fraction"] == pytest.approx([0.9, 0.9])


def test_restoring_the_sink_rescuing_and_breaking_it_costing_with_a_clean_control_is_cause():
    v = rep.verdict(_all(**{"hold-sink-odds": (2.0, [2.0 + 2.0 * 0.5, 2.0 + 3.0 * 0.5])}))
    assert v["verdict"] == "cause"                                   # exactly half the excess removed: rescue
    just_short = rep.verdict(_all(**{"hold-sink-odds": (2.0, [3.01, 3.5])}))
    assert just_short["verdict"] == "casualty"                        # 0.495 of the first range's excess


@pytest.mark.parametrize("over, why", [
    ({"clamp-control": (2.0 + 2 * rep.COST_NATS, [4.0, 5.0])}, "control clean: False"),
    ({"sink-at-4L": (2.0 + rep.COST_NATS / 2, [4.0, 5.0])}, "breaking costs within L: none"),
])
def test_a_control_that_costs_or_breaking_that_does_not_leaves_the_test_undecided(over, why):
    v = rep.verdict(_all(**{"hold-sink-odds": (2.0, [2.5, 2.5])}, **over))
    assert v["verdict"] == "undecided" and why in v["why"]


def test_no_excess_past_L_is_no_failure_and_missing_interventions_are_named():
    flat = {k: _result(k, 2.0, [2.0, 2.0], past_u=(2.0 + rep.COST_NATS / 2, 2.0)) for k in ("clamp-sink",)}
    assert rep.verdict(flat)["verdict"] == "no failure"
    part = {k: v for k, v in _all().items() if k != "clamp-control"}
    v = rep.verdict(part)
    assert v["verdict"] == "incomplete" and v["missing"] == ["clamp-control"]


def test_the_summary_writes_table_verdict_and_figure_from_results_on_the_same_tokens(tmp_path):
    from ropetheory.store import write_json
    res = _all()
    other = copy.deepcopy(res["clamp-sink"])
    other["meta"]["text"]["ids_sha256"] = "2" * 64
    for k, r in res.items():
        write_json(tmp_path / f"intervention-{k}" / "intervention.json", r)
    v = rep.write_summary(tmp_path, ids_sha256="1" * 64)
    write_json(tmp_path / "intervention-zz" / "intervention.json", {**other, "intervention": "zz"})
    assert set(rep.load_results(tmp_path, ids_sha256="1" * 64)) == set(res)       # other tokens left out
    assert v["verdict"] == "casualty"
    md = (tmp_path / "verdict.md").read_text()
    assert "**Verdict: casualty**" in md and all(f"| {k} |" in md for k in res)
    rows = (tmp_path / "interventions.csv").read_text().splitlines()
    assert len(rows) == 1 + len(res) and "rescued_100_200" in rows[0]
    assert (tmp_path / "interventions.png").stat().st_size > 0 and (tmp_path / "interventions.svg").exists()


def test_the_length_excess_is_the_unchanged_loss_over_the_windows_and_leaves_the_verdict_alone():
    """Unchanged past L (4.0, 5.0) over the window's (3.0, 3.5): 1.0 and 1.5 nats; clamp-all (2.2, 2.3)
    removes 1.8 of each, hold-sink-odds (3.5, 4.25) half of each; everything the rule reads is as without it."""
    base = _all(**{"hold-sink-odds": (2.0, [3.5, 4.25])})
    v = rep.verdict({**base, "window": _result("window", 2.0, [3.0, 3.5])})
    without = rep.verdict(base)
    assert "length_excess" not in without
    assert all("length_excess_removed" not in t for t in without["tests"].values())
    x = v["length_excess"]
    assert x["reference"] == "window" and x["ranges"] == [[100, 200], [200, 400]] and x["fails_vs_reference"]
    assert x["nats"] == pytest.approx([1.0, 1.5])
    assert v["tests"]["clamp-all"]["length_excess_removed"] == pytest.approx([1.8, 1.8])
    assert v["tests"]["hold-sink-odds"]["length_excess_removed"] == pytest.approx([0.5, 0.5])
    assert v["tests"]["window"]["length_excess_removed"] == pytest.approx([1.0, 1.0])
    assert {k: v[k] for k in without if k != "tests"} == {k: w for k, w in without.items() if k != "tests"}
    assert {k: {f: t[f] for f in without["tests"][k]} for k, t in v["tests"].items() if k != "window"} \
        == without["tests"]
    near = [4.0 - rep.COST_NATS / 2, 5.0 - rep.COST_NATS / 2]           # the window half a cost below
    flat = rep.verdict({**base, "window": _result("window", 2.0, near)})
    assert not flat["length_excess"]["fails_vs_reference"]
    assert flat["tests"]["clamp-all"]["length_excess_removed"] == [None, None]     # no fraction of no excess


def test_the_reference_verdict_is_the_same_rule_on_the_length_excess_which_harder_later_text_does_not_move():
    """Unchanged past L (4.0, 5.0) over within L 2.0 (excess 2.0, 3.0) but over the window (3.0, 3.5) only
    1.0, 1.5: hold-sink-odds (3.4, 4.2) removes 0.3, 0.27 of the excess (no rescue: casualty) and 0.6, 0.53
    of the length excess (a rescue; with sink-at-4L's cost and a clean control: cause)."""
    res = {**_all(**{"hold-sink-odds": (2.0, [3.4, 4.2])}), "window": _result("window", 2.0, [3.0, 3.5])}
    v = rep.verdict(res)
    assert v["verdict"] == "casualty" and not v["tests"]["hold-sink-odds"]["rescues"]
    x = v["length_excess"]
    assert v["tests"]["hold-sink-odds"]["length_excess_removed"] == pytest.approx([0.6, 0.8 / 1.5])
    assert x["verdict"] == "cause" and "breaking the sink costs within L (sink-at-4L)" in x["why"]
    near = {**res, "window": _result("window", 2.0, [4.0 - rep.COST_NATS / 2, 5.0 - rep.COST_NATS / 2])}
    flat = rep.verdict(near)
    assert flat["verdict"] == "casualty" and flat["length_excess"]["verdict"] == "no failure"
    assert "the window reference's loss on the same tokens by less than" in flat["length_excess"]["why"]
    part = rep.verdict({k: r for k, r in res.items() if k != "clamp-control"})
    assert part["verdict"] == part["length_excess"]["verdict"] == "incomplete"
    assert "reference verdict" not in str(rep.verdict(_all())).lower() and "length_excess" not in rep.verdict(_all())


def test_the_summary_states_the_length_excess_and_its_removed_fractions_where_the_window_ran(tmp_path):
    from ropetheory.store import write_json
    res = {**_all(), "window": _result("window", 2.0, [4.0 - rep.COST_NATS / 2, 3.5])}
    for k, r in res.items():
        write_json(tmp_path / f"intervention-{k}" / "intervention.json", r)
    v = rep.write_summary(tmp_path)
    assert v["verdict"] == rep.verdict(_all())["verdict"] == "casualty"
    md = (tmp_path / "verdict.md").read_text()
    assert "Length excess over the windowed reference (unchanged minus window on the same tokens, nats): " \
           "[100, 200) +0.025, [200, 400) +1.500: the unchanged model fails relative to the reference" in md
    assert "| clamp-all | +0.000 | 0.90, 0.90 | -, 1.80 | True |" in md and "| window |" in md
    assert f"**Reference verdict (the same rule on the length excess): {v['length_excess']['verdict']}**" in md
    rows = (tmp_path / "interventions.csv").read_text().splitlines()
    assert len(rows) == 1 + len(res)
    assert "length_excess_200_400_nats" in rows[0] and "length_excess_removed_100_200" in rows[0]
    short = _result("window", 2.0, [3.0], past_u=(4.0,))              # one range past L, the others two
    with pytest.raises(ValueError, match=r"clamp-sink: loss ranges past L .* not those of the window reference"):
        rep.verdict({**_all(), "window": short})


def test_a_distribution_text_is_fixed_and_stated_and_bad_names_are_refused():
    from ropetheory.models.corpus import distribution_text, text_tokens
    a, desc = distribution_text("gguf")
    assert a == distribution_text("gguf")[0] and desc.startswith("distribution gguf ")
    with pytest.raises(ValueError, match="'no-such-dist' is not installed"):
        distribution_text("no-such-dist")
    with pytest.raises(ValueError, match="not both"):
        text_tokens(lambda t, **k: {"input_ids": [1, 2]}, 2, text_file="x", distribution="gguf")


def _longest_repeat_brute(ids: list[int]) -> int:
    n = len(ids)
    return max([k for k in range(1, n) for i in range(n - k + 1) for j in range(i + 1, n - k + 1)
                if ids[i:i + k] == ids[j:j + k]] or [0])


@pytest.mark.parametrize("seed", range(12))
def test_the_longest_repeated_run_equals_a_brute_force_search(seed):
    import numpy as np
    from ropetheory.models.corpus import longest_repeat
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 1 + seed % 4, size=int(rng.integers(0, 24))).tolist()
    if seed % 3 == 0 and ids:                                        # plant a long copy
        ids = ids + ids[: len(ids) // 2 + 1]
    assert longest_repeat(ids) == _longest_repeat_brute(ids)


def test_a_repeated_text_states_where_it_repeats_and_how_long_the_copy_is():
    from ropetheory.models.corpus import text_tokens

    def tok(text, **_):
        return {"input_ids": [ord(c) for c in text]}
    tok.convert_ids_to_tokens = chr                                   # type: ignore[attr-defined]
    import pathlib
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        f = pathlib.Path(d) / "t.txt"
        f.write_text("abcdefgh")
        ids, desc = text_tokens(tok, 20, text_file=f, repeat=True)
    assert desc["repeats_from_position"] == 8 and desc["longest_repeat_tokens"] == 12


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "models" / "interventions"


@pytest.mark.parametrize("model, expected, reference", [("smollm2-135m", "casualty", "casualty"),
                                                        ("gemma3-270m", "casualty", "cause"),
                                                        ("qwen2.5-coder-1.5b", "no failure", None),
                                                        ("qwen2.5-coder-1.5b-4L", "incomplete", "no failure")])
def test_the_committed_verdict_is_what_the_committed_runs_give_and_the_docs_quote_it(model, expected, reference,
                                                                                      tmp_path):
    import shutil
    shutil.copytree(COMMITTED / model, tmp_path / model)
    v = rep.write_summary(tmp_path / model)
    for f in ("verdict.json", "verdict.md", "interventions.csv"):
        assert (tmp_path / model / f).read_text() == (COMMITTED / model / f).read_text()
    assert v["verdict"] == expected and v.get("length_excess", {}).get("verdict") == reference
    res = rep.load_results(COMMITTED / model)
    assert next(iter(res.values()))["meta"]["text"]["source"].startswith("distribution gguf")
    readme = (ROOT / "README.md").read_text()
    findings = (ROOT / "docs" / "findings.md").read_text().replace("**", "")
    if expected == "casualty":
        held = v["tests"][rep.RESTORE]["rescued_fraction"]
        assert f"{max(f for f in held if f is not None):.0%}" in readme
    assert f'verdict "{expected}"' in findings or expected == "casualty"
    assert reference is None or f'reference verdict "{reference}"' in findings
    for name, r in res.items():
        ppl = " · ".join(f"{x['ppl']:.{2 if x['ppl'] < 100 else 1}f}" for x in r["runs"]["intervened"]["nll_ranges"])
        assert ppl in findings, (name, ppl)


def test_the_heldout_analyses_give_the_decomposition_and_predictors_the_findings_quote():
    import json
    from ropetheory.models.predictors import collapse_predictors
    from ropetheory.models.sinks import decomposition_summary
    findings = (ROOT / "docs" / "findings.md").read_text().replace("**", "")
    for model, first in (("smollm2-135m", "SmolLM2, 90"), ("gemma3-270m", "Gemma 3, 3 global"),
                         ("qwen2.5-coder-1.5b", "Qwen2.5, 56")):
        res = json.loads((ROOT / "docs" / "models" / "heldout" / model / "analysis.json").read_text())
        assert res["meta"]["text"]["source"].startswith("distribution gguf")
        s = decomposition_summary(res["heads"], res["grid"], res["train_len"])
        for c in (c for c in s["changes"] if c["kind"] == "rope"):
            m = c["median"]
            row = (f"| {first} | L → {c['k']}L | {m['d_log_odds']:+.2f} | {m['d_sink_logit']:+.2f} | "
                   f"{m['d_others_mean']:+.2f} | {m['d_dilution']:+.2f} | {m['d_spread']:+.2f} |").replace("+-", "-")
            assert row.replace("-", "−").replace("−−", "−") in findings.replace("| −", "| −"), row
    cp = collapse_predictors(json.loads((ROOT / "docs/models/heldout/smollm2-135m/analysis.json").read_text()))
    sil = cp["candidates"]["silhouette"]
    assert f"silhouette after RoPE {sil['spearman']:+.2f} [{sil['spearman_ci'][0]:.2f}, {sil['spearman_ci'][1]:.2f}]" \
        in findings


@pytest.mark.parametrize("bad, err", [([1.5, 2], ValueError), ("abc", TypeError), ([[1, 2]], ValueError),
                                      ([1, None], TypeError)])
def test_the_longest_repeat_refuses_what_is_not_a_list_of_token_ids(bad, err):
    from ropetheory.models.corpus import longest_repeat
    with pytest.raises(err, match="ids"):
        longest_repeat(bad)
    assert longest_repeat([-3, 5, -3, 5]) == 2                       # negative ids hash by their bits


def test_results_with_another_L_on_the_same_tokens_are_not_mixed_into_the_verdict(tmp_path):
    import os
    from ropetheory.store import write_json
    old = _result("clamp-all", 2.0, [2.2, 2.3])
    old["train_len"] = 50
    write_json(tmp_path / "intervention-clamp-all" / "intervention.json", old)
    os.utime(tmp_path / "intervention-clamp-all" / "intervention.json", (1, 1))
    write_json(tmp_path / "intervention-clamp-sink" / "intervention.json", _result("clamp-sink", 2.0, [4.0, 5.0]))
    assert list(rep.load_results(tmp_path)) == ["clamp-sink"]
    with pytest.raises(ValueError, match="no intervention results"):
        rep.load_results(tmp_path / "nothing")
    from ropetheory.models.interventions import check_names, INTERVENTIONS
    assert check_names("all") == list(INTERVENTIONS) and check_names(["clamp-all", "clamp-all"]) == ["clamp-all"]
    with pytest.raises(ValueError, match="a name, 'all' or a list"):
        check_names(3)
