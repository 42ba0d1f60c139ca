"""What ``ropetheory report`` reads: a config, a packaged model, a ``.gguf``, a schedule name or a
JSON spec, turned into the schedules to report on; and a saved real-model analysis to show beside them."""
from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from . import figure7

from ..schedules.hf import frequencies_from_config
from ..schedules import is_model_config, schedule, schedule_from_spec


def _parse_value(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def load_source(source: str, *, train_len: int | None = None, seq_len: int | None = None) -> dict[str, Any]:
    """Read SOURCE into ``{label, kind, config, train_len, train_len_from, schedules: [...]}``."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"SOURCE must be a config.json path, a schedule name or a JSON spec, got {source!r}")
    for name, v in (("train_len", train_len), ("seq_len", seq_len)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 2):
            raise ValueError(f"{name} must be an integer >= 2, got {v!r}")
    path = pathlib.Path(source)
    cfg = None
    model = _model_config(source)
    if model is not None:
        cfg, label = model
        out = _config_source(label, cfg, train_len, seq_len)
        out["model"] = label
        return out
    if source.lstrip()[:1] in ("{", "["):
        try:
            spec = json.loads(source)
        except json.JSONDecodeError as e:
            raise ValueError(f"SOURCE looks like JSON but does not parse: {e}") from None
        if not isinstance(spec, dict):
            raise ValueError(f"a JSON SOURCE must be an object, got {type(spec).__name__}")
        if is_model_config(spec):
            cfg, label = spec, "config"
        else:
            label = spec.get("name", "spec")
            return _schedule_source(label, schedule_from_spec(spec), spec, train_len)
    elif path.suffix == ".json" or path.exists():
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} does not exist")
        try:
            cfg = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"config file {str(path)!r} is not JSON: {e}") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"config file {str(path)!r} must hold a JSON object, got {type(cfg).__name__}")
        label = path.stem if path.name != "config.json" else path.parent.name
    else:
        name, _, params = source.partition(":")
        kw = {}
        for kv in filter(None, params.split(",")):
            if "=" not in kv:
                raise ValueError(f"schedule parameters must be KEY=VALUE, got {kv!r} in {source!r}")
            k, v = kv.split("=", 1)
            kw[k.strip()] = _parse_value(v.strip())
        kw.setdefault("head_dim", 128)
        return _schedule_source(name, schedule(name, **kw), {"name": name, **kw}, train_len)
    return _config_source(label, cfg, train_len, seq_len)


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


def find_analysis(label: str, explicit: str | None = None) -> pathlib.Path | None:
    """``analysis.json`` of a model: ``explicit``, else ``results/analysis/<label>/``, else the committed one."""
    if explicit:
        p = pathlib.Path(explicit)
        p = p / "analysis.json" if p.is_dir() else p
        if not p.is_file():
            raise ValueError(f"--analysis {explicit!r}: no analysis.json there")
        return p
    root = pathlib.Path(__file__).resolve().parents[2]
    for p in (pathlib.Path("results/analysis") / label / "analysis.json",
              root / "docs" / "figures" / "models" / label / "analysis.json"):
        if p.is_file():
            return p
    return None


def measured_section(res: dict, layer_type: str | None) -> dict[str, Any]:
    """A real model's measured key geometry for one schedule, beside ropetheory's predictions."""
    heads = [h for h in res["heads"] if layer_type is None or h["layer_type"] == layer_type]
    grid, L = res["grid"], int(res["train_len"])
    med = lambda xs: float(np.median([x for x in xs if x is not None])) if any(x is not None for x in xs) else None
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
    sched = {"name": label, "layers": "all", "theta": theta, "attention_factor": 1.0, "rope_type": label,
             "window": None, "head_dim": 2 * theta.size, "spec": spec, "config": None, "layer_type": None}
    return {"label": label, "kind": "schedule", "config": None, "train_len": L, "train_len_from": how,
            "schedules": [sched]}


def _config_source(label, cfg, train_len, seq_len):
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(rp, dict):
        raise ValueError(f"rope_parameters/rope_scaling must be a dict, got {rp!r}")
    per_type = [k for k, v in rp.items() if isinstance(v, dict)]
    orig = cfg.get("original_max_position_embeddings")
    if orig is None:
        orig = next((v.get("original_max_position_embeddings") for v in ([rp] + [rp[k] for k in per_type])
                     if isinstance(v, dict) and v.get("original_max_position_embeddings")), None)
    if train_len:
        L, how = train_len, "--train-len"
    elif orig:
        L, how = int(orig), "original_max_position_embeddings"
    elif cfg.get("max_position_embeddings"):
        L, how = int(cfg["max_position_embeddings"]), "max_position_embeddings"
    else:
        raise ValueError("the config names no training length (original_max_position_embeddings or "
                         "max_position_embeddings): pass --train-len")
    n = seq_len or L
    scheds = []
    window = cfg.get("sliding_window")
    layer_types = cfg.get("layer_types") or []
    for lt in (per_type or [None]):
        f = frequencies_from_config(cfg, seq_len=n, layer_type=lt)
        layers = [i for i, t in enumerate(layer_types) if t == lt] if lt else "all"
        w = window if (lt is None or "sliding" in str(lt)) and isinstance(window, int) and window < L else None
        scheds.append({"name": lt or "all layers", "layers": layers, "theta": np.asarray(f["theta"]),
                       "attention_factor": float(f["attention_factor"]), "rope_type": f["rope_type"],
                       "rope_theta": f["rope_theta"], "window": w, "head_dim": f["head_dim"],
                       "rotary_dim": f["rotary_dim"], "spec": None, "config": cfg, "layer_type": lt})
    return {"label": label, "kind": "config", "config": cfg, "train_len": L, "train_len_from": how,
            "seq_len": n, "schedules": scheds}
