"""Claims of :mod:`ropetheory.spectra.topeig`: the top eigenvalue alone, as accurate as ``eigvalsh``.

Tolerance: ``EIG_RTOL`` = 1e-13 relative to the largest eigenvalue, i.e. ~ d eps at d = 128 (both
methods are backward stable: Householder + Sturm counts, or Lanczos + a Cholesky certificate at
``CERT_RTOL`` = 1e-13), against numpy's ``eigvalsh`` in float64.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropetheory.spectra import topeig

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
        ev[:, -2] = ev[:, -1]
        Q = np.linalg.qr(rng.standard_normal((6, d, d)))[0]
        return (Q * ev[:, None, :]) @ Q.transpose(0, 2, 1)
    if kind == "graded":                        # eigenvalues over 12 decades
        ev = np.logspace(-12, 0, d)[None].repeat(6, 0)
        Q = np.linalg.qr(rng.standard_normal((6, d, d)))[0]
        return (Q * ev[:, None, :]) @ Q.transpose(0, 2, 1)
    if kind == "zero":
        return np.zeros((6, d, d))
    raise AssertionError(kind)


@pytest.mark.parametrize("method", ["tridiagonal", "lanczos", "subspace", "eigvalsh"])
@pytest.mark.parametrize("kind", ["wishart", "rank1", "double_top", "graded", "zero"])
@pytest.mark.parametrize("d", [2, 3, 80])
def test_top_eigenvalue_equals_the_largest_of_eigvalsh(method, kind, d):
    G = _psd_batch(d, d, kind)
    G = 0.5 * (G + G.transpose(0, 2, 1))
    ref = np.linalg.eigvalsh(G)[:, -1]
    got = np.asarray(jax.jit(lambda G: topeig.top_eigenvalue(G, method))(jnp.asarray(G)))
    assert got.shape == ref.shape
    assert np.all(np.abs(got - ref) <= EIG_RTOL * np.maximum(np.abs(ref), 1e-300) + 1e-300)


def test_top_eigenvalue_keeps_the_batch_shape():
    G = _psd_batch(16, 1, "wishart").reshape(2, 3, 16, 16)
    out = topeig.top_eigenvalue(jnp.asarray(G))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, np.linalg.eigvalsh(G)[..., -1], rtol=EIG_RTOL)


@pytest.mark.parametrize("method", ["tridiagonal", "eigvalsh"])
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
