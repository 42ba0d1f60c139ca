"""Property: over wide inputs (any dtype, empty shapes, extreme magnitudes, NaN/inf, strings and bools in
numeric slots) a public function either raises ValueError/TypeError naming the argument, or returns
finite values that agree with a slow reference where one exists; no call takes more than a few seconds."""
from __future__ import annotations


import numpy as np
from hypothesis import example, given, strategies as st

import ropetheory as rt
from ropetheory import schedules, spectra
from ropetheory.theory import theorems
from strategies import examples, refuses_or_returns

#: a call on tiny inputs that takes longer than this is a failure (hang or runaway memory)
CALL_SECONDS = 5.0
#: numpy's float64 ``i theta`` rotation is within this of the exact one for |i| <= 1000, theta <= 4
REFERENCE_ATOL = 1e-10

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2 ** 70, 2 ** 70), st.booleans(),
                    st.text(max_size=3), st.complex_numbers(max_magnitude=10), st.none(),
                    st.sampled_from([0, 1, 2, 3, 7, 8, 64, 4096, 0.5, 1e300, -1.0]))
dtypes = st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex128, object])


@st.composite
def arrays(draw, last=None):
    shape = draw(st.sampled_from([(0,), (0, 8), (2, 0), (3,), (8,), (2, 8), (1, 4), (2, 2, 8)]))
    if last is not None and draw(st.booleans()):
        shape = shape[:-1] + (last,) if shape else (last,)
    vals = draw(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                                   st.sampled_from([0.0, 1.0, -1.0, 1e308, 1e-308])),
                         min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    a = np.array(vals, dtype=np.float64).reshape(shape)
    dt = draw(dtypes)
    with np.errstate(all="ignore"):
        return a.astype(dt) if dt is not object else a.astype(object)


def _outcome(fn, names):
    """:func:`strategies.refuses_or_returns`, and a result must be finite."""
    out = refuses_or_returns(fn, names, CALL_SECONDS)
    if out is not None:
        vals = [out] if not isinstance(out, dict) else list(out.values())
        for v in vals:
            arr = np.asarray(getattr(v, "rho", v), dtype=np.float64)
            assert np.all(np.isfinite(arr)), f"non-finite output {arr!r}"
    return out


SETTINGS = examples(60)


@SETTINGS
@given(d=numbers, base=numbers)
def test_rope_schedule_refuses_or_returns_a_decreasing_finite_schedule(d, base):
    out = _outcome(lambda: schedules.rope(d, base).theta, ["head_dim", "base"])
    if out is not None:
        assert np.all(np.diff(out) < 0) and out[0] == 1.0


@SETTINGS
@given(d=st.sampled_from([8, 16, 128]), L=numbers, frac=numbers, lam=numbers, cyc=numbers)
def test_rope_id_refuses_or_returns_a_decreasing_schedule_then_nope(d, L, frac, lam, cyc):
    out = _outcome(lambda: schedules.rope_id(d, L, frac, lam, cyc).theta,
                   ["head_dim", "train_len", "fraction", "min_wavelength", "cycles"])
    if out is not None:
        r = int((out > 0).sum())
        assert r >= 1 and np.all(np.diff(out[:r]) < 0) and np.all(out[r:] == 0) and out[0] <= np.pi


@SETTINGS
@given(X=arrays(last=8), offset=numbers)
def test_apply_rope_refuses_or_matches_a_float64_reference(X, offset):
    theta = schedules.rope(8, 100.0).theta
    out = _outcome(lambda: rt.apply_rope(theta, X, offset=offset), ["X", "offset", "theta", "head dim", "positions"])
    if out is not None and np.asarray(X).size and abs(int(offset)) <= 1000:
        A = np.asarray(X, dtype=np.float64)
        n = A.shape[-2]
        ang = (np.arange(n) + int(offset))[:, None] * theta[None, :]
        c, s = np.cos(ang), np.sin(ang)
        ref = np.empty_like(A)
        ref[..., 0::2] = c * A[..., 0::2] - s * A[..., 1::2]
        ref[..., 1::2] = s * A[..., 0::2] + c * A[..., 1::2]
        np.testing.assert_allclose(np.asarray(out), ref, atol=REFERENCE_ATOL * max(1.0, np.abs(A).max()))


