"""The suite cannot go red by chance: under ``CI`` hypothesis draws the same examples every run, and a
property that is false is still found."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings, strategies as st

import conftest


def _draws(profile: str) -> list:
    out: list = []

    @settings(settings.get_profile(profile), max_examples=25)
    @given(st.integers(), st.floats(allow_nan=False), st.lists(st.booleans(), max_size=4))
    def prop(a, b, c):
        out.append((a, b, tuple(c)))

    prop()
    return out


def test_the_ci_profile_draws_the_same_examples_every_run():
    first, second = _draws("ci"), _draws("ci")
    assert first == second and len(set(first)) > 5


def test_the_ci_profile_still_finds_a_false_property():
    @settings(settings.get_profile("ci"), max_examples=60)
    @given(st.integers(0, 1000))
    def prop(x):
        assert x < 600

    with pytest.raises(AssertionError):
        prop()


def test_ci_selects_the_derandomized_profile_without_an_example_database():
    if os.environ.get("CI") and not os.environ.get("HYPOTHESIS_PROFILE"):
        assert conftest.PROFILE == "ci"
    ci = settings.get_profile("ci")
    assert ci.derandomize and ci.database is None
    assert not settings.get_profile("explore").derandomize
