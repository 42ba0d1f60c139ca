"""``ropetheory report``: every fixture config and paper schedule gives a finite page whose verdicts
are the studies' own numbers; ``ropetheory schedule`` prints valid JSON and a table."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from ropetheory.studies import figure7, report
from ropetheory import spectra
from ropetheory.cli import main
from ropetheory.schedules import schedule

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "examples" / "configs").glob("*.json"))
#: clouds per schedule: the fewest ``report.build`` takes (quantiles, shares and medians over clouds are
#: still computed; the sections' code paths, not their statistics, are under test); the FSV section's top
#: eigenvalues scale with it, and every report here (and in test_newcomer) runs the same compiled programs
CLOUDS = CONFIG_CLOUDS = 2
#: training lengths given to the configs whose own L (32768) makes the page slow to compute: a full-attention
#: horizon is L, and the inversion counts run over M = L and 4L (Gemma 3: d = 256). The schedules are the
#: configs' own (Gemma's sliding horizon stays 512; Qwen2's YaRN keeps its own factor and original length);
#: reading L from a config is test_train_len_defaults_to_the_original_length_then_max_positions's claim
CONFIG_TRAIN_LEN = {"gemma-3-270m": 4096, "qwen2-7b-instruct-yarn": 4096}


def _strict(text: str):
    def bad(c):
        raise AssertionError(f"non-finite constant {c} in JSON")
    return json.loads(text, parse_constant=bad)


def test_fixture_configs_are_the_seven_families():
    assert {c.stem for c in CONFIGS} == {"llama-2-7b", "llama-3.1-8b", "mistral-7b-v0.1", "qwen2-7b-instruct-yarn",
                                         "phi-3.5-mini-instruct", "gemma-3-270m", "gpt-neox-20b"}


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda p: p.stem)
def test_report_on_each_fixture_config_writes_a_finite_page_with_every_section(cfg, tmp_path):
    rep = report.build(str(cfg), n_clouds=CONFIG_CLOUDS, train_len=CONFIG_TRAIN_LEN.get(cfg.stem))
    page = report.write(rep, tmp_path)
    data = _strict((tmp_path / "report.json").read_text())
    assert data["train_len"] == rep["train_len"] > 0 and data["n_clouds"] == CONFIG_CLOUDS
    text = page.read_text()
    for sec in report.SECTIONS:
        assert f'id="{sec}"' in text
    assert text.count("data:image/png;base64,") == len(rep["schedules"])
    for name in ("planes.csv", "curves.csv", "drift.csv"):
        body = (tmp_path / name).read_text()
        assert "nan" not in body.lower() and "inf" not in body.lower().replace("info", "")


def test_train_len_defaults_to_the_original_length_then_max_positions():
    by = {c.stem: report.load_source(str(c)) for c in CONFIGS}
    assert (
        by["llama-3.1-8b"]["train_len"] == 8192
        and by["llama-3.1-8b"]["train_len_from"] == "original_max_position_embeddings"
    )
    assert by["phi-3.5-mini-instruct"]["train_len"] == 4096
    assert by["llama-2-7b"]["train_len"] == 4096 and by["llama-2-7b"]["train_len_from"] == "max_position_embeddings"
    g = by["gemma-3-270m"]["schedules"]
    assert sorted(s["name"] for s in g) == ["full_attention", "sliding_attention"]
    assert next(s for s in g if s["name"] == "sliding_attention")["window"] == 512
    assert report.load_source(str(CONFIGS[0]), train_len=1000)["train_len"] == 1000


@pytest.mark.parametrize("name, kw", [("rope", {}), ("partial", {"fraction": 0.5}), ("high_frequency", {}),
                                      ("rope_id", {"train_len": 4096})])
def test_report_verdicts_equal_the_figure7_study_on_the_same_schedule(name, kw):
    src = name + (":" + ",".join(f"{k}={v}" for k, v in kw.items()) if kw else "")
    rep = report.build(src, n_clouds=CLOUDS)
    sec = rep["schedules"][0]
    theta = schedule(name, head_dim=128, **kw).theta
    V = figure7.clouds(128, CLOUDS)
    V = V / np.linalg.norm(V, axis=1, keepdims=True)
    grid = np.array(sec["fsv"]["grid"])
    rho = spectra.rank1_curves_batch(theta, V, grid).rho[:, list(grid).index(figure7.TRAIN_LEN)]
    fl, allrot = figure7.floors(theta, V)
    crit = figure7.criteria(rho, fl, allrot)
    assert sec["fsv"]["C1"] == crit["C1"] and sec["fsv"]["C2"] == crit["C2"]
    assert sec["fsv"]["floor"] == crit["floor_median"] and sec["fsv"]["rho_H"] == float(np.median(rho))
    if name == "rope_id":                                  # the paper: RoPE-ID meets both criteria
        assert crit["C1"] and crit["C2"]


def test_men_check_is_the_sum_of_cosines_and_finds_llama2_infeasible():
    theta = schedule("rope", head_dim=128, base=1e4).theta
    sec = report.men_section(theta, 4096, {"rope_type": "default"})
    m = sec["argmin_m"]
    assert sec["min_B"] == pytest.approx(float(np.cos(m * theta).sum()), abs=1e-9)
    assert not sec["holds"] and sec["smallest_feasible_base"] == pytest.approx(26952.34, rel=1e-6)


@pytest.mark.parametrize("source, match", [
    ("does/not/exist.json", "does not exist"), ("{not json", "does not parse"), ("[1, 2]", "SOURCE"),
    ("rope:base", "KEY=VALUE"), ("", "SOURCE must be")])
def test_report_rejects_bad_sources_naming_them(source, match):
    with pytest.raises((ValueError, TypeError), match=match):
        report.load_source(source)


def test_report_rejects_bad_lengths_and_a_config_without_a_training_length(tmp_path):
    with pytest.raises((TypeError, ValueError), match="train_len"):
        report.load_source("rope", train_len=True)
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"head_dim": 64, "rope_theta": 1e4}))
    with pytest.raises(ValueError, match="--train-len"):
        report.load_source(str(p))
    p.write_text("[1]")
    with pytest.raises((TypeError, ValueError), match="JSON object"):
        report.load_source(str(p))


def test_schedule_command_prints_valid_json_with_null_for_nope_planes_and_a_table(capsys):
    assert main(["schedule", "partial", "--head-dim", "8", "--param", "fraction=0.5", "--json"]) == 0
    out = _strict(capsys.readouterr().out)
    assert out["wavelength"][2:] == [None, None] and out["theta"][2:] == [0.0, 0.0]
    assert main(["schedule", "partial", "--head-dim", "8", "--param", "fraction=0.5"]) == 0
    table = capsys.readouterr().out
    assert "wavelength" in table and table.count("NoPE") == 2


def test_report_on_a_packaged_model_shows_its_measured_geometry_beside_the_prediction(tmp_path):
    rep = report.build("smollm2-135m", n_clouds=CLOUDS)
    sec = rep["schedules"][0]
    assert rep["train_len"] == 8192 and sec["rope_type"] == "default" and sec["head_dim"] == 64
    me = sec["measured"]                                   # the committed 65,536-token analysis
    assert me["heads"] == 90 and me["rows"][0]["n"] == 8192
    assert abs(me["rows"][0]["rho_measured"] - me["rows"][0]["rho_rank1_prediction"]) < 0.05
    page = report.write(rep, tmp_path).read_text()
    assert 'id="measured"' in page and "measured on the model" in " ".join(sec["verdict"])
