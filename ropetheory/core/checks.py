"""Validation at the public boundary: every public function converts and checks its arguments here.

Types (no bool, string or complex in a numeric slot), finiteness, ranges (head widths, frequencies
within the exact reduction, positions within int64), shapes (no empty arrays where a vector is
needed), and clouds rescaled by exact powers of two where their magnitude would overflow a Gram.
Every error is a ``ValueError`` or ``TypeError`` that names the argument and the value.
"""
from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from .layouts import check_layout, to_interleaved


#: largest head width accepted: a d x d float64 Gram of d = 16384 is 2 GiB; wider is a typo, not a model
MAX_HEAD_DIM = 2 ** 14


#: largest frequency the exact reduction accepts: ``theta / (2 pi)`` uses a 300-bit ``1/(2 pi)``, so
#: the turn error ``theta 2^-300`` stays below ``2^-200`` (far under the 2^-156 resolution) up to here
MAX_THETA = 2.0 ** 100


# --------------------------------------------------------------------------
# validation helpers (one place, used at every entry point)
# --------------------------------------------------------------------------
def check_head_dim(d: Any) -> int:
    """Return ``d`` as an int if it is a positive even integer, else raise ValueError."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
        if isinstance(d, float) and math.isfinite(d) and d.is_integer():
            d = int(d)
        else:
            raise TypeError(f"head_dim must be an integer, got {d!r}")
    d = int(d)
    if d <= 0 or d % 2:
        raise ValueError(f"head_dim must be a positive even integer, got {d}")
    if d > MAX_HEAD_DIM:
        raise ValueError(f"head_dim must be at most {MAX_HEAD_DIM} (MAX_HEAD_DIM), got {d}")
    return d


def real_array(name: str, x: Any) -> np.ndarray:
    """``x`` as a float64 array; complex, boolean and non-numeric input are refused, naming ``name``.

    The one conversion every public array argument goes through (numpy would drop an imaginary part
    with only a warning, and read ``True`` as 1).
    """
    try:
        raw = np.asarray(x)
        dt = raw.dtype
        if np.iscomplexobj(x) or dt == bool or dt.kind in "USV" or (
                dt.kind == "O" and any(isinstance(e, (str, bytes, bool, complex)) for e in raw.ravel())):
            raise TypeError(f"{name} must be real numbers (not strings, booleans or complex), got {x!r}"[:300])
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        if isinstance(e, TypeError) and str(e).startswith(name):
            raise
        raise TypeError(f"{name} must be numbers, got {x!r}") from None


def from_theta(theta: Any) -> np.ndarray:
    """A user-given schedule: validated float64 vector of ``P`` non-negative finite frequencies."""
    t = real_array("theta", theta)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"theta must be a non-empty 1-D vector, got shape {t.shape}")
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"theta must be finite and >= 0; theta[{k}] = {float(t[k])!r}")
    if (t >= MAX_THETA).any():
        k = int(np.argmax(t >= MAX_THETA))
        raise ValueError(f"theta[{k}] = {float(t[k])!r} is beyond the exact angle reduction (MAX_THETA = 2^100)")
    return t


MAX_ABS_POSITION = 2 ** 63 - 1


def check_positions(positions: Any, n: int | None = None) -> np.ndarray:
    """Validate integer positions: a 1-D int64 array with ``|i| < 2^63`` (no floats, no NaN)."""
    arr = np.asarray(positions)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError("positions must be finite integers; got NaN or inf")
        if not np.all(arr == np.round(arr)):
            bad = arr[arr != np.round(arr)][0]
            raise ValueError(f"positions must be integers, got {float(bad)!r}")
        if np.any(np.abs(arr) >= 2.0 ** 53):
            raise ValueError("float positions at or beyond 2^53 are not exact; pass int64 positions")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and arr.max() > MAX_ABS_POSITION:
            raise ValueError(f"position {int(arr.max())} does not fit in int64")
        arr = arr.astype(np.int64)
    elif arr.dtype == object:
        try:
            vals = [int(x) for x in arr.ravel()]
        except (TypeError, ValueError):
            raise TypeError(f"positions must be integers, got {positions!r}") from None
        if any(abs(x) > MAX_ABS_POSITION for x in vals):
            raise ValueError("positions must satisfy |i| < 2^63")
        arr = np.array(vals, dtype=np.int64).reshape(arr.shape)
    else:
        raise TypeError(f"positions must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"positions must be a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"got {arr.shape[0]} positions for {n} tokens")
    return arr


def check_finite_array(name: str, X: Any, min_ndim: int = 1) -> np.ndarray:
    """Convert to a float64 numpy array and reject NaN/inf, naming the first bad index."""
    A = real_array(name, X)
    if A.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {A.shape}")
    bad = ~np.isfinite(A)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = ", ".join(map(str, idx))
        raise ValueError(f"{name} must be finite; {name}[{where}] = {float(A[idx])!r}")
    return A


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------
def check_cloud_vector(v: Any, P: int | None = None) -> np.ndarray:
    """Validate ``v`` (finite, non-zero, even length ``2P``) and return it normalised to ``||v|| = 1``."""
    arr = check_finite_array("v", v)
    if arr.ndim != 1:
        raise ValueError(f"v must be a 1-D vector, got shape {arr.shape}")
    if arr.size % 2 or arr.size == 0:
        raise ValueError(f"v must have a positive even length (the head dim), got {arr.size}")
    if P is not None and arr.size != 2 * P:
        raise ValueError(f"v has length {arr.size} but the schedule has {P} planes (head dim {2 * P})")
    arr = scale_by_power_of_two(arr)                  # exact; keeps ||v|| finite and non-zero
    nrm = float(np.linalg.norm(arr))
    if nrm == 0.0:
        raise ValueError("v must be non-zero (a rank-1 cloud X = u v^T needs v != 0); got the zero vector")
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


def check_clouds(V: Any, P: int, layout: str = "interleaved") -> np.ndarray:
    """Validate a batch of cloud vectors (rows of ``V``, each ``2P`` long, finite, non-zero) and
    return them normalised to unit norm, in the interleaved channel order, ``(n_clouds, 2P)``."""
    A = check_finite_array("V", V, min_ndim=2)
    if A.ndim != 2 or A.shape[1] != 2 * P or A.shape[0] == 0:
        raise ValueError(f"V must be (n_clouds >= 1, {2 * P}), got shape {A.shape}")
    A = scale_by_power_of_two(A)                      # exact, per row: no overflow or underflow in the norms
    norms = np.linalg.norm(A, axis=1)
    if np.any(norms == 0):
        raise ValueError(f"V row {int(np.argmax(norms == 0))} is the zero vector")
    check_layout(layout)
    return np.asarray(to_interleaved(jnp.asarray(A / norms[:, None]), layout))


def check_length(n: Any, name: str = "n") -> int:
    """``n`` must be an integer ``1 <= n < 2^62``."""
    if isinstance(n, bool):
        raise TypeError(f"{name} must be an integer, got {n!r}")
    if isinstance(n, (float, np.floating)):
        if not math.isfinite(n) or n != int(n):
            raise ValueError(f"{name} must be a whole number, got {n!r}")
        n = int(n)
    if not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    if n >= 2 ** 62:
        raise ValueError(f"{name} must be < 2^62, got {n}")
    return n


def bucket(n: int) -> int:
    """The size to pad a traced axis of ``n`` entries to, so a jitted kernel compiles once per bucket,
    not once per ``n``: the next power of two up to 1024, then the next multiple of an eighth of the
    octave (at most 12.5% padding). Results for the padded entries are computed and dropped."""
    n = max(int(n), 1)
    if n <= 1024:
        return 1 << (n - 1).bit_length()
    step = 1 << ((n - 1).bit_length() - 4)
    return -(-n // step) * step


def pad_edge(a: np.ndarray, size: int, axis: int = 0) -> np.ndarray:
    """``a`` padded along ``axis`` to ``size`` entries by repeating its last entry (``a`` if already that long)."""
    n = a.shape[axis]
    if not n or size <= n:
        return a
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, size - n)
    return np.pad(a, pad, mode="edge")


def pad_to_bucket(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """``a`` padded along ``axis`` to :func:`bucket` of its length by repeating its last entry."""
    return pad_edge(a, bucket(a.shape[axis]), axis)


def check_lengths(lengths: Any) -> np.ndarray:
    """A non-empty 1-D int64 array of lengths, each a positive integer (a scalar is one length)."""
    arr = np.atleast_1d(np.asarray(lengths, dtype=object))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"lengths must be one length or a non-empty 1-D list of lengths, got shape {arr.shape}")
    return np.array([check_length(x, "length") for x in arr], dtype=np.int64)


def check_offset(offset: Any, lo: int = 0, hi: int = 0) -> int:
    """``offset`` as an int if it is an integer (not a bool) and ``offset + lo`` and ``offset + hi``
    (the smallest and largest position it shifts) stay within int64 (``|i| < 2^63``)."""
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
        raise TypeError(f"offset must be an integer, got {offset!r}")
    off = int(offset)
    if off + int(hi) > MAX_ABS_POSITION or off + int(lo) < -MAX_ABS_POSITION:
        raise ValueError(f"offset {off} with positions in [{int(lo)}, {int(hi)}] leaves int64 (|i| < 2^63)")
    return off

