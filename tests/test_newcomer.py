"""What a newcomer sees (issue #40): defaults said aloud, the parameters behind the frequencies shown in
every output, and one-line messages that name the argument as it was typed."""
from __future__ import annotations

import json
import pathlib

import ropetheory as rt
from ropetheory.cli import main
from ropetheory.studies import report

#: a config that misspells its base: transformers (and ropetheory) fall back to 10000
MISSPELT = {"hidden_size": 512, "num_attention_heads": 8, "max_position_embeddings": 2048, "rope_thetta": 500000}
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "examples" / "configs"
CLOUDS = 2                     # the outputs' wording is under test, not the statistics


def test_a_missing_base_is_recorded_as_assumed_naming_the_misspelt_key():
    f = rt.from_config(MISSPELT)
    assert f["rope_theta"] == 10000.0
    note = f["assumed"]["rope_theta"]
    assert note["value"] == 10000.0 and "'rope_thetta'" in note["note"] and "did you mean 'rope_theta'" in note["note"]
    spelt = rt.from_config({**MISSPELT, "rope_theta": 500000})
    assert spelt["assumed"] == {} and spelt["parameters"]["rope_theta"] == 500000.0


def test_a_misspelt_rope_scaling_is_said_to_leave_plain_rope():
    f = rt.from_config({**MISSPELT, "rope_theta": 5e5, "rope_scalling": {"rope_type": "linear", "factor": 4.0}})
    assert f["rope_type"] == "default"
    assert "'rope_scalling' is not read" in f["assumed"]["rope_type"]["note"]


def test_the_parameters_that_shaped_the_frequencies_are_all_listed():
    p = rt.from_config(CONFIGS / "llama-3.1-8b.json")["parameters"]
    assert p == {"rope_type": "llama3", "rope_theta": 500000.0, "head_dim": 128, "partial_rotary_factor": 1.0,
                 "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192, "attention_factor": 1.0}
    neox = rt.from_config(CONFIGS / "gpt-neox-20b.json")
    assert neox["parameters"]["partial_rotary_factor"] == 0.25 and neox["assumed"] == {}


def test_report_says_the_assumed_base_in_terminal_json_and_html(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(MISSPELT))
    argv = ["report", str(cfg), "--out", str(tmp_path / "r"), "--clouds", str(CLOUDS), "--quiet"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "rope_theta = 10000 assumed" in err and "did you mean 'rope_theta'" in err
    assert "base rope_theta 10000 (ASSUMED)" in out and "head_dim 64" in out
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    sec = rep["schedules"][0]
    assert sec["parameters"]["rope_theta"] == 10000.0 and sec["assumed"]["rope_theta"]["value"] == 10000.0
    page = (tmp_path / "r" / "report.html").read_text()
    assert 'id="parameters"' in page and "Default assumed" in page and "rope_thetta" in page
    assert main(argv) == 0                                # reused: says so, and still says the default aloud
    out, err = capsys.readouterr()
    assert out.splitlines()[-1].startswith("reused ") and "wrote" not in out
    assert "rope_theta = 10000 assumed" in err


def test_report_on_a_spelt_config_notes_nothing_and_shows_the_scaling():
    rep = report.build("llama-3.1-8b", n_clouds=CLOUDS)
    sec = rep["schedules"][0]
    assert sec["assumed"] == {} and sec["parameters"]["factor"] == 8.0
    assert "factor 8" in report.parameters_text(sec) and "ASSUMED" not in report.parameters_text(sec)
