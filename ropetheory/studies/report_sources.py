"""What ``ropetheory report`` reads: a config, a packaged model, a ``.gguf``, a schedule name or a
JSON spec, turned into the schedules to report on; and a saved real-model analysis to show beside them."""
from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING, Any

import numpy as np


from . import figure7
from .. import data

from ..schedules.hf_facts import hf_view
from ..schedules.model_config import read_model_config
from ..core.checks import check_integer
from ..schedules import is_model_config, parse_spec, schedule_from_spec, with_default_head_dim
from ..core.errors import BadValue

if TYPE_CHECKING:                      # annotations only: importlib.abc.Traversable is gone in Python 3.14
    from importlib.resources.abc import Traversable


def load_source(source: str, *, train_len: int | None = None, seq_len: int | None = None) -> dict[str, Any]:
    """Read SOURCE into ``{label, kind, config, train_len, train_len_from, schedules: [...]}``.

    SOURCE: a packaged model (``smollm2``) or a ``.gguf``; a packaged fixture config by name
    (``llama-2-7b``, ``ropetheory.data.fixture_configs``); or anything
    ``ropetheory.schedules.parse_spec`` reads (a config.json or checkpoint folder, a JSON spec or
    config, ``name:key=value,...``).
    """
    if not isinstance(source, str) or not source.strip():
        raise BadValue(f"SOURCE must be a config.json path, a schedule name or a JSON spec, got {source!r}")
    for name, v in (("train_len", train_len), ("seq_len", seq_len)):
        if v is not None:
            check_integer(name, v, lo=2)
    model = _model_config(source)
    if model is not None:
        cfg, label = model
        out = _config_source(label, cfg, train_len, seq_len)
        out["model"] = label
        return out
    fixture = data.fixture_config(source)
    if fixture is not None:
        return _config_source(source, json.loads(fixture.read_text(encoding="utf-8")), train_len, seq_len)
    try:
        spec = parse_spec(source)
    except (TypeError, ValueError) as e:
        raise type(e)(f"SOURCE {source!r}: {e}") from None
    if is_model_config(spec):
        path = pathlib.Path(source)
        label = ("config" if source.lstrip()[:1] == "{" else
                 path.name if path.is_dir() else path.parent.name if path.name == "config.json" else path.stem)
        return _config_source(label, spec, train_len, seq_len)
    full = with_default_head_dim(spec)
    label = str(full.get("name", full.get("type", "spec")))
    try:
        theta = schedule_from_spec(full)
    except ValueError as e:
        if str(e).startswith("unknown schedule"):
            raise BadValue(unknown_source(source)) from None
        raise
    out = _schedule_source(label, theta, full, train_len)
    if "head_dim" in full and "head_dim" not in spec:
        note = "the spec names no head_dim (the command line's default head width)"
        out["schedules"][0]["assumed"] = {"head_dim": {"value": full["head_dim"], "note": note}}
    return out


def unknown_source(source: str) -> str:
    """One line for a SOURCE that is no file, packaged model, fixture config or schedule: every name it
    could have been, and the closest."""
    import difflib
    from ..models.registry import PACKAGED
    from ..schedules import ALIASES, SCHEDULES
    names = {"packaged models": sorted(PACKAGED), "fixture configs": sorted(data.fixture_configs()),
             "schedules": sorted(SCHEDULES)}
    every = [n for group in names.values() for n in group] + sorted(ALIASES)
    close = difflib.get_close_matches(source.split(":")[0], every, n=1, cutoff=0.5)
    return (f"SOURCE {source!r} is no config file, packaged model, fixture config or schedule"
            + (f" (did you mean {close[0]!r}?)" if close else "") + "; known: "
            + "; ".join(f"{k} {', '.join(v)}" for k, v in names.items())
            + " (or a config.json path, a checkpoint folder, a .gguf file or a JSON spec)")


def _model_config(source: str) -> tuple[dict, str] | None:
    """A packaged model's name or a ``.gguf`` file: its config as transformers reads it (no weights)."""
    from ..models.registry import PACKAGED, one_gguf_parse, resolve
    if source not in PACKAGED and not source.endswith(".gguf"):
        return None
    folder, gguf, label = resolve(source)
    from transformers import AutoConfig
    if gguf is None:
        cfg = AutoConfig.from_pretrained(str(folder))
    else:
        with one_gguf_parse():
            cfg = AutoConfig.from_pretrained(str(folder), gguf_file=gguf)
    return cfg.to_dict(), label


