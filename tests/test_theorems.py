"""Claims of the paper and their extensions, as property tests named after each claim."""
import functools
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

import ropetheory as rt
from ropetheory import spectra as sp
from ropetheory.theory import theorems as tm
from ropetheory.theory import limits
from ropetheory.rope import apply_rope

from strategies import examples, clouds, head_dims, layouts, schedules, unit_vectors

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: lengths per drawn case of the certified-bound property test
BOUND_LENGTHS = 5


@examples(30)
@given(st.data())
def test_lemma2_frobenius_norm_is_invariant(data):
    """||Rope(X)||_F = ||X||_F for any X, schedule, layout and n (positions up to 10^15)."""
    name, d, theta = data.draw(schedules())
    n = data.draw(st.integers(1, 50))
    X = data.draw(clouds(d, n))
    layout = data.draw(layouts)
    Y = np.asarray(apply_rope(theta, X, layout=layout, offset=data.draw(st.integers(0, 10 ** 15))))
    assert abs(np.linalg.norm(Y) - np.linalg.norm(X)) <= 1e-14 * np.linalg.norm(X) * math.sqrt(n * d)


@examples(20)
@given(head_dims.filter(lambda d: d >= 4), st.floats(50.0, 1e6), st.integers(0, 2 ** 31 - 1))
def test_lemma1_fsv_ratio_tends_to_half_max_plane_energy(d, base, seed):
    theta = rt.schedule("rope", head_dim=d, base=base).theta
    v = np.random.default_rng(seed).standard_normal(d)
    lim = tm.predicted_limit(theta, v)
    assert tm.lemma1_hypotheses(theta)["holds"]
    assert abs(lim.lam - lim.paper) < 1e-15                       # Gbar's top eigenvalue is max e_j / 2
    ns = [10 ** 6, 10 ** 9, 10 ** 12]
    cur = sp.rank1_curve(theta, v, ns)
    eps = tm.certified_eps(theta, v, ns)
    err = np.abs(cur["rho2"] - lim.paper)
    assert np.all(err <= eps + tm.FLOAT_SLACK)
    assert err[-1] <= max(eps[-1], 1e-12)
    assert eps[-1] < eps[0]                                         # the bound itself shrinks with n


@examples(15)
@given(head_dims.filter(lambda d: d >= 4), st.integers(0, 2 ** 31 - 1))
def test_theorem1_stable_rank_limit(d, seed):
    """srank(Rope(X)) -> 2 / max_j e_j, a growth factor in [2, d]."""
    theta = rt.schedule("rope", head_dim=d, base=10000.0).theta
    v = np.random.default_rng(seed).standard_normal(d)
    e = tm.plane_energies(v)
    target = 2 / e.max()
    assert 2 - 1e-12 <= target <= d + 1e-9
    cur = sp.rank1_curve(theta, v, [10 ** 12])
    eps = tm.certified_eps(theta, v, [10 ** 12])[0]
    lam = e.max() / 2
    # |srank - 1/lam| = |lam - rho^2| / (rho^2 lam) <= eps / ((lam - eps) lam)
    assert abs(cur["srank"][0] - target) <= (eps + tm.FLOAT_SLACK) / ((lam - eps) * lam)


@examples(40)
@given(st.data())
def test_certified_bound_contains_observed_error(data):
    """|rho_n^2 - lambda| <= eps_n at every n, small n included, for every schedule kind and weights."""
    name, d, theta = data.draw(schedules())
    v = data.draw(unit_vectors(d))
    # always BOUND_LENGTHS of them, repeats allowed: the programs are compiled per head width, not per count
    ns = sorted(data.draw(st.lists(st.integers(1, 10 ** 12), min_size=BOUND_LENGTHS, max_size=BOUND_LENGTHS)))
    w = data.draw(st.sampled_from([None, sp.AffineWeights(1.0, 0.5), sp.AffineWeights(0.1, 2.0)]))
    lim = tm.predicted_limit(theta, v)
    cur = sp.rank1_curve(theta, v, ns, weights=w)
    eps = tm.certified_eps(theta, v, ns, weights=w)
    err = np.abs(cur["rho2"] - lim.lam)
    assert np.all(err <= eps + tm.FLOAT_SLACK), (err, eps)