@SETTINGS
@given(v=arrays(last=8), n=st.one_of(numbers, st.lists(numbers, max_size=3)))
def test_rank1_curve_and_limit_refuse_or_give_finite_ratios_in_range(v, n):
    theta = schedules.rope(8, 100.0).theta
    names = ["v", "n", "length", "lengths"]
    out = _outcome(lambda: spectra.rank1_curve(theta, v, n), names)
    if out is not None:
        assert np.all((out["rho"] > 0) & (out["rho"] <= 1 + 1e-12))
    lim = _outcome(lambda: theorems.predicted_limit(theta, v), ["v"])
    if lim is not None:
        assert 1 / np.sqrt(8) - 1e-12 <= lim.rho <= 1 + 1e-12        # Lemma 1's range (d = 8)


@SETTINGS
@given(n=st.one_of(numbers, arrays()), L=numbers, p=numbers)
def test_length_temperature_refuses_or_is_at_least_one(n, L, p):
    out = _outcome(lambda: schedules.length_temperature(n, L, p), ["n ", "n must", "train_len", "power"])
    if out is not None and np.asarray(out).size:
        assert np.all(np.asarray(out) >= 1.0)


@SETTINGS
@given(n_max=numbers, num=numbers)
@example(n_max=9007199254740993, num=2).via("explore: an integer n_max above 2^53 rounded through a float")
def test_log_grid_refuses_or_is_strictly_increasing_and_ends_at_n_max(n_max, num):
    out = _outcome(lambda: spectra.log_grid(n_max, num), ["n_max", "num", "n_min"])
    if out is not None:
        assert np.all(np.diff(out) > 0) and out[-1] == int(round(n_max))


@SETTINGS
@given(G=arrays(), method=st.sampled_from([None, "tridiagonal", "lanczos", "subspace", "eigvalsh"]))
def test_top_eigenvalue_refuses_or_equals_the_largest_eigenvalue(G, method):
    out = _outcome(lambda: rt.top_eigenvalue(G, method), ["G"])
    if out is not None:
        A = np.asarray(G, dtype=np.float64)
        A = np.tril(A) + np.swapaxes(np.tril(A, -1), -1, -2)          # the lower triangle is what is read
        ref = np.linalg.eigvalsh(A)[..., -1]
        scale = max(1.0, float(np.abs(A).max()))
        if method in ("lanczos", "subspace") and np.any(np.linalg.eigvalsh(A)[..., 0] < -1e-12 * scale):
            return                                                    # Lanczos and subspace are for PSD matrices only
        np.testing.assert_allclose(np.asarray(out), ref, atol=1e-12 * scale)


@SETTINGS
@given(rho=st.one_of(numbers, arrays()), floor=st.one_of(numbers, arrays()), allrot=numbers)
@example(rho=3.6402420314910556e+250, floor=2.024951845727474e-58, allrot=1.0).via("explore: an inf share")
def test_criteria_refuse_or_give_booleans_and_finite_shares(rho, floor, allrot):
    out = _outcome(lambda: rt.criteria(rho, floor, allrot), ["rho_L", "floor", "allrot"])
    if out is not None:
        assert out["C1"] in (True, False) and out["C2"] in (True, False)
        assert 0 <= out["C1_share"] <= 1 and 0 <= out["C2_share"] <= 1


@SETTINGS
@given(V=arrays(last=8), n=st.one_of(numbers, st.lists(numbers, max_size=3)))
def test_rank1_curves_batch_refuses_or_gives_ratios_in_lemma1s_range(V, n):
    theta = schedules.rope(8, 100.0).theta
    out = _outcome(lambda: rt.rank1_curves_batch(theta, V, n).rho, ["V", "clouds", "length", "lengths", "cloud"])
    if out is not None:
        assert np.all((out > 0) & (out <= 1 + 1e-12))


@SETTINGS
@given(n=st.one_of(numbers, st.lists(numbers, max_size=6)), err=st.one_of(numbers, arrays()))
def test_convergence_rate_refuses_or_returns_a_number(n, err):
    def call():                        # NaN is its documented answer when < 4 points clear the noise floor
        r = rt.convergence_rate(n, err)
        assert isinstance(r, float)
        if r != r:
            assert (np.abs(np.asarray(err, dtype=float)) > theorems.RATE_NOISE_FLOOR).sum() < 4
            return None
        return r
    _outcome(call, ["n", "err"])