def find_analysis(label: str, explicit: str | None = None) -> pathlib.Path | Traversable | None:
    """``analysis.json`` of a model: ``explicit``, else ``results/analysis/<label>/``, else the committed one."""
    if explicit:
        p = pathlib.Path(explicit)
        p = p / "analysis.json" if p.is_dir() else p
        if not p.is_file():
            raise BadValue(f"--analysis {explicit!r}: no analysis.json there")
        return p
    p = pathlib.Path("results/analysis") / label / "analysis.json"
    return p if p.is_file() else data.analysis(label)


def measured_section(res: dict, layer_type: str | None) -> dict[str, Any]:
    """A real model's measured key geometry for one schedule, beside ropetheory's predictions."""
    heads = [h for h in res["heads"] if layer_type is None or h["layer_type"] == layer_type]
    grid, L = res["grid"], int(res["train_len"])
    def med(xs):
        vals = [x for x in xs if x is not None]
        return float(np.median(vals)) if vals else None

    rows = []
    for k in (1, 2, 4, 8):
        if k * L in grid:
            i = grid.index(k * L)
            rows.append({"n": k * L, "rho_measured": med([h["rho_measured"][i] for h in heads]),
                         "rho_rank1_prediction": med([h["rho_predicted"][i] for h in heads]),
                         "max_abs_error": max((h["rho_abs_err"][i] or 0.0) for h in heads),
                         "heads_with_sink": sum(1 for h in heads if (h["sink_rope"][i] or 0) > 0.5),
                         "sink_share": med([h["sink_rope"][i] for h in heads])})
    return {"heads": len(heads), "tokens": int(res["n"]), "quantised": bool(res.get("meta", {}).get("quantised")),
            "predicted_floor": med([h["predicted_floor"] for h in heads]),
            "noisy_limit": med([h["rho_noisy_limit"] for h in heads]),
            "C1_heads": sum(bool(h["C1"]) for h in heads), "C2_heads": sum(bool(h["C2"]) for h in heads),
            "rows": rows}


def _schedule_source(label, theta, spec, train_len):
    L = train_len or int(spec.get("train_len", figure7.TRAIN_LEN))
    how = "--train-len" if train_len else ("the spec's train_len" if "train_len" in spec else
                                           f"default {figure7.TRAIN_LEN} (the paper's Figure 7)")
    theta = np.asarray(theta, dtype=np.float64)
    params = {k: v for k, v in spec.items() if k not in ("name", "type")}
    sched = {"name": label, "layers": "all", "theta": theta, "attention_factor": 1.0, "rope_type": label,
             "window": None, "head_dim": 2 * theta.size, "spec": spec, "config": None, "layer_type": None,
             "parameters": {"schedule": label, **params}, "assumed": {}}
    return {"label": label, "kind": "schedule", "config": None, "train_len": L, "train_len_from": how,
            "schedules": [sched]}


def _config_source(label, cfg, train_len, seq_len):
    facts = read_model_config(cfg, train_len=train_len)
    if facts.train_len is None:
        raise BadValue("the config names no training length (original_max_position_embeddings or "
                         "max_position_embeddings): pass --train-len")
    L, how = facts.train_len, facts.train_len_from
    n = seq_len or L
    scheds = []
    for lt in facts.rope_layer_types:
        f = hf_view(facts.frequencies(lt, seq_len=n))
        layers = [i for i, t in enumerate(facts.layer_types) if t == lt] if lt else "all"
        window = facts.window_for(lt)
        w = window if window is not None and window < L else None
        scheds.append({"name": lt or "all layers", "layers": layers, "theta": np.asarray(f["theta"]),
                       "attention_factor": float(f["attention_factor"]), "rope_type": f["rope_type"],
                       "rope_theta": f["rope_theta"], "window": w, "head_dim": f["head_dim"],
                       "rotary_dim": f["rotary_dim"], "spec": None, "config": cfg, "layer_type": lt,
                       "parameters": f["parameters"], "assumed": f["assumed"]})
    return {"label": label, "kind": "config", "config": cfg, "train_len": L, "train_len_from": how,
            "seq_len": n, "schedules": scheds}
