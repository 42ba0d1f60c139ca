"""Hypothesis strategies for property tests of one's own RoPE code (needs ``hypothesis``).

``schedules()`` draws ``(theta, head_dim)`` from the paper's schedules and every Hugging Face rope type;
``positions(max_len)`` draws int64 positions (small, near powers of two, and up to ``max_len``);
``clouds(d)`` draws float64 arrays of vectors; ``rope_configs()`` draws model configs of every
``rope_type`` as transformers reads them. Example::

    from hypothesis import given
    from ropetheory.testing import assert_rope_matches, strategies as rs

    @given(rs.schedules(head_dims=[64, 128]))
    def test_my_rope(sched):
        theta, d = sched
        assert_rope_matches(my_rope, schedule=theta, dtype="float32", max_position=131072)
"""
from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from ..schedules import names
from ..schedules.hf import rope_parameters

__all__ = ["schedules", "positions", "clouds", "rope_configs", "ROPE_TYPES"]

#: the rope types ``rope_configs`` draws: ``default`` and every Hugging Face type of ``schedules.names``
#: but ``proportional`` (a partial-rotary type: its planes past the rotary fraction do not rotate)
ROPE_TYPES = ("default",) + tuple(t for t in names.HF_TYPES if t != "proportional")
#: the paper's schedules ``schedules`` draws (``schedules.names.PAPER``), each with the values its parameters take
PAPER_PARAMS: dict[str, dict[str, list[Any]]] = {
    "rope": {"base": [1e4, 5e5, 1e6]}, "partial": {"base": [1e4, 5e5, 1e6]},
    "high_frequency": {"train_len": [2048, 4096, 8192]}, "rope_id": {"train_len": [2048, 4096, 8192]},
}


@st.composite
def rope_configs(draw: Any, head_dims: Any = (64, 128), rope_types: Any = ROPE_TYPES) -> dict[str, Any]:
    """A model config of a drawn ``rope_type`` with the keys that type needs."""
    d = draw(st.sampled_from(list(head_dims)))
    kind = draw(st.sampled_from(list(rope_types)))
    base = draw(st.sampled_from([1e4, 5e5, 1e6]))
    orig = draw(st.sampled_from([2048, 4096, 8192]))
    factor = draw(st.sampled_from([2.0, 4.0, 8.0]))
    params = rope_parameters(kind, rope_theta=base, factor=factor, original_max_position_embeddings=orig, head_dim=d,
                             short_factor=np.linspace(1.0, 1.5, d // 2))
    return {"head_dim": d, "max_position_embeddings": int(orig * factor), "rope_parameters": params}


@st.composite
def schedules(draw: Any, head_dims: Any = (8, 16, 64, 128)) -> tuple[np.ndarray, int]:
    """``(theta, head_dim)``: a paper schedule (rope, partial, high_frequency, rope_id) or a rope type."""
    from ..schedules import schedule
    from ..schedules.hf import frequencies_from_config
    d = draw(st.sampled_from(list(head_dims)))
    kind = draw(st.sampled_from([*names.PAPER, "config"]))
    if kind == "config":
        cfg = draw(rope_configs(head_dims=[d]))
        return frequencies_from_config(cfg).theta, d
    params = {key: draw(st.sampled_from(values)) for key, values in PAPER_PARAMS[kind].items()}
    return schedule(kind, head_dim=d, **params).theta, d


def positions(max_len: int = 131072, size: int = 16) -> Any:
    """Arrays of ``size`` distinct int64 positions in ``[0, max_len]``, powers of two and neighbours included."""
    pow2 = [p for k in range(1, max(2, int(max_len).bit_length())) for p in ((1 << k) - 1, 1 << k, (1 << k) + 1)
            if p <= max_len]
    one = st.one_of(st.integers(0, 16), st.sampled_from(pow2 or [0]), st.integers(0, max_len))
    return st.lists(one, min_size=1, max_size=size, unique=True).map(lambda xs: np.asarray(sorted(xs), np.int64))


def clouds(d: int, max_rows: int = 16) -> Any:
    """Float64 arrays ``(n, d)`` of Gaussian rows times a drawn power of two (any scale is valid input)."""
    return st.tuples(st.integers(1, max_rows), st.integers(0, 2 ** 31 - 1), st.integers(-60, 60)).map(
        lambda t: np.ldexp(np.random.default_rng(t[1]).standard_normal((t[0], d)), t[2]))
