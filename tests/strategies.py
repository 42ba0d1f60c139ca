"""Hypothesis strategies shared by the property tests: head widths, schedules, clouds, lengths."""
from __future__ import annotations

import os

import numpy as np
from hypothesis import settings, strategies as st

import ropetheory as rt

#: the ``explore`` profile runs every property test with this many times its stated example count
EXPLORE_FACTOR = 25


def examples(n: int, **kw) -> settings:
    """``@settings`` for a property test of ``n`` examples (the loaded profile's other settings; ``n``
    times :data:`EXPLORE_FACTOR` under the ``explore`` profile)."""
    scale = EXPLORE_FACTOR if os.environ.get("HYPOTHESIS_PROFILE") == "explore" else 1
    return settings(max_examples=n * scale, **kw)


def refuses_or_returns(fn, names, seconds: float):
    """``fn()``, or None where it raised a ValueError/TypeError, which must name one of ``names``; a call
    that takes ``seconds`` or more is a failure (a hang or runaway work)."""
    import time
    t0 = time.perf_counter()
    try:
        out = fn()
    except (ValueError, TypeError) as e:
        assert any(n in str(e) for n in names), f"error does not name the argument ({names}): {e!r}"
        out = None
    assert time.perf_counter() - t0 < seconds
    return out


head_dims = st.sampled_from([2, 4, 6, 8, 16, 32])
layouts = st.sampled_from(["interleaved", "half"])
lengths = st.integers(min_value=1, max_value=64)
big_positions = st.integers(min_value=-(10 ** 15), max_value=10 ** 15)


@st.composite
def schedules(draw, d=None):
    """(name, head_dim, theta) for every registered schedule that is defined at ``d``."""
    d = draw(head_dims) if d is None else d
    P = d // 2
    options = ["rope", "partial", "rope_id", "random"] + (["high_frequency"] if d >= 4 else [])
    name = draw(st.sampled_from(options))
    if name == "rope":
        theta = rt.schedule("rope", head_dim=d, base=draw(st.sampled_from([100.0, 1e4, 5e5]))).theta
    elif name == "partial":
        r = draw(st.integers(1, P))
        theta = rt.schedule("partial", head_dim=d, fraction=r / P).theta
    elif name == "rope_id":
        r = draw(st.integers(1, P))
        theta = rt.schedule("rope_id", head_dim=d, train_len=draw(st.sampled_from([512, 4096])),
                            fraction=r / P).theta
    elif name == "high_frequency":
        theta = rt.schedule("high_frequency", head_dim=d, train_len=4096).theta
    else:
        vals = draw(st.lists(st.floats(0.0, 4.0, allow_nan=False), min_size=P, max_size=P))
        theta = np.array(vals, dtype=np.float64)
    return name, d, theta


@st.composite
def unit_vectors(draw, d):
    seed = draw(st.integers(0, 2 ** 31 - 1))
    v = np.random.default_rng(seed).standard_normal(d)
    return v / np.linalg.norm(v)


@st.composite
def clouds(draw, d, n):
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return np.random.default_rng(seed).standard_normal((n, d))
