"""The one value for "a schedule": ``Schedule``, returned by every way of making one.

A schedule is the vector ``theta in [0, inf)^P`` of angular frequencies (radians per position) of a
head of width ``d = 2P`` (``theta_j = 0`` marks a NoPE plane), together with what a caller needs to
use it and to rebuild it: the channel layout its planes live in, the attention factor a model
multiplies its cos/sin by (YaRN, LongRoPE), the logit-temperature rule applied at inference if any,
its canonical registry name and the parameters that rebuild it (``Schedule.spec``).

It is made once at a boundary (``ropetheory.schedules``' registry, ``rt.from_config``,
``as_schedule`` for a plain frequency array) and validated there; functions that receive one trust
its ``theta`` (a read-only float64 vector) and never check it again.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import checks
from .layouts import check_layout
from .errors import BadValue, BadType

__all__ = ["Schedule", "as_schedule", "schedule_layout", "check_schedule_first", "TEMPERATURE_RULES"]

#: logit-temperature rules a schedule may carry (applied to attention logits at inference, not to theta):
#: ``length`` is RoPE-ID's ``(1 + 0.1 ln(max(1, n/L)))^p`` (``ropetheory.schedules.length_temperature``)
TEMPERATURE_RULES = ("length",)


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """A validated RoPE frequency schedule.

    Attributes
    ----------
    theta : numpy.ndarray
        ``(P,)`` float64, read-only: ``theta_j >= 0`` radians per position, 0 for a NoPE plane.
    name : str
        Canonical registry name (``rope``, ``partial``, ``high_frequency``, ``rope_id``, ``nope``, a
        Hugging Face rope type, or ``theta`` for an explicit vector).
    params : Mapping
        The parameters besides ``name`` and ``head_dim`` that rebuild it (``base``, ``train_len``,
        a model config's rope keys ...): ``Schedule.spec`` is ``{"name", "head_dim", **params}``.
    layout : str or None
        Channel layout of its planes (``interleaved``: planes ``(x_2j, x_2j+1)``; ``half``: Hugging
        Face's ``rotate_half``, planes ``(x_j, x_j+P)``), or None where the schedule fixes none (the
        paper's schedules: the caller's ``layout`` argument decides).
    rotary_dim : int or None
        With layout ``half``: the leading channels the rotation touches (Hugging Face's partial rotary,
        ``int(head_dim * partial_rotary_factor)``: planes ``(x_j, x_j+rotary_dim/2)``, the other channels
        passed through); None where every channel belongs to a plane.
    attention_factor : float
        The factor a model multiplies cos and sin by (1 except YaRN / LongRoPE); it scales attention
        logits by its square and leaves theta unchanged.
    temperature : str or None
        The logit-temperature rule applied at inference (one of ``TEMPERATURE_RULES``), or None.
    assumed : Mapping
        Parameters the source did not give and a default filled in, said aloud: ``{key: {"value", "note"}}``
        (a model config without ``rope_theta`` gets transformers' 10000).
    """

    theta: np.ndarray
    name: str = "theta"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    layout: str | None = None
    rotary_dim: int | None = None
    attention_factor: float = 1.0
    temperature: str | None = None
    assumed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        theta = np.array(checks.checked_theta(self.theta))   # validated once, a private copy the caller cannot change
        theta.setflags(write=False)
        object.__setattr__(self, "theta", theta)
        if not isinstance(self.name, str) or not isinstance(self.params, Mapping):
            raise BadType(f"name must be a string and params a mapping, got {self.name!r}, {self.params!r}")
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "assumed", dict(self.assumed))
        object.__setattr__(self, "attention_factor",
                           checks.check_number("attention_factor", self.attention_factor, lo=0.0, lo_open=True))
        if self.rotary_dim is not None:
            object.__setattr__(self, "rotary_dim", checks.check_integer("rotary_dim", self.rotary_dim, lo=1))
        if self.layout is not None:
            check_layout(self.layout)
        if self.rotary_dim is not None and (self.layout != "half" or not 0 < self.rotary_dim <= self.head_dim):
            raise BadValue(f"rotary_dim needs layout 'half' and 0 < rotary_dim <= head_dim = {self.head_dim}, "
                             f"got rotary_dim={self.rotary_dim!r} with layout {self.layout!r}")
        if self.temperature is not None and self.temperature not in TEMPERATURE_RULES:
            raise BadValue(f"temperature must be one of {TEMPERATURE_RULES} or None, got {self.temperature!r}")

    @property
    def head_dim(self) -> int:
        """``d = 2P``."""
        return 2 * int(self.theta.size)

    @property
    def planes(self) -> int:
        """``P``, the number of rotation planes (NoPE planes included)."""
        return int(self.theta.size)

    @property
    def spec(self) -> dict[str, Any]:
        """The spec that rebuilds this schedule (``ropetheory.schedules.schedule_from_spec``)."""
        spec: dict[str, Any] = ({"name": "theta", "theta": self.theta.tolist()} if self.name == "theta" else
                                {"name": self.name, "head_dim": self.head_dim, **self.params})
        spec.update({k: v for k, v in (("layout", self.layout), ("rotary_dim", self.rotary_dim),
                                       ("temperature", self.temperature)) if v is not None})
        return spec

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the spec, the frequencies and every field."""
        return {"name": self.name, "head_dim": self.head_dim, "params": dict(self.params),
                "layout": self.layout, "rotary_dim": self.rotary_dim, "attention_factor": self.attention_factor,
                "temperature": self.temperature, "assumed": dict(self.assumed), "theta": self.theta.tolist(),
                "spec": self.spec}

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """``np.asarray(schedule)`` is its frequency vector."""
        return self.theta if dtype is None else self.theta.astype(dtype)

    def _key(self) -> tuple:
        return (self.name, json.dumps(self.params, sort_keys=True, default=str), self.layout, self.rotary_dim,
                self.attention_factor, self.temperature, self.theta.tobytes())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        extra = "".join([f", layout={self.layout!r}" if self.layout else "",
                         f", rotary_dim={self.rotary_dim}" if self.rotary_dim is not None else "",
                         f", attention_factor={self.attention_factor:g}" if self.attention_factor != 1 else "",
                         f", temperature={self.temperature!r}" if self.temperature else ""])
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if not isinstance(v, (list, tuple)))
        return f"Schedule({self.name!r}, head_dim={self.head_dim}{', ' + params if params else ''}{extra})"


def as_schedule(theta: Any) -> Schedule:
    """The boundary conversion: a ``Schedule`` as it is, or a plain frequency vector validated once
    (``ropetheory.core.checks.checked_theta``, in ``Schedule``) and wrapped as the schedule ``theta``."""
    if isinstance(theta, Schedule):
        return theta
    return Schedule(theta)


def schedule_layout(theta: Any, layout: str | None) -> str:
    """The channel layout a call works in: ``layout`` if given, else the schedule's own, else
    ``interleaved``. A layout that contradicts the schedule's, and a partial-rotary schedule
    (``rotary_dim``: its pairing is not one of ``LAYOUTS`` over the whole head), are refused."""
    own = theta.layout if isinstance(theta, Schedule) else None
    if isinstance(theta, Schedule) and theta.rotary_dim is not None:
        raise BadValue(f"theta: {theta!r} rotates only its first {theta.rotary_dim} channels in Hugging Face's "
                         f"rotate_half pairing, which no layout of the whole head expresses; pass theta.theta and "
                         f"arrange the channels yourself")
    if layout is None:
        return own or "interleaved"
    check_layout(layout)
    if own is not None and layout != own:
        raise BadValue(f"layout={layout!r} contradicts the schedule's own layout {own!r}")
    return layout


def check_schedule_first(fn: str, theta: Any, X: Any) -> None:
    """Refuse a call that passes the cloud first (``fn(X, theta)``, the order before 0.3): the schedule has
    one axis fewer than the cloud (``(P,)`` or ``(..., P)`` against ``(..., n, d)``), never more."""
    if isinstance(theta, Schedule) or isinstance(X, Schedule):
        if isinstance(X, Schedule):
            raise BadType(f"{fn}(theta, X): the schedule comes first, got a Schedule as X")
        return
    try:
        swapped = np.ndim(theta) >= 2 and np.ndim(theta) == np.ndim(X) + 1
    except ValueError:                       # a ragged list: the boundary checks name it below
        return
    if swapped:
        raise BadType(f"{fn}(theta, X): the schedule comes first; got theta of shape {np.shape(theta)} and X of "
                      f"shape {np.shape(X)} (swapped?)")
