"""Frequency schedules: ``theta in [0, inf)^P`` for a head of width ``d = 2P``.

Every schedule is a pure function returning a float64 numpy array of ``P``
angular frequencies (radians per position). ``theta_j = 0`` marks a
rotation-free (NoPE) plane, so partial RoPE is a schedule with zeros.
Definitions follow ``shared/docs/theory.md`` ("Frequency schedules"):

- ``rope(d, base)``: ``theta_j = base^(-2j/d)``.
- ``partial(d, base, fraction)``: the first ``r = fraction * P`` planes rotate
  with ``theta_j = base^(-2j/(2r))`` (Hugging Face ``partial_rotary_factor``);
  the rest are NoPE. ``r`` must be a whole number of planes.
- ``high_frequency(d, train_len, cycles=1)``: ``rope`` with
  ``base = (L / (2 pi cycles))^(d/(d-2))``, so the slowest plane turns
  ``cycles`` times within ``L``.
- ``rope_id(d, train_len, fraction=1/2, min_wavelength=32, cycles=2)``: ``r``
  rotating planes, ``theta_j = theta_hi (theta_lo/theta_hi)^(j/(r-1))`` with
  ``theta_hi = 2 pi / min_wavelength`` and ``theta_lo = 2 pi cycles / L``
  (both endpoints included, a documented choice), the rest NoPE.

All are reachable through one registry, ``SCHEDULES``, by name:
``schedule("rope_id", head_dim=128, train_len=4096)``, or from a dict / JSON
spec with ``schedule_from_spec``. Every Hugging Face ``rope_type`` (default, linear, dynamic,
yarn, longrope, llama3, proportional) is read from a model config by ``.hf``
(``ropetheory.schedules.hf.frequencies_from_config``, ``rt.from_config``). May import numpy
and ``ropetheory.core`` only.
"""
from __future__ import annotations

import json
import math
import os
from fractions import Fraction
from typing import Any
from collections.abc import Callable, Mapping

import numpy as np

from ..core.checks import check_head_dim, check_number, from_theta, is_bool, read_text_file, real_array

__all__ = [
    "rope", "partial", "high_frequency", "rope_id", "from_theta",
    "SCHEDULES", "schedule", "schedule_from_spec", "parse_spec", "merge_spec", "with_default_head_dim",
    "DEFAULT_HEAD_DIM", "check_head_dim",
    "planes_from_fraction", "length_temperature", "real_array",
]


#: the head width a spec that names none gets where a command needs one (the paper's models: d = 128)
DEFAULT_HEAD_DIM = 128
#: a float fraction may miss a whole number of planes by float rounding only (1/3 * 3)
FRACTION_ATOL = 1e-12
#: shortest wavelength (tokens) a rotating plane may have: below 2 a frequency aliases a slower one,
#: and at exactly 1 the plane turns by 2 pi per token, i.e. does not rotate at all
MIN_WAVELENGTH = 2.0


def _check_positive(name: str, x: Any) -> float:
    return check_number(name, x, lo=0.0, lo_open=True)


def _check_base(base: Any) -> float:
    """A RoPE base must exceed 1: otherwise ``base^(-2j/d)`` does not decrease (base 1: every plane at 1 rad)."""
    b = _check_positive("base", base)
    if b <= 1:
        raise ValueError(f"base must be > 1 (theta_j = base^(-2j/d) must decrease), got {base!r}")
    return b


