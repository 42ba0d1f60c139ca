"""Beyond rank 1 and the second paper's claims: the conjecture where it is exact, estimators vs enumeration."""
import math

import numpy as np
import pytest

import ropetheory as rt
from ropetheory.theory import beyond, positions as ps, theorems
from ropetheory import spectra


def test_noise_free_stream_reduces_to_lemma1_closed_form():
    th = rt.schedule("rope", head_dim=16, base=100.0).theta
    v = np.random.default_rng(0).standard_normal(16)
    L = [1, 10, 1000, 30000]
    c = beyond.stream_cloud_curve(th, v, L, positions_per_step=512)
    np.testing.assert_allclose(c["rho"], spectra.rank1_curve(th, v, L)["rho"], rtol=1e-12)
    Sigma = np.outer(v, v) / (v @ v)
    assert abs(beyond.stationary_limit_spectrum(th, Sigma)[-1] - theorems.predicted_limit(th, v).lam) < 1e-15
    assert abs(beyond.noisy_rank1_limit(th, v, 1e300) - theorems.predicted_limit(th, v).lam) < 1e-12


@pytest.mark.parametrize("snr", [0.2, 2.0])
def test_noisy_rank1_limit_matches_streamed_cloud(snr):
    """rho_n^2 -> (lambda + 1/(d snr))/(1 + 1/(d snr)); the random part converges like n^-1/2."""
    th = rt.schedule("partial", head_dim=16, base=100.0, fraction=0.5).theta
    v = np.random.default_rng(1).standard_normal(16)
    n = 200_000
    c = beyond.stream_cloud_curve(th, v, [n], snr=snr, positions_per_step=4096)
    assert abs(c["rho2"][0] - beyond.noisy_rank1_limit(th, v, snr)) < 5 / math.sqrt(n)


def test_counter_rotating_rows_refute_the_stationary_conjecture():
    """x_i = R_{-i} v: Rope un-rotates the cloud, rho_n^2 -> 1/lambda > 1, not lambda."""
    th = rt.schedule("rope", head_dim=16, base=100.0).theta
    v = np.random.default_rng(2).standard_normal(16)
    c = beyond.stream_cloud_curve(th, v, [50_000], counter_rotate=True)
    lam = theorems.predicted_limit(th, v).lam
    assert abs(c["rho2"][0] - 1 / lam) < 0.05 / lam


def test_position_inversion_exact_count_equals_brute_force_and_mc_interval():
    th = rt.schedule("rope", head_dim=4, base=50.0).theta
    rng = np.random.default_rng(3)
    q, k = rng.standard_normal(4), rng.standard_normal(4)
    M = 60
    S = ps.scores(th, q, k, np.arange(M))
    brute = np.mean([[S[a] < S[b] for b in range(30, 60)] for a in range(30)])
    r = ps.position_inversion(th, q, k, M, mc_samples=200_000, seed=1)
    assert r["exact"] == brute
    assert r["mc_lo"] <= r["exact"] <= r["mc_hi"]
    # scores against the plain formula sum_j a_j cos(m theta_j + phi_j)
    zq, zk = q[0::2] + 1j * q[1::2], k[0::2] + 1j * k[1::2]
    ref = [
        sum(abs(zq[j]) * abs(zk[j]) * math.cos(m * th[j] + np.angle(zk[j] / zq[j])) for j in range(2)) for m in range(M)
    ]
    np.testing.assert_allclose(S, ref, atol=1e-12)


def test_token_measures_match_enumeration():
    th = rt.schedule("rope", head_dim=4, base=50.0).theta
    rng = np.random.default_rng(4)
    q, k1, k2 = rng.standard_normal((3, 4))
    M = 300
    r = ps.token_inversion(th, q, k1, k2, M, mc_samples=200_000, seed=2)
    S1, S2 = ps.scores(th, q, k1, np.arange(M)), ps.scores(th, q, k2, np.arange(M))
    if S1[0] < S2[0]:
        S1, S2 = S2, S1
    assert r["exact"] == np.mean(S1 < S2) and r["mc_lo"] <= r["exact"] <= r["mc_hi"]
    eps = 0.3
    assert ps.token_aliasing(th, q, k1, k2, M, eps)["count"] == int(np.sum(np.abs(S1 - S2) < eps))
    S = np.sort(ps.scores(th, q, k1, np.arange(M)))
    assert ps.position_aliasing(th, q, k1, M, eps)["min_gap"] == float(np.min(np.diff(S)))
