"""A schedule as a Hugging Face model applies it: its ``rope_type``, base, rotary channels, attention factor
and every parameter that shaped its frequencies (``hf_view``, ``shaping_parameters``), read from a
``Schedule`` that ``.hf.frequencies_from_config`` made. Imports ``ropetheory.core`` and ``.names`` only.
"""
from __future__ import annotations

from typing import Any

from ..core.schedule import Schedule
from . import names

__all__ = ["rope_type_of", "hf_view", "shaping_parameters", "LIST_KEYS"]


def rope_type_of(sched: Schedule) -> str:
    """The Hugging Face ``rope_type`` of a schedule: its own name for a Hugging Face type, else ``default``."""
    return sched.name if sched.name in names.HF_TYPES else "default"


def hf_view(sched: Schedule) -> dict[str, Any]:
    """A schedule as a Hugging Face model applies it: ``theta``, ``rope_type``, ``rope_theta`` (the base;
    None for an explicit vector), ``head_dim``, ``rotary_dim`` (the channels ``rotate_half`` touches) and
    ``attention_factor``, with the parameters that shaped it (``shaping_parameters``) and those assumed."""
    base = sched.params.get("rope_theta", sched.params.get("base"))
    return {"theta": sched.theta, "rope_type": rope_type_of(sched), "rope_theta": base, "head_dim": sched.head_dim,
            "rotary_dim": sched.rotary_dim or sched.head_dim, "attention_factor": sched.attention_factor,
            "parameters": shaping_parameters(sched), "assumed": {k: dict(v) for k, v in sched.assumed.items()}}


#: rope dict keys shown as parameters: everything but the per-plane lists (LongRoPE's factors, shown by length)
LIST_KEYS = ("short_factor", "long_factor")


def shaping_parameters(sched: Schedule) -> dict[str, Any]:
    """Every parameter that shaped a config's frequencies, as a reader checks them: ``rope_type``,
    ``rope_theta`` (the base), ``head_dim``, ``partial_rotary_factor``, the rope dict's scaling keys
    (``factor``, ``original_max_position_embeddings``, ...) and the attention factor actually used."""
    p = sched.params
    prf = p.get("partial_rotary_factor", p.get("fraction", 1.0))
    out: dict[str, Any] = {"rope_type": rope_type_of(sched), "rope_theta": p.get("rope_theta", p.get("base")),
                           "head_dim": sched.head_dim, "partial_rotary_factor": prf}
    for key, val in p.items():
        if key in ("rope_theta", "base", "fraction", "partial_rotary_factor", "max_position_embeddings", "seq_len"):
            continue
        out[key] = f"{len(val)} numbers" if key in LIST_KEYS and isinstance(val, (list, tuple)) else val
    out["attention_factor"] = sched.attention_factor
    return out