def planes_from_fraction(d: int, fraction: Any, what: str = "fraction") -> int:
    """Number of rotating planes ``r = fraction * P``; must be a whole number in [1, P].

    Exact inputs (``int``, ``Fraction``) must give an integer ``r`` exactly; a
    float fraction may miss by float rounding (``1/3`` of 3 planes is
    ``0.9999999999999999``), so ``|r - round(r)| <= FRACTION_ATOL * P`` is accepted.
    """
    P = check_head_dim(d) // 2
    fraction = fraction.item() if isinstance(fraction, np.ndarray) and fraction.ndim == 0 else fraction
    if is_bool(fraction) or not isinstance(fraction, (int, float, Fraction, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number, got {fraction!r}")
    if not (0 < fraction <= 1) or (isinstance(fraction, float) and not math.isfinite(fraction)):
        raise ValueError(f"{what} must lie in (0, 1], got {fraction!r}")
    r = fraction * P
    if isinstance(fraction, (int, Fraction, np.integer)):
        ok = Fraction(r).denominator == 1  # type: ignore[arg-type]  # an exact int, Fraction or numpy integer
    else:
        ok = abs(r - round(r)) <= FRACTION_ATOL * P
    if not ok or round(r) < 1:
        raise ValueError(
            f"{what}={fraction!r} gives {float(r)} rotating planes for head_dim={d} "
            f"(P={P}); it must be a whole number of planes (a multiple of 1/{P})")
    return int(round(r))


# --------------------------------------------------------------------------
# the schedules
# --------------------------------------------------------------------------
def rope(head_dim: int, base: float = 10000.0) -> np.ndarray:
    """Standard RoPE: ``theta_j = base^(-2j/d)``, ``j = 0..P-1`` (float64)."""
    d = check_head_dim(head_dim)
    base = _check_base(base)
    j = np.arange(d // 2, dtype=np.float64)
    return base ** (-2.0 * j / d)


def partial(head_dim: int, base: float = 10000.0, fraction: float = 0.5) -> np.ndarray:
    """Partial RoPE: first ``r = fraction P`` planes get ``theta_j = base^(-2j/(2r))``, rest NoPE."""
    d = check_head_dim(head_dim)
    base = _check_base(base)
    r = planes_from_fraction(d, fraction)
    theta = np.zeros(d // 2, dtype=np.float64)
    theta[:r] = rope(2 * r, base)                    # the rotating planes: RoPE of width 2r
    return theta


def high_frequency(head_dim: int, train_len: float = 4096, cycles: float = 1.0) -> np.ndarray:
    """RoPE whose slowest plane turns ``cycles`` times within ``L``.

    ``base = (L / (2 pi cycles))^(d/(d-2))`` so ``theta_{P-1} = 2 pi cycles / L``.
    Needs ``d >= 4`` (with one plane the base is undefined).
    """
    d = check_head_dim(head_dim)
    if d < 4:
        raise ValueError(f"high_frequency needs head_dim >= 4 (one plane has no base), got {d}")
    L = _check_positive("train_len", train_len)
    cycles = _check_positive("cycles", cycles)
    if 2 * math.pi * cycles >= L:
        raise ValueError(f"high_frequency needs train_len > 2 pi cycles (a slowest plane slower than 1 rad/token), "
                         f"got train_len={train_len!r}, cycles={cycles!r}")
    base = (L / (2 * math.pi * cycles)) ** (d / (d - 2))
    return rope(d, base)


def rope_id(head_dim: int, train_len: float = 4096, fraction: float = 0.5,
            min_wavelength: float = 32.0, cycles: float = 2.0) -> np.ndarray:
    """RoPE-ID: ``r = fraction P`` planes geometric from ``2pi/min_wavelength`` to ``2pi cycles/L``.

    ``theta_j = theta_hi (theta_lo/theta_hi)^(j/(r-1))``, ``j = 0..r-1`` (both
    endpoints included; with ``r = 1`` the single plane gets ``theta_hi``), the
    remaining ``P - r`` planes are NoPE.
    """
    d = check_head_dim(head_dim)
    L = _check_positive("train_len", train_len)
    lam = _check_positive("min_wavelength", min_wavelength)
    cycles = _check_positive("cycles", cycles)
    r = planes_from_fraction(d, fraction)
    if lam < MIN_WAVELENGTH:
        raise ValueError(
            f"min_wavelength must be >= {MIN_WAVELENGTH:g} tokens (MIN_WAVELENGTH), got {min_wavelength!r}"
        )
    theta_hi = 2 * math.pi / lam
    theta_lo = 2 * math.pi * cycles / L
    if r > 1 and not theta_lo < theta_hi:
        raise ValueError(f"rope_id needs train_len / cycles > min_wavelength so the planes decrease from "
                         f"2 pi/min_wavelength to 2 pi cycles/train_len; got train_len={train_len!r}, "
                         f"cycles={cycles!r}, min_wavelength={min_wavelength!r}")
    theta = np.zeros(d // 2, dtype=np.float64)
    if r == 1:
        theta[0] = theta_hi
    else:
        j = np.arange(r, dtype=np.float64)
        theta[:r] = theta_hi * (theta_lo / theta_hi) ** (j / (r - 1))
    return theta


def length_temperature(n: Any, train_len: float, power: float = 2.0) -> np.ndarray:
    """RoPE-ID's logit temperature ``(1 + 0.1 ln(max(1, n/L)))^p`` (YaRN's ``sqrt(1/t)``)."""
    L = _check_positive("train_len", train_len)
    power = check_number("power", power, lo=0.0)
    n = real_array("n", n)
    if not np.all(np.isfinite(n)) or np.any(n < 0):
        raise ValueError(f"n must be finite lengths >= 0, got {n!r}")
    with np.errstate(over="ignore"):
        t = (1.0 + 0.1 * np.log(np.maximum(1.0, n / L))) ** power
    if not np.all(np.isfinite(t)):
        raise ValueError(f"the temperature overflows float64 for power={power!r} at n = {float(np.max(n)):g}")
    return t


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------
SCHEDULES: dict[str, Callable[..., np.ndarray]] = {
    "rope": rope,
    "partial": partial,
    "high_frequency": high_frequency,
    "rope_id": rope_id,
}
ALIASES = {"default": "rope", "half": "partial", "half_rope": "partial", "unrope": "rope_id",
            "hf": "high_frequency"}


def _lookup(name: Any) -> Callable[..., np.ndarray]:
    if not isinstance(name, str):
        raise TypeError(f"schedule name must be a string, got {name!r}")
    key = ALIASES.get(name, name)
    if key not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; known schedules: {sorted(SCHEDULES)}"
                         f" (aliases: {sorted(ALIASES)})")
    return SCHEDULES[key]


def schedule(name: str, head_dim: int | None = None, **params: Any) -> np.ndarray:
    """Frequencies of a named schedule, e.g. ``schedule("rope_id", head_dim=128, train_len=4096)``.

    ``name == "theta"`` takes an explicit vector: ``schedule("theta", theta=[...])``.
    Unknown keyword arguments are rejected with their names.
    """
    if name == "theta":
        if set(params) - {"theta"} or "theta" not in params:
            raise ValueError(f"schedule 'theta' takes exactly one key 'theta', got {sorted(params)}")
        t = from_theta(params["theta"])
        if head_dim is not None and 2 * t.size != check_head_dim(head_dim):
            raise ValueError(f"theta has {t.size} planes but head_dim={head_dim}")
        return t
    fn = _lookup(name)
    import inspect
    sig = inspect.signature(fn)
    allowed = set(sig.parameters) - {"head_dim"}
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"schedule {name!r} got unknown parameter(s) {sorted(unknown)}; "
                         f"it takes {sorted(allowed)}")
    if head_dim is None:
        raise ValueError(f"schedule {name!r} needs head_dim")
    return fn(head_dim, **params)


#: keys that mark a model config (or a pasted ``rope_scaling`` / ``rope_parameters`` dict), read by
#: ``.hf`` as transformers reads it, rather than a spec of the paper's schedules
MODEL_CONFIG_KEYS = ("rope_parameters", "rope_scaling", "rope_theta", "rope_type", "max_position_embeddings")
#: top-level config keys kept beside a pasted ``rope_scaling`` dict
_CONFIG_TOP_KEYS = ("head_dim", "hidden_size", "num_attention_heads", "max_position_embeddings",
                    "original_max_position_embeddings", "partial_rotary_factor")


def is_model_config(spec: Any) -> bool:
    """Whether ``spec`` is a model config or a pasted rope dict (see ``MODEL_CONFIG_KEYS``)."""
    return isinstance(spec, Mapping) and any(k in spec for k in MODEL_CONFIG_KEYS)


def _from_model_config(spec: Mapping[str, Any]) -> np.ndarray:
    from .hf import frequencies_from_config
    cfg = dict(spec)
    seq_len = cfg.pop("seq_len", None)
    if "rope_type" in cfg and "rope_scaling" not in cfg and "rope_parameters" not in cfg:
        top = {k: cfg.pop(k) for k in _CONFIG_TOP_KEYS if k in cfg}     # a pasted rope dict (+ head_dim)
        cfg = {**top, "rope_parameters": cfg}
    return np.asarray(frequencies_from_config(cfg, seq_len=seq_len)["theta"], dtype=np.float64)


def _spec_value(key: str, text: str) -> Any:
    """A ``key=value`` value: a JSON number, boolean, null, list or object, else the plain string."""
    text = text.strip()
    if not text:
        raise ValueError(f"schedule parameter {key!r} has an empty value")
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
        raise TypeError(f"schedule spec must be a string, a path or a mapping, got {type(text).__name__}: {text!r}")
    s = text.strip()
    if not s:
        raise ValueError("schedule spec is empty; give a name (rope_id:train_len=4096), JSON or a file")
    if s[:1] in "{[":
        try:
            spec = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"schedule spec {text!r} looks like JSON but does not parse: {e}") from None
    elif os.path.isdir(s) or os.path.isfile(s) or s.endswith(".json"):
        path = os.path.join(s, "config.json") if os.path.isdir(s) else s
        body = read_text_file("schedule spec", path)
        try:
            spec = json.loads(body)
        except json.JSONDecodeError as e:
            raise ValueError(f"malformed schedule spec file {path!r}: {e}") from None
    else:
        name, _, params = s.partition(":")
        spec = {"name": name.strip()}
        for kv in params.split(","):
            if not kv.strip():
                if params.strip():
                    raise ValueError(f"schedule spec {text!r} has an empty KEY=VALUE item")
                continue
            if "=" not in kv:
                raise ValueError(f"schedule parameters must be KEY=VALUE, got {kv.strip()!r} in {text!r}")
            k, v = (x.strip() for x in kv.split("=", 1))
            if not k or k in spec:
                raise ValueError(f"schedule spec {text!r}: key {k!r} is empty or given twice")
            spec[k] = _spec_value(k, v)
    if not isinstance(spec, dict):
        raise TypeError(f"schedule spec must be a mapping (a JSON object), got {type(spec).__name__}: {text!r}")
    return spec


def merge_spec(spec: Mapping[str, Any], **flags: Any) -> dict[str, Any]:
    """``spec`` with the values of command-line ``flags`` (those not None) added; a flag that disagrees
    with the spec is refused with both values, never silently preferred."""
    out = dict(spec)
    for k, v in flags.items():
        if v is None:
            continue
        if k in out and out[k] != v:
            raise ValueError(f"the spec says {k}={out[k]!r} but --{k.replace('_', '-')} says {v!r}; give one")
        out[k] = v
    return out


def with_default_head_dim(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with ``head_dim = DEFAULT_HEAD_DIM`` where it is a paper schedule that names no head width
    (a model config carries its own)."""
    out = dict(spec)
    if not is_model_config(out) and "head_dim" not in out and "d" not in out:
        out["head_dim"] = DEFAULT_HEAD_DIM
    return out


def schedule_from_spec(spec: Mapping[str, Any] | str | os.PathLike) -> np.ndarray:
    """Frequencies from a spec dict or any text ``parse_spec`` reads (``name:key=value,...``, JSON,
    a JSON file or a checkpoint folder).

    The spec is ``{"name": "rope_id", "head_dim": 128, "train_len": 4096, ...}``
    (``"type"`` is accepted for ``"name"``), or a model config / a pasted ``rope_scaling`` or
    ``rope_parameters`` dict with the head width (``{"rope_type": "yarn", "factor": 4,
    "original_max_position_embeddings": 8192, "rope_theta": 5e5, "head_dim": 128}``; any Hugging
    Face ``rope_type``, read by ``ropetheory.schedules.hf.frequencies_from_config``; ``seq_len``
    for dynamic and longrope).
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = parse_spec(spec)
    if not isinstance(spec, Mapping):
        raise TypeError(f"schedule spec must be a mapping, got {type(spec).__name__}: {spec!r}")
    if is_model_config(spec):
        return _from_model_config(spec)
    spec = dict(spec)
    for a, b in (("name", "type"), ("head_dim", "d")):
        if a in spec and b in spec and spec[a] != spec[b]:
            raise ValueError(f"schedule spec has conflicting keys {a}={spec[a]!r} and {b}={spec[b]!r}")
    name = spec.pop("name", spec.pop("type", None))
    if name is None:
        raise ValueError(f"schedule spec needs a 'name' key; got keys {sorted(spec)}")
    head_dim = spec.pop("head_dim", spec.pop("d", None))
    return schedule(name, head_dim=head_dim, **spec)