def test_certified_bound_holds_for_streamed_arbitrary_weights():
    """The float-sum route (w_last, TV, W from float64 sums, widened to balls) also contains the error."""
    theta = rt.schedule("rope", head_dim=16, base=500.0).theta
    v = np.random.default_rng(3).standard_normal(16)
    n = np.arange(1, 20001)
    w = 1.0 / np.sqrt(n)                                            # decreasing: W ~ 2 sqrt(n), TV = o(W)
    ns = [10, 1000, 20000]
    cur = sp.rank1_stream_curve(theta, v, ns, weights=w)
    lim = tm.predicted_limit(theta, v)
    cb = tm.certified_bound(theta, v)
    for k, m in enumerate(ns):
        c = tm.abel_ratio_arb(m, w_last=w[m - 1], tv=float(np.abs(np.diff(w[:m])).sum()), total=float(w[:m].sum()))
        assert abs(cur["rho2"][k] - lim.lam) <= cb.eps(c) + tm.FLOAT_SLACK


def test_partial_schedule_limit():
    """With NoPE planes rho_n^2 -> max(e_0, max_{theta_j>0} e_j/2) and srank -> 1/lambda."""
    rng = np.random.default_rng(5)
    for frac in (0.25, 0.5, 0.75):
        theta = rt.schedule("partial", head_dim=64, fraction=frac).theta
        for scale in (0.05, 1.0, 5.0):     # NoPE energy small, comparable, dominant
            v = rng.standard_normal(64)
            r = int(frac * 32)
            v[2 * r:] *= scale
            lim = tm.predicted_limit(theta, v)
            e = tm.plane_energies(v)
            expect = max(e[r:].sum(), e[:r].max() / 2)
            assert abs(lim.lam - expect) < 1e-14 and abs(lim.partial_formula - expect) < 1e-15
            cur = sp.rank1_curve(theta, v, [10 ** 12])
            assert abs(cur["rho2"][0] - expect) <= tm.certified_eps(theta, v, [10 ** 12])[0] + tm.FLOAT_SLACK
            assert abs(cur["srank"][0] * expect - 1) < 1e-7


@pytest.mark.parametrize("case", ["equal_freq", "sum_2pi", "theta_pi"])
def test_degenerate_schedule_exact_limit(case):
    """Commensurate frequencies: the paper's formula fails, the exact (resonance-keeping) limit holds."""
    from ropetheory.studies.verify import counterexample_cases
    _, _, theta, v, w = next(c for c in counterexample_cases() if c[0] == case)
    assert not tm.lemma1_hypotheses(theta)["holds"]
    lim = tm.predicted_limit(theta, v)
    expect = {"equal_freq": 0.5, "sum_2pi": 0.5, "theta_pi": 1.0}[case]
    assert abs(lim.lam - expect) < 1e-14 and abs(lim.partial_formula - expect) > 0.2
    cur = sp.rank1_curve(theta, v, [10 ** 6, 10 ** 12])
    assert abs(cur["rho2"][-1] - expect) < 1e-9
    # and the same from the literal float64 operator (no resonance snapping) at moderate n
    s = sp.rank1_stream_curve(theta, v, [20000])
    assert abs(s["rho2"][0] - expect) < 1e-3


def test_oscillating_weights_break_the_limit():
    """w_i = 1 + cos(2 i theta_0): TV_n ~ n is not o(W_n), and the limit moves from 1/2 to 3/4."""
    theta = rt.schedule("rope", head_dim=16).theta
    v = np.zeros(16)
    v[0] = 1.0
    w = sp.TrigWeights(1.0, ((1.0, 2 * theta[0]),))
    cur = sp.rank1_curve(theta, v, [10 ** 5, 10 ** 12], weights=w)
    assert abs(cur["rho2"][-1] - 0.75) < 1e-9
    assert abs(tm.predicted_limit(theta, v, weights=w).lam - 0.75) < 1e-14
    assert abs(tm.predicted_limit(theta, v).lam - 0.5) < 1e-14      # what Lemma 1 would predict
    # cross-check the closed form against explicit weights
    ww = 1 + np.cos(2 * theta[0] * np.arange(3000))
    s = sp.rank1_stream_curve(theta, v, [3000], weights=ww)
    c = sp.rank1_curve(theta, v, [3000], weights=w)
    assert abs(s["rho2"][0] - c["rho2"][0]) < 1e-12


