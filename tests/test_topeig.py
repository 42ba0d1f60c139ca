"""Claims of :mod:`ropetheory.spectra.topeig`: the top eigenvalue alone, as accurate as ``eigvalsh``.

Tolerance: ``EIG_RTOL`` = 1e-13 relative to the largest eigenvalue, i.e. ~ d eps at d = 128 (both
methods are backward stable: Householder + Sturm counts, or Lanczos + a Cholesky certificate at
``CERT_RTOL`` = 1e-13), against numpy's ``eigvalsh`` in float64.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, strategies as st
from strategies import examples

import ropetheory as rt
from ropetheory.spectra import topeig, tridiag

EIG_RTOL = 2e-13


def _psd_batch(d, seed, kind):
    rng = np.random.default_rng(seed)
    if kind == "wishart":
        A = rng.standard_normal((6, d, d))
        return A @ A.transpose(0, 2, 1) / d
    if kind == "rank1":                         # G_1 = v v^T: Lanczos meets an invariant subspace at once
        v = rng.standard_normal((6, d, 1))
        return v @ v.transpose(0, 2, 1)
    if kind == "double_top":                    # a rotating plane: the top eigenvalue has multiplicity 2
        ev = np.sort(rng.uniform(0, 1, (6, d)), axis=1)
        ev[:, -min(2, d)] = ev[:, -1]
        Q = np.linalg.qr(rng.standard_normal((6, d, d)))[0]
        return (Q * ev[:, None, :]) @ Q.transpose(0, 2, 1)
    if kind == "graded":                        # eigenvalues over 12 decades
        ev = np.logspace(-12, 0, d)[None].repeat(6, 0)
        Q = np.linalg.qr(rng.standard_normal((6, d, d)))[0]
        return (Q * ev[:, None, :]) @ Q.transpose(0, 2, 1)
    if kind == "zero":
        return np.zeros((6, d, d))
    raise AssertionError(kind)


#: head widths of the method comparison: 2 (eigvalsh for every method), 3 (odd) and 64, a common head width
#: whose compiled householder program (6 matrices) the power-of-two scaling test below runs as well
METHOD_HEAD_DIMS = [2, 3, 64]


@pytest.mark.parametrize("method", ["tridiagonal", "householder", "lanczos", "subspace", "eigvalsh", "numpy"])
@pytest.mark.parametrize("kind", ["wishart", "rank1", "double_top", "graded", "zero", "indefinite",
                                  "negative_definite"])
@pytest.mark.parametrize("d", METHOD_HEAD_DIMS)
def test_top_eigenvalue_equals_the_largest_of_eigvalsh(method, kind, d):
    """Every method, the PSD-only Lanczos and subspace steps included (the GPU default), returns eigvalsh's
    top eigenvalue of any symmetric matrix: where their certificate cannot hold (no positive eigenvalue, or
    a dominant negative one met first by the squarings) eigvalsh answers."""
    G = _symmetric_batch(d, d, kind)
    ref = np.linalg.eigvalsh(G)[:, -1]
    got = np.asarray(jax.jit(lambda G: topeig.top_eigenvalue(G, method))(jnp.asarray(G)))
    assert got.shape == ref.shape
    assert np.all(np.abs(got - ref) <= EIG_RTOL * np.maximum(np.abs(ref), 1e-300) + 1e-300)


@pytest.mark.parametrize("method", ["tridiagonal", "householder", "lanczos", "subspace", "eigvalsh", "numpy"])
@pytest.mark.parametrize("kind", ["wishart", "double_top", "zero", "negative_definite"])
def test_the_branchless_top_is_top_eigenvalues_value_where_it_vouches_and_flags_the_rest(method, kind):
    """``top_eigenvalue_or_flag`` (no ``lax.cond`` in its program): where ``ok``, ``top_eigenvalue``'s value bit
    for bit, within ``EIG_RTOL`` of eigvalsh; the certified methods flag every matrix with no positive
    eigenvalue, which ``top_eigenvalue`` answers with eigvalsh."""
    G = jnp.asarray(_symmetric_batch(16, 16, kind))
    lam, ok = (np.asarray(x) for x in jax.jit(lambda G: topeig.top_eigenvalue_or_flag(G, method))(G))
    full = np.asarray(jax.jit(lambda G: topeig.top_eigenvalue(G, method))(G))
    ref = np.linalg.eigvalsh(np.asarray(G))[:, -1]
    assert lam.shape == ok.shape == ref.shape and ok.dtype == bool
    assert np.array_equal(lam[ok], full[ok])
    assert np.all(np.abs(lam[ok] - ref[ok]) <= EIG_RTOL * np.abs(ref[ok]) + 1e-300)
    if method in ("lanczos", "subspace") and kind in ("zero", "negative_definite"):
        assert not ok.any()
    if method in ("eigvalsh", "numpy") or kind == "wishart":
        assert ok.all()


def test_top_eigenvalue_keeps_the_batch_shape():
    G = _psd_batch(16, 1, "wishart").reshape(2, 3, 16, 16)
    out = topeig.top_eigenvalue(jnp.asarray(G))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, np.linalg.eigvalsh(G)[..., -1], rtol=EIG_RTOL)


@pytest.mark.parametrize("method", ["tridiagonal", "householder", "eigvalsh"])
def test_one_matrix_at_a_time_gives_the_batched_numbers_and_shape(method):
    """The per-matrix path (several CPU devices: no batched LAPACK call that could starve XLA's pool)."""
    G = jnp.asarray(_psd_batch(16, 3, "wishart").reshape(2, 3, 16, 16))
    one = jax.jit(lambda G: topeig.top_eigenvalue(G, method, one_at_a_time=True))(G)
    assert one.shape == (2, 3)
    np.testing.assert_allclose(one, topeig.top_eigenvalue(G, method), rtol=EIG_RTOL)
    np.testing.assert_allclose(one, np.linalg.eigvalsh(np.asarray(G))[..., -1], rtol=EIG_RTOL)


def test_lanczos_certificate_fails_where_too_few_steps_missed_the_top():
    """Three Lanczos steps on a spread spectrum cannot reach lambda_max: the Cholesky certificate must say so,
    and wherever it says ok the value is certified to CERT_RTOL."""
    G = _psd_batch(64, 7, "wishart")
    ref = np.linalg.eigvalsh(G)[:, -1]
    theta, ok = (np.asarray(x) for x in topeig.lanczos_top(jnp.asarray(G), 3))
    assert np.all(theta <= ref * (1 + 1e-14))                    # Ritz values are lower bounds
    missed = ref - theta > 10 * topeig.CERT_RTOL * ref
    assert missed.any() and not ok[missed].any()
    assert np.all(np.abs(theta[ok] - ref[ok]) <= 2 * topeig.CERT_RTOL * ref[ok])
    full_theta, full_ok = (np.asarray(x) for x in topeig.lanczos_top(jnp.asarray(G), 64))
    assert full_ok.all() and np.all(np.abs(full_theta - ref) <= EIG_RTOL * ref)


def test_sturm_count_bisection_finds_the_top_of_a_tridiagonal():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 40)), rng.standard_normal((5, 39))
    T = np.stack([np.diag(a[i]) + np.diag(b[i], 1) + np.diag(b[i], -1) for i in range(5)])
    np.testing.assert_allclose(topeig.sturm_top(jnp.asarray(a), jnp.asarray(b)), np.linalg.eigvalsh(T)[:, -1],
                               rtol=1e-14, atol=1e-14)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        topeig.top_eigenvalue(jnp.eye(4), "power")


