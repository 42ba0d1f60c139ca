"""Capture pre- and post-RoPE keys and queries from a Hugging Face causal LM, and check the rotation.

Works for any transformers model whose attention layers take ``position_embeddings`` and look their
attention function up in ``AttentionInterface`` (Llama, Qwen2/3, Mistral, Gemma, GPT-NeoX families):
for the forward pass the model runs under ``.hook.attention_hook``, so each layer call (in order)
records ``q, k`` as RoPE leaves them and, by the exact inverse of the layer's own ``cos, sin``,
as they entered (after any q/k norm: the vectors RoPE actually rotates).
The model's own config gives the rope type; the captured rotation is checked at every position
against ropetheory's exact rotation of the captured pre-RoPE vectors under
``ropetheory.schedules.hf.frequencies_from_config`` (half layout on the first
``rotary_dim`` channels, times transformers' attention scaling) within the one bound of
``.rotation.check_rotation``, and what it found is stored (``meta["rotation_check"]``).
Saved as ``.npz`` (float32 arrays ``keys_pre``, ``keys_post``, ``queries_pre``,
``queries_post`` of shape ``(layers, heads, n, head_dim)``, ``positions``) plus a JSON string
``meta``.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from ..core.checks import check_integer
from ..core.errors import BadValue
from .rotation import check_rotation, hf_to_interleaved, rotate_like_hf, unit_roundoff_of

__all__ = ["capture", "save_dump", "load_dump", "rotate_like_hf", "hf_to_interleaved", "KEY_DUMP_FIELDS"]

KEY_DUMP_FIELDS = ("keys_pre", "keys_post", "queries_pre", "queries_post", "positions", "meta")


def _record_rope(model, calls: list, dtypes: list):
    """The one attention hook (``.hook.attention_hook``), recording each layer call's chunk of q and k,
    pre- and post-RoPE, as float32 arrays (batch element 0), and the type the model rotated in, leaving
    attention unchanged."""
    from .hook import attention_hook

    def record(call):
        c = call.query.shape[1]
        tensors = (call.query_pre(), call.key_pre(chunk_only=True), call.query, call.key[:, -c:])
        calls.append(tuple(t.detach().float().cpu().numpy() for t in tensors))
        dtypes.append(call.query.dtype)
    return attention_hook(model, record)


def capture(model, input_ids, check: bool = True) -> dict[str, Any]:
    """Run one forward pass and return the captured arrays (layers, heads, n, head_dim) and metadata;
    ``meta["rotation_check"]`` is ``.rotation.check_rotation`` over every position (None with ``check=False``)."""
    import torch
    from ..schedules.hf import frequencies_from_config
    from ..schedules.hf_facts import hf_view
    cfg = model.config.to_dict()
    try:
        freqs = hf_view(frequencies_from_config(cfg, seq_len=int(input_ids.shape[-1])))
    except ValueError as e:
        raise BadValue(f"model config has no usable RoPE parameters: {e}") from None
    calls: list = []
    dtypes: list = []
    with _record_rope(model, calls, dtypes), torch.no_grad():
        model(input_ids=input_ids)
    if not calls:
        raise BadValue(f"{type(model).__name__}: no attention layer was called (no RoPE layers?)")
    qs, ks, qos, kos = (np.stack([c[i] for c in calls]) for i in range(4))
    n = qs.shape[2]
    positions = np.arange(n)
    meta = {"model_type": cfg.get("model_type"), "architecture": type(model).__name__,
            "rope_type": freqs["rope_type"], "rope_theta": freqs["rope_theta"], "head_dim": freqs["head_dim"],
            "rotary_dim": freqs["rotary_dim"], "attention_factor": freqs["attention_factor"],
            "theta": freqs["theta"].tolist(), "n_layers": len(calls), "n_tokens": n,
            "max_position_embeddings": cfg.get("max_position_embeddings"), "config": cfg}
    if qs.shape[-1] != freqs["head_dim"]:
        raise BadValue(f"captured head dim {qs.shape[-1]} does not match the config's head_dim {freqs['head_dim']}")
    meta["rotation_check"] = None                    # not checked
    if check:
        meta["rotation_check"] = check_rotation(
            ((ks, kos), (qs, qos)), freqs["theta"], freqs["rotary_dim"], positions, freqs["attention_factor"],
            max(unit_roundoff_of(t) for t in dtypes)).to_dict()
    return {"keys_pre": ks, "keys_post": kos, "queries_pre": qs, "queries_post": qos, "positions": positions,
            "meta": meta}


def save_dump(dump: dict, path: str | pathlib.Path) -> pathlib.Path:
    from ..store import atomic_open
    path = pathlib.Path(path)
    with atomic_open(path) as fh:                # written at ``path`` exactly (numpy adds no suffix to a handle)
        np.savez_compressed(fh, **{k: dump[k] for k in KEY_DUMP_FIELDS if k != "meta"},
                            meta=np.array(json.dumps(dump["meta"], default=str)))
    return path


def load_dump(path: str | pathlib.Path) -> dict:
    """Load and validate a key dump; a file that is not one gets an error naming what is missing."""
    path = pathlib.Path(path)
    if not path.exists():
        raise BadValue(f"key dump {str(path)!r} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:                                   # not an npz at all
        raise BadValue(f"{str(path)!r} is not a key dump (.npz): {e}") from None
    missing = [k for k in KEY_DUMP_FIELDS if k not in z.files]
    if missing:
        raise BadValue(f"{str(path)!r} is not a key dump: missing {missing} (has {z.files})")
    d = {k: z[k] for k in KEY_DUMP_FIELDS if k != "meta"}
    d["meta"] = json.loads(str(z["meta"]))
    if not isinstance(d["meta"], dict) or "head_dim" not in d["meta"]:
        raise BadValue(f"{str(path)!r} is not a key dump: its meta has no 'head_dim'")
    hd = check_integer(f"{str(path)!r} meta 'head_dim'", d["meta"]["head_dim"], lo=2)
    for k in ("keys_pre", "keys_post", "queries_pre", "queries_post"):
        if d[k].ndim != 4 or d[k].shape[-1] != hd:
            raise BadValue(f"{k} has shape {d[k].shape}; expected (layers, heads, n, {hd}) from the config")
    if d["keys_pre"].shape != d["keys_post"].shape or d["keys_pre"].shape[2] != d["positions"].shape[0]:
        raise BadValue(f"inconsistent shapes: keys_pre {d['keys_pre'].shape}, keys_post {d['keys_post'].shape}, "
                         f"positions {d['positions'].shape}")
    return d
