"""Compensated accumulation and the one streaming loop every streamed Gram runs through."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..core.checks import check_length


def neumaier_add(acc, x):
    """Neumaier's compensated summation, elementwise: ``acc = (sum, compensation)`` plus ``x``.

    The total is ``sum + compensation`` (``neumaier_total``); its error does not grow with the
    number of terms (Higham, Accuracy and Stability, 4.3), where a plain running sum's grows
    linearly. Every streaming Gram of the package accumulates through this function.
    """
    s, c = acc
    t = s + x
    xp = np if isinstance(t, np.ndarray) else jnp            # numpy arrays stay numpy (the model stream)
    return t, c + xp.where(xp.abs(s) >= xp.abs(x), (s - t) + x, (x - t) + s)


def neumaier_total(acc):
    """The compensated total of an accumulator of ``neumaier_add``."""
    return acc[0] + acc[1]


def neumaier_cumsum(x: np.ndarray) -> np.ndarray:
    """Compensated prefix sums ``S_k = sum_{i<=k} x_i`` of a 1-D float64 array, as ``neumaier_add`` run
    term by term would give them, vectorised: Neumaier's running sum is the plain running sum (its update
    never reads the compensation) and its compensation the plain running sum of each step's rounding
    error, which ``neumaier_add`` computes for every step at once from the previous partial sums."""
    s = np.cumsum(x)
    prev = np.concatenate([[0.0], s[:-1]])
    _, err = neumaier_add((prev, np.zeros_like(s)), x)
    return neumaier_total((s, np.cumsum(err)))


def chunked_prefix_scan(ends, positions_per_step: int, init, step, snapshot):
    """The one streaming loop: for each ``end`` in ``ends`` (non-decreasing), advance ``state`` over
    positions ``[previous end, end)`` in chunks, then emit ``snapshot(state)``.

    ``step(state, pos, mask) -> state`` sees int64 positions ``(positions_per_step,)`` and a boolean mask of those
    below ``end``. A ``lax.scan`` over the ends holds a ``lax.while_loop`` over chunks: no host round
    trip, memory ``O(state + positions_per_step)``. Returns the stacked snapshots.
    """
    chunk = check_length(positions_per_step, "positions_per_step")
    ar = jnp.arange(chunk, dtype=jnp.int64)

    def seg(carry, end):
        state, start = carry

        def body(st):
            state, p0 = st
            pos = p0 + ar
            return step(state, pos, pos < end), p0 + chunk

        state, _ = jax.lax.while_loop(lambda st: st[1] < end, body, (state, start))
        return (state, end), snapshot(state)

    _, out = jax.lax.scan(seg, (init, jnp.int64(0)), ends)
    return out
