"""The certified curve (``theory.curve.certified_curve``): Grams only where Theorem 1's certified bound
does not pin ``rho_n``; the limit, within the stated tolerance, everywhere else."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

import ropetheory as rt
from ropetheory import spectra as sp
from ropetheory.studies.verify import counterexample_cases, make_v
from ropetheory.theory import theorems as tm
from ropetheory.theory.curve import CURVE_CERTIFIED_RTOL, float_certified_eps, gap_certified_eps

from strategies import examples, schedules, unit_vectors

#: the float64 bound may exceed the Arb one (it lower-bounds each sine; for the small sines that dominate
#: the sum the two agree to ~1e-5 relative) but never undercut it by more than the Arb ball's rounding up
ARB_AGREE_RTOL = 1e-12
#: the grid every case is checked on: 16 lengths to 10^12 (one compiled batch size), both regimes occur
GRID = sp.log_grid(1e12, 16)


def _cases():
    d = 128
    rope = rt.schedule("rope", head_dim=d, base=10000.0)
    out = [("rope-gaussian", rope, make_v("gaussian", d), None, 0),
           ("rope-ramp", rope, make_v("gaussian", d, seed=1), sp.AffineWeights(1.0, 1.0 / 4096), 0),
           ("rope-offset", rope, make_v("gaussian", d, seed=2), None, 10 ** 9),
           ("rope-one-plane", rope, make_v("one_plane", d), None, 0),
           ("partial-nope", rt.schedule("partial", head_dim=80, base=10000.0, fraction=0.5), make_v("gaussian", 80),
            None, 0),
           ("rope_id", rt.schedule("rope_id", head_dim=d, train_len=4096), make_v("uniform_energy", d), None, 0)]
    for key, _, th, v, w in counterexample_cases():          # degenerate schedules; oscillating weights
        out.append((key, th, v, w, 0))
    return out


CASES = _cases()


@pytest.mark.parametrize("key, theta, v, weights, offset", CASES, ids=[c[0] for c in CASES])
def test_certified_points_are_the_limit_within_the_tolerance_and_the_others_are_the_computed_curve(
        key, theta, v, weights, offset):
    ref = sp.rank1_curve(theta, v, GRID, weights=weights, offset=offset)
    cur = rt.certified_curve(theta, v, GRID, weights=weights, offset=offset)
    cert = cur["certified"]
    assert cert.dtype == bool and cert.shape == GRID.shape and np.array_equal(cur["n"], ref["n"])
    for k in ("rho", "rho2", "srank", "frob_ratio"):           # computed points: the very same numbers
        np.testing.assert_array_equal(cur[k][~cert], ref[k][~cert])
    if isinstance(weights, sp.TrigWeights):                   # TV_n = o(W_n) fails: nothing is certified
        assert not cert.any() and np.isnan(cur["eps"]).all()
        return
    v_at = sp.prepare_rank1(theta, v, "interleaved", offset, int(GRID.max()))[1]    # R_offset v
    lam = tm.predicted_limit(theta, v_at, weights=weights).lam
    # the certified radius holds at every length (computed ones included), up to float64 rounding
    assert np.all(np.abs(ref["rho2"] - lam) <= cur["eps"] + tm.FLOAT_SLACK), key
    tol = CURVE_CERTIFIED_RTOL * lam + tm.FLOAT_SLACK
    assert np.all(np.abs(cur["rho2"] - ref["rho2"])[cert] <= tol)
    assert np.all(np.abs(cur["rho"] - ref["rho"])[cert] <= tol / (2 * math.sqrt(lam - tol)))
    assert np.all(np.abs(cur["srank"] / ref["srank"] - 1)[cert] <= tol / (lam - tol))
    assert np.all(np.abs(cur["frob_ratio"] - ref["frob_ratio"])[cert] <= tm.FROB_ATOL)
    # a tail of the grid is certified (eps_n decreases with n) and, for these clouds, at least the last point
    assert cert[-1] and np.all(cert[np.argmax(cert):])


def _gap_holds(theta, v, weights, lengths):
    """The gap-aware bound at ``lengths`` and the computed ``|rho_n^2 - lambda|`` it must cover."""
    ref = sp.rank1_curve(theta, v, lengths, weights=weights)
    lam = tm.predicted_limit(theta, v, weights=weights).lam
    gap = gap_certified_eps(theta, v, lengths, weights=weights)
    assert gap.shape == lengths.shape and not np.isnan(gap).any()
    return gap, np.abs(ref["rho2"] - lam)


AFFINE_CASES = [c for c in CASES if not isinstance(c[3], sp.TrigWeights)]


@pytest.mark.parametrize("key, theta, v, weights, offset", AFFINE_CASES, ids=[c[0] for c in AFFINE_CASES])
def test_the_gap_aware_bound_covers_the_computed_error_at_every_length(key, theta, v, weights, offset):
    v_at = sp.prepare_rank1(theta, v, "interleaved", offset, int(GRID.max()))[1]
    gap, err = _gap_holds(theta, v_at, weights, GRID)
    assert np.all(err <= gap + tm.FLOAT_SLACK), key
    assert np.all(gap[1:] <= gap[:-1]), key                     # c_n decreases: so does the bound


def test_the_gap_aware_bound_is_a_few_times_the_true_error_where_the_frobenius_bound_is_1e3_times():
    th = rt.schedule("rope", head_dim=128, base=10000.0)
    v = make_v("gaussian", 128)
    grid = sp.log_grid(1e12, 200)
    gap, err = _gap_holds(th, v, None, grid)
    fro = float_certified_eps(th, v, grid)
    tail = grid >= 10 ** 7
    # the true error oscillates under its 1/n envelope (|sin(n omega / 2)|): the typical ratio is compared
    assert np.isfinite(gap[tail]).all() and np.median(gap[tail] / err[tail]) <= 4
    assert np.all(fro[tail] >= 500 * gap[tail])
    lam = tm.predicted_limit(th, v).lam
    cur = rt.certified_curve(th, v, grid)
    assert cur["certified"].sum() >= 105                       # 65 with the Frobenius bound alone
    np.testing.assert_allclose(cur["eps"], np.minimum(fro, gap), rtol=1e-12)
    assert np.all(cur["eps"][cur["certified"]] + tm.FLOAT_SLACK <= CURVE_CERTIFIED_RTOL * lam)


def test_the_gap_aware_bound_at_a_length_does_not_depend_on_the_other_lengths_asked(monkeypatch):
    """The lengths are worked in blocks (``_GAP_ELEMENTS``): 200 lengths at d = 128 span 13 blocks, and each
    length's bound is the one it gets alone, bit for bit."""
    from ropetheory.theory import curve
    th = rt.schedule("rope", head_dim=128, base=10000.0)
    v = make_v("gaussian", 128)
    grid = sp.log_grid(1e12, 200)
    many = gap_certified_eps(th, v, grid)
    assert grid.size > curve._GAP_ELEMENTS // 64 ** 2
    monkeypatch.setattr(curve, "_GAP_ELEMENTS", 1)
    one_each = gap_certified_eps(th, v, grid)
    np.testing.assert_array_equal(many, one_each)


