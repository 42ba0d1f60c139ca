"""The one reading of what a model config says about positions: the training length ``L``, the sliding
window, the type of each layer and which rope parameters each type uses (``read_model_config``).
``ropetheory analyze``, ``ropetheory report`` and ``rt.from_config`` all read a config through it, so
the same config gives the same ``L``, window and frequencies in every command. Imports
``ropetheory.core`` and ``.hf`` only.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..core.checks import check_bool, check_integer
from ..core.schedule import Schedule
from .config_io import read_config
from .hf import NEEDS_ORIGINAL, frequencies_from_config, load_rope_config
from ..core.errors import BadValue

__all__ = ["ModelRope", "read_model_config"]


@dataclasses.dataclass(frozen=True)
class ModelRope:
    """What a model config says about its positions, read once (``read_model_config``).

    ``train_len``: the training length ``L`` (None if the config gives none), ``train_len_from``: the
    key it came from; ``window``: the sliding window (tokens) or None; ``layer_types``: the type of
    each layer (``"full_attention"`` for all when the config lists none); ``rope_layer_types``: the
    layer types with rope parameters of their own, or ``(None,)`` when one set serves every layer.
    """
    config: Mapping[str, Any]
    head_dim: int
    train_len: int | None
    train_len_from: str
    window: int | None
    layer_types: tuple[str, ...]
    rope_layer_types: tuple[str | None, ...]

    def rope_key(self, layer_type: str) -> str | None:
        """The rope parameters a layer of ``layer_type`` uses (its own, else the shared ones: None)."""
        return layer_type if layer_type in self.rope_layer_types else None

    def window_for(self, layer_type: str | None) -> int | None:
        """The sliding window of a layer of ``layer_type``: the config's window for sliding layers (every
        layer when the config lists no layer types), else None."""
        if self.window is None:
            return None
        if layer_type is None or not self.config.get("layer_types"):
            return self.window
        return self.window if "sliding" in layer_type else None

    def frequencies(self, layer_type: str | None = None, seq_len: int | None = None) -> Schedule:
        """``frequencies_from_config`` for the rope parameters of ``layer_type``."""
        return frequencies_from_config(self.config, seq_len=seq_len, layer_type=layer_type)


def _window(raw: Mapping[str, Any]) -> int | None:
    """The sliding window: ``sliding_window`` unless ``use_sliding_window`` is false (Qwen2); validated."""
    w = raw.get("sliding_window")
    use = raw.get("use_sliding_window", True)
    if use is not None:
        use = check_bool("config key 'use_sliding_window'", use)
    if w is None or use is False:
        return None
    return check_integer("config key 'sliding_window'", w, lo=1)


def read_model_config(config: Any, *, train_len: int | None = None) -> ModelRope:
    """The one reading of a model config's positions: training length, window, layer types, head width.

    ``L`` is the ``original_max_position_embeddings`` the frequencies themselves use (for llama3, yarn
    and longrope, after the standardisation of ``load_rope_config``: a top-level value wins over
    the rope dict's, as in transformers), else a top-level ``original_max_position_embeddings``, else
    ``max_position_embeddings``; ``train_len`` (validated, >= 2) overrides it.
    """
    raw = read_config(config)
    rp = raw.get("rope_parameters")
    rp = raw.get("rope_scaling") if rp is None else rp
    rp = rp if isinstance(rp, Mapping) else {}
    nested = tuple(k for k, v in rp.items() if isinstance(v, Mapping))
    keys: tuple[str | None, ...] = nested or (None,)
    cfgs = [load_rope_config(raw, k) for k in keys]
    M = cfgs[0].max_position_embeddings
    orig = next((c.params.get("original_max_position_embeddings") for c in cfgs
                 if c.rope_type in NEEDS_ORIGINAL and c.params.get("original_max_position_embeddings")), None)
    if train_len is not None:
        L, how = check_integer("train_len", train_len, lo=2), "--train-len"
    elif orig is not None:
        L, how = check_integer("config key 'original_max_position_embeddings'", orig, lo=2), \
            "original_max_position_embeddings"
    elif raw.get("original_max_position_embeddings") is not None:
        L = check_integer("config key 'original_max_position_embeddings'", raw["original_max_position_embeddings"],
                          lo=2)
        how = "original_max_position_embeddings"
    elif M is not None:
        L, how = M, "max_position_embeddings"
    else:
        L, how = None, "none"
    types = raw.get("layer_types")
    if types is None:
        n_layers = raw.get("num_hidden_layers")
        n_layers = 1 if n_layers is None else check_integer("config key 'num_hidden_layers'", n_layers, lo=1)
        types = ["full_attention"] * n_layers
    elif not isinstance(types, (list, tuple)) or not all(isinstance(t, str) for t in types) or not types:
        raise BadValue(f"config key 'layer_types' must be a non-empty list of strings, got {types!r}")
    for t in types:
        if nested and t not in nested:
            raise BadValue(f"config: layer type {t!r} has no rope parameters (the config has {sorted(nested)})")
    return ModelRope(config=raw, head_dim=cfgs[0].head_dim, train_len=L, train_len_from=how, window=_window(raw),
                     layer_types=tuple(types), rope_layer_types=keys)