def test_convergence_rate_is_first_order_for_constant_weights():
    theta = rt.schedule("rope", head_dim=32).theta
    v = np.tile([1.0, 0.0], 16)
    g = sp.log_grid(1e12, 80, 10 ** 3)
    cur = sp.rank1_curve(theta, v, g)
    rate = tm.convergence_rate(g, cur["rho2"] - 1 / 32)
    assert -1.2 < rate < -0.8


@functools.cache
def _proof_check(script: str) -> subprocess.CompletedProcess:
    """``python proofs/<script> --check``, run once per session: two tests read the gram_blocks run."""
    return subprocess.run([sys.executable, str(ROOT / "proofs" / script), "--check"], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "proofs").glob("*.py")))
def test_proof_script_runs_and_checks_every_step(script):
    r = _proof_check(script)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ALL STEPS CHECKED" in r.stdout


def test_derived_block_formula_is_the_one_the_proof_generates():
    r = _proof_check("gram_blocks.py")
    assert r.returncode == 0 and "matches the derivation" in r.stdout, r.stdout + r.stderr


def test_verify_writes_report_and_exits_zero_then_resumes(tmp_path, monkeypatch):
    from ropetheory.studies.verify import run_verify
    import json
    assert run_verify(tmp_path, quiet=True) == 0
    rep = json.loads((tmp_path / "verify.json").read_text())
    assert not rep["failures"] and len(rep["claims"]) == 48 and len(rep["counterexamples"]) == 6
    assert (tmp_path / "verify.csv").read_text().count("\n") == 49
    # a journal line cut by an interruption is recomputed: tests/test_store.py and tests/test_faults.py
    # nothing changed: every row is loaded, none computed (the claim checks would raise)

    def refuse(*a, **k):
        raise AssertionError("a saved row was recomputed")
    monkeypatch.setattr(tm, "check_rank1_claims", refuse)
    monkeypatch.setattr(tm, "check_counterexample", refuse)
    csv_before = (tmp_path / "verify.csv").read_bytes()
    assert run_verify(tmp_path, quiet=True) == 0
    assert (tmp_path / "verify.csv").read_bytes() == csv_before
    # rows from other code are dropped and recomputed: tests/test_store.py (Journal) and the fault tests


#: the columns of verify.csv, in order: the file's contract, which Rank1Claims' fields must keep
VERIFY_CSV_CLAIM_COLUMNS = (
    "paper_hypotheses", "nope_planes", "claim", "max_e", "e0", "lam", "rho_limit", "paper_formula",
    "partial_formula", "rho_1e4", "rho_1e6", "rho_1e12", "err_1e4", "err_1e6", "err_1e12", "eps_1e4", "eps_1e6",
    "eps_1e12", "eps_over_err_1e4", "eps_over_err_1e6", "eps_over_err_1e12", "rate", "shrink_factor",
    "srank_limit", "srank_1e12", "srank_relerr_1e12", "frob_max_dev", "bound_contains_error", "lemma1_verdict",
    "theorem1_verdict", "lemma2_verdict",
)


def test_check_rank1_claims_returns_a_frozen_result_whose_dict_is_the_csv_row():
    import dataclasses
    theta = rt.schedule("rope", head_dim=8, base=1e4)
    v = np.random.default_rng(3).standard_normal(8)
    rep = rt.check_rank1_claims(theta, v, rate_grid=rt.log_grid(1e12, 8, 10 ** 3))
    assert isinstance(rep, tm.Rank1Claims)
    assert tuple(rep.to_dict()) == VERIFY_CSV_CLAIM_COLUMNS
    assert all(rep[k] is getattr(rep, k) for k in VERIFY_CSV_CLAIM_COLUMNS)
    assert rep.lam == tm.predicted_limit(theta, v).lam
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.lam = 0.0  # type: ignore[misc]
    with pytest.raises(KeyError, match="Rank1Claims"):
        rep["limit_rho"]