def test_one_weighting_serves_every_class_in_the_gershgorin_step():
    """Two near-equal planes act as one while n * 1e-9 << 1 and together hold more than the top plane: no
    single energy weighting separates both of their rows from lambda, so the bound must stay open (a minimum
    over weightings taken per class, before the maximum over classes, certified 5.8e-6 against a 1e-2 error)."""
    theta = np.array([2.5, 1.0, 1.0 + 1e-9])
    v = np.zeros(6)
    v[0::2] = np.sqrt([0.49, 0.45, 0.06])
    lengths = np.array([10 ** 5, 10 ** 6, 10 ** 7])
    gap, err = _gap_holds(theta, v, None, lengths)
    assert np.all(err > 9e-3) and np.all(err <= gap + tm.FLOAT_SLACK)


@examples(30)
@given(st.floats(0.1, 3.0), st.sampled_from([1e-11, 1e-9, 1e-7, 1e-5, 1e-3]), st.floats(0.1, 3.0),
       st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3), st.integers(0, 2 ** 31 - 1))
@example(1.0, 1e-9, 2.5, [0.45, 0.06, 0.49], 0).via("the reproducer above, in another order")
def test_the_gap_aware_bound_covers_near_resonant_pairs_of_any_energy(t0, delta, t2, energies, seed):
    """Near-resonant pairs (the gap bound's hardest case: they act as one plane until n delta ~ 1) with
    energies drawn near each other and in random phases."""
    theta = np.array([t0, t0 + delta, t2])
    e = np.asarray(energies) / np.sum(energies)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
    v = np.zeros(6)
    v[0::2], v[1::2] = np.sqrt(e) * np.cos(phase), np.sqrt(e) * np.sin(phase)
    gap, err = _gap_holds(theta, v, None, sp.log_grid(1e12, 24))
    assert np.all(err <= gap + tm.FLOAT_SLACK)


