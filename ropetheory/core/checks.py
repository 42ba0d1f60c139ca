"""Validation at the public boundary: every public function converts and checks its arguments here.

Types (no bool, string or complex in a numeric slot), finiteness, ranges (head widths, frequencies
within the exact reduction, positions within int64), shapes (no empty arrays where a vector is
needed), and clouds rescaled by exact powers of two where their magnitude would overflow a Gram.
Every error is a ``ValueError`` or ``TypeError`` that names the argument and the value.
"""
from __future__ import annotations

import math
from fractions import Fraction
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import BadInput, BadType, BadValue  # noqa: F401  (re-exported: the boundary's errors)
from .layouts import check_layout, to_interleaved


#: largest head width accepted: a d x d float64 Gram of d = 16384 is 2 GiB; wider is a typo, not a model
MAX_HEAD_DIM = 2 ** 14


#: largest frequency the exact reduction accepts: ``theta / (2 pi)`` uses a 300-bit ``1/(2 pi)``, so
#: the turn error ``theta 2^-300`` stays below ``2^-200`` (far under the 2^-156 resolution) up to here
MAX_THETA = 2.0 ** 100


# --------------------------------------------------------------------------
# validation helpers (one place, used at every entry point)
# --------------------------------------------------------------------------
def _scalar(x: Any) -> Any:
    """A 0-d numpy array as its scalar; anything else unchanged."""
    return x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x


def is_bool(x: Any) -> bool:
    """The one bool guard: a Python or numpy boolean (never read as a number)."""
    return isinstance(_scalar(x), (bool, np.bool_))


