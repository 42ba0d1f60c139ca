"""Reading a model config as a plain dict, from whatever a user holds: a mapping, a ``config.json``
path, a ``save_pretrained`` checkpoint folder or a transformers ``PretrainedConfig``; the typed
error for a config whose rope parameters are given per layer type; the head width it states
(``head_dim_of``); the note that names a likely misspelt key where a default is taken
(``missing_note``, ``assumed_type_and_factor``). Imports ``ropetheory.core`` only.
"""
from __future__ import annotations

import difflib
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from ..core.checks import MAX_HEAD_DIM, check_integer, read_json_file
from ..core.errors import BadValue, BadType

__all__ = ["LayerTypeRequired", "read_config", "missing_note", "near_keys", "READ_KEYS", "MISSPELLING_CUTOFF",
           "head_dim_of", "assumed_type_and_factor"]


class LayerTypeRequired(BadValue):
    """A config gives its rope parameters per layer type (``{"full_attention": {...}, ...}``) and the
    caller named none; ``layer_types`` lists the types it has."""

    def __init__(self, message: str, layer_types: tuple[str, ...]):
        super().__init__(message)
        self.layer_types = layer_types


def read_config(config: Any) -> dict:
    """A config as a plain dict: a mapping, a ``config.json`` path, a checkpoint folder holding one
    (``save_pretrained``), or a transformers ``PretrainedConfig`` (anything with ``to_dict()``)."""
    if isinstance(config, (str, os.PathLike)):
        path = pathlib.Path(config)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise BadValue(f"config: the directory {str(path)!r} holds no config.json")
            path = path / "config.json"
        raw = read_json_file("config", path)
        if not isinstance(raw, dict):
            raise BadValue(f"config: {str(path)!r} must hold a JSON object, got {type(raw).__name__}")
        return raw
    if not isinstance(config, Mapping) and callable(getattr(config, "to_dict", None)):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise BadType(f"config must be a mapping, a config.json path, a checkpoint folder or a transformers "
                        f"PretrainedConfig, got {type(config).__name__}")
    return dict(config)


#: the keys load_rope_config reads: a config key this close to one of them (difflib ratio) is
#: reported as a likely misspelling (0.8 catches one dropped, doubled or swapped letter in ``rope_theta``)
READ_KEYS = ("rope_theta", "rope_parameters", "rope_scaling", "partial_rotary_factor", "head_dim",
             "max_position_embeddings", "original_max_position_embeddings")
MISSPELLING_CUTOFF = 0.8


def near_keys(key: str, *dicts: Mapping[str, Any]) -> list[str]:
    """Keys of ``dicts`` that look like a misspelling of ``key`` (close, but not a key it reads)."""
    keys = [k for d in dicts for k in d if isinstance(k, str) and k not in READ_KEYS]
    return difflib.get_close_matches(key, keys, n=2, cutoff=MISSPELLING_CUTOFF)


def missing_note(key: str, raw: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """Why a default was taken for ``key``, naming a key of the config that looks like a misspelling of it."""
    if key == "rope_type":
        near = near_keys("rope_scaling", raw) + near_keys("rope_parameters", raw)
        if not near:
            return "the rope dict names no 'rope_type' (or 'type')"
        key, why = "rope_scaling", "the config has no 'rope_parameters' or 'rope_scaling'"
    else:
        near, why = near_keys(key, raw, params), f"the config has no {key!r}"
    return why + (f"; {', '.join(map(repr, near))} is not read: did you mean {key!r}?" if near else "")


def head_dim_of(raw: Mapping[str, Any]) -> int:
    """The config's even head width: ``head_dim``, else ``hidden_size // num_attention_heads``."""
    head_dim = raw.get("head_dim")
    if head_dim is None:
        hs, nh = raw.get("hidden_size"), raw.get("num_attention_heads")
        if hs is None or nh is None:
            raise BadValue("config needs 'head_dim' or both 'hidden_size' and 'num_attention_heads'")
        if not all(isinstance(x, int) and x > 0 for x in (hs, nh)):
            raise BadValue(f"hidden_size and num_attention_heads must be positive integers, got {hs!r}, {nh!r}")
        head_dim = hs // nh
    head_dim = check_integer("config key 'head_dim'", head_dim, lo=2, hi=MAX_HEAD_DIM)
    if head_dim % 2:
        raise BadValue(f"config key 'head_dim' must be a positive even integer, got {head_dim!r}")
    return head_dim


def assumed_type_and_factor(raw: Mapping[str, Any], params: Mapping[str, Any], rope_type: str,
                            prf: Any) -> dict[str, Any]:
    """The defaults taken for ``rope_type`` (a rope dict, or a near-miss of one, naming no type) and
    ``partial_rotary_factor`` (missing, with a near-miss key), each ``{"value": ..., "note": ...}``."""
    assumed: dict[str, Any] = {}
    if "rope_type" not in params and "type" not in params:
        scaling_like = near_keys("rope_scaling", raw) + near_keys("rope_parameters", raw)
        if set(params) - {"rope_theta", "partial_rotary_factor"} or scaling_like:   # no rope dict: plain RoPE
            assumed["rope_type"] = {"value": rope_type, "note": missing_note("rope_type", raw, params)}
    if "partial_rotary_factor" not in params and "partial_rotary_factor" not in raw \
            and near_keys("partial_rotary_factor", raw, params):
        assumed["partial_rotary_factor"] = {"value": prf,
                                            "note": missing_note("partial_rotary_factor", raw, params)}
    return assumed
