"""A config whose rope keys contradict each other is said aloud, in one line naming the key, exactly where
transformers (the library whose reading ``ropetheory.schedules.hf`` reproduces) warns; and where it chooses
one of two contradictory values, the same one is used."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

import ropetheory as rt
from ropetheory.cli import main
from ropetheory.schedules import hf, hf_facts

BASE = {"model_type": "llama", "head_dim": 8, "hidden_size": 32, "num_attention_heads": 4, "rope_theta": 100.0}

#: (name, config, the key the warning names)
CONTRADICTORY = [
    ("yarn factor against the lengths' ratio",
     {"max_position_embeddings": 8192,
      "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}}, "'factor'"),
    ("a yarn-only key in a linear dict",
     {"max_position_embeddings": 4096, "rope_scaling": {"rope_type": "linear", "factor": 2.0, "beta_fast": 32}},
     "'beta_fast'"),
    ("a factor below 1", {"max_position_embeddings": 4096, "rope_scaling": {"rope_type": "linear", "factor": 0.5}},
     "'factor'"),
    ("llama3 original length beyond the context",
     {"max_position_embeddings": 4096,
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192,
                       "low_freq_factor": 1.0, "high_freq_factor": 4.0}}, "'original_max_position_embeddings'"),
    ("llama3 high below low",
     {"max_position_embeddings": 131072,
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192,
                       "low_freq_factor": 4.0, "high_freq_factor": 1.0}}, "'high_freq_factor'"),
    ("yarn beta_fast below beta_slow",
     {"max_position_embeddings": 4096,
      "rope_scaling": {"rope_type": "yarn", "factor": 1.0, "original_max_position_embeddings": 4096,
                       "beta_fast": 1, "beta_slow": 32}}, "'beta_fast'"),
    ("rope_scaling and rope_parameters that differ",
     {"max_position_embeddings": 4096, "rope_parameters": {"rope_type": "linear", "factor": 2.0},
      "rope_scaling": {"rope_type": "linear", "factor": 4.0}}, "'rope_scaling'"),
]


def _ours(cfg):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sched = rt.from_config({**BASE, **cfg})
    return sched, [str(w.message) for w in caught]


def _transformers_warns(cfg) -> tuple[list[str], dict]:
    """What transformers logs while reading ``cfg`` (its own validation), and the rope dict it keeps."""
    transformers = pytest.importorskip("transformers")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())
    log = logging.getLogger("transformers")
    handler = Keep()
    log.addHandler(handler)
    try:
        c = transformers.LlamaConfig.from_dict({**BASE, **{k: (dict(v) if isinstance(v, dict) else v)
                                                           for k, v in cfg.items()}})
    finally:
        log.removeHandler(handler)
    return seen, dict(c.rope_parameters)


@pytest.mark.parametrize(("name", "cfg", "key"), CONTRADICTORY, ids=[c[0] for c in CONTRADICTORY])
def test_a_contradiction_is_one_warning_line_naming_the_key(name, cfg, key):
    _, said = _ours(cfg)
    assert len(said) == 1 and key in said[0] and "\n" not in said[0], said


@pytest.mark.parametrize(("name", "cfg", "key"), CONTRADICTORY[:-1], ids=[c[0] for c in CONTRADICTORY[:-1]])
def test_transformers_warns_on_the_same_configs(name, cfg, key):
    said, _ = _transformers_warns(cfg)
    assert said, f"transformers says nothing about {name}: our warning would be one it does not give"


def test_both_rope_dicts_given_the_one_transformers_keeps_is_used():
    cfg = CONTRADICTORY[-1][1]
    _, kept = _transformers_warns(cfg)
    sched, _ = _ours(cfg)
    np.testing.assert_array_equal(sched.theta, rt.schedule("rope", head_dim=8, base=100.0).theta / kept["factor"])
    assert kept["factor"] == cfg["rope_scaling"]["factor"]


@pytest.mark.parametrize("name", ["llama-3.1-8b", "qwen2-7b-instruct-yarn", "phi-3.5-mini-instruct",
                                  "llama-2-7b", "mistral-7b-v0.1", "gpt-neox-20b"])
def test_the_packaged_configs_draw_no_warning(name):
    from ropetheory.studies import audit
    cfg = audit._config(name)
    assert hf_facts.contradictions(cfg, cfg.get("rope_scaling") or cfg.get("rope_parameters") or {},
                             hf.load_rope_config(cfg).rope_type, cfg.get("max_position_embeddings")) == []


def test_a_contradiction_on_the_command_line_is_one_warning_line(tmp_path, capsys):
    p = tmp_path / "config.json"
    import json
    p.write_text(json.dumps({**BASE, **CONTRADICTORY[0][1]}))
    import sys
    with warnings.catch_warnings():                   # printed as a run prints it (pytest records warnings)
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(m, c, f, n, line))
        assert main(["schedule", "--config", str(p)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ropetheory schedule: warning: config: rope config key 'factor'")
