"""Test any RoPE implementation against the exact operator, in a user's own test suite.

``assert_rope_matches(fn, schedule=..., dtype=...)`` calls the implementation at chosen positions,
compares with ``ropetheory.apply_rope`` (every angle reduced exactly, float64) and fails with where
it is worst (position, plane, error in ULPs of the dtype and absolute) and whether that is within the
*error floor of the dtype*: the error an implementation in that dtype cannot avoid.

The floor (derived in docs/guide/audit.md). Let ``u`` be the dtype's unit roundoff (2^-24 float32,
2^-11 float16, 2^-8 bfloat16, 2^-53 float64) and ``r = ||(x_a, x_b)||`` the norm of a plane's input.
An implementation that gets ``x`` in the dtype, takes ``cos`` and ``sin`` of the exact angle each
correctly rounded to the dtype, and forms ``y_a = c x_a - s x_b`` (``y_b = s x_a + c x_b``) with the
two products and the sum rounded to the dtype is off by at most

    |y^ - y| <= (2 u + u^2)(|c x_a| + |s x_b|) + u |y| (1 + 2u)^2 <= (2 sqrt(2) + 1) u r (1 + 4 u)

per entry (``|c x_a| + |s x_b| <= sqrt(2) r`` and ``|y| <= r``): ``ROTATION_FLOOR_FACTOR`` ``u r``,
plus the dtype's smallest subnormal where results underflow. No implementation that stores ``cos`` and
``sin`` in the dtype can promise less, and the bound does not grow with the position: an error that
grows with the position (float32 ``position * inv_freq``, bf16 tables) is a bug the audit reports.
The reference's own error (``REFERENCE_ANGLE_ERR`` rad at any int64 position) is added, which
matters only for float64 implementations.

The attention logit ``q_m . k_n`` after rotation has the floor ``(2 sqrt(2) F + d) u ||q|| ||k||``
(``F`` = ``ROTATION_FLOOR_FACTOR``; the rotation errors of ``q`` and ``k``, then a dot product of
``d`` terms in the dtype): ``logit_errors`` measures it against the distance ``m - n``.

Importable with the core install (numpy, JAX); an implementation in torch or JAX is called through
``framework="torch"`` / ``"jax"``. Hypothesis strategies for property tests of one's own code are in
``ropetheory.testing.strategies``; built-in adapters for public implementations in
``ropetheory.testing.adapters``. ``diagnose`` names what is wrong with an implementation over the floor
(attention factor, layout, offset, frequency precision or selection, angle or cache precision) and where it
starts (``diagnosis``, ``alternatives``, ``probe``); ``ropetheory.testing.zoo`` re-creates public RoPE bugs
for it to name. ``frameworks`` calls an implementation in numpy, torch or JAX.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..core.checks import (MAX_ABS_POSITION, check_callable, check_finite_array, check_head_dim, check_integer,
                           check_number, check_positions, check_seed, checked_theta, short_repr)
from ..core.layouts import check_layout, per_channel, plane_of, plane_pairs
from ..rope import apply_rope
from .frameworks import DTYPES, dtype_name as _dtype_name, positions_to_framework as _positions_to_framework
from .frameworks import round_to as _round_to, to_framework as _to_framework, to_numpy as _to_numpy
from ..core.errors import BadValue

__all__ = ["ROTATION_FLOOR_FACTOR", "REFERENCE_ANGLE_ERR", "DTYPES", "unit_roundoff", "rotation_floor",
           "logit_floor", "audit_positions", "RopeAudit", "audit_rope", "assert_rope_matches", "LogitAudit",
           "logit_errors", "resolve_schedule", "exact_cos_sin"]

#: the per-entry error floor of a rotation in a dtype, in units of ``u r`` (module docstring):
#: ``2 sqrt(2) + 1`` from two rounded table entries, two rounded products and one rounded sum
ROTATION_FLOOR_FACTOR = 2.0 * math.sqrt(2.0) + 1.0
#: the exact operator's own angle error bound (rad) at any position below 2^63 (``ropetheory.rope``)
REFERENCE_ANGLE_ERR = 2e-14


def unit_roundoff(dtype: Any) -> float:
    """``u = 2^-p`` for a dtype with ``p`` significand bits (half the machine epsilon)."""
    return 2.0 ** -DTYPES[_dtype_name(dtype)][0]


def _norms(name: str, x: Any, min_ndim: int = 1) -> np.ndarray:
    """Norms: a finite, non-negative float64 array (a scalar where ``min_ndim`` is 0), naming ``name``."""
    r = check_finite_array(name, x, min_ndim=min_ndim)
    if (r < 0).any():
        raise BadValue(f"{name} must be norms (>= 0), got {short_repr(x)}")
    return r


def rotation_floor(plane_norms: Any, dtype: Any) -> np.ndarray:
    """The per-entry floor ``F u r (1 + 4u) + tiny + REFERENCE_ANGLE_ERR r`` for planes of norm ``r``."""
    name = _dtype_name(dtype)
    u, tiny = unit_roundoff(name), DTYPES[name][1]
    r = _norms("plane_norms", plane_norms)
    return ROTATION_FLOOR_FACTOR * u * r * (1 + 4 * u) + tiny + REFERENCE_ANGLE_ERR * r


def logit_floor(q_norm: Any, k_norm: Any, head_dim: int, dtype: Any) -> np.ndarray:
    """The floor of ``q_m . k_n`` after rotation: ``(2 sqrt(2) F + d) u ||q|| ||k||`` (module docstring)."""
    u = unit_roundoff(dtype)
    head_dim = check_head_dim(head_dim)
    q, k = _norms("q_norm", q_norm, 0), _norms("k_norm", k_norm, 0)
    with np.errstate(over="ignore"):
        qk = q * k
        out = (2 * math.sqrt(2) * ROTATION_FLOOR_FACTOR + head_dim) * u * (1 + 4 * u) * qk \
            + 2 * math.sqrt(2) * REFERENCE_ANGLE_ERR * qk
    if not np.all(np.isfinite(out)):
        raise BadValue(f"q_norm x k_norm overflows float64 (q_norm = {short_repr(q_norm)}, k_norm = "
                       f"{short_repr(k_norm)}): the logit floor is not a float64 number")
    return out


#: most log-spaced positions ``audit_positions`` draws: each is a row of every audited vector, and more than
#: 2^20 rows per vector is a typo for a position, not a finer audit
MAX_AUDIT_POSITIONS = 2 ** 20


def audit_positions(max_position: int, num: int = 40) -> np.ndarray:
    """Positions to audit up to ``max_position``: 0 to 7, log-spaced ones, and each power of two and its
    neighbours (where float tables and float positions lose bits), sorted and unique."""
    M = check_integer("max_position", max_position, lo=1, hi=2 ** 62)
    num = check_integer("num", num, lo=1, hi=MAX_AUDIT_POSITIONS)
    logs = np.unique(np.round(np.geomspace(8, max(M, 8), num)).astype(np.int64))
    pows = [p + s for k in range(3, M.bit_length() + 1) for p in (1 << k,) for s in (-1, 0, 1)]
    pos = np.unique(np.concatenate([np.arange(8), logs, np.asarray(pows, dtype=np.int64)]))
    return pos[(pos >= 0) & (pos <= M)]


def exact_cos_sin(theta: Any, positions: Any) -> tuple[np.ndarray, np.ndarray]:
    """``cos`` and ``sin`` of the exactly reduced angles ``p theta_j`` at the given int64 positions, two
    float64 arrays ``(n, P)``: the tables a reference implementation should round once to its dtype."""
    import jax.numpy as jnp

    from ..core.angles import rope_angles, turn_chunks
    from ..core.checks import pad_to_bucket
    pos = check_positions(positions)
    padded = pad_to_bucket(pos) if pos.size else pos
    ang = np.asarray(rope_angles(jnp.asarray(padded), jnp.asarray(turn_chunks(theta))))[: pos.size]
    return np.cos(ang), np.sin(ang)


def resolve_schedule(schedule: Any, head_dim: int | None = None) -> np.ndarray:
    """Frequencies from a spec (``"rope:base=5e5"``, a dict, a model config) or an explicit vector."""
    from ..schedules import is_model_config, schedule_from_spec
    from ..schedules.hf import frequencies_from_config
    if isinstance(schedule, (np.ndarray, list, tuple)):
        theta = checked_theta(schedule)
    elif isinstance(schedule, Mapping) and is_model_config(schedule) and "name" not in schedule:
        theta = frequencies_from_config(schedule).theta
    else:
        spec = schedule
        if head_dim is not None and isinstance(schedule, str):
            from ..schedules import parse_spec
            spec = parse_spec(schedule)
            spec.setdefault("head_dim", head_dim)
        theta = schedule_from_spec(spec).theta
    if head_dim is not None and theta.size * 2 != head_dim:
        raise BadValue(f"schedule has {theta.size} planes but head_dim={head_dim}")
    return theta


# ---------------------------------------------------------------------------------------------------
# the audit
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RopeAudit:
    """An implementation against the exact operator at ``positions`` (one row per position).

    ``max_abs_err[i]``, ``max_floor_ratio[i]``: the worst entry at ``positions[i]`` over every plane and
    vector; ``worst_*``: where the ratio to the floor is largest; ``first_over_floor``: the smallest
    position whose error exceeds the floor (None when none does); ``ulps`` in units of the dtype's
    spacing at the exact value.
    """
    dtype: str
    layout: str
    unit_roundoff: float
    positions: np.ndarray
    max_abs_err: np.ndarray
    max_floor_ratio: np.ndarray
    worst_position: int
    worst_plane: int
    worst_abs_err: float
    worst_ulps: float
    worst_floor_ratio: float
    first_over_floor: int | None

    @property
    def within_floor(self) -> bool:
        return self.first_over_floor is None

    def verdict(self) -> str:
        """One line: within the floor to the last position, or from where and by how much it is over."""
        top = int(self.positions[-1])
        if self.within_floor:
            return (
                f"{self.dtype}: within the {self.dtype} floor to position {top} (worst {self.worst_floor_ratio:.2g}x "
                f"the floor, {self.worst_abs_err:.3g} absolute, {self.worst_ulps:.3g} ulp)"
            )
        return (f"{self.dtype}: over the {self.dtype} floor from position {self.first_over_floor} on; worst "
                f"{self.worst_floor_ratio:.3g}x the floor at position {self.worst_position} (plane {self.worst_plane}, "
                f"{self.worst_abs_err:.3g} absolute, {self.worst_ulps:.3g} ulp)")


def _ulps(err: np.ndarray, ref: np.ndarray, name: str) -> np.ndarray:
    p, tiny = DTYPES[name]
    spacing = np.maximum(np.ldexp(1.0, np.frexp(np.abs(ref))[1] - p), tiny)
    return err / spacing


def audit_rope(fn: Callable[..., Any], *, schedule: Any, head_dim: int | None = None, positions: Any = None,
               dtype: Any = "float32", layout: str = "half", framework: str = "numpy", call: str = "x",
               n_vectors: int = 4, seed: int = 0, max_position: int = 4096) -> RopeAudit:
    """Run ``fn`` on random vectors at ``positions`` and measure it against the exact operator.

    ``fn(x, positions) -> rotated x`` (``call="x"``) or ``fn(q, k, positions) -> (q, k)`` (``call="qk"``),
    with ``x`` of shape ``(n, head_dim)`` in ``dtype`` as a ``framework`` array (numpy, torch or JAX) and
    ``positions`` int64 of shape ``(n,)``. ``layout``: how the implementation pairs channels
    (``"half"``: Hugging Face ``rotate_half``; ``"interleaved"``). ``positions`` default to
    ``audit_positions`` of ``max_position``.
    """
    check_callable("fn", fn)
    name = _dtype_name(dtype)
    check_layout(layout)
    if call not in ("x", "qk"):
        raise BadValue(f"call must be 'x' (fn(x, positions)) or 'qk' (fn(q, k, positions)), got {call!r}")
    theta = resolve_schedule(schedule, head_dim)
    d = 2 * theta.size
    pos = audit_positions(max_position) if positions is None else check_positions(positions)
    n_vectors = check_integer("n_vectors", n_vectors, lo=1)
    rng = np.random.default_rng(check_seed("seed", seed))
    errs, ratios, ulps = [], [], []
    for _ in range(n_vectors):
        X = _round_to(rng.standard_normal((pos.size, d)), name)
        ref = np.asarray(apply_rope(theta, X, pos, layout=layout))
        xf, pf = _to_framework(X, name, framework), _positions_to_framework(pos, framework)
        if call == "x":
            out = _to_numpy(fn(xf, pf))
        else:
            out = _to_numpy(fn(xf, _to_framework(X[::-1].copy(), name, framework), pf)[0])
        if out.shape != ref.shape:
            raise BadValue(f"the implementation returned shape {out.shape}, expected {ref.shape} (n, head_dim)")
        err = np.abs(out - ref)
        errs.append(err)
        ratios.append(err / per_channel(rotation_floor(np.hypot(*plane_pairs(X, layout)), name), layout))
        ulps.append(_ulps(err, ref, name))
    err, ratio, ulp = np.max(errs, axis=0), np.max(ratios, axis=0), np.max(ulps, axis=0)
    ratio = np.where(np.isfinite(ratio), ratio, np.inf)
    i, c = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    over = np.flatnonzero(ratio.max(axis=1) > 1.0)
    return RopeAudit(dtype=name, layout=layout, unit_roundoff=unit_roundoff(name), positions=pos,
                     max_abs_err=err.max(axis=1), max_floor_ratio=ratio.max(axis=1), worst_position=int(pos[i]),
                     worst_plane=plane_of(int(c), d // 2, layout), worst_abs_err=float(err[i, c]),
                     worst_ulps=float(ulp[i, c]), worst_floor_ratio=float(ratio[i, c]),
                     first_over_floor=int(pos[over[0]]) if over.size else None)


def assert_rope_matches(fn: Callable[..., Any], *, schedule: Any, head_dim: int | None = None,
                        positions: Any = None, dtype: Any = "float32", layout: str = "half",
                        framework: str = "numpy", call: str = "x", n_vectors: int = 4, seed: int = 0,
                        max_position: int = 4096, max_floor_ratio: float = 1.0) -> RopeAudit:
    """``audit_rope``, then an AssertionError (where it is worst, by how much, in ULPs and absolute)
    unless every entry is within ``max_floor_ratio`` times the dtype's floor. Returns the audit."""
    max_floor_ratio = check_number("max_floor_ratio", max_floor_ratio, lo=0.0, lo_open=True)
    a = audit_rope(fn, schedule=schedule, head_dim=head_dim, positions=positions, dtype=dtype, layout=layout,
                   framework=framework, call=call, n_vectors=n_vectors, seed=seed, max_position=max_position)
    if not a.worst_floor_ratio <= max_floor_ratio:
        raise AssertionError(f"RoPE implementation {getattr(fn, '__name__', fn)!r} is {a.worst_floor_ratio:.3g}x the "
                             f"{a.dtype} floor (allowed {max_floor_ratio:g}x): {a.verdict()}")
    return a


