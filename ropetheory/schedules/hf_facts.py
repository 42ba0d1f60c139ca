"""A schedule as a Hugging Face model applies it: its ``rope_type``, base, rotary channels, attention factor
and every parameter that shaped its frequencies (``hf_view``, ``shaping_parameters``), read from a
``Schedule`` that ``.hf.frequencies_from_config`` made; and what transformers warns about in a rope dict
(``contradictions``); the model types whose default rotary reads ``partial_rotary_factor``.
Imports ``ropetheory.core`` and ``.names`` only.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.schedule import Schedule
from . import names

__all__ = ["rope_type_of", "hf_view", "shaping_parameters", "LIST_KEYS", "contradictions", "ROPE_TYPE_KEYS",
           "PARTIAL_ROTARY_MODEL_TYPES"]

#: model types whose default rotary reads ``partial_rotary_factor`` (the modeling files of transformers 5.25
#: that read it); every other model with a ``model_type`` (Llama, Mistral, Qwen2, Gemma ...) computes its
#: default frequencies over the whole head and ignores the key
PARTIAL_ROTARY_MODEL_TYPES = frozenset({
    "bamba", "deepseek_v4", "diffusion_gemma", "dots3_note", "efficientloftr", "glm", "glm4", "glm4_moe",
    "glm4_moe_lite", "glm4v", "glm4v_moe", "glm_image", "glm_ocr", "glmasr", "gpt_neox", "gpt_neox_japanese",
    "laguna", "mellum", "mimo_v2_flash", "minimax_m2", "minimax_m3_vl", "moonshine", "moonshine_streaming",
    "musicflamingo", "nemotron", "nemotron3_5_transcribe", "nemotron3_diarization", "neomme", "persimmon", "phi",
    "phi3", "phi4_multimodal", "qwen3_5", "qwen3_5_moe", "qwen3_next", "qwen4_exp", "recurrent_gemma",
    "solar_open", "stablelm", "step3p7", "zaya",
})

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


#: the keys each rope type reads, ``(required, optional)``, as transformers 5.25 validates them
#: (``RotaryEmbeddingConfigMixin._validate_<type>_rope_parameters``; ``type``, ``rope_theta`` and
#: ``partial_rotary_factor`` are accepted everywhere): a required key missing is refused there (KeyError), and
#: any other key draws its warning "Unrecognized keys", which ``load_rope_config`` repeats
ROPE_TYPE_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "default": (frozenset(), frozenset()),
    "linear": (frozenset({"factor"}), frozenset()),
    "dynamic": (frozenset({"factor"}), frozenset()),
    "yarn": (frozenset({"factor", "original_max_position_embeddings"}),
             frozenset({"attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"})),
    "longrope": (frozenset({"short_factor", "long_factor", "original_max_position_embeddings"}),
                 frozenset({"attention_factor", "factor"})),
    "llama3": (frozenset({"factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"}),
               frozenset()),
    "proportional": (frozenset(), frozenset({"factor"})),
}
#: keys every rope dict may hold
ROPE_COMMON_KEYS = frozenset({"rope_type", "type", "rope_theta", "partial_rotary_factor"})
#: a ``factor`` below this shrinks the context; transformers warns ("must be a float or int >= 1")
MIN_SCALING_FACTOR = 1.0


def contradictions(raw: Mapping[str, Any], params: Mapping[str, Any], rope_type: str, M: int | None) -> list[str]:
    """What transformers warns about in a rope dict, each as one line naming the key: keys the rope type
    does not read, a scaling ``factor`` below 1, a YaRN ``factor`` other than ``max_position_embeddings /
    original_max_position_embeddings`` (when that ratio is not 1), a Llama 3 original length not below
    ``max_position_embeddings``, ``high_freq_factor < low_freq_factor`` and ``beta_fast < beta_slow``. The
    frequencies still follow the explicit values, as transformers' do."""
    out = []
    required, optional = ROPE_TYPE_KEYS[rope_type]
    unread = sorted(set(params) - required - optional - ROPE_COMMON_KEYS)
    if unread:
        out.append(f"rope_type {rope_type!r} does not read {', '.join(map(repr, unread))} (transformers warns "
                   f"the same: unrecognized keys); they are ignored")
    factor = params.get("factor")
    num = (int, float)
    if isinstance(factor, num) and not isinstance(factor, bool) and rope_type != "default" \
            and "factor" in required | optional and factor < MIN_SCALING_FACTOR:
        out.append(f"rope config key 'factor' = {factor!r} is below 1 (it shrinks the context; transformers "
                   f"warns the same)")
    orig = raw.get("original_max_position_embeddings", params.get("original_max_position_embeddings"))
    if rope_type == "yarn" and isinstance(factor, num) and isinstance(orig, num) and orig and M is not None \
            and M / orig != 1 and M / orig != factor:
        out.append(f"rope config key 'factor' = {factor!r} contradicts max_position_embeddings / "
                   f"original_max_position_embeddings = {M} / {orig} = {M / orig:g}; the explicit factor is used, "
                   f"as transformers does")
    if rope_type == "llama3" and isinstance(orig, num) and M is not None and orig >= M:
        out.append(f"rope config key 'original_max_position_embeddings' = {orig!r} is not below "
                   f"max_position_embeddings = {M} (transformers warns the same)")
    low, high = params.get("low_freq_factor"), params.get("high_freq_factor")
    if rope_type == "llama3" and isinstance(low, num) and isinstance(high, num) and high < low:
        out.append(f"rope config key 'high_freq_factor' = {high!r} is below 'low_freq_factor' = {low!r} "
                   f"(transformers warns the same)")
    fast, slow = params.get("beta_fast"), params.get("beta_slow")
    if rope_type == "yarn" and isinstance(fast, num) and isinstance(slow, num) and fast < slow:
        out.append(f"rope config key 'beta_fast' = {fast!r} is below 'beta_slow' = {slow!r} (transformers warns "
                   f"the same)")
    return out