def test_one_resonance_class_makes_the_gap_bound_the_top_blocks_own_error():
    theta = np.zeros(4)                                        # every plane NoPE: one class, nothing moves
    v = make_v("gaussian", 8)
    gap, err = _gap_holds(theta, v, None, GRID)
    assert np.all(gap == 0.0) and np.all(err <= tm.FLOAT_SLACK)


@examples(25)
@given(schedules(), st.data(), st.sampled_from([None, sp.AffineWeights(1.0, 0.5), sp.AffineWeights(0.0, 1.0)]))
@example(("random", 8, np.array([0.3, 0.3, 0.0, 3.0])), None, None).via("equal, NoPE and fast planes")
def test_the_gap_aware_bound_covers_the_computed_error_for_any_schedule_and_cloud(sched, data, weights):
    _, d, theta = sched
    v = make_v("gaussian", d) if data is None else data.draw(unit_vectors(d))
    gap, err = _gap_holds(theta, v, weights, GRID[1:])
    assert np.all(err <= gap + tm.FLOAT_SLACK)


#: one case of each kind for the (slower) Arb comparison: a ramp, NoPE planes, a degenerate schedule
ARB_CASES = [c for c in CASES if c[0] in ("rope-ramp", "partial-nope", "equal_freq")]


@pytest.mark.parametrize("key, theta, v, weights, offset", ARB_CASES, ids=[c[0] for c in ARB_CASES])
def test_float_bound_is_never_below_the_arb_bound(key, theta, v, weights, offset):
    ns = GRID[::5]
    fe = float_certified_eps(theta, v, ns, weights=weights)
    cb = tm.certified_bound(theta, v)
    arb = np.array([cb.eps(tm.abel_ratio_arb(int(n), weights)) for n in ns])
    assert np.all(fe >= arb * (1 - ARB_AGREE_RTOL)), key


def test_tolerance_zero_or_none_certified_is_the_plain_curve_and_bad_values_are_refused():
    th = rt.schedule("rope", head_dim=64, base=10000.0)
    v = make_v("gaussian", 64)
    cur = rt.certified_curve(th, v, GRID, rtol=1e-300)
    assert not cur["certified"].any()
    np.testing.assert_array_equal(cur["rho"], sp.rank1_curve(th, v, GRID)["rho"])
    everything = rt.certified_curve(th, v, [10 ** 12, 10 ** 15], rtol=0.5)
    assert everything["certified"].all() and np.all(everything["frob_ratio"] == 1.0)
    for bad in (0.0, 1.0, -1e-3, float("nan"), True):
        with pytest.raises((TypeError, ValueError), match="rtol"):
            rt.certified_curve(th, v, GRID, rtol=bad)
    with pytest.raises(TypeError, match="AffineWeights"):
        float_certified_eps(th, v, GRID, weights=sp.TrigWeights())


def test_verify_command_takes_even_head_widths_only():
    from ropetheory.studies.verify import main
    with pytest.raises(SystemExit) as e:
        main(["--head-dims", "15", "--out", "/nonexistent"])
    assert e.value.code == 2
