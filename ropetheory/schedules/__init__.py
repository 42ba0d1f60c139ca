"""Frequency schedules: one value (``Schedule``), one registry (``SCHEDULES``), one spec syntax.

A schedule is ``theta in [0, inf)^P`` for a head of width ``d = 2P`` (``theta_j = 0`` marks a NoPE
plane) with its layout, attention factor, temperature rule, canonical name and the spec that
rebuilds it: a ``ropetheory.core.schedule.Schedule``, returned by every way of making one. The
registry ``SCHEDULES`` maps each canonical name (``.names``: every alias resolves there) to a small
function returning one, in the style of transformers' ``ROPE_INIT_FUNCTIONS``:

- the paper's ``rope``, ``partial`` (half-RoPE), ``high_frequency``, ``rope_id`` and ``nope``
  (formulas in ``.paper``);
- ``theta``: an explicit frequency vector;
- every Hugging Face rope type (``linear``, ``dynamic``, ``yarn``, ``longrope``, ``llama3``,
  ``proportional``; ``default`` is ``rope``), read by ``.hf`` as transformers reads it.

``schedule(name, head_dim=..., **params)`` builds one by name, ``schedule_from_spec`` from a spec
dict or text (``parse_spec``: ``name:key=value,...``, JSON, a JSON file or a checkpoint folder, a
model config), ``rt.from_config`` from a model config. May import numpy and ``ropetheory.core``.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
from typing import Any
from collections.abc import Callable, Mapping

from ..core.checks import check_head_dim, from_theta, read_json_file, real_array
from ..core.schedule import Schedule, as_schedule
from . import names
from .paper import (DEFAULT_HEAD_DIM, FRACTION_ATOL, MIN_WAVELENGTH, high_frequency, length_temperature,  # noqa: F401
                    nope, partial, planes_from_fraction, rope, rope_frequencies, rope_id)
from ..core.errors import BadValue, BadType

__all__ = [
    "Schedule", "as_schedule", "rope", "partial", "high_frequency", "rope_id", "nope", "explicit", "from_theta",
    "SCHEDULES", "ALIASES", "schedule", "schedule_from_spec", "parse_spec", "merge_spec", "with_default_head_dim",
    "DEFAULT_HEAD_DIM", "check_head_dim", "rope_frequencies",
    "planes_from_fraction", "length_temperature", "real_array",
]


# --------------------------------------------------------------------------
# the registry: canonical name -> a small function returning a Schedule
# --------------------------------------------------------------------------
def explicit(theta: Any, head_dim: int | None = None) -> Schedule:
    """An explicit frequency vector as a schedule (``schedule("theta", theta=[...])``)."""
    sched = Schedule(theta, "theta")
    if head_dim is not None and sched.head_dim != check_head_dim(head_dim):
        raise BadValue(f"theta has {sched.planes} planes but head_dim={head_dim}")
    return sched


def _hf_type(rope_type: str) -> Callable[..., Schedule]:
    """The registry entry of a Hugging Face rope type: ``(head_dim, **rope_parameters)`` -> Schedule,
    read by ``ropetheory.schedules.hf`` as transformers reads the same ``rope_parameters``
    (``max_position_embeddings`` and ``seq_len`` are the config's and the call's, not rope keys)."""
    def build(head_dim: int, **params: Any) -> Schedule:
        from .hf import frequencies_from_config
        top = {k: params.pop(k) for k in ("max_position_embeddings", "seq_len") if k in params}
        config = {"head_dim": head_dim, "rope_parameters": {"rope_type": rope_type, **params}}
        if "max_position_embeddings" in top:
            config["max_position_embeddings"] = top["max_position_embeddings"]
        return frequencies_from_config(config, seq_len=top.get("seq_len"))
    build.__name__ = rope_type
    build.__doc__ = f"Hugging Face rope type {rope_type!r} (``ropetheory.schedules.hf``)."
    return build


#: every schedule by its canonical name (``ropetheory.schedules.names``): the paper's, NoPE, an explicit
#: vector and every Hugging Face rope type; ``default`` is ``rope``
SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "rope": rope, "partial": partial, "high_frequency": high_frequency, "rope_id": rope_id, "nope": nope,
    "theta": explicit, **{t: _hf_type(t) for t in names.HF_TYPES},
}
ALIASES = names.ALIASES


def schedule(name: str, head_dim: int | None = None, *, layout: str | None = None, rotary_dim: int | None = None,
             temperature: str | None = None, **params: Any) -> Schedule:
    """The schedule ``name`` (canonical or alias) with ``params``:
    ``schedule("rope_id", head_dim=128, train_len=4096)``, ``schedule("nope", head_dim=64)``,
    ``schedule("yarn", head_dim=128, rope_theta=5e5, factor=4, original_max_position_embeddings=8192)``,
    ``schedule("theta", theta=[...])``. Unknown keyword arguments of the paper's schedules are refused
    with their names (a Hugging Face type reads its keys as transformers does). ``layout`` and
    ``rotary_dim`` and ``temperature`` (see ``Schedule``) apply to any schedule; a value that contradicts
    the schedule's own (a Hugging Face type's ``half``) is refused."""
    built = _build(name, head_dim, params)
    given = {"layout": layout, "rotary_dim": rotary_dim, "temperature": temperature}
    for key, value in given.items():
        own = getattr(built, key)
        if value is not None and own is not None and value != own:
            raise BadValue(f"schedule {name!r} has {key} {own!r}, got {key}={value!r}")
    if all(v is None for v in given.values()):
        return built
    return dataclasses.replace(built, layout=layout or built.layout, rotary_dim=rotary_dim or built.rotary_dim,
                               temperature=temperature or built.temperature)


def _build(name: str, head_dim: int | None, params: dict[str, Any]) -> Schedule:
    """The registry call behind ``schedule`` (its parameters checked against the function's)."""
    key = names.canonical(name)
    fn = SCHEDULES[key]
    sig = inspect.signature(fn)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        allowed = set(sig.parameters) - {"head_dim"}
        unknown = set(params) - allowed
        if unknown:
            raise BadValue(f"schedule {name!r} got unknown parameter(s) {sorted(unknown)}; "
                             f"it takes {sorted(allowed)}")
    if key == "theta":
        if "theta" not in params:
            raise BadValue("schedule 'theta' needs the key 'theta' (the frequency vector)")
        return explicit(params["theta"], head_dim)
    if head_dim is None:
        raise BadValue(f"schedule {name!r} needs head_dim")
    return fn(head_dim, **params)


#: keys that mark a model config (or a pasted ``rope_scaling`` / ``rope_parameters`` dict), read by
#: ``.hf`` as transformers reads it, rather than a spec of the paper's schedules
MODEL_CONFIG_KEYS = ("rope_parameters", "rope_scaling", "rope_theta", "rope_type", "max_position_embeddings")
#: top-level config keys kept beside a pasted ``rope_scaling`` dict
_CONFIG_TOP_KEYS = ("head_dim", "hidden_size", "num_attention_heads", "max_position_embeddings",
                    "original_max_position_embeddings", "partial_rotary_factor")


def is_model_config(spec: Any) -> bool:
    """Whether ``spec`` is a model config or a pasted rope dict (see ``MODEL_CONFIG_KEYS``) rather than a
    registry spec (which has a ``name``: ``Schedule.spec`` of a Hugging Face type carries rope keys too)."""
    return isinstance(spec, Mapping) and "name" not in spec and any(k in spec for k in MODEL_CONFIG_KEYS)


def _from_model_config(spec: Mapping[str, Any]) -> Schedule:
    from .hf import frequencies_from_config
    cfg = dict(spec)
    seq_len = cfg.pop("seq_len", None)
    if "rope_type" in cfg and "rope_scaling" not in cfg and "rope_parameters" not in cfg:
        top = {k: cfg.pop(k) for k in _CONFIG_TOP_KEYS if k in cfg}     # a pasted rope dict (+ head_dim)
        cfg = {**top, "rope_parameters": cfg}
    return frequencies_from_config(cfg, seq_len=seq_len)


def _spec_value(key: str, text: str) -> Any:
    """A ``key=value`` value: a JSON number, boolean, null, list or object, else the plain string."""
    text = text.strip()
    if not text:
        raise BadValue(f"schedule parameter {key!r} has an empty value")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_spec(text: Any) -> dict[str, Any]:
    """The one schedule syntax every command and ``schedule_from_spec`` read, as a spec dict:

    - ``name`` or ``name:key=value,key=value`` (``rope_id:train_len=4096,head_dim=64``; values are
      JSON numbers, booleans or lists, else strings, which the schedule then refuses by name);
    - a JSON object (``{"name": "rope", "head_dim": 128}``, or a model config / rope dict);
    - a path to a JSON file holding either, or to a checkpoint folder holding ``config.json``.
    """
    if isinstance(text, os.PathLike):
        text = os.fspath(text)
    if not isinstance(text, str):
        raise BadType(f"schedule spec must be a string, a path or a mapping, got {type(text).__name__}: {text!r}")
    s = text.strip()
    if not s:
        raise BadValue("schedule spec is empty; give a name (rope_id:train_len=4096), JSON or a file")
    if s[:1] in "{[":
        try:
            spec = json.loads(s)
        except json.JSONDecodeError as e:
            raise BadValue(f"schedule spec {text!r} looks like JSON but does not parse: {e}") from None
    elif os.path.isdir(s) or os.path.isfile(s) or s.endswith(".json"):
        path = os.path.join(s, "config.json") if os.path.isdir(s) else s
        spec = read_json_file("schedule spec", path)
    else:
        name, _, params = s.partition(":")
        spec = {"name": name.strip()}
        for kv in params.split(","):
            if not kv.strip():
                if params.strip():
                    raise BadValue(f"schedule spec {text!r} has an empty KEY=VALUE item")
                continue
            if "=" not in kv:
                raise BadValue(f"schedule parameters must be KEY=VALUE, got {kv.strip()!r} in {text!r}")
            k, v = (x.strip() for x in kv.split("=", 1))
            if not k or k in spec:
                raise BadValue(f"schedule spec {text!r}: key {k!r} is empty or given twice")
            spec[k] = _spec_value(k, v)
    if not isinstance(spec, dict):
        raise BadType(f"schedule spec must be a mapping (a JSON object), got {type(spec).__name__}: {text!r}")
    return spec


def merge_spec(spec: Mapping[str, Any], **flags: Any) -> dict[str, Any]:
    """``spec`` with the values of command-line ``flags`` (those not None) added; a flag that disagrees
    with the spec is refused with both values, never silently preferred."""
    out = dict(spec)
    for k, v in flags.items():
        if v is None:
            continue
        if k in out and out[k] != v:
            raise BadValue(f"the spec says {k}={out[k]!r} but --{k.replace('_', '-')} says {v!r}; give one")
        out[k] = v
    return out


def with_default_head_dim(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with ``head_dim = DEFAULT_HEAD_DIM`` where it is a paper schedule that names no head width
    (a model config carries its own)."""
    out = dict(spec)
    if not is_model_config(out) and "head_dim" not in out and "d" not in out:
        out["head_dim"] = DEFAULT_HEAD_DIM
    return out


def schedule_from_spec(spec: Mapping[str, Any] | str | os.PathLike) -> Schedule:
    """The schedule of a spec dict or any text ``parse_spec`` reads (``name:key=value,...``, JSON,
    a JSON file or a checkpoint folder).

    The spec is ``{"name": "rope_id", "head_dim": 128, "train_len": 4096, ...}``
    (``"type"`` is accepted for ``"name"``), or a model config / a pasted ``rope_scaling`` or
    ``rope_parameters`` dict with the head width (``{"rope_type": "yarn", "factor": 4,
    "original_max_position_embeddings": 8192, "rope_theta": 5e5, "head_dim": 128}``; any Hugging
    Face ``rope_type``, read by ``ropetheory.schedules.hf.frequencies_from_config``; ``seq_len``
    for dynamic and longrope).
    """
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        spec = parse_spec(spec)
    if not isinstance(spec, Mapping):
        raise BadType(f"schedule spec must be a mapping, got {type(spec).__name__}: {spec!r}")
    if is_model_config(spec):
        return _from_model_config(spec)
    spec = dict(spec)
    for a, b in (("name", "type"), ("head_dim", "d")):
        if a in spec and b in spec and spec[a] != spec[b]:
            raise BadValue(f"schedule spec has conflicting keys {a}={spec[a]!r} and {b}={spec[b]!r}")
    name = spec.pop("name", spec.pop("type", None))
    if name is None:
        raise BadValue(f"schedule spec needs a 'name' key; got keys {sorted(spec)}")
    head_dim = spec.pop("head_dim", spec.pop("d", None))
    return schedule(name, head_dim=head_dim, **spec)