def test_check_counterexample_returns_a_frozen_result_with_the_csv_columns():
    from ropetheory.studies.verify import counterexample_cases
    _, _, theta, v, w = next(c for c in counterexample_cases() if c[0] == "equal_freq")
    cx = tm.check_counterexample(theta, v, weights=w)
    assert isinstance(cx, tm.Counterexample)
    assert list(cx.to_dict()) == ["frequency_hypotheses", "tv_hypothesis", "observed_rho2_1e6",
                                  "observed_rho2_1e12", "paper_formula", "exact_limit", "paper_verdict",
                                  "exact_verdict"]
    assert cx["exact_verdict"] == "holds" and cx.paper_verdict == "does not hold"


def test_limit_reads_its_old_field_name_e_as_plane_energies_with_a_warning():
    v = np.arange(1.0, 9.0)
    lim = tm.predicted_limit(rt.schedule("rope", head_dim=8, base=100.0), v)
    np.testing.assert_array_equal(lim.plane_energies, tm.plane_energies(v / np.linalg.norm(v)))
    with pytest.warns(DeprecationWarning, match=r"Limit\.e is now Limit\.plane_energies"):
        assert lim.e is lim.plane_energies


#: eigvalsh of the whole ``d x d`` limit Gram against eigvalsh of its blocks: each within ~d eps of the truth
LIMIT_EIG_RTOL = 1e-13
#: schedules whose limit Gram has classes of every kind: generic 2 x 2 blocks, NoPE and pi planes that do not
#: turn (rigid), planes at pi/2 coupled at the sum only, equal frequencies coupled at the difference only
LIMIT_CLASS_SCHEDULES = {
    "generic": np.geomspace(1.0, 1e-4, 16),
    "nope_and_pi": np.r_[np.zeros(3), np.full(3, np.pi), np.geomspace(1.0, 1e-4, 10)],
    "half_pi_and_equal": np.r_[np.full(4, np.pi / 2), np.full(4, 0.3), np.geomspace(1.0, 1e-4, 8)],
    "rope_id": rt.schedule("rope_id", head_dim=32, train_len=4096, fraction=0.25).theta,
}


@pytest.mark.parametrize("name", sorted(LIMIT_CLASS_SCHEDULES))
def test_the_limit_of_many_clouds_is_the_top_eigenvalue_of_each_ones_whole_limit_gram(name, monkeypatch):
    """``limit_lambdas`` works class by class (``Gbar`` is block diagonal over the resonance classes, and a
    class resonant at every difference and sum is ``v_q v_q^T``): it is eigvalsh's top of the whole ``Gbar``
    of each cloud, to the accuracy of eigvalsh, whatever the classes and however many clouds (blocks of
    of ``limit_clouds_per_block``, here shrunk so that every class size takes several)."""
    theta = LIMIT_CLASS_SCHEDULES[name]
    monkeypatch.setattr(limits, "LIMIT_BLOCK_BYTES", 8 * 16 * 4 * 7)     # 7 clouds of 16 2 x 2 blocks a call
    V = np.random.default_rng(5).standard_normal((40, 2 * theta.size))
    V[1, :6] = 0.0                                              # a cloud with no energy in the first planes
    lam, emax = tm.limit_lambdas(theta, V)
    ref = np.array([np.linalg.eigvalsh(tm.limit_gram(theta, v))[-1] for v in V])
    assert np.all(np.abs(lam - ref) <= LIMIT_EIG_RTOL * ref)
    e = np.array([tm.plane_energies(v / np.linalg.norm(v)) for v in V])
    np.testing.assert_allclose(emax, e.max(axis=1), rtol=1e-14)



