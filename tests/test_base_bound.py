"""Men et al.'s base bound: the certified search cannot miss a window, and its enclosures are rigorous."""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import mpmath
import numpy as np
import pytest

from ropetheory.studies import base_bound as study
from ropetheory.theory import base_bound as bb, base_search as bs

#: dense-scan points whose min_m B is within this of 0 are not classified (float64 sums of <= 64
#: cosines of exactly reduced angles are good to ~1e-13; 1e-9 leaves a wide margin)
DENSE_MARGIN = 1e-9
#: the progress shares are differences of float64 running sums of interval widths over ln b in
#: [ln 10, ln 1e4]: each is exact to a few ulps, far below 1e-12 after a few hundred leaves
PROGRESS_SUM_RTOL = 1e-12


def _B_mp(m: int, b, d: int):
    with mpmath.workdps(50):
        b = mpmath.mpf(b)
        return mpmath.fsum(mpmath.cos(m * b ** (mpmath.mpf(-2 * j) / d)) for j in range(d // 2))


def _min_B(b: float, d: int, L: int) -> float:
    return float(bb.B_values(b, d, np.arange(1, L + 1)).min())


def test_enclosures_contain_50_digit_values():
    rng = np.random.default_rng(0)
    for d in (8, 64, 128):
        n = 40
        t_lo = rng.uniform(math.log(10), math.log(1e9), n)
        t_hi = t_lo + 10.0 ** rng.uniform(-9, -2, n)
        m = rng.integers(1, bb.MAX_L, n)
        m[:10] = rng.integers(1, 100, 10)
        lo, hi = bb.enclose_B(m, t_lo, t_hi, d)
        for i in range(n):
            for frac in (0.0, 0.37, 1.0):
                with mpmath.workdps(50):
                    t = mpmath.mpf(t_lo[i]) + frac * (mpmath.mpf(t_hi[i]) - mpmath.mpf(t_lo[i]))
                    val = _B_mp(int(m[i]), mpmath.exp(t), d)
                assert lo[i] <= val <= hi[i], (d, i, lo[i], float(val), hi[i])
    # and they are tight on a narrow interval: width ~ |B'| h, far below 1
    lo, hi = bb.enclose_B(np.array([1000]), np.array([math.log(1e4)]), np.array([math.log(1e4) + 1e-9]), 128)
    assert hi[0] - lo[0] < 1e-4


def test_certified_search_agrees_with_dense_scan():
    d, L = 16, 150
    res = bs.search_feasible_bases(L, d, b_min=10.0, b_max=1e4, initial=16)
    grid = np.geomspace(10.0, 1e4, 4000)
    mins = np.array([_min_B(b, d, L) for b in grid])

    def inside(b, ivs):
        return any(a <= b <= c for a, c in ivs)
    for b, v in zip(grid, mins, strict=False):
        if v > DENSE_MARGIN:           # feasible: inside a proven-feasible window or an undecided sliver
            assert inside(b, res.feasible) or inside(b, res.undecided), b
        elif v < -DENSE_MARGIN:        # infeasible: never inside a proven-feasible window
            assert not inside(b, res.feasible), b
    # every feasible window really is feasible (its midpoint, checked at 50 digits for every m)
    for a, c in res.feasible[:5]:
        mid = math.sqrt(a * c)
        assert min(float(_B_mp(m, mid, d)) for m in range(1, L + 1)) >= 0
    # nothing below the certified lower end is feasible
    assert all(v < 0 for b, v in zip(grid, mins, strict=False) if b < res.smallest_lower)
    assert res.smallest_lower <= res.smallest


def test_planted_narrow_window_missed_by_a_grid_is_found():
    """L = 1024, d = 128: the first window is narrower than a 40-per-decade grid's spacing."""
    d, L = 128, 1024
    res = bs.search_feasible_bases(L, d, b_min=3e3, b_max=7e3, initial=32)
    a, c = res.feasible[0]
    assert c / a < 10 ** (1 / 40)                         # narrower than the old grid's step
    grid = np.geomspace(1e2, 1e10, 8 * 40 + 1)           # the old search's grid
    assert not np.any((grid >= a) & (grid <= c))         # no grid point falls in it: the grid misses it
    assert _min_B(math.sqrt(a * c), d, L) >= 0           # and it is feasible
    assert _min_B(a * 0.999, d, L) < 0                   # just below it is not
    assert res.smallest == a and 4293 < a < 4294


#: a small search that takes several rounds (so it can be stopped part-way)
SEARCH_KW = dict(b_min=1e4, b_max=1e5, initial=16)
#: the checkpoint tests' (train_len, head_dim): the command test's largest length and width, so the programs its
#: search compiles serve these too (29 rounds, 4 feasible intervals: enough rounds to stop and resume)
SEARCH_AT = (512, 32)


def _stopped_search(ck, monkeypatch, rounds: int = 4) -> dict[str, int]:
    """Run the search with checkpoints after every round and stop it (Ctrl-C) after ``rounds`` rounds; then
    count the pairs each later round evaluates (the returned dict's ``"pairs"``)."""
    orig, calls = bs._evaluate_block, {"rounds": 0, "pairs": 0}

    def interrupted(*a):
        calls["rounds"] += 1
        if calls["rounds"] > rounds:
            raise KeyboardInterrupt
        return orig(*a)
    monkeypatch.setattr(bs, "_evaluate_block", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bs.search_feasible_bases(*SEARCH_AT, checkpoint=ck, checkpoint_seconds=0.0, **SEARCH_KW)

    def counting(*a):
        out = orig(*a)
        calls["pairs"] += out[-1]
        return out
    monkeypatch.setattr(bs, "_evaluate_block", counting)
    return calls


def test_checkpointed_search_resumes_to_the_same_result(tmp_path, monkeypatch):
    ref = bs.search_feasible_bases(*SEARCH_AT, **SEARCH_KW)
    ck = tmp_path / "ck.npz"
    calls = _stopped_search(ck, monkeypatch)
    assert ck.exists()
    res = bs.search_feasible_bases(*SEARCH_AT, checkpoint=ck, checkpoint_seconds=0.0, **SEARCH_KW)
    assert res.feasible == ref.feasible and res.undecided == ref.undecided
    assert res.evaluations == ref.evaluations
    assert calls["pairs"] < ref.evaluations              # the resumed run did not start again
    assert not ck.exists()
    # a damaged checkpoint is reported and ignored
    ck.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="damaged"):
        res2 = bs.search_feasible_bases(*SEARCH_AT, checkpoint=ck, **SEARCH_KW)
    assert res2.feasible == ref.feasible


def test_a_search_checkpoint_from_other_code_is_not_resumed(tmp_path, monkeypatch):
    """The search state is keyed by the parameters and the code fingerprint: a changed search starts again."""
    ck = tmp_path / "ck.npz"
    calls = _stopped_search(ck, monkeypatch)
    monkeypatch.setattr(bs, "derived_code_hash", lambda name: "edited-search-code")
    with pytest.warns(UserWarning, match="ck.npz.*other code"):
        res = bs.search_feasible_bases(*SEARCH_AT, checkpoint=ck, checkpoint_seconds=0.0, **SEARCH_KW)
    assert calls["pairs"] == res.evaluations                 # every pair evaluated again: nothing reused


@pytest.mark.parametrize("kwargs, match", [
    (dict(L=0), "train_len must be"), (dict(L=bb.MAX_L + 1), "train_len must be"),
    (dict(L=True), "train_len must be"), (dict(L=100, head_dim=7), "head_dim"),
    (dict(L=100, head_dim="128"), "head_dim"), (dict(L=100, head_dim=64, d=64), "give head_dim= only"),
    (dict(L=100, b_min=1e5, b_max=1e4), "b_min"), (dict(L=100, b_min=float("nan")), "b_min"),
    (dict(L=100, b_max=1e300), "b_max"), (dict(L=100, min_width=0.0), "min_width"),
    (dict(L=100, initial=0), "initial"),
])
def test_bad_search_arguments_name_the_value(kwargs, match):
    L = kwargs.pop("L")
    with pytest.raises((TypeError, ValueError), match=match):
        bs.search_feasible_bases(L, **kwargs)


def test_search_progress_gets_the_share_decided_since_the_last_call_summing_to_one():
    shares: list[float] = []
    res = bs.search_feasible_bases(train_len=150, head_dim=16, b_min=10.0, b_max=1e4, initial=16,
                                   progress=shares.append)
    assert res.train_len == 150 and res.head_dim == 16
    assert len(shares) > 1 and min(shares) >= 0
    assert math.isclose(math.fsum(shares), 1.0, rel_tol=PROGRESS_SUM_RTOL)


def test_search_reads_its_old_argument_names_as_the_new_ones_with_a_warning():
    with pytest.warns(DeprecationWarning, match="L= is now train_len="), \
            pytest.raises(ValueError, match="train_len must be"):
        bs.search_feasible_bases(L=0)


def test_search_result_reads_its_old_field_names_L_and_d_as_train_len_and_head_dim_with_a_warning():
    res = bb.BaseSearchResult(train_len=150, head_dim=16, b_min=10.0, b_max=1e4, min_width=1e-9, feasible=[],
                              undecided=[], smallest=None, smallest_lower=None, evaluations=0, leaves=0, seconds=0.0)
    with pytest.warns(DeprecationWarning, match=r"BaseSearchResult\.L is now BaseSearchResult\.train_len"):
        assert res.L == 150
    with pytest.warns(DeprecationWarning, match=r"BaseSearchResult\.d is now BaseSearchResult\.head_dim"):
        assert res.d == 16
    kw = {("L" if k == "train_len" else k): v for k, v in dataclasses.asdict(res).items()}
    with pytest.warns(DeprecationWarning, match="BaseSearchResult: L= is now train_len="):
        assert bb.BaseSearchResult(**kw) == res
    with pytest.raises(AttributeError):
        res.L = 3                                                    # read-only
    assert res.as_row()["L"] == 150 and res.as_row()["d"] == 16    # the committed rows keep their keys


def test_basebound_command_writes_table_and_recomputes_only_on_change(tmp_path, monkeypatch):
    args = ["--lengths", "256,512", "--head-dim", "32", "--b-min", "10", "--b-max", "1e5", "--out", str(tmp_path),
            "--quiet"]
    assert study.main(args) == 0
    for f in ("base_bound.csv", "base_bound_windows.csv", "base_bound.json", "base_bound.png"):
        assert (tmp_path / f).stat().st_size > 0
    calls = {"n": 0}
    orig = bs.search_feasible_bases

    def counting(*a, **k):
        calls["n"] += 1
        return orig(*a, **k)
    monkeypatch.setattr(bs, "search_feasible_bases", counting)
    assert study.main(args) == 0
    assert calls["n"] == 0                                   # nothing changed: both rows reused
    monkeypatch.setattr(study, "code_hash", lambda: "other-code")
    assert study.main(args) == 0
    assert calls["n"] == 2                                   # other code: both rows recomputed
    out = subprocess.run([sys.executable, "-m", "ropetheory.cli", "basebound", "--lengths", "abc"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--lengths" in out.stderr


@pytest.mark.parametrize("planes", [1, 32, 64, 65, 1000, 5000, 8192])
def test_a_kernel_calls_working_set_does_not_grow_with_the_head_width(planes):
    """explore found search_feasible_bases(train_len=993, head_dim=10000) allocating 42 GB in one call: the
    pairs per call now shrink as the planes grow, so pairs x planes stays at most what it is at d = 128."""
    from ropetheory.theory import base_bound as bb
    c = bb.pair_chunk(planes)
    assert c & (c - 1) == 0 and c >= bb.MIN_CHUNK
    assert c * planes <= max(bb.PAIR_CHUNK_CPU * bb.CHUNK_PLANES, bb.MIN_CHUNK * planes)


#: compiled programs of the search's two kernels allowed for one wide search: one per power-of-two pair
#: count it meets (512 to 2048) and per kind of active set; padding the interval axis to
#: ``bb.MIN_INTERVALS`` took this search from 18 programs (one per count of intervals a block held) to 6
MAX_SEARCH_PROGRAMS = 8


def test_a_wide_base_search_compiles_few_programs_whatever_its_blocks_hold():
    bs._round.clear_cache()
    bs._children.clear_cache()
    out = bs.search_feasible_bases(train_len=300, head_dim=16, b_min=2.0, b_max=3e16, min_width=1e-3, budget=2000)
    assert out.feasible
    assert bs._round._cache_size() + bs._children._cache_size() <= MAX_SEARCH_PROGRAMS
