"""Property, for every public callable (``rt.__all__`` and ``ropetheory.testing.__all__``): each argument,
given one value of each bad class (a string, a list, ``None`` or an object where it does not belong; a
boolean for a number; NaN; an infinity; a negative or zero number where a positive one belongs), is refused
with a ValueError/TypeError whose message names the argument as the caller wrote it; the same call with a
numpy scalar (``np.float32``, ``np.int64`` ...) of a valid number gives the result of the Python number; and
no result holds an inf or a NaN.

The refusal must be the package's own (``BadValue``/``BadType``, which are ValueError/TypeError): a plain
ValueError is a library's message reaching the caller. Each callable has one valid call and a kind per
argument (``CALLS``; the kinds in ``BAD`` say which classes are bad for it); the callables left out, and the
classes not tried on an argument, are in ``EXCLUDED`` and ``NOT_TRIED`` with a reason each. A test checks
that the table covers every public callable.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given, strategies as st

import ropetheory as rt
import ropetheory.testing as rtt
from ropetheory.core.errors import BadInput
from strategies import examples

THETA = rt.schedule("rope", head_dim=8, base=100.0)
V1 = np.arange(1.0, 9.0)
V2 = np.random.default_rng(0).standard_normal((2, 8))
G8 = (lambda A: A.T @ A)(np.random.default_rng(1).standard_normal((12, 8)))
CONFIG = {"head_dim": 8, "rope_theta": 100.0, "max_position_embeddings": 64}


def _rotation(x, pos):
    """A correct float64 rotate-half RoPE of ``THETA``, in numpy: the implementation the audits call."""
    c, s = rtt.exact_cos_sin(THETA.theta, pos)
    P = x.shape[-1] // 2
    a, b = x[:, :P], x[:, P:]
    return np.concatenate([c * a - s * b, s * a + c * b], axis=-1)


def _rotation_qk(q, k, pos):
    return _rotation(q, pos), _rotation(k, pos)


#: kinds of argument, each with the classes of bad value tried on it:
#: ``int+`` a positive integer, ``int+?`` one or None (a default chosen for the call), ``int0`` a non-negative
#: integer, ``int`` any integer, ``num+`` a positive
#: finite number, ``num0`` a non-negative finite one, ``num`` any finite number, ``array`` an array of
#: numbers (a list is fine), ``str`` a name, ``fn`` a callable, ``spec`` a schedule (name, dict, vector)
BAD = {
    "int+": ["str", "list", "none", "object", "bool", "nan", "inf", "negative", "zero"],
    "int+?": ["str", "list", "object", "bool", "nan", "inf", "negative", "zero"],
    "int0": ["str", "list", "none", "object", "bool", "nan", "inf", "negative"],
    "int": ["str", "list", "none", "object", "bool", "nan", "inf"],
    "num+": ["str", "list", "none", "object", "bool", "nan", "inf", "negative", "zero"],
    "num0": ["str", "list", "none", "object", "bool", "nan", "inf", "negative"],
    "num": ["str", "list", "none", "object", "bool", "nan", "inf"],
    "array": ["str", "none", "object", "nan", "inf", "bool_array"],
    "str": ["list", "object", "number"],
    "fn": ["str", "none", "number"],
    "spec": ["none", "object", "number"],
}
def _bad(cls: str, valid: Any) -> Any:
    """One value of class ``cls`` for an argument whose valid value is ``valid``."""
    try:
        arr = np.asarray(valid, dtype=np.float64)
    except (TypeError, ValueError):                   # a name, a mapping, a function: no numbers in it
        arr = np.zeros(1)
    return {
        "str": "abc", "list": [1, 2], "none": None, "object": object(), "bool": True, "number": 3,
        "nan": math.nan if arr.ndim == 0 else np.where(np.arange(arr.size).reshape(arr.shape) == 0, np.nan, arr),
        "inf": math.inf if arr.ndim == 0 else np.where(np.arange(arr.size).reshape(arr.shape) == 0, np.inf, arr),
        "negative": -valid if arr.ndim == 0 and valid != 0 else -1, "zero": 0 * valid if arr.ndim == 0 else 0,
        "bool_array": np.ones(arr.shape, dtype=bool),
    }[cls]


@dataclasses.dataclass(frozen=True)
class Call:
    """A valid call of ``fn`` (``args``) and the kind of each argument tried (``kinds``)."""
    fn: Callable[..., Any]
    args: dict[str, Any]
    kinds: dict[str, str]


CALLS: dict[str, Call] = {
    "Schedule": Call(rt.Schedule, {"theta": THETA.theta, "attention_factor": 1.0, "rotary_dim": 8, "name": "theta",
                                        "layout": "half"},
                     {"theta": "array", "attention_factor": "num+", "rotary_dim": "int+", "name": "str"}),
    "schedule": Call(rt.schedule, {"name": "rope", "head_dim": 8, "base": 100.0},
                     {"name": "str", "head_dim": "int+", "base": "num+"}),
    "schedule_from_spec": Call(rt.schedule_from_spec, {"spec": {"name": "rope", "head_dim": 8}}, {"spec": "spec"}),
    "partial": Call(rt.partial, {"head_dim": 8, "base": 100.0, "fraction": 0.5},
                    {"head_dim": "int+", "base": "num+", "fraction": "num+"}),
    "high_frequency": Call(rt.high_frequency, {"head_dim": 8, "train_len": 64, "cycles": 1.0},
                           {"head_dim": "int+", "train_len": "num+", "cycles": "num+"}),
    "rope_id": Call(rt.rope_id, {"head_dim": 8, "train_len": 512, "fraction": 0.5, "min_wavelength": 32.0,
                                 "cycles": 2.0},
                    {"head_dim": "int+", "train_len": "num+", "fraction": "num+", "min_wavelength": "num+",
                     "cycles": "num+"}),
    "nope": Call(rt.nope, {"head_dim": 8}, {"head_dim": "int+"}),
    "length_temperature": Call(rt.length_temperature, {"n": [10.0, 100.0], "train_len": 64.0, "power": 2.0},
                               {"n": "array", "train_len": "num+", "power": "num"}),
    "from_config": Call(rt.from_config, {"config": CONFIG, "seq_len": 32}, {"config": "spec", "seq_len": "int+"}),
    "apply_rope": Call(rt.apply_rope, {"theta": THETA.theta, "X": np.ones((3, 8)), "positions": [0, 5, 9],
                                       "offset": 2},
                       {"theta": "array", "X": "array", "positions": "array", "offset": "int"}),
    "turn_chunks": Call(rt.turn_chunks, {"theta": THETA.theta}, {"theta": "array"}),
    "AffineWeights": Call(rt.AffineWeights, {"intercept": 1.0, "slope": 0.5}, {"intercept": "num0", "slope": "num0"}),
    "TrigWeights": Call(rt.TrigWeights, {"a0": 1.0, "terms": ((0.5, 1.0),)}, {"a0": "num+", "terms": "array"}),
    "log_grid": Call(rt.log_grid, {"n_max": 1000, "num": 5, "n_min": 2},
                     {"n_max": "num+", "num": "int+", "n_min": "num+"}),
    "rank1_curve": Call(rt.rank1_curve, {"theta": THETA.theta, "v": V1, "lengths": [4, 16], "offset": 1},
                        {"theta": "array", "v": "array", "lengths": "array", "offset": "int"}),
    "rank1_curves_batch": Call(rt.rank1_curves_batch, {"theta": THETA.theta, "V": V2, "lengths": [4, 16],
                                                       "offset": 1, "clouds_per_call": 8},
                               {"theta": "array", "V": "array", "lengths": "array", "offset": "int",
                                "clouds_per_call": "int+"}),
    "rank1_gram": Call(rt.rank1_gram, {"theta": THETA.theta, "v": V1, "n": 4, "offset": 1},
                       {"theta": "array", "v": "array", "n": "int+", "offset": "int"}),
    "rank1_stream_curve": Call(rt.rank1_stream_curve, {"theta": THETA.theta, "v": V1, "lengths": [4, 16],
                                                       "offset": 1, "positions_per_step": 8},
                               {"theta": "array", "v": "array", "lengths": "array", "offset": "int",
                                "positions_per_step": "int+?"}),
    "rope_matrix_curve": Call(rt.rope_matrix_curve, {"theta": THETA.theta, "X": np.ones((16, 8)),
                                                     "lengths": [4, 16], "offset": 1, "positions_per_step": 8},
                              {"theta": "array", "X": "array", "lengths": "array", "offset": "int",
                               "positions_per_step": "int+"}),
    "top_eigenvalue": Call(rt.top_eigenvalue, {"G": G8, "method": "eigvalsh"}, {"G": "array", "method": "str"}),
    "predicted_limit": Call(rt.predicted_limit, {"theta": THETA.theta, "v": V1}, {"theta": "array", "v": "array"}),
    "certified_eps": Call(rt.certified_eps, {"theta": THETA.theta, "v": V1, "n": [10, 1000]},
                          {"theta": "array", "v": "array", "n": "array"}),
    "certified_bound": Call(rt.certified_bound, {"theta": THETA.theta, "v": V1}, {"theta": "array", "v": "array"}),
    "check_rank1_claims": Call(rt.check_rank1_claims, {"theta": THETA.theta, "v": V1},
                               {"theta": "array", "v": "array"}),
    "limit_lambdas": Call(rt.limit_lambdas, {"theta": THETA.theta, "V": V2}, {"theta": "array", "V": "array"}),
    "convergence_rate": Call(rt.convergence_rate, {"n": [10, 100, 1000, 10 ** 4],
                                                          "err": [0.1, 0.01, 0.001, 1e-4]},
                             {"n": "array", "err": "array"}),
    "certified_curve": Call(rt.certified_curve, {"theta": THETA.theta, "v": V1, "lengths": [4, 16], "offset": 1,
                                                 "rtol": 1e-3},
                            {"theta": "array", "v": "array", "lengths": "array", "offset": "int", "rtol": "num+"}),
    "criteria": Call(rt.criteria, {"rho_L": 0.5, "floor": 0.1, "allrot": 0.2},
                     {"rho_L": "array", "floor": "array", "allrot": "array"}),
    "search_feasible_bases": Call(rt.search_feasible_bases, {"train_len": 64, "head_dim": 8, "b_min": 2.0, "b_max": 1e4,
                                                             "min_width": 1e-3, "initial": 16, "budget": 2000,
                                                             "checkpoint_seconds": 30.0},
                                  {"train_len": "int+", "head_dim": "int+", "b_min": "num+", "b_max": "num+",
                                   "min_width": "num+", "initial": "int+", "budget": "int+",
                                   "checkpoint_seconds": "num0"}),
    # ropetheory.testing
    "unit_roundoff": Call(rtt.unit_roundoff, {"dtype": "float32"}, {"dtype": "str"}),
    "rotation_floor": Call(rtt.rotation_floor, {"plane_norms": [1.0, 2.0], "dtype": "float32"},
                           {"plane_norms": "array", "dtype": "str"}),
    "logit_floor": Call(rtt.logit_floor, {"q_norm": 1.0, "k_norm": 2.0, "head_dim": 8, "dtype": "float32"},
                        {"q_norm": "array", "k_norm": "array", "head_dim": "int+", "dtype": "str"}),
    "audit_positions": Call(rtt.audit_positions, {"max_position": 4096, "num": 10},
                            {"max_position": "int+", "num": "int+"}),
    "audit_rope": Call(rtt.audit_rope, {"fn": _rotation, "schedule": THETA, "dtype": "float64", "n_vectors": 1,
                                        "seed": 0, "max_position": 64, "layout": "half"},
                       {"fn": "fn", "schedule": "spec", "dtype": "str", "n_vectors": "int+", "seed": "int0",
                        "max_position": "int+", "layout": "str"}),
    "assert_rope_matches": Call(rtt.assert_rope_matches, {"fn": _rotation, "schedule": THETA, "dtype": "float64",
                                                          "n_vectors": 1, "seed": 0, "max_position": 64,
                                                          "max_floor_ratio": 1.0},
                                {"fn": "fn", "schedule": "spec", "dtype": "str", "n_vectors": "int+", "seed": "int0",
                                 "max_position": "int+", "max_floor_ratio": "num+"}),
    "logit_errors": Call(rtt.logit_errors, {"fn": _rotation, "schedule": THETA, "distances": [0, 1, 10],
                                            "key_position": 3, "dtype": "float64", "n_pairs": 2, "seed": 0},
                         {"fn": "fn", "schedule": "spec", "distances": "array", "key_position": "int0",
                          "dtype": "str", "n_pairs": "int+", "seed": "int0"}),
    "resolve_schedule": Call(rtt.resolve_schedule, {"schedule": "rope", "head_dim": 8},
                             {"schedule": "spec", "head_dim": "int+"}),
    "exact_cos_sin": Call(rtt.exact_cos_sin, {"theta": THETA.theta, "positions": [0, 1, 2]},
                          {"theta": "array", "positions": "array"}),
    "diagnose": Call(rtt.diagnose, {"fn": _rotation, "schedule": THETA, "dtype": "float64", "n_vectors": 1,
                                    "seed": 0, "max_position": 64, "seq_len": 32},
                     {"fn": "fn", "schedule": "spec", "dtype": "str", "n_vectors": "int+", "seed": "int0",
                      "max_position": "int+", "seq_len": "int+"}),
    "check_config": Call(rtt.check_config, {"theta": THETA.theta, "attention_factor": 1.0, "config": CONFIG,
                                            "seq_len": 32},
                         {"theta": "array", "attention_factor": "num+", "config": "spec", "seq_len": "int+"}),
}

#: public callables not in ``CALLS``, with the reason
EXCLUDED = {
    "RopeAudit": "a result record the audit builds from checked values; not an entry point",
    "LogitAudit": "a result record logit_errors builds from checked values; not an entry point",
    "Diagnosis": "a result record diagnose builds from checked values; not an entry point",
    "Finding": "a result record (three strings) diagnose builds; not an entry point",
    "ConfigCheck": "a result record check_config builds from checked values; not an entry point",
}

#: (callable, argument) -> {class: reason} for classes that are valid values of that argument
NOT_TRIED: dict[tuple[str, str], dict[str, str]] = {
    ("Schedule", "rotary_dim"): {"none": "None means the whole head"},
    ("apply_rope", "positions"): {"none": "None means 0, 1, ..., n-1"},
    ("from_config", "seq_len"): {"none": "None means the config's own length"},
    ("rank1_curves_batch", "clouds_per_call"): {"none": "None means the default number of clouds per call"},
    ("top_eigenvalue", "method"): {"none": "None means the default method"},
    ("search_feasible_bases", "budget"): {"none": "None means no budget"},
    ("resolve_schedule", "head_dim"): {"none": "None means the schedule's own head width"},
    ("diagnose", "seq_len"): {"none": "None means the config's own length"},
    ("length_temperature", "power"): {"negative": "a negative power is a valid (cooling) exponent"},
}

def _arg_name_in(msg: str, name: str) -> bool:
    """Whether ``msg`` names the argument ``name`` as a caller writes it (``theta``, ``theta[0]``, ``--x``)."""
    import re
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", msg) is not None


def _non_finite(out: Any, seen: set | None = None) -> str | None:
    """Where ``out`` holds an inf or NaN (a path like ``.rho[3]``), else None."""
    seen = set() if seen is None else seen
    if id(out) in seen:
        return None
    seen.add(id(out))
    if isinstance(out, (bool, np.bool_, str, bytes, type(None))) or callable(out):
        return None
    if isinstance(out, (int, float, np.integer, np.floating)):
        return "" if not math.isfinite(float(out)) else None
    if isinstance(out, Mapping):
        for k, v in out.items():
            w = _non_finite(v, seen)
            if w is not None:
                return f"[{k!r}]{w}"
        return None
    if dataclasses.is_dataclass(out):
        for f in dataclasses.fields(out):
            w = _non_finite(getattr(out, f.name), seen)
            if w is not None:
                return f".{f.name}{w}"
        return None
    if isinstance(out, (list, tuple)):
        for i, v in enumerate(out):
            w = _non_finite(v, seen)
            if w is not None:
                return f"[{i}]{w}"
        return None
    try:
        a = np.asarray(out)
    except Exception:                                 # noqa: BLE001  (an opaque object holds no number)
        return None
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        return f"[{int(np.argmax(~np.isfinite(a).ravel()))}]"
    if a.dtype == object:
        for i, v in enumerate(a.ravel()):
            w = _non_finite(v, seen)
            if w is not None:
                return f"[{i}]{w}"
    return None


def _outcome(fn: Callable[..., Any], args: dict[str, Any]) -> tuple[str, Any]:
    """``("ok", result)``, ``("refused", error)`` for a ValueError/TypeError, or ``("escaped", error)``."""
    try:
        return "ok", fn(**args)
    except (ValueError, TypeError) as e:
        return "refused", e
    except AssertionError as e:                        # assert_rope_matches' own verdict on a valid call
        return "ok", e
    except Exception as e:                            # noqa: BLE001  (what the property is about)
        return "escaped", e


def _classes(name: str, arg: str) -> list[str]:
    call = CALLS[name]
    skip = NOT_TRIED.get((name, arg), {})
    return [c for c in BAD[call.kinds[arg]] if c not in skip]


def bad_value_problems(name: str, arg: str, cls: str, value: Any = None) -> str | None:
    """What is wrong with calling ``name`` with ``arg`` of class ``cls`` (None when it is refused by name)."""
    call = CALLS[name]
    value = _bad(cls, call.args[arg]) if value is None and cls != "none" else value
    how, out = _outcome(call.fn, {**call.args, arg: value})
    if how == "escaped":
        return f"{name}({arg}={cls}): {type(out).__name__} escaped: {out}"
    if how == "ok":
        return f"{name}({arg}={cls} {value!r:.40}): accepted"
    msg = str(out)
    if not isinstance(out, BadInput):
        return f"{name}({arg}={cls}): {type(out).__name__} is not the package's BadValue/BadType: {msg}"
    if not _arg_name_in(msg, arg):
        return f"{name}({arg}={cls}): message does not name {arg!r}: {msg}"
    if "\n" in msg:
        return f"{name}({arg}={cls}): message of more than one line: {msg!r}"
    return None


#: numpy scalar types tried in place of a Python number of a valid value (exact for the values in CALLS)
NUMPY_FLOATS = (np.float64, np.float32)
NUMPY_INTS = (np.int64, np.int32, np.uint16)


def numpy_scalar_problems(name: str, arg: str, np_type: type) -> str | None:
    """What is wrong with ``name`` given ``arg`` as a numpy scalar of its valid value (None: same result)."""
    call = CALLS[name]
    valid = call.args[arg]
    if float(np_type(valid)) != float(valid):         # not exact in that type: a different number
        return None
    how, ref = _outcome(call.fn, call.args)
    how2, out = _outcome(call.fn, {**call.args, arg: np_type(valid)})
    if how != "ok" or how2 != "ok":
        return f"{name}({arg}={np_type.__name__}({valid!r})): {how2}: {out}"
    if repr(_summary(out)) != repr(_summary(ref)):
        return f"{name}({arg}={np_type.__name__}({valid!r})): a different result"
    where = _non_finite(out)
    if where is not None:
        return f"{name}({arg}={np_type.__name__}({valid!r})){where} is not finite"
    return None


def _summary(out: Any) -> Any:
    """A comparable summary of a result (arrays as tuples of floats, records as dicts)."""
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        return {f.name: _summary(getattr(out, f.name)) for f in dataclasses.fields(out) if f.name not in TIMINGS}
    if isinstance(out, Mapping):
        return {k: _summary(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [_summary(v) for v in out]
    if isinstance(out, BaseException):
        return str(out)
    try:
        a = np.asarray(out)
    except Exception:                                 # noqa: BLE001
        return repr(out)
    if a.dtype.kind in "biuf":
        return a.astype(np.float64).ravel().tolist()
    return repr(out)


#: result fields that hold a run time (which differs between two runs of the same call)
TIMINGS = ("seconds",)
NUMERIC_KINDS = ("int+", "int0", "int", "num+", "num0", "num")
CASES = [(n, a) for n in CALLS for a in CALLS[n].kinds]
SCALAR_CASES = [(n, a) for n, a in CASES if CALLS[n].kinds[a] in NUMERIC_KINDS]


@pytest.mark.parametrize(("name", "arg"), CASES, ids=[f"{n}-{a}" for n, a in CASES])
def test_each_bad_class_is_refused_naming_the_argument(name, arg):
    problems = [p for c in _classes(name, arg) if (p := bad_value_problems(name, arg, c))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("name", "arg"), SCALAR_CASES, ids=[f"{n}-{a}" for n, a in SCALAR_CASES])
def test_a_numpy_scalar_of_a_valid_number_gives_the_python_numbers_result(name, arg):
    problems = [p for t in NUMPY_FLOATS + NUMPY_INTS if (p := numpy_scalar_problems(name, arg, t))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", list(CALLS))
def test_a_valid_call_returns_no_inf_or_nan(name):
    how, out = _outcome(CALLS[name].fn, CALLS[name].args)
    assert how == "ok", out
    where = _non_finite(out)
    assert where is None, f"{name}(...){where} is not finite"


#: random values of the classes that have many members: any string, any negative or zero number,
#: a random finite scale of a valid number as a numpy scalar
@examples(60)
@given(case=st.sampled_from(SCALAR_CASES), data=st.data())
def test_random_bad_numbers_are_refused_and_numpy_scalars_accepted(case, data):
    name, arg = case
    kind = CALLS[name].kinds[arg]
    which = data.draw(st.sampled_from(["text", "nonpositive", "numpy"]))
    if which == "text":
        p = bad_value_problems(name, arg, "str", data.draw(st.text(min_size=1, max_size=4)))
    elif which == "nonpositive" and kind in ("int+", "num+"):
        bad = data.draw(st.integers(-2 ** 70, 0) if kind == "int+" else st.floats(max_value=0.0, allow_nan=False,
                                                                                 allow_infinity=False))
        p = None if ("zero" in NOT_TRIED.get(case, {}) and bad == 0) else bad_value_problems(name, arg, "neg", bad)
    else:
        p = numpy_scalar_problems(name, arg, data.draw(st.sampled_from(NUMPY_FLOATS + NUMPY_INTS)))
    assert p is None, p


def test_the_table_covers_every_public_callable():
    """Every callable of ``rt.__all__`` and ``ropetheory.testing.__all__`` is in ``CALLS`` or ``EXCLUDED``."""
    public = [n for mod in (rt, rtt) for n in mod.__all__ if callable(getattr(mod, n))]
    missing = [n for n in public if n not in CALLS and n not in EXCLUDED]
    assert not missing, f"public callables with no row: {missing}"
    assert set(CALLS).isdisjoint(EXCLUDED)