#: the closed-form top eigenvalue of a 2 x 2 block against the exact one: four roundings (the half-sum, the
#: half-difference, hypot's correctly rounded-within-1-ulp result, the final add), each at most an ulp of the
#: largest entry
TOP2_RTOL = 4 * np.finfo(float).eps
#: below the normal range rounding is absolute: four roundings of at most the smallest subnormal each
TOP2_ATOL = 4 * np.finfo(float).smallest_subnormal
#: the digits mpmath carries for the exact reference
TOP2_DPS = 50


def _exact_top_2x2(p: float, q: float, r: float) -> float:
    import mpmath
    with mpmath.workdps(TOP2_DPS):
        p_, q_, r_ = mpmath.mpf(p), mpmath.mpf(q), mpmath.mpf(r)
        return float((p_ + r_) / 2 + mpmath.sqrt(((p_ - r_) / 2) ** 2 + q_ ** 2))


_entries = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False)


@given(p=_entries, q=_entries, r=_entries, scale=st.integers(-900, 900))
@example(p=0.5, q=0.0, r=0.5, scale=0)
@example(p=1.0, q=1e-300, r=1.0, scale=0)
@example(p=-1.0, q=1.0, r=1.0, scale=0)
@example(p=0.0, q=0.0, r=0.0, scale=0)
@example(p=1.0, q=1.0, r=1.0, scale=900)
@example(p=1.0, q=1.0, r=-1.0, scale=-900)
@examples(200)
def test_the_closed_form_top_of_a_2x2_block_is_within_ulps_of_the_exact_top(p, q, r, scale):
    """``top_of_2x2`` (each one-plane class of Figure 7's floors and of the certified curve's gap bound):
    ``(p + r)/2 + hypot((p - r)/2, q)`` is within ``TOP2_RTOL`` of the largest entry of the exact top eigenvalue,
    for any symmetric 2 x 2 (indefinite too) at any binary scale (no overflow or underflow in the square)."""
    p, q, r = (math.ldexp(x, scale) for x in (p, q, r))
    got = float(limits.top_of_2x2(np.array([[p, q], [q, r]])))
    assert abs(got - _exact_top_2x2(p, q, r)) <= TOP2_RTOL * max(abs(p), abs(q), abs(r)) + TOP2_ATOL


@pytest.mark.parametrize("name", sorted(LIMIT_CLASS_SCHEDULES))
def test_each_class_top_is_the_top_of_that_class_block_of_the_limit_gram_for_any_partition(name, monkeypatch):
    """``class_tops`` (Figure 7's floors and the certified curve's gap bound): for the resonance classes and for a
    finer partition (every plane alone, the gap bound's classes when planes carry no energy), each class's top
    eigenvalue is eigvalsh's of that class's rows and columns of each cloud's whole ``Gbar``; ``reduce`` is the
    largest of them, whatever the block of clouds a call holds."""
    theta = LIMIT_CLASS_SCHEDULES[name]
    monkeypatch.setattr(limits, "LIMIT_BLOCK_BYTES", 8 * 16 * 4 * 3)     # 3 clouds of 16 2 x 2 blocks a call
    V = np.random.default_rng(6).standard_normal((9, 2 * theta.size))
    V /= np.linalg.norm(V, axis=1, keepdims=True)               # unit clouds, interleaved, as the callers pass them
    D, S = limits.limit_mean_phases(theta)
    resonant = limits.coupling_classes((D != 0) | (S != 0) | np.eye(theta.size, dtype=bool))
    for label in (resonant, np.arange(theta.size)):
        got = limits.class_tops(D, S, V, label)
        assert got.shape == (V.shape[0], np.unique(label).size)
        for c, v in enumerate(V):
            G = tm.limit_gram(theta, v, layout="interleaved")
            for i, q in enumerate(np.unique(label)):
                ch = np.flatnonzero(np.repeat(label == q, 2))
                ref = np.linalg.eigvalsh(G[np.ix_(ch, ch)])[-1]
                assert abs(got[c, i] - ref) <= LIMIT_EIG_RTOL * abs(G).max()
        assert np.array_equal(limits.class_tops(D, S, V, label, reduce=True), got.max(axis=1))