def test_subspace_certificate_fails_where_one_squaring_missed_the_top():
    """One squaring and a block of 2 cannot isolate the top of a spread spectrum: the certificate must say so;
    wherever it says ok the value is certified to CERT_RTOL."""
    G = _psd_batch(64, 9, "wishart")
    ref = np.linalg.eigvalsh(G)[:, -1]
    theta, ok = (np.asarray(x) for x in topeig.subspace_top(jnp.asarray(G), block=2, squarings=1))
    assert np.all(theta <= ref * (1 + 1e-13))
    missed = ref - theta > 10 * topeig.CERT_RTOL * ref
    assert missed.any() and not ok[missed].any()
    assert np.all(np.abs(theta[ok] - ref[ok]) <= 2 * topeig.CERT_RTOL * ref[ok])


def test_certificate_refuses_a_nonpositive_value_even_where_the_factorisation_exists():
    """The Cholesky factorisation of ``theta I - G`` bounds lambda_max from above only: for a negative definite
    G it exists at theta = 0 (the value a dropped column of the subspace step gives), yet 0 is not G's top
    eigenvalue, so no theta <= 0 is certified; a positive theta just above a PSD matrix's top still is."""
    N = -_symmetric_batch(16, 4, "wishart") - np.eye(16)
    assert np.all(np.linalg.eigvalsh(N)[:, -1] < 0)
    for theta in (0.0, -1e-300):
        assert not np.asarray(topeig.certified_below(jnp.asarray(N), jnp.full(6, theta))).any()
    P = _psd_batch(16, 4, "wishart")
    top = np.linalg.eigvalsh(P)[:, -1]
    assert np.asarray(topeig.certified_below(jnp.asarray(P), jnp.asarray(top * (1 + 1e-14)))).all()