@dataclasses.dataclass(frozen=True)
class LogitAudit:
    """The attention logit ``q_m . k_n`` after rotation against exact, per distance ``m - n``."""
    dtype: str
    distances: np.ndarray
    max_abs_err: np.ndarray
    floor: np.ndarray

    @property
    def max_floor_ratio(self) -> np.ndarray:
        return self.max_abs_err / self.floor


def logit_errors(fn: Callable[..., Any], *, schedule: Any, head_dim: int | None = None, distances: Any,
                 key_position: int = 0, dtype: Any = "float32", layout: str = "half", framework: str = "numpy",
                 n_pairs: int = 8, seed: int = 0) -> LogitAudit:
    """``|q^_m . k^_n - q_m . k_n|`` for ``n = key_position`` and ``m = n + distance`` (the implementation's
    rotated vectors, their dot product in float64), against ``logit_floor``."""
    check_callable("fn", fn)
    name = _dtype_name(dtype)
    theta = resolve_schedule(schedule, head_dim)
    d = 2 * theta.size
    dist = check_positions(distances, name="distances")
    n0 = check_integer("key_position", key_position, lo=0, hi=MAX_ABS_POSITION)
    if dist.size and (n0 + int(dist.max()) > MAX_ABS_POSITION or n0 + int(dist.min()) < 0):
        raise BadValue(f"key_position + distances must lie in [0, 2^63): key_position = {n0}, distances in "
                       f"[{int(dist.min())}, {int(dist.max())}]")
    rng = np.random.default_rng(check_seed("seed", seed))
    worst = np.zeros(dist.size)
    floor = np.zeros(dist.size)
    for _ in range(check_integer("n_pairs", n_pairs, lo=1)):
        q, k = _round_to(rng.standard_normal(d), name), _round_to(rng.standard_normal(d), name)
        Q, pos = np.tile(q, (dist.size, 1)), dist + n0
        K = np.tile(k, (1, 1))
        q_exact = np.asarray(apply_rope(theta, Q, pos, layout=layout))
        k_exact = np.asarray(apply_rope(theta, K, np.array([n0]), layout=layout))[0]
        q_impl = _to_numpy(fn(_to_framework(Q, name, framework), _positions_to_framework(pos, framework)))
        k_impl = _to_numpy(fn(_to_framework(K, name, framework), _positions_to_framework(np.array([n0]), framework)))[0]
        worst = np.maximum(worst, np.abs(q_impl @ k_impl - q_exact @ k_exact))
        floor = np.maximum(floor, logit_floor(np.linalg.norm(q), np.linalg.norm(k), d, name))
    return LogitAudit(dtype=name, distances=dist, max_abs_err=worst, floor=floor)


from .diagnosis import ConfigCheck, Diagnosis, Finding, check_config, diagnose  # noqa: E402  (builds on the above)

__all__ += ["Diagnosis", "Finding", "diagnose", "ConfigCheck", "check_config"]
