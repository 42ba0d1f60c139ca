"""Hugging Face ``rope_type``s: the same frequencies as transformers' ``modeling_rope_utils``.

A registry ``rope_type -> function(cfg, seq_len) -> (inv_freq, attention_factor)`` mirrors
``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS`` (v5: ``linear``, ``dynamic``,
``yarn``, ``longrope``, ``llama3``, ``proportional``) plus ``default`` (which transformers
keeps in each model's rotary class). Each function states its formula and config keys and
follows transformers' arithmetic step by step, in float64 (transformers rounds the exponent
``2k/d``, the power and the reciprocal to float32: compare with a float32 tolerance).

The frequencies come back as a ropetheory schedule: ``theta`` of length ``P = head_dim/2``
whose first ``ceil(dim/2)`` entries are the rotary frequencies (``dim = int(head_dim *
partial_rotary_factor)``, transformers truncates with ``int()``) and the rest zeros (NoPE).
Channel layout note: transformers rotates the first ``dim`` channels with ``rotate_half``
(plane ``j`` = channels ``(j, j + dim/2)``) and passes the others through.

Sequence-length rules (``seq_len`` argument):
- ``dynamic``: frequencies are recomputed for ``max(seq_len, max_position_embeddings)``
  (transformers grows them when a longer sequence arrives and resets below the original
  length), so ``seq_len <= max_position_embeddings`` gives the unscaled schedule.
- ``longrope``: ``long_factor`` when ``seq_len > original_max_position_embeddings``
  (strictly), else ``short_factor``; ``seq_len=None`` means short.
- every other type ignores ``seq_len``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import Any
from collections.abc import Callable, Mapping

import numpy as np

from ..core.checks import MAX_THETA, check_bool, check_integer, check_number
from ..core.schedule import Schedule
from .hf_facts import PARTIAL_ROTARY_MODEL_TYPES, contradictions
from .config_io import LayerTypeRequired, assumed_type_and_factor, head_dim_of, missing_note, read_config
from .paper import rope_frequencies
from ..core.errors import BadValue

__all__ = ["ROPE_TYPES", "RopeConfig", "load_rope_config", "rope_type_frequencies", "frequencies_from_config",
           "rope_parameters"]


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """A standardised RoPE config (the subset of a model's config.json that RoPE reads)."""
    rope_type: str
    head_dim: int
    rope_theta: float
    partial_rotary_factor: float
    max_position_embeddings: int | None
    params: Mapping[str, Any]
    #: defaults taken because the config left a key out: ``{key: {"value": ..., "note": "..."}}``
    assumed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Rotary channels: ``int(head_dim * partial_rotary_factor)`` (transformers truncates)."""
        return int(self.head_dim * self.partial_rotary_factor)

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)

    def require(self, key: str) -> Any:
        if self.params.get(key) is None:
            raise BadValue(f"rope_type {self.rope_type!r} needs key {key!r} in rope_parameters/rope_scaling "
                             f"(got keys {sorted(self.params)})")
        return self.params[key]

    def factor_or_ratio(self, orig: int) -> float:
        """``factor``, or ``max_position_embeddings / original`` when absent (yarn, longrope)."""
        factor = self.get("factor")
        if factor is None:
            if self.max_position_embeddings is None:
                raise BadValue(
                    f"rope_type {self.rope_type!r} needs 'factor' (or max_position_embeddings to infer it)"
                )
            factor = self.max_position_embeddings / orig
        return self.number("factor", factor)

    def number(self, key: str, value: Any, positive: bool = True) -> float:
        return check_number(f"rope config key {key!r}", value, lo=0.0 if positive else None, lo_open=positive)


def _exponents(dim: int) -> np.ndarray:
    """``arange(0, dim, 2) / dim`` (float64)."""
    return np.arange(0, dim, 2, dtype=np.float64) / dim


def _base_inv_freq(base: float, dim: int) -> np.ndarray:
    """``base^(-2k/dim)``, ``k = 0..ceil(dim/2)-1``: the paper's RoPE formula, in its one place
    (``ropetheory.schedules.paper.rope_frequencies``; transformers writes ``1 / base**x``, equal to
    within an ulp, far inside the float64 tolerance its tests compare at)."""
    return rope_frequencies(dim, base)


def _default(cfg: RopeConfig, seq_len: int | None):
    """``theta_k = base^(-2k/dim)``; attention factor 1. Keys: ``rope_theta``, ``partial_rotary_factor``."""
    return _base_inv_freq(cfg.rope_theta, cfg.dim), 1.0


def _linear(cfg: RopeConfig, seq_len: int | None):
    """Position interpolation: ``base^(-2k/dim) / factor``. Keys: ``factor``."""
    factor = cfg.number("factor", cfg.require("factor"))
    return _base_inv_freq(cfg.rope_theta, cfg.dim) / factor, 1.0


def _proportional(cfg: RopeConfig, seq_len: int | None):
    """``r = int(prf * head_dim // 2)`` planes at ``base^(-2k/head_dim) / factor``, the rest 0.

    Unlike the others the exponent is over the full ``head_dim``. Keys: ``factor`` (default 1).
    """
    factor = cfg.number("factor", cfg.get("factor", 1.0))
    r = int(cfg.partial_rotary_factor * cfg.head_dim // 2)
    rot = 1.0 / (cfg.rope_theta ** (np.arange(0, 2 * r, 2, dtype=np.float64) / cfg.head_dim))
    inv = np.concatenate([rot, np.zeros(max(cfg.head_dim // 2 - r, 0))])
    return inv / factor, 1.0


def _dynamic(cfg: RopeConfig, seq_len: int | None):
    """Dynamic NTK: ``base' = base ((factor s / M) - (factor - 1))^(dim/(dim-2))``, ``s = max(seq_len, M)``.

    ``M = max_position_embeddings``. Keys: ``factor``; top-level ``max_position_embeddings``.
    """
    factor = cfg.number("factor", cfg.require("factor"))
    M = cfg.max_position_embeddings
    if M is None:
        raise BadValue("rope_type 'dynamic' needs max_position_embeddings in the config")
    s = M if seq_len is None else max(int(seq_len), M)
    dim = cfg.dim
    if dim < 4:
        raise BadValue(f"rope_type 'dynamic' needs a rotary dim >= 4 (its exponent is dim/(dim-2)), got {dim}")
    base = cfg.rope_theta * ((factor * s / M) - (factor - 1)) ** (dim / (dim - 2))
    return _base_inv_freq(base, dim), 1.0


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(cfg: RopeConfig, seq_len: int | None):
    """YaRN: blend of ``inv/factor`` (interpolation) and ``inv`` (extrapolation) by a linear ramp
    over the dimensions between the correction range of ``beta_fast`` / ``beta_slow`` rotations.

    Keys: ``factor`` (default ``max_position_embeddings / original_max_position_embeddings``),
    ``original_max_position_embeddings``, ``beta_fast`` (32), ``beta_slow`` (1), ``truncate`` (True),
    ``attention_factor`` (default ``mscale(factor, mscale)/mscale(factor, mscale_all_dim)`` when both are
    given, else ``0.1 ln(factor) + 1``).
    """
    dim = cfg.dim
    if dim % 2:
        raise BadValue(f"rope_type 'yarn' needs an even rotary dim, got int(head_dim * prf) = {dim}")
    base = cfg.rope_theta
    orig = int(cfg.number("original_max_position_embeddings", cfg.require("original_max_position_embeddings")))
    factor = cfg.factor_or_ratio(orig)
    attention_factor = cfg.get("attention_factor")
    mscale, mscale_all_dim = cfg.get("mscale"), cfg.get("mscale_all_dim")
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim))
        else:
            attention_factor = _yarn_mscale(factor)
    attention_factor = cfg.number("attention_factor", attention_factor)
    beta_fast = cfg.number("beta_fast", cfg.get("beta_fast") or 32)
    beta_slow = cfg.number("beta_slow", cfg.get("beta_slow") or 1)
    truncate = check_bool("rope config key 'truncate'", cfg.get("truncate", True))

    def correction_dim(num_rot):
        return (dim * math.log(orig / (num_rot * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001                      # transformers' guard against a zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extra = 1 - ramp
    pos_freqs = base ** _exponents(dim)
    inv_extra = 1.0 / pos_freqs
    inv_inter = 1.0 / (factor * pos_freqs)
    return inv_inter * (1 - extra) + inv_extra * extra, attention_factor


def _longrope(cfg: RopeConfig, seq_len: int | None):
    """LongRoPE: ``1 / (ext_k base^(2k/dim))`` with ``ext = long_factor`` if ``seq_len > original``
    else ``short_factor``; attention factor ``sqrt(1 + ln(factor)/ln(original))`` (1 if factor <= 1).

    Keys: ``short_factor``, ``long_factor`` (each ``ceil(dim/2)`` numbers), ``original_max_position_embeddings``,
    ``factor`` (default ``max_position_embeddings / original``), ``attention_factor``.
    """
    dim = cfg.dim
    n = len(_exponents(dim))
    orig = int(cfg.number("original_max_position_embeddings", cfg.require("original_max_position_embeddings")))
    lists = {}
    for key in ("short_factor", "long_factor"):
        val = cfg.require(key)
        if not isinstance(val, (list, tuple)) or len(val) != n:
            got = len(val) if isinstance(val, (list, tuple)) else type(val).__name__
            raise BadValue(f"rope config key {key!r} must be a list of {n} numbers (rotary dim {dim}), got {got}")
        lists[key] = np.array([cfg.number(f"{key}[{i}]", x) for i, x in enumerate(val)], dtype=np.float64)
    factor = cfg.factor_or_ratio(orig)
    attention_factor = cfg.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
    attention_factor = cfg.number("attention_factor", attention_factor)
    ext = lists["long_factor"] if (seq_len and seq_len > orig) else lists["short_factor"]
    return 1.0 / (ext * cfg.rope_theta ** _exponents(dim)), attention_factor


def _llama3(cfg: RopeConfig, seq_len: int | None):
    """Llama 3.1: wavelengths above ``orig/low_freq_factor`` divided by ``factor``, below
    ``orig/high_freq_factor`` unchanged, smooth interpolation between.

    Keys: ``factor``, ``low_freq_factor``, ``high_freq_factor``, ``original_max_position_embeddings``.
    """
    inv = _base_inv_freq(cfg.rope_theta, cfg.dim)
    factor = cfg.number("factor", cfg.require("factor"))
    low = cfg.number("low_freq_factor", cfg.require("low_freq_factor"))
    high = cfg.number("high_freq_factor", cfg.require("high_freq_factor"))
    if high == low:
        raise BadValue(f"rope_type 'llama3' needs high_freq_factor != low_freq_factor, both are {low!r}")
    old = cfg.number("original_max_position_embeddings", cfg.require("original_max_position_embeddings"))
    low_wl, high_wl = old / low, old / high
    wavelen = 2 * math.pi / inv
    out = np.where(wavelen > low_wl, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
    return np.where(medium, smoothed, out), 1.0


ROPE_TYPES: dict[str, Callable[[RopeConfig, int | None], tuple[np.ndarray, float]]] = {
    "default": _default,
    "linear": _linear,
    "dynamic": _dynamic,
    "yarn": _yarn,
    "longrope": _longrope,
    "llama3": _llama3,
    "proportional": _proportional,
}
NEEDS_ORIGINAL = ("llama3", "yarn", "longrope")

#: transformers' base when a config names none
DEFAULT_ROPE_THETA = 10000.0


def rope_parameters(rope_type: str, *, rope_theta: float, factor: float, original_max_position_embeddings: int,
                    head_dim: int, short_factor: Any = None) -> dict[str, Any]:
    """A ``rope_parameters`` dict of ``rope_type`` with every key that type needs: ``factor`` (all but
    ``default``), ``original_max_position_embeddings`` (llama3, yarn, longrope), Llama 3.1's
    ``low_freq_factor = 1`` and ``high_freq_factor = 4``, and for longrope ``short_factor`` (ones unless
    given) and a ``long_factor`` ramping from 1 to ``factor`` over the planes (illustrative: LongRoPE
    searches its factors)."""
    if rope_type not in ROPE_TYPES:
        raise BadValue(f"unknown rope_type {rope_type!r}; known: {sorted(ROPE_TYPES)}")
    rp: dict[str, Any] = {"rope_type": rope_type, "rope_theta": rope_theta}
    if rope_type != "default":
        rp["factor"] = float(factor)
    if rope_type in NEEDS_ORIGINAL:
        rp["original_max_position_embeddings"] = original_max_position_embeddings
    if rope_type == "llama3":
        rp.update(low_freq_factor=1.0, high_freq_factor=4.0)
    if rope_type == "longrope":
        P = head_dim // 2
        rp.update(short_factor=[1.0] * P if short_factor is None else list(short_factor),
                  long_factor=list(np.linspace(1.0, float(factor), P)))
    return rp


def load_rope_config(config: Mapping[str, Any] | str | os.PathLike, layer_type: str | None = None) -> RopeConfig:
    """Standardise a model config (dict or config.json path) as transformers does.

    Reads ``rope_parameters`` (newer) or ``rope_scaling`` (older; ``type`` or ``rope_type``),
    ``rope_theta`` (in the dict, else top level, else 10000), ``partial_rotary_factor`` (likewise,
    else 1), ``head_dim`` (else ``hidden_size // num_attention_heads``), ``max_position_embeddings``
    and, for llama3/yarn/longrope, ``original_max_position_embeddings`` (a top-level value wins, as
    for Phi-3; else the dict's; else ``max_position_embeddings``). Per-layer-type dicts
    (``{"full_attention": {...}, ...}``) need ``layer_type``.
    """
    raw = read_config(config)
    rp = _rope_dict(raw, layer_type)
    params = dict(rp)
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise BadValue(f"unknown rope_type {rope_type!r}; known: {sorted(ROPE_TYPES)}")
    theta = params.get("rope_theta", raw.get("rope_theta"))
    assumed: dict[str, Any] = {}
    if theta is None:
        theta = DEFAULT_ROPE_THETA
        assumed["rope_theta"] = {"value": theta, "note": missing_note("rope_theta", raw, params)}
    prf = params.get("partial_rotary_factor", raw.get("partial_rotary_factor"))
    prf = 1.0 if prf is None else prf
    if _rotates_every_channel(raw, rope_type, prf):
        prf = 1.0
        params.pop("partial_rotary_factor", None)
    head_dim = head_dim_of(raw)
    M = raw.get("max_position_embeddings")
    if M is not None:
        M = check_integer("config key 'max_position_embeddings'", M, lo=2)
    if rope_type in NEEDS_ORIGINAL and (orig := _original_length(raw, params, M)) is not None:
        params["original_max_position_embeddings"] = orig
    assumed.update(assumed_type_and_factor(raw, params, rope_type, prf))
    for msg in contradictions(raw, dict(rp), rope_type, M):
        warnings.warn(f"config: {msg}", stacklevel=3)
    cfg = RopeConfig(rope_type, head_dim, 0.0, 1.0, M, params, assumed)
    return _checked(dataclasses.replace(cfg, rope_theta=cfg.number("rope_theta", theta),
                                        partial_rotary_factor=cfg.number("partial_rotary_factor", prf)), theta, prf)


def _rope_dict(raw: Mapping[str, Any], layer_type: str | None) -> Mapping[str, Any]:
    """The config's rope dict: ``rope_scaling`` where given, else ``rope_parameters`` (transformers' order; a
    difference between them is warned about), else ``{}``; of a per-layer-type dict, ``layer_type``'s entry."""
    rp, scaling = raw.get("rope_parameters"), raw.get("rope_scaling")
    if scaling and rp and scaling != rp:       # transformers: rope_parameters = rope_scaling or rope_parameters
        warnings.warn("config: 'rope_scaling' and 'rope_parameters' differ; 'rope_scaling' is used, as "
                      "transformers does (remove one of them)", stacklevel=4)     # load_rope_config's caller's caller
    rp = scaling or rp
    rp = {} if rp is None else rp
    if not isinstance(rp, Mapping):
        raise BadValue(f"rope_parameters/rope_scaling must be a dict, got {rp!r}")
    nested = [k for k, v in rp.items() if isinstance(v, Mapping)]
    if not nested:
        return rp
    if layer_type is None:
        raise LayerTypeRequired(f"rope parameters are given per layer type {sorted(nested)}: pass layer_type",
                                tuple(nested))
    if layer_type not in rp:
        raise BadValue(f"unknown layer_type {layer_type!r}; the config has {sorted(nested)}")
    return rp[layer_type]


def _rotates_every_channel(raw: Mapping[str, Any], rope_type: str, prf: Any) -> bool:
    """Whether a ``default`` rope type's ``partial_rotary_factor = prf != 1`` is ignored because the config's
    ``model_type`` is not in ``PARTIAL_ROTARY_MODEL_TYPES`` (its rotary covers the whole head); warned about."""
    model_type = raw.get("model_type")
    if rope_type != "default" or prf == 1 or not isinstance(model_type, str) \
            or model_type in PARTIAL_ROTARY_MODEL_TYPES:
        return False
    warnings.warn(f"config: model_type {model_type!r} rotates every channel (its default rotary ignores "
                  f"partial_rotary_factor = {prf!r}, as transformers' own code does); the factor is ignored",
                  stacklevel=4)                                                 # load_rope_config's caller's caller
    return True


def _original_length(raw: Mapping[str, Any], params: Mapping[str, Any], M: int | None) -> Any:
    """``original_max_position_embeddings`` of a llama3/yarn/longrope config: the top-level value (Phi-3),
    else the rope dict's, else ``max_position_embeddings = M``; ``None`` where all three are missing."""
    key = "original_max_position_embeddings"
    return next((v for v in (raw.get(key), params.get(key), M) if v is not None), None)


def _checked(cfg: RopeConfig, theta: Any, prf: Any) -> RopeConfig:
    """``cfg`` once its ``partial_rotary_factor <= 1``, ``rope_theta > 1`` (decreasing frequencies) and at least
    one rotary plane are checked (``theta``, ``prf``: the values as the config wrote them)."""
    if cfg.partial_rotary_factor > 1:
        raise BadValue(f"rope config key 'partial_rotary_factor' must be <= 1, got {prf!r}")
    if cfg.rope_theta <= 1:
        raise BadValue(f"rope config key 'rope_theta' must be > 1 (the frequencies must decrease), got {theta!r}")
    if cfg.dim < 2 and cfg.rope_type != "proportional":
        raise BadValue(f"int(head_dim * partial_rotary_factor) = {cfg.dim}: no rotary plane left")
    return cfg


def rope_type_frequencies(cfg: RopeConfig, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    """transformers' ``(inv_freq, attention_factor)`` for a standardised config (float64)."""
    if seq_len is not None:
        seq_len = check_integer("seq_len", seq_len, lo=1)
    with np.errstate(all="ignore"):
        inv, att = ROPE_TYPES[cfg.rope_type](cfg, None if seq_len is None else int(seq_len))
    inv = np.asarray(inv, dtype=np.float64)
    bad = ~np.isfinite(inv) | (inv < 0) | (inv >= MAX_THETA) | (not np.isfinite(att)) | (att <= 0)
    if np.any(bad):
        raise BadValue(f"the rope config (rope_type {cfg.rope_type!r}, rope_theta {cfg.rope_theta!r}, "
                         f"parameters {dict(cfg.params)!r}) gives frequencies outside [0, 2^100) or a non-finite "
                         f"attention factor {att!r}: check its values")
    return inv, float(att)


def frequencies_from_config(config: Mapping[str, Any] | str | os.PathLike, seq_len: int | None = None,
                            layer_type: str | None = None) -> Schedule:
    """A model config -> its ``Schedule``: ``theta`` of ``P = head_dim/2`` planes whose first
    ``ceil(dim/2)`` entries are transformers' ``inv_freq`` (zeros after: NoPE), the attention factor,
    layout ``half`` (``rotate_half``) with the rotary dim where it is partial, and as ``params`` the standardised rope
    parameters that rebuild it (``schedule(rope_type, head_dim=..., **params)``)."""
    cfg = load_rope_config(config, layer_type)
    inv, att = rope_type_frequencies(cfg, seq_len)
    P = cfg.head_dim // 2
    theta = np.zeros(P)
    theta[:min(P, inv.size)] = inv[:P]
    params = {"rope_theta": cfg.rope_theta,
              **{k: v for k, v in cfg.params.items() if k not in ("rope_type", "type", "rope_theta")}}
    if cfg.partial_rotary_factor != 1:
        params["partial_rotary_factor"] = cfg.partial_rotary_factor
    if cfg.max_position_embeddings is not None:
        params["max_position_embeddings"] = cfg.max_position_embeddings
    if seq_len is not None:
        params["seq_len"] = int(seq_len)
    name, params = _registry_name(cfg, params)
    return Schedule(theta, name, params, layout="half", rotary_dim=cfg.dim if cfg.dim < cfg.head_dim else None,
                    attention_factor=att, assumed={k: dict(v) for k, v in cfg.assumed.items()})


def _registry_name(cfg: RopeConfig, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The canonical name and parameters that rebuild a config's schedule: a ``default`` rope type is the
    paper's ``rope`` (all channels) or ``partial`` (a whole number of planes) of base ``rope_theta``,
    else the explicit vector ``theta``; every other type is itself with the standardised parameters."""
    if cfg.rope_type != "default":
        return cfg.rope_type, params
    if cfg.dim == cfg.head_dim:
        return "rope", {"base": cfg.rope_theta}
    if cfg.dim % 2 == 0 and cfg.dim == cfg.head_dim * cfg.partial_rotary_factor:
        return "partial", {"base": cfg.rope_theta, "fraction": cfg.partial_rotary_factor}
    return "theta", {}
