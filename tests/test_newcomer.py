"""What a newcomer sees (issue #40): defaults said aloud, the parameters behind the frequencies shown in
every output, and one-line messages that name the argument as it was typed."""
from __future__ import annotations

import json
import pathlib

import pytest

import ropetheory as rt
from ropetheory.cli import main
from ropetheory.schedules.hf_facts import rope_type_of, shaping_parameters
from ropetheory.studies import report

#: a config that misspells its base: transformers (and ropetheory) fall back to 10000
MISSPELT = {"hidden_size": 512, "num_attention_heads": 8, "max_position_embeddings": 2048, "rope_thetta": 500000}
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "examples" / "configs"
CLOUDS = 2                     # the outputs' wording is under test, not the statistics


def test_a_missing_base_is_recorded_as_assumed_naming_the_misspelt_key():
    f = rt.from_config(MISSPELT)
    assert shaping_parameters(f)["rope_theta"] == 10000.0
    note = f.assumed["rope_theta"]
    assert note["value"] == 10000.0 and "'rope_thetta'" in note["note"] and "did you mean 'rope_theta'" in note["note"]
    spelt = rt.from_config({**MISSPELT, "rope_theta": 500000})
    assert spelt.assumed == {} and shaping_parameters(spelt)["rope_theta"] == 500000.0


def test_a_misspelt_rope_scaling_is_said_to_leave_plain_rope():
    f = rt.from_config({**MISSPELT, "rope_theta": 5e5, "rope_scalling": {"rope_type": "linear", "factor": 4.0}})
    assert rope_type_of(f) == "default"
    assert "'rope_scalling' is not read" in f.assumed["rope_type"]["note"]


def test_the_parameters_that_shaped_the_frequencies_are_all_listed():
    p = shaping_parameters(rt.from_config(CONFIGS / "llama-3.1-8b.json"))
    assert p == {"rope_type": "llama3", "rope_theta": 500000.0, "head_dim": 128, "partial_rotary_factor": 1.0,
                 "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192, "attention_factor": 1.0}
    neox = rt.from_config(CONFIGS / "gpt-neox-20b.json")
    assert shaping_parameters(neox)["partial_rotary_factor"] == 0.25 and neox.assumed == {}


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


ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_a_dict_passed_for_theta_is_one_line_saying_what_to_pass():
    import numpy as np
    cfg = rt.from_config(CONFIGS / "llama-2-7b.json").to_dict()     # a dict holding the frequencies
    with pytest.raises(TypeError) as e:
        rt.apply_rope(cfg, np.ones((4, 128)))
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 200 and "theta=cfg['theta']" in msg


def test_an_unknown_report_source_lists_every_kind_of_name_and_the_closest():
    with pytest.raises(ValueError) as e:
        report.load_source("llama-2")
    msg = str(e.value)
    assert "did you mean 'llama-2-7b'?" in msg
    for name in ("smollm2-135m", "gemma3-270m", "phi-3.5-mini-instruct", "rope_id"):
        assert name in msg


@pytest.mark.parametrize("argv, usage, hint", [
    (["schedule", "--jsn"], "usage: ropetheory schedule", "--jsn (did you mean --json?)"),
    (["curve", "--n-mx", "5"], "usage: ropetheory curve", "--n-mx (did you mean --n-max?)"),
    (["report", "rope", "--fresch"], "usage: ropetheory report", "--fresch (did you mean --fresh?)"),
    (["scheduel"], "usage: ropetheory ", "unknown command 'scheduel' (did you mean 'schedule'?)"),
])
def test_an_unknown_argument_shows_its_commands_usage_and_the_closest_flag(argv, usage, hint, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(usage) and hint in err


@pytest.mark.parametrize("argv, typed", [(["curve", "--n-max", "-5"], "--n-max must"),
                                         (["report", "rope", "--train-len", "1"], "--train-len must"),
                                         (["report", "rope", "--clouds", "1"], "--clouds must")])
def test_errors_name_the_flag_as_typed(argv, typed, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert typed in err and "n_max" not in err and "n_clouds" not in err


@pytest.mark.parametrize("argv", [[], ["fig7"], ["audit"], ["analyze"], ["report"]])
def test_help_has_no_markup_and_shows_list_defaults_as_typed(argv, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    out = capsys.readouterr().out
    assert "`" not in out and "**" not in out and ":func:" not in out
    assert "default: (" not in out and "default: [" not in out
    if argv == ["fig7"]:
        assert "(default: 128,80)" in out


def test_the_readme_names_every_command():
    from ropetheory.cli import STUDIES
    text = (ROOT / "README.md").read_text()
    listed = text[text.index("# every command:"):text.index("```", text.index("# every command:"))]
    words = {w.strip(" ,#\n") for w in listed.replace("every command:", "").split(",")}
    assert set(STUDIES) | {"schedule", "curve", "models"} <= words


@pytest.mark.parametrize("page", ["README.md", "docs/guide/audit.md"])
def test_the_audit_examples_comments_say_what_they_print(page, capsys, tmp_path, monkeypatch):
    import re
    text = (ROOT / page).read_text()
    code = next(c for c in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "floor from position" in c)
    comment = next(line.split("#", 1)[1] for line in code.splitlines()
                   if line.strip().startswith("print(") and "floor from position" in line)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, page, "exec"), {"__name__": "__docs__"})
    out = capsys.readouterr().out
    pieces = [p.strip() for p in comment.split("...") if p.strip()]
    assert pieces and all(p in out for p in pieces), (pieces, out)


def test_the_docs_install_as_the_readme_does():
    assert "pip install ." in (ROOT / "README.md").read_text()
    for page in (ROOT / "docs").rglob("*.md"):
        text = page.read_text()
        assert "pip install ropetheory" not in text and "'ropetheory[" not in text, page
