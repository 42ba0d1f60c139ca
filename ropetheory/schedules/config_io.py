"""Reading a model config as a plain dict, from whatever a user holds: a mapping, a ``config.json``
path, a ``save_pretrained`` checkpoint folder or a transformers ``PretrainedConfig``; and the typed
error for a config whose rope parameters are given per layer type. Imports ``ropetheory.core`` only.
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from ..core.checks import read_text_file
from ..core.errors import BadValue, BadType

__all__ = ["LayerTypeRequired", "read_config"]


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
        text = read_text_file("config", path)
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadValue(f"config: malformed config file {str(path)!r}: {e}") from None
        if not isinstance(raw, dict):
            raise BadValue(f"config: {str(path)!r} must hold a JSON object, got {type(raw).__name__}")
        return raw
    if not isinstance(config, Mapping) and callable(getattr(config, "to_dict", None)):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise BadType(f"config must be a mapping, a config.json path, a checkpoint folder or a transformers "
                        f"PretrainedConfig, got {type(config).__name__}")
    return dict(config)