# --- the batched Householder method (``.tridiag``): enclosure, certificate, scale, shapes ---------------------

def _symmetric_batch(d, seed, kind):
    """Six ``d x d`` symmetric matrices of ``kind``: the PSD kinds of ``_psd_batch`` and a few more."""
    rng = np.random.default_rng(seed)
    if kind == "diagonal":                      # already tridiagonal: every reflector is the identity
        return np.stack([np.diag(rng.uniform(-1, 1, d)) for _ in range(6)])
    if kind == "identity_multiple":             # one eigenvalue of multiplicity d
        return rng.uniform(0.5, 2, (6, 1, 1)) * np.eye(d)
    if kind == "indefinite":
        A = rng.standard_normal((6, d, d))
        return A + A.transpose(0, 2, 1)
    if kind == "negative_definite":             # no positive eigenvalue: no Cholesky certificate can hold
        A = rng.standard_normal((6, d, d))
        return -(A @ A.transpose(0, 2, 1)) - np.eye(d)
    if kind == "rank_deficient":                # rank d // 2 (rank 0 at d = 1)
        A = rng.standard_normal((6, d, d // 2))
        return A @ A.transpose(0, 2, 1)
    G = _psd_batch(d, seed, kind)
    return 0.5 * (G + G.transpose(0, 2, 1))


_householder_top = jax.jit(tridiag.householder_top)
KINDS = ["wishart", "rank1", "rank_deficient", "double_top", "graded", "zero", "diagonal", "identity_multiple",
         "indefinite"]


@pytest.mark.parametrize("d", [1, 2, 3, 64, 128])
def test_householder_enclosure_holds_numpys_top_eigenvalue_and_the_value_is_as_accurate(d):
    for kind in KINDS:
        G = _symmetric_batch(d, d + 1, kind)
        ev = np.linalg.eigvalsh(G)
        ref, norm = ev[:, -1], np.max(np.abs(ev), axis=1)
        enc = [np.asarray(x) for x in _householder_top(jnp.asarray(G))]
        value, lo, hi, ok = enc
        assert ok.all(), kind
        assert np.all((lo <= ref) & (ref <= hi)), kind
        assert np.all(np.abs(value - ref) <= EIG_RTOL * norm), kind
        assert np.all((lo <= value) & (value <= hi)), kind


def test_householder_tridiagonal_is_similar_to_the_input():
    """Same spectrum (every eigenvalue, not only the top) and the same trace, to ~ d eps ||G||."""
    for kind in ("wishart", "indefinite", "graded"):
        G = _symmetric_batch(40, 5, kind)
        a, b = (np.asarray(x) for x in jax.jit(tridiag.householder_tridiagonal)(jnp.asarray(G)))
        T = np.stack([np.diag(a[i]) + np.diag(b[i], 1) + np.diag(b[i], -1) for i in range(len(G))])
        ev = np.linalg.eigvalsh(G)
        scale = np.max(np.abs(ev), axis=1, keepdims=True)
        assert np.all(np.abs(np.linalg.eigvalsh(T) - ev) <= EIG_RTOL * scale), kind


def test_householder_reads_only_the_lower_triangle():
    G = _symmetric_batch(64, 2, "wishart")         # six 64 x 64: the enclosure test's compiled program
    junk = np.triu(np.random.default_rng(0).standard_normal(G.shape), 1)
    clean = np.asarray(_householder_top(jnp.asarray(G)).value)
    np.testing.assert_array_equal(_householder_top(jnp.asarray(np.tril(G) + junk)).value, clean)


#: the panel test's width: 18 columns to reduce, so panels of 5 (5, 5, 5, 3) and of 16 (16, 2) each end on a
#: partial panel and one of 40 is wider than the matrix; compiling costs about one program per panel
PANEL_TEST_DIM = 19


@pytest.mark.parametrize("panel", [1, 5, 16, 40])
def test_householder_value_does_not_depend_on_the_panel_width(panel):
    """The blocking only regroups the same reflections: every panel width gives numpy's top eigenvalue."""
    G = _symmetric_batch(PANEL_TEST_DIM, 4, "wishart")
    ref = np.linalg.eigvalsh(G)[:, -1]
    got = np.asarray(jax.jit(lambda G: tridiag.householder_top(G, panel).value)(jnp.asarray(G)))
    assert np.all(np.abs(got - ref) <= EIG_RTOL * ref)


def test_householder_top_passes_the_cholesky_certificate_and_a_lower_value_fails_it():
    """``certified_below(G, value)`` proves lambda_max < value (1 + CERT_RTOL); the same check must refuse
    a value a thousand certificate slacks too low."""
    for kind in ("wishart", "rank1", "graded"):     # six 64 x 64 matrices a call, as in the enclosure test
        G = jnp.asarray(_symmetric_batch(64, 8, kind))
        value = _householder_top(G).value
        assert np.asarray(topeig.certified_below(G, value)).all(), kind
        assert not np.asarray(topeig.certified_below(G, value * (1 - 1000 * topeig.CERT_RTOL))).any(), kind


@pytest.mark.parametrize("k", [-1000, -600, -1, 1, 600, 1000])
def test_householder_method_scales_exactly_with_powers_of_two(k):
    """``top_eigenvalue(2^k G) = 2^k top_eigenvalue(G)`` bit for bit, concrete and traced: ``G`` is rescaled
    by its largest entry's binary exponent before the reduction, which is then scale-free."""
    G = _symmetric_batch(64, 6, "wishart")
    base = np.asarray(topeig.top_eigenvalue(jnp.asarray(G), "householder"))
    np.testing.assert_array_equal(topeig.top_eigenvalue(np.ldexp(G, k), "householder"), np.ldexp(base, k))
    if abs(k) < 1000:                          # traced: XLA flushes subnormals, so normal entries only
        traced = jax.jit(lambda G: topeig.top_eigenvalue(G, "householder"))(jnp.asarray(np.ldexp(G, k)))
        np.testing.assert_array_equal(traced, np.ldexp(base, k))


def test_householder_method_keeps_the_batch_shape_one_at_a_time_too():
    G = _symmetric_batch(16, 1, "wishart").reshape(2, 3, 16, 16)
    ref = np.linalg.eigvalsh(G)[..., -1]
    for one in (False, True):
        out = jax.jit(lambda G, one=one: topeig.top_eigenvalue(G, "householder", one_at_a_time=one))(jnp.asarray(G))
        assert out.shape == (2, 3)
        np.testing.assert_allclose(out, ref, rtol=EIG_RTOL)


def test_sturm_bracket_encloses_the_top_and_unrolling_changes_no_bit():
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((5, 30)), rng.standard_normal((5, 29))
    T = np.stack([np.diag(a[i]) + np.diag(b[i], 1) + np.diag(b[i], -1) for i in range(5)])
    ref = np.linalg.eigvalsh(T)[:, -1]
    lo, hi = (np.asarray(x) for x in tridiag.sturm_bracket(jnp.asarray(a), jnp.asarray(b)))
    r = np.asarray(tridiag.enclosure_radius(jnp.zeros((5, 2, 2)), jnp.asarray(b)))   # the counts' own error
    assert np.all((lo - r <= ref) & (ref <= hi + r)) and np.all(hi - lo <= 4 * np.spacing(np.abs(ref)))
    lo2, hi2 = (np.asarray(x) for x in tridiag.sturm_bracket(jnp.asarray(a), jnp.asarray(b), unroll=True))
    np.testing.assert_array_equal(lo2, lo)
    np.testing.assert_array_equal(hi2, hi)


@examples(25, deadline=None)
@given(d=st.sampled_from([1, 4, 9]), rank=st.integers(0, 9), seed=st.integers(0, 2 ** 31 - 1),
       shift=st.floats(-2, 2), exp=st.integers(-30, 30))
@example(d=1, rank=0, seed=0, shift=-2.2250738585072014e-308, exp=0)      # explore: the smallest normal
@example(d=1, rank=0, seed=0, shift=2.2250738585e-313, exp=0)             # explore: a subnormal matrix
@example(d=4, rank=0, seed=0, shift=3.47775768587457e-240, exp=0)       # explore: squares of entries subnormal
@example(d=4, rank=2, seed=1, shift=0.5, exp=-1060)                        # subnormal entries throughout
def test_householder_enclosure_holds_for_random_symmetric_matrices(d, rank, seed, shift, exp):
    """Low-rank plus a shift (indefinite, repeated eigenvalues, any scale): numpy's top eigenvalue lies in
    ``[lo, hi]`` and the value is within EIG_RTOL of it relative to ``||G||_2``."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((4, d, min(rank, d)))
    G = np.ldexp(A @ A.transpose(0, 2, 1) + shift * np.eye(d), exp)
    ev = np.linalg.eigvalsh(G)
    value, lo, hi, ok = (np.asarray(x) for x in _householder_top(jnp.asarray(G)))
    big = np.max(np.abs(G), axis=(1, 2))
    normal = big >= tridiag.TINY_ENTRY
    # the kernel's own domain: matrices in the underflow range are not ok (or, subnormal, read as zero)
    assert np.all(ok[normal]) and not np.any(ok[(big >= np.finfo(np.float64).tiny) & ~normal])
    assert np.all((lo[normal] <= ev[normal, -1]) & (ev[normal, -1] <= hi[normal]))
    assert np.all(np.abs(value[normal] - ev[normal, -1]) <= EIG_RTOL * np.max(np.abs(ev[normal]), axis=1))
    # through topeig, which scales every input exactly by a power of two first: every matrix, any scale
    top = np.asarray(topeig.top_eigenvalue(jnp.asarray(G), "householder"))
    assert np.all(np.abs(top - ev[:, -1]) <= EIG_RTOL * np.max(np.abs(ev), axis=1))


def test_figure7_path_compiles_once_for_every_grid_of_one_bucket():
    """Item 2 of issue #39: the lengths are data (the mean phases), so ``rank1_curves_batch`` with the
    householder method reuses one compiled program for different grids of the same bucket size."""
    from ropetheory import spectra as sp
    th = rt.schedule("rope", head_dim=16, base=1e4).theta
    V = np.random.default_rng(0).standard_normal((3, 16))
    g1, g2 = sp.log_grid(1e6, 20), sp.log_grid(1e9, 20) + 7
    first = sp.rank1_curves_batch(th, V, g1, method="householder").rho
    before = sp.gram.rho2_for_clouds._cache_size()
    second = sp.rank1_curves_batch(th, V, g2, method="householder").rho
    assert before >= 1 and sp.gram.rho2_for_clouds._cache_size() == before
    for g, got in ((g1, first), (g2, second)):
        ref = sp.rank1_curves_batch(th, V, g, method="eigvalsh").rho
        assert np.all(np.abs(got - ref) <= EIG_RTOL * ref)


def test_concrete_input_runs_one_compiled_program_per_shape_and_method():
    """A call on concrete matrices runs ``_top_eigenvalue_scaled`` compiled (one program per shape and
    method, reused by the next call of that shape: the householder path eager took 8 s on 144 Grams of
    d = 128), with the same numbers as that function traced inside the caller's own ``jit``."""
    G = _psd_batch(24, 5, "wishart")
    jitted = topeig._top_eigenvalue_scaled_jit
    for method in ("tridiagonal", "householder"):
        first = np.asarray(rt.top_eigenvalue(G, method))
        size = jitted._cache_size()
        again = np.asarray(rt.top_eigenvalue(2.0 * G, method))              # same shape: no new program
        assert jitted._cache_size() == size and np.array_equal(again, 2.0 * first)
        traced = np.asarray(jax.jit(lambda g, m=method: rt.top_eigenvalue(g, m))(G))
        assert np.all(np.abs(traced - first) <= EIG_RTOL * first)


@pytest.mark.parametrize("scale", [-1021, -1000, -1, 0, 1, 600, 1023])
def test_the_traced_scaling_by_a_power_of_two_is_exact_where_ldexp_is(scale):
    """``_times_power_of_two`` (two products by normal powers of two) gives ``ldexp``'s bits at every
    exponent the traced scaling meets: matrices whose largest entry is any normal number (subnormal input
    is the concrete path's, scaled on the host)."""
    rng = np.random.default_rng(scale & 0xFFFF)
    G = np.ldexp(rng.uniform(0.5, 1.0, (3, 8, 8)), scale)
    k = topeig._scale_exponent_host(G)
    got = np.asarray(jax.jit(topeig._times_power_of_two)(jnp.asarray(G), jnp.asarray(-k)))
    want = np.ldexp(G, -k[:, None, None])
    normal = np.abs(want) >= np.finfo(np.float64).tiny
    assert normal.all() and np.array_equal(got[normal], want[normal])
    assert np.array_equal(np.asarray(jax.jit(topeig._scale_exponent)(jnp.asarray(G))), k)     # bits = frexp's
    back = np.asarray(jax.jit(lambda x, e: topeig._times_power_of_two(x, e, 0))(jnp.asarray(want[:, 0, 0]),
                                                                                 jnp.asarray(k)))
    assert np.array_equal(back, G[:, 0, 0])                                       # and the value scaled back


def test_the_numpy_method_is_numpys_eigvalsh_under_jit_vmap_and_on_concrete_input():
    """``"numpy"`` runs numpy's eigvalsh on the host (a callback): the same numbers traced, vmapped over a
    leading axis and on concrete input, with the batch shape kept."""
    G = _symmetric_batch(12, 21, "indefinite").reshape(2, 3, 12, 12)
    ref = np.linalg.eigvalsh(G)[..., -1]
    traced = jax.jit(lambda G: topeig.top_eigenvalue(G, "numpy"))(jnp.asarray(G))
    mapped = jax.vmap(lambda g: topeig.top_eigenvalue(g, "numpy"))(jnp.asarray(G))
    concrete = topeig.top_eigenvalue(G, "numpy")
    for got in (traced, mapped, concrete):
        assert got.shape == (2, 3)
        np.testing.assert_allclose(np.asarray(got), ref, rtol=EIG_RTOL)


@pytest.mark.parametrize("method", ["numpy", "eigvalsh"])
def test_a_matrix_that_is_not_finite_is_flagged_wherever_its_value_is_not_finite(method):
    """A NaN entry (no validated input has one): the whole-spectrum methods flag exactly the values that are not
    finite, and the numpy method (``host_top``) gives NaN for that matrix alone where numpy's LAPACK would raise
    (cuSOLVER's eigvalsh returned a finite value for it on an H100); the other matrices keep their values."""
    G = _psd_batch(8, 2, "wishart")[:2].copy()
    G[1, 3, 2] = G[1, 2, 3] = np.nan
    lam, ok = (np.asarray(x) for x in jax.jit(lambda G: topeig.top_eigenvalue_or_flag(G, method))(jnp.asarray(G)))
    ref = np.linalg.eigvalsh(G[0])[-1]
    assert ok.tolist() == np.isfinite(lam).tolist() and ok[0] and abs(lam[0] - ref) <= EIG_RTOL * ref
    if method == "numpy":
        assert not ok[1] and np.isnan(lam[1])
    host = topeig.host_top(G)
    assert np.isnan(host[1]) and abs(host[0] - ref) <= EIG_RTOL * ref
