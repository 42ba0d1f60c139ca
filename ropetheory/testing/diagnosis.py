"""Name what is wrong with a RoPE implementation, not only that it is over the floor.

``diagnose(fn, schedule=..., dtype=...)`` runs the implementation as ``audit_rope`` does, against the
exact operator scaled by the expected attention factor ``A`` (``y = A R(p theta) x``; ``A = 1`` unless the
schedule is a model config, whose frequencies *and* attention factor then come from the registry
``ropetheory.schedules.hf`` at the audited sequence length). An implementation within its dtype's floor at
every position is correct and is never diagnosed. Otherwise the diagnosis reads measurable signatures of
the planes ``z = x_a + i x_b`` (input) and ``w = y_a + i y_b`` (output), in this order:

1. **attention factor**: the median over rows of ``||y|| / ||x||`` (a rotation in any pairing, at any
   position, keeps it) differs from ``A`` by more than ``GAIN_TOL``. Named
   ``missing`` (gain 1), ``applied twice`` (gain ``A^2``), ``YaRN default`` (``0.1 ln s + 1`` where the
   config sets another value) or ``wrong``. The gain is divided out before the next steps.
2. **exact alternatives** (``alternatives``): the output equals (within the floor, or to
   ``alternatives.EXPLAINED_SHARE`` of the error)
   the exact operator under one changed assumption: the other channel **layout**; an **offset** (position
   ``p + k``, or the positions ignored); **frequency precision** (``theta`` rounded to bfloat16, float16 or
   float32); **frequency selection** (for a plain schedule: another common base; for a config: the scaling
   dropped, another base, the other LongRoPE factor list, another layer type's parameters, or frequencies
   chosen per step, so that cached keys keep the frequencies of the step that wrote them).
3. **signatures** when no alternative explains it. Error already over the floor at positions 1..7 and not
   growing (``CACHE_GROWTH``), at a rounding level: **cache precision**, cos/sin rounded to a narrower
   dtype (named by the implied unit roundoff). Error growing with the position: the angle deviation
   ``delta_j(p)`` is fitted by ``p e_j`` per plane below the first position where it could wrap; a fit
   leaving at most ``LINEAR_FIT_SHARE`` is a frequency error: **frequency selection** when one scale fits
   every plane (``UNIFORM_SPREAD``) or the error is larger than rounding (with the base and scale the
   frequencies follow, when they follow one), **frequency precision** when ``|e_j / theta_j|`` scatters at
   a rounding level; else **angle precision**, named by the relative angle error ``|delta| / (p theta_j)``.

Each finding carries its class, a short kind and one sentence with the numbers; ``first_over_floor`` says
where the implementation leaves the floor.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..core.checks import (check_callable, check_integer, check_number, check_positions, check_seed,
                           checked_theta, short_repr)
from ..core.layouts import check_layout, per_channel, plane_pairs
from . import ROTATION_FLOOR_FACTOR, audit_positions, resolve_schedule, rotation_floor, unit_roundoff
from .alternatives import best_alternative, config_alternatives, plain_alternatives, precision, structural
from .frameworks import dtype_name, round_to
from .probe import Finding, Run, call_impl, nearest_dtype, planes
from ..core.errors import BadType, BadValue

__all__ = ["GAIN_TOL", "CACHE_GROWTH", "LINEAR_FIT_SHARE", "CLASSES", "FREQ_REL_TOL", "ATTENTION_REL_TOL", "Finding",
           "Diagnosis", "diagnose", "ConfigCheck", "check_config"]

#: an output gain off the expected attention factor by more than this share is an attention-factor bug:
#: far above the rounding of one bfloat16 entry (2^-8), which a median over many entries shrinks further,
#: and below the smallest YaRN factor in use (0.1 ln 1.2 = 1.8%)
GAIN_TOL = 2.0 ** -6
#: a measured gain is a named value (1, ``A^2``, YaRN's default) when within this share of it: the median
#: gain is good to far better than one entry's rounding, and the named values differ by more than 10%
NAMED_GAIN_TOL = GAIN_TOL / 4
#: cache precision when the worst floor ratio past half the audited range is at most this many times the
#: one at positions 1..7: a table error does not grow, an angle error grows like the position (2^10 or more
#: over an audit)
CACHE_GROWTH = 4.0
#: a per-plane fit ``delta_j(p) = p e_j`` leaving at most this share (rms) of ``delta`` is a frequency error;
#: rounding of positions or of the product leaves about as much as it explains
LINEAR_FIT_SHARE = 0.25
#: an angle deviation counts for the signatures when it alone moves a plane of at least median norm by this
#: many times its floor (``ROTATION_FLOOR_FACTOR u`` rad): the output's own rounding stays below it
SIGNAL_OVER_NOISE = 1.0
#: a table or frequency error of at most this relative size is a rounding level: rounding to bfloat16, the
#: narrowest float in use, moves a value by at most 2^-8 of itself; twice that for the estimate's own noise
MAX_ROUNDING_REL = 2.0 ** -7
#: a frequency error shared by every plane: the per-plane relative errors agree to this share of their mean
#: (rounding errors scatter in sign and size)
UNIFORM_SPREAD = 0.1
#: the relative angle error is read on the kept entries whose angle ``p theta_j`` is above this quantile of
#: theirs, where the angle's error outweighs the output's rounding most
LARGE_ANGLE_QUANTILE = 0.75
#: an implementation's frequencies agree with the registry's within this relative error: transformers forms
#: inv_freq in float32 (exponent, power and reciprocal each rounded, 2^-24 apiece), 16 float32 ulps of slack
FREQ_REL_TOL = 2.0 ** -20
#: an implementation's attention factor agrees with the registry's within this relative error (float32
#: storage of a Python float, 2^-24, with slack)
ATTENTION_REL_TOL = 1e-6
#: the classes a diagnosis names (``"correct"`` for an implementation within its floor)
CLASSES = ("correct", "attention factor", "layout", "offset", "frequency precision", "frequency selection",
           "angle precision", "cache precision", "unexplained")


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """What is wrong (``findings``, the first one is ``cls``/``kind``), where it starts and by how much."""
    dtype: str
    attention_factor: float
    positions: np.ndarray
    max_floor_ratio: np.ndarray
    first_over_floor: int | None
    worst_floor_ratio: float
    findings: tuple[Finding, ...]

    @property
    def bug(self) -> bool:
        return bool(self.findings)

    @property
    def cls(self) -> str:
        return self.findings[0].cls if self.findings else "correct"

    @property
    def kind(self) -> str:
        return self.findings[0].kind if self.findings else ""

    def verdict(self) -> str:
        if not self.findings:
            return (f"{self.dtype}: correct: within the {self.dtype} floor to position {int(self.positions[-1])} "
                    f"(worst {self.worst_floor_ratio:.2g}x the floor)")
        what = "; ".join(f"{f.cls} ({f.kind}): {f.detail}" for f in self.findings)
        return (f"{self.dtype}: {what}; over the floor from position {self.first_over_floor} on, worst "
                f"{self.worst_floor_ratio:.3g}x")


# ---------------------------------------------------------------------------------------------------
# step 1: the attention factor
# ---------------------------------------------------------------------------------------------------
def _gain(run: Run) -> float:
    """The median over rows of ``||y|| / ||x||``: any rotation, in any pairing, at any position, with any
    frequencies keeps the norm of the whole vector, so only a scale of cos and sin moves it."""
    return float(np.nanmedian(np.linalg.norm(run.Y, axis=-1) / np.linalg.norm(run.X, axis=-1)))


def _attention_finding(gain: float, att: float, yarn_default: float | None) -> tuple[Finding, float] | None:
    """The finding for a measured gain, and the gain to divide out (a named candidate's exact value)."""
    if abs(gain / att - 1) <= GAIN_TOL:
        return None
    named = [(1.0, "missing", f"no attention factor where the config's is {att:.4g}"),
             (att * att, "applied twice", f"gain {gain:.4g} = the attention factor {att:.4g} squared")]
    if yarn_default is not None:
        named.append((yarn_default, "YaRN default",
                      f"gain {gain:.4g} = 0.1 ln(factor) + 1 where the config's attention factor is {att:.4g}"))
    for value, kind, detail in named:
        if value != att and abs(gain / value - 1) <= NAMED_GAIN_TOL:
            return Finding("attention factor", kind, detail), value
    return Finding("attention factor", "wrong", f"gain {gain:.4g} where the attention factor is {att:.4g} "
                                                 f"(ratio {gain / att:.4g})"), gain


# ---------------------------------------------------------------------------------------------------
# step 3: signatures
# ---------------------------------------------------------------------------------------------------
def _cache_finding(run: Run, Y: np.ndarray, ref: np.ndarray) -> Finding | None:
    rows = run.ratio(Y, ref).max(axis=(0, 2))
    low_rows, high_rows = (run.pos >= 1) & (run.pos <= 7), run.pos >= run.pos[-1] / 2
    if not low_rows.any() or not high_rows.any():
        return None
    low, high = rows[low_rows].max(), rows[high_rows].max()
    if low <= 1.0 or high > CACHE_GROWTH * low:
        return None
    r = per_channel(np.hypot(*plane_pairs(run.X, run.layout)), run.layout)
    u = float(np.max(np.abs(Y - ref) / (math.sqrt(2) * run.att * r)))
    if u > MAX_ROUNDING_REL:
        return None
    level = nearest_dtype(u)
    return Finding("cache precision", level, f"cos/sin off by up to {u:.2g} relative at every position (a "
                                             f"{level} table): not growing with the position")


def _angle_deviation(run: Run, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``delta (v, n, P)`` = arg(w / w_exact), and which entries are above the output's rounding noise."""
    w, w_ref = planes(Y, run.layout), planes(run.reference, run.layout)
    z = np.abs(planes(run.X, run.layout))
    delta = np.angle(w * np.conj(w_ref))
    noise = SIGNAL_OVER_NOISE * ROTATION_FLOOR_FACTOR * unit_roundoff(run.dtype)
    keep = (z >= np.median(z)) & (np.abs(delta) > noise) & np.isfinite(delta)
    return delta, keep


def _frequency_fit(run: Run, delta: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Per plane ``e_j`` of ``delta_j(p) = p e_j`` (least squares), which planes had entries, and the share of
    ``delta`` the fit leaves (rms); None without enough entries. A plane's entries stop below the first
    position where ``|delta| >= 1``: past it a linear error may have wrapped around 2 pi."""
    p = np.broadcast_to(run.pos[None, :, None].astype(np.float64), delta.shape)
    big = keep & (np.abs(delta) >= 1.0)
    cut = np.where(big, p, np.inf).min(axis=(0, 1))
    use = keep & (p < cut)
    if use.sum() < 8:
        return None
    e = np.where(use, p * delta, 0).sum(axis=(0, 1)) / np.maximum(np.where(use, p * p, 0).sum(axis=(0, 1)), 1e-300)
    resid = np.where(use, delta - p * e, 0)
    share = float(np.sqrt((resid ** 2).sum() / max((np.where(use, delta, 0) ** 2).sum(), 1e-300)))
    return e, use.any(axis=(0, 1)), share


def _frequency_finding(theta: np.ndarray, e: np.ndarray, has: np.ndarray) -> Finding:
    """Name a linear angle error ``p e_j``: one scale for every plane, a rounding level, or other frequencies
    (with the base they follow when ``log(theta'_j / theta_j)`` is linear in ``j``)."""
    rel = e[has] / theta[has]
    worst = float(np.max(np.abs(rel)))
    if rel.size >= 2 and np.std(rel) <= UNIFORM_SPREAD * abs(np.mean(rel)):
        return Finding("frequency selection", "uniform scale", f"every frequency scaled by {1 + np.mean(rel):.3g} "
                       f"(a position scaling where none applies, or the reverse)")
    if worst <= MAX_ROUNDING_REL:
        level = nearest_dtype(worst)
        return Finding("frequency precision", level, f"each plane's frequency off by a constant relative error "
                       f"up to {worst:.2g}, scattered like rounding (the {level} level)")
    detail = f"each plane's frequency off by a constant relative error, up to {worst:.2g}"
    j, P = np.flatnonzero(has), theta.size
    if j.size >= 2 and theta[0] == 1.0 and np.all(rel > -1):
        slope, icpt = np.polyfit(j, np.log1p(rel), 1)
        if np.allclose(np.log1p(rel), icpt + slope * j, atol=UNIFORM_SPREAD / 4):
            detail += f": the frequencies of base {float(theta[1] ** -P) * math.exp(-slope * P):.3g}"
            detail += f" scaled by {math.exp(icpt):.3g}" if abs(icpt) > UNIFORM_SPREAD / 4 else ""
    return Finding("frequency selection", "wrong frequencies", detail)


def _growth_finding(run: Run, Y: np.ndarray) -> Finding:
    delta, keep = _angle_deviation(run, Y)
    if not keep.any():
        return Finding("unexplained", "", "over the floor without an angle, gain or table signature")
    fit = _frequency_fit(run, delta, keep)
    if fit is not None and fit[2] <= LINEAR_FIT_SHARE:
        return _frequency_finding(run.theta, fit[0], fit[1])
    p = np.broadcast_to(run.pos[None, :, None].astype(np.float64), delta.shape)
    angle = p * run.theta[None, None, :]
    large = keep & (angle >= np.quantile(angle[keep], LARGE_ANGLE_QUANTILE))
    rel = np.abs(delta[large]) / np.maximum(angle[large], 1e-300)
    u = float(np.quantile(rel, 0.99))
    level = nearest_dtype(u)
    return Finding("angle precision", level, f"angle p theta off by up to {u:.2g} of itself, irregularly in p "
                                             f"(the {level} level): the error grows with the position")


# ---------------------------------------------------------------------------------------------------
def _expected(schedule: Any, head_dim: int | None, seq_len: int, layer_type: str | None
              ) -> tuple[np.ndarray, float, Mapping[str, Any] | None]:
    from ..schedules import is_model_config
    if isinstance(schedule, Mapping) and is_model_config(schedule) and "name" not in schedule:
        from ..schedules.hf import frequencies_from_config
        f = frequencies_from_config(schedule, seq_len=seq_len, layer_type=layer_type)
        theta = f.theta
        if head_dim is not None and theta.size * 2 != head_dim:
            raise BadValue(f"schedule has {theta.size} planes but head_dim={head_dim}")
        return theta, f.attention_factor, schedule
    if layer_type is not None:
        raise BadValue("layer_type applies to a model config with per-layer-type rope parameters only")
    return resolve_schedule(schedule, head_dim), 1.0, None


def _yarn_default(config: Mapping[str, Any] | None, layer_type: str | None) -> float | None:
    if config is None:
        return None
    from ..schedules.hf import load_rope_config
    rc = load_rope_config(config, layer_type)
    factor = rc.get("factor")
    return 0.1 * math.log(float(factor)) + 1.0 if rc.rope_type == "yarn" and factor and factor > 1 else None


def diagnose(fn: Callable[..., Any], *, schedule: Any, head_dim: int | None = None, layer_type: str | None = None,
             seq_len: int | None = None, positions: Any = None, max_position: int = 4096, dtype: Any = "float32",
             layout: str = "half", framework: str = "numpy", call: str = "x", n_vectors: int = 2,
             seed: int = 0) -> Diagnosis:
    """Audit ``fn`` (called as for ``audit_rope``) and name what is wrong (module docstring).

    ``schedule``: frequencies, a spec, or a model config (then ``layer_type`` picks per-layer-type
    parameters and ``seq_len``, default the largest position + 1, the sequence length the registry's
    length-dependent types use).
    """
    check_callable("fn", fn)
    name = dtype_name(dtype)
    check_layout(layout)
    if call not in ("x", "qk"):
        raise BadValue(f"call must be 'x' (fn(x, positions)) or 'qk' (fn(q, k, positions)), got {call!r}")
    pos = audit_positions(max_position) if positions is None else check_positions(positions)
    if pos.size == 0:
        raise BadValue("positions must not be empty")
    L = int(pos.max()) + 1 if seq_len is None else check_integer("seq_len", seq_len, lo=1)
    theta, att, config = _expected(schedule, head_dim, L, layer_type)
    rng = np.random.default_rng(check_seed("seed", seed))
    d = 2 * theta.size
    X = np.stack([round_to(rng.standard_normal((pos.size, d)), name)
                  for _ in range(check_integer("n_vectors", n_vectors, lo=1))])
    Y = np.stack([call_impl(fn, x, pos, name, framework, call) for x in X])
    floor = max(att, 1.0) * per_channel(rotation_floor(np.hypot(*plane_pairs(X, layout)), name), layout)
    run = Run(X, Y, pos, theta, att, layout, name, floor)
    ratio = run.ratio(Y, run.reference)
    rows = ratio.max(axis=(0, 2))
    over = np.flatnonzero(rows > 1.0)
    findings = _findings(run, config, L, layer_type, float(ratio.max())) if over.size else ()
    return Diagnosis(dtype=name, attention_factor=att, positions=pos, max_floor_ratio=rows,
                     first_over_floor=int(pos[over[0]]) if over.size else None,
                     worst_floor_ratio=float(ratio.max()), findings=findings)


def _findings(run: Run, config: Mapping[str, Any] | None, seq_len: int, layer_type: str | None,
              worst: float) -> tuple[Finding, ...]:
    found: list[Finding] = []
    Y = run.Y
    gain = _attention_finding(_gain(run), run.att, _yarn_default(config, layer_type))
    if gain is not None:
        found.append(gain[0])
        Y = Y * (run.att / gain[1])
        worst = float(np.max(run.ratio(Y, run.reference)))
        if worst <= 1.0:
            return tuple(found)
    alts = structural(run) + precision(run)
    alts += config_alternatives(run, config, seq_len, layer_type) if config is not None else plain_alternatives(run)
    alt = best_alternative(run, Y, alts, worst)
    if alt is not None:
        return (*found, alt)
    cache = _cache_finding(run, Y, run.reference)
    return (*found, cache if cache is not None else _growth_finding(run, Y))


@dataclasses.dataclass(frozen=True)
class ConfigCheck:
    """An implementation's own frequencies and attention factor against the registry's for its config."""
    rope_type: str
    seq_len: int
    max_rel_freq_err: float
    worst_plane: int
    attention_factor: float
    expected_attention_factor: float

    @property
    def agrees(self) -> bool:
        return (self.max_rel_freq_err <= FREQ_REL_TOL
                and abs(self.attention_factor / self.expected_attention_factor - 1) <= ATTENTION_REL_TOL)

    def verdict(self) -> str:
        head = f"registry ({self.rope_type}, sequence length {self.seq_len}): "
        return head + ("agrees" if self.agrees else "DISAGREES") + (
            f": frequencies within {self.max_rel_freq_err:.2g} relative (worst plane {self.worst_plane}), attention "
            f"factor {self.attention_factor:.6g} vs {self.expected_attention_factor:.6g}")


def check_config(theta: Any, attention_factor: float, config: Mapping[str, Any], *, seq_len: int,
                 layer_type: str | None = None) -> ConfigCheck:
    """Compare the frequencies ``theta`` (``P``) and ``attention_factor`` an implementation uses for
    ``config`` at ``seq_len`` with ``ropetheory.schedules.hf`` (every rope type): the rotation audit alone
    cannot see a factor divided out or frequencies it was told to expect."""
    from ..schedules.hf import frequencies_from_config
    from ..schedules.hf_facts import rope_type_of
    f = frequencies_from_config(config, seq_len=check_integer("seq_len", seq_len, lo=1), layer_type=layer_type)
    want = f.theta
    try:                                               # a (1, P) table or a CPU tensor reads as its P entries
        got = checked_theta(np.ravel(np.asarray(theta)))
    except (TypeError, ValueError) as e:
        raise BadType(f"theta must be the implementation's frequencies, got {short_repr(theta)}") \
            if not str(e).startswith("theta") else e from None
    if got.shape != want.shape:
        raise BadValue(f"theta has {got.size} frequencies but the config gives {want.size} planes")
    rel = np.abs(got - want) / np.where(want > 0, want, 1.0)
    return ConfigCheck(rope_type=rope_type_of(f), seq_len=int(seq_len), max_rel_freq_err=float(rel.max()),
                       worst_plane=int(rel.argmax()),
                       attention_factor=check_number("attention_factor", attention_factor, lo=0.0, lo_open=True),
                       expected_attention_factor=f.attention_factor)