def check_number(name: str, x: Any, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """``x`` as a finite float in the stated range, or a TypeError/ValueError naming ``name`` and ``x``.

    Accepted: Python and numpy ints and floats, 0-d arrays of them, ``fractions.Fraction``.
    Refused: booleans, strings, bytes, complex numbers, ``None``, NaN and infinities.
    """
    rng = "".join([f" {'>' if lo_open else '>='} {lo:g}" if lo is not None else "",
                   " and" if lo is not None and hi is not None else "",
                   f" {'<' if hi_open else '<='} {hi:g}" if hi is not None else ""])
    what = f"{name} must be a finite number{rng}, got {x!r}"
    v = _scalar(x)
    if is_bool(v) or isinstance(v, (str, bytes, complex, np.complexfloating)) or v is None:
        raise BadType(what)
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise BadType(what) from None
    if not math.isfinite(f) or (lo is not None and (f <= lo if lo_open else f < lo)) \
            or (hi is not None and (f >= hi if hi_open else f > hi)):
        raise BadValue(what)
    return f


def check_rounded(name: str, x: Any, *, lo: float | None = None) -> int:
    """``x`` (any number ``check_number`` takes, in its range) rounded to the nearest integer, ties to even:
    exactly for integers and fractions of any size (never through a float, which is exact only to 2^53),
    a float as it is."""
    f = check_number(name, x, lo=lo)
    v = _scalar(x)
    return int(round(v if isinstance(v, (int, np.integer, Fraction)) else f))


def check_positive(name: str, x: Any) -> float:
    """``x`` as a finite float ``> 0`` (``check_number``), naming ``name``."""
    return check_number(name, x, lo=0.0, lo_open=True)


def check_base(base: Any, name: str = "base") -> float:
    """A RoPE base: a finite number ``> 1`` (at 1 or below ``base^(-2j/d)`` does not decrease: base 1 puts
    every plane at 1 rad per token)."""
    b = check_positive(name, base)
    if b <= 1:
        raise BadValue(f"{name} must be > 1 (theta_j = base^(-2j/d) must decrease), got {base!r}")
    return b


def check_integer(name: str, x: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """``x`` as an int in ``[lo, hi]``, or a TypeError/ValueError naming ``name`` and ``x``.

    Accepted: Python and numpy integers, 0-d integer arrays, and floats that are whole numbers
    (``128.0``). Refused: booleans, strings, fractional or non-finite floats (never rounded or floored).
    """
    rng = (f" in [{lo}, {hi}]" if lo is not None and hi is not None else
           f" >= {lo}" if lo is not None else f" <= {hi}" if hi is not None else "")
    what = f"{name} must be an integer{rng}, got {x!r}"
    v = _scalar(x)
    if is_bool(v) or not isinstance(v, (int, np.integer, float, np.floating)):
        raise BadType(what)
    if isinstance(v, (float, np.floating)) and (not math.isfinite(v) or not float(v).is_integer()):
        raise BadValue(f"{name} must be a whole number{rng}, got {x!r} (never rounded)")
    i = int(v)
    if (lo is not None and i < lo) or (hi is not None and i > hi):
        raise BadValue(what)
    return i


def check_bool(name: str, x: Any) -> bool:
    """``x`` if it is a boolean (Python or numpy), else a TypeError naming ``name``: strings such as
    ``"no"`` and numbers such as ``0`` are refused, never read as truth values."""
    v = _scalar(x)
    if not isinstance(v, (bool, np.bool_)):
        raise BadType(f"{name} must be true or false (a boolean), got {x!r}")
    return bool(v)


def check_callable(name: str, x: Any) -> Any:
    """``x`` if it can be called (a function, a module with ``__call__`` ...), else a TypeError naming ``name``
    (never Python's "'str' object is not callable" from deep inside the call)."""
    if not callable(x):
        raise BadType(f"{name} must be a function (callable), got {short_repr(x)}")
    return x


#: the largest seed accepted: numpy's generators take any non-negative integer, JAX's keys 64 bits
MAX_SEED = 2 ** 64 - 1


def check_seed(name: str, x: Any) -> int:
    """A random seed: an integer in ``[0, MAX_SEED]`` (numpy's ``default_rng`` refuses a negative one in
    its own words, and reads a list as several seeds)."""
    return check_integer(name, x, lo=0, hi=MAX_SEED)


def read_text_file(name: str, path: Any) -> str:
    """The UTF-8 text of the file at ``path``; a ValueError naming ``name`` and the path when it is
    missing, a directory, unreadable or not UTF-8."""
    import pathlib
    p = pathlib.Path(path)
    if not p.exists():
        raise BadValue(f"{name}: {str(p)!r} does not exist")
    if p.is_dir():
        raise BadValue(f"{name}: {str(p)!r} is a directory, not a file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BadValue(f"{name}: {str(p)!r} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise BadValue(f"{name}: cannot read {str(p)!r}: {e.strerror}") from None


def read_json_file(name: str, path: Any, *, saved: bool = False) -> Any:
    """The JSON value held by the file at ``path``; a ValueError naming ``name`` and the path when the file
    is not JSON (where the parser stopped, never the parser's text alone), or is missing or unreadable
    (``read_text_file``). ``saved``: a file a command wrote earlier (``--plot-only`` reads it back): a missing
    one raises the ``OSError`` that names it, and a damaged one is said to need recomputing."""
    import json
    import pathlib
    text = pathlib.Path(path).read_text(encoding="utf-8") if saved else read_text_file(name, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        fix = "; run the command again without --plot-only to recompute it" if saved else ""
        raise BadValue(f"{name}: {str(path)!r} is not valid JSON ({e.msg} at line {e.lineno}, "
                       f"column {e.colno}){fix}") from None


def check_head_dim(d: Any, name: str = "head_dim") -> int:
    """Return ``d`` as an int if it is a positive even integer, else raise ValueError naming ``name``."""
    d = check_integer(name, d)
    if d <= 0 or d % 2:
        raise BadValue(f"{name} must be a positive even integer, got {d}")
    if d > MAX_HEAD_DIM:
        raise BadValue(f"{name} must be at most {MAX_HEAD_DIM} (MAX_HEAD_DIM), got {d}")
    return d


def real_array(name: str, x: Any) -> np.ndarray:
    """``x`` as a float64 array; complex, boolean and non-numeric input are refused, naming ``name``.

    The one conversion every public array argument goes through (numpy would drop an imaginary part
    with only a warning, and read ``True`` as 1).
    """
    if isinstance(x, Mapping):
        hint = f"pass {name}=cfg[{name!r}] (the dict's {name!r} entry)" if name in x else \
            f"pass the array itself (its keys: {short_repr(sorted(map(str, x)))})"
        raise BadType(f"{name} must be an array of numbers, got a dict: {hint}")
    try:
        raw = np.asarray(x)
        dt = raw.dtype
        if np.iscomplexobj(x) or dt.kind in "bUSV" or (
                dt.kind == "O" and any(isinstance(e, (str, bytes, bool, complex)) for e in raw.ravel())):
            raise BadType(f"{name} must be real numbers (not strings, booleans or complex), got {short_repr(x)}")
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        if isinstance(e, TypeError) and str(e).startswith(name):
            raise
        raise BadType(f"{name} must be numbers, got {short_repr(x)}") from None


#: a refused value is shown in a message up to this many characters, on one line
REPR_CHARS = 120


def short_repr(x: Any) -> str:
    """``repr(x)`` on one line, cut to ``REPR_CHARS`` (a refused array must not fill the terminal)."""
    text = " ".join(repr(x).split())
    return text if len(text) <= REPR_CHARS else text[:REPR_CHARS - 3] + "..."


def from_theta(theta: Any) -> np.ndarray:
    """The frequency vector of a schedule: a ``ropetheory.core.schedule.Schedule``'s ``theta`` as it is
    (validated when it was made), or a plain vector validated by ``checked_theta``."""
    from .schedule import Schedule
    if isinstance(theta, Schedule):
        return theta.theta
    return checked_theta(theta)


def checked_theta(theta: Any) -> np.ndarray:
    """A user-given frequency vector: validated float64 vector of ``P`` non-negative finite frequencies."""
    t = real_array("theta", theta)
    if t.ndim != 1 or t.size == 0:
        raise BadValue(f"theta must be a non-empty 1-D vector, got shape {t.shape}")
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise BadValue(f"theta must be finite and >= 0; theta[{k}] = {float(t[k])!r}")
    if (t >= MAX_THETA).any():
        k = int(np.argmax(t >= MAX_THETA))
        raise BadValue(f"theta[{k}] = {float(t[k])!r} is beyond the exact angle reduction (MAX_THETA = 2^100)")
    return t


MAX_ABS_POSITION = 2 ** 63 - 1


def check_positions(positions: Any, n: int | None = None, *, name: str = "positions") -> np.ndarray:
    """Validate integer positions: a 1-D int64 array with ``|i| < 2^63`` (no floats, no NaN); errors name
    the argument ``name``."""
    try:
        arr = np.asarray(positions)
    except (TypeError, ValueError):                   # a ragged list: numpy's words would not name it
        raise BadType(f"{name} must be a 1-D array of integers, got {short_repr(positions)}") from None
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise BadValue(f"{name} must be finite integers; got NaN or inf")
        if not np.all(arr == np.round(arr)):
            bad = arr[arr != np.round(arr)][0]
            raise BadValue(f"{name} must be integers, got {float(bad)!r}")
        if np.any(np.abs(arr) >= 2.0 ** 53):
            raise BadValue(f"{name}: floats at or beyond 2^53 are not exact; pass int64 {name}")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and arr.max() > MAX_ABS_POSITION:
            raise BadValue(f"{name}: {int(arr.max())} does not fit in int64")
        arr = arr.astype(np.int64)
    elif arr.dtype == object:
        try:
            vals = [int(x) for x in arr.ravel()]
        except (TypeError, ValueError):
            raise BadType(f"{name} must be integers, got {short_repr(positions)}") from None
        if any(abs(x) > MAX_ABS_POSITION for x in vals):
            raise BadValue(f"{name} must satisfy |i| < 2^63")
        arr = np.array(vals, dtype=np.int64).reshape(arr.shape)
    else:
        raise BadType(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise BadValue(f"{name} must be a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise BadValue(f"got {arr.shape[0]} {name} for {n} tokens")
    return arr


def check_finite_array(name: str, X: Any, min_ndim: int = 1) -> np.ndarray:
    """Convert to a float64 numpy array and reject NaN/inf, naming the first bad index."""
    A = real_array(name, X)
    if A.ndim < min_ndim:
        raise BadValue(f"{name} must have at least {min_ndim} dimension(s), got shape {A.shape}")
    bad = ~np.isfinite(A)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = ", ".join(map(str, idx))
        raise BadValue(f"{name} must be finite; {name}[{where}] = {float(A[idx])!r}")
    return A


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------
def check_cloud_vector(v: Any, P: int | None = None) -> np.ndarray:
    """Validate ``v`` (finite, non-zero, even length ``2P``) and return it normalised to ``||v|| = 1``."""
    arr = check_finite_array("v", v)
    if arr.ndim != 1:
        raise BadValue(f"v must be a 1-D vector, got shape {arr.shape}")
    if arr.size % 2 or arr.size == 0:
        raise BadValue(f"v must have a positive even length (the head dim), got {arr.size}")
    if P is not None and arr.size != 2 * P:
        raise BadValue(f"v has length {arr.size} but the schedule has {P} planes (head dim {2 * P})")
    arr = scale_by_power_of_two(arr)                  # exact; keeps ||v|| finite and non-zero
    nrm = float(np.linalg.norm(arr))
    if nrm == 0.0:
        raise BadValue("v must be non-zero (a rank-1 cloud X = u v^T needs v != 0); got the zero vector")
    return arr / nrm


#: arrays whose largest entry lies outside ``[2^-SAFE_EXPONENT, 2^SAFE_EXPONENT]`` are rescaled by a
#: power of two (exact) before squares and sums, which would otherwise overflow to inf or underflow to 0;
#: the FSV ratio, stable rank and Frobenius ratio do not depend on the scale
SAFE_EXPONENT = 400


def scale_by_power_of_two(a: np.ndarray) -> np.ndarray:
    """Each row (last axis) times ``2^-k``, ``k`` the binary exponent of its ``max |a|``, where that max
    is outside the safe range; rows inside it (and zero rows) are returned untouched. Exact."""
    m = np.max(np.abs(a), axis=-1, keepdims=True) if a.size else np.zeros(a.shape[:-1] + (1,))
    out_of_range = (m != 0) & ((m < 2.0 ** -SAFE_EXPONENT) | (m > 2.0 ** SAFE_EXPONENT))
    if not out_of_range.any():
        return a
    return np.ldexp(a, np.where(out_of_range, -np.frexp(m)[1], 0))


def scale_to_unit_max(a: np.ndarray) -> tuple[np.ndarray, int]:
    """``(2^-k a, k)`` with ``k`` the binary exponent of ``max |a|`` (``k = 0`` for a zero or empty array):
    one exact power of two for the whole array, so its largest entry lies in ``[1/2, 1)`` and no square,
    product or sum of squares of its entries overflows; ratios of its norms are unchanged."""
    m = float(np.max(np.abs(a))) if a.size else 0.0
    if m == 0.0:
        return a, 0
    k = int(np.frexp(m)[1])
    return np.ldexp(a, -k), k


def check_clouds(V: Any, P: int, layout: str = "interleaved") -> np.ndarray:
    """Validate a batch of cloud vectors (rows of ``V``, each ``2P`` long, finite, non-zero) and
    return them normalised to unit norm, in the interleaved channel order, ``(n_clouds, 2P)``."""
    A = check_finite_array("V", V, min_ndim=2)
    if A.ndim != 2 or A.shape[1] != 2 * P or A.shape[0] == 0:
        raise BadValue(f"V must be (n_clouds >= 1, {2 * P}), got shape {A.shape}")
    A = scale_by_power_of_two(A)                      # exact, per row: no overflow or underflow in the norms
    norms = np.linalg.norm(A, axis=1)
    if np.any(norms == 0):
        raise BadValue(f"V row {int(np.argmax(norms == 0))} is the zero vector")
    check_layout(layout)
    return to_interleaved(np.asarray(A / norms[:, None]), layout)


def check_length(n: Any, name: str = "n") -> int:
    """``n`` must be an integer ``1 <= n < 2^62``."""
    n = check_integer(name, n)
    if n < 1:
        raise BadValue(f"{name} must be >= 1, got {n}")
    if n >= 2 ** 62:
        raise BadValue(f"{name} must be < 2^62, got {n}")
    return n


def bucket(n: int, *, minimum: int = 1, power_of_two: bool = False) -> int:
    """The size to pad a traced axis of ``n`` entries to, so a jitted kernel compiles once per bucket,
    not once per ``n``: the next power of two up to 1024, then the next multiple of an eighth of the
    octave (at most 12.5% padding). Results for the padded entries are computed and dropped.

    ``power_of_two``: always the next power of two (kernels that reshape the axis into power-of-two
    chunks); ``minimum``: never fewer entries than this (a floor on the number of compiled sizes)."""
    n = max(int(n), int(minimum), 1)
    if n <= 1024 or power_of_two:
        return 1 << (n - 1).bit_length()
    step = 1 << ((n - 1).bit_length() - 4)
    return -(-n // step) * step


def pad_edge(a: np.ndarray, size: int, axis: int = 0, *, fill: Any = None) -> np.ndarray:
    """``a`` padded along ``axis`` to ``size`` entries (``a`` if already that long): by repeating its last
    entry, or with the constant ``fill`` when given (needed for an empty ``a``, and where a padded entry
    must count as nothing, such as a count of 0)."""
    n = a.shape[axis]
    if size <= n or (not n and fill is None):
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, size - n)
    if fill is None:
        return np.pad(a, pad, mode="edge")
    return np.pad(a, pad, mode="constant", constant_values=fill)


def pad_to_bucket(a: np.ndarray, axis: int = 0, *, fill: Any = None, minimum: int = 1,
                  power_of_two: bool = False) -> np.ndarray:
    """``a`` padded along ``axis`` to ``bucket`` of its length (see ``bucket`` and ``pad_edge``)."""
    return pad_edge(a, bucket(a.shape[axis], minimum=minimum, power_of_two=power_of_two), axis, fill=fill)


def check_lengths(lengths: Any, name: str = "lengths") -> np.ndarray:
    """A non-empty 1-D int64 array of lengths, each a positive integer (a scalar is one length); errors
    name the argument ``name`` and the entry (``lengths[2]``)."""
    try:
        given = np.asarray(lengths, dtype=object)
    except (TypeError, ValueError):                   # a ragged list
        raise BadType(f"{name} must be one length or a 1-D list of lengths, got {short_repr(lengths)}") from None
    arr = np.atleast_1d(given)
    if arr.ndim != 1 or arr.size == 0:
        raise BadValue(f"{name} must be one length or a non-empty 1-D list of lengths, got shape {arr.shape}")
    return np.array([check_length(x, name if given.ndim == 0 else f"{name}[{i}]") for i, x in enumerate(arr)],
                    dtype=np.int64)


def check_offset(offset: Any, lo: int = 0, hi: int = 0) -> int:
    """``offset`` as an int if it is an integer (``check_integer``: numpy integers and whole floats too,
    never a bool) and ``offset + lo`` and ``offset + hi`` (the smallest and largest position it shifts) stay
    within int64 (``|i| < 2^63``)."""
    off = check_integer("offset", offset)
    if off + int(hi) > MAX_ABS_POSITION or off + int(lo) < -MAX_ABS_POSITION:
        raise BadValue(f"offset {off} with positions in [{int(lo)}, {int(hi)}] leaves int64 (|i| < 2^63)")
    return off

