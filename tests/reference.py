"""Independent high-precision references (mpmath, 50 digits) for the tests.

The reference Gram matrix of a rank-1 cloud with constant weights is built
entry by entry from the plain geometric sum ``sum_{i<n} z^i = (1 - z^n)/(1 - z)``
in 50-digit complex arithmetic, from the exact float64 frequencies, through the
explicit 2x2 rotation formula (not the library's Dirichlet/sinc form, nor its
exact-chunk reduction). It is then rounded to float64 and its eigenvalues are
taken with numpy's LAPACK: by Weyl's inequality that adds at most
``||dG||_2 <= d * 2^-53`` to any eigenvalue of ``G/W`` (whose entries are <= 1).
"""
from __future__ import annotations

import mpmath
import numpy as np

DPS = 50


def geometric_mean_phase(z: mpmath.mpc, zn: mpmath.mpc, n: int) -> mpmath.mpc:
    """``(1/n) sum_{i<n} z^i = (1 - z^n) / ((1 - z) n)`` at 50 digits, for ``z = e^{i omega}`` and
    ``zn = e^{i omega n}`` (``omega`` exact)."""
    if abs(z - 1) < mpmath.mpf(10) ** (-40):
        return mpmath.mpc(1)
    return (1 - zn) / (1 - z) / n


def rank1_gram_mp(theta: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """``G_n / n`` for ``X = 1 v^T`` (interleaved, unit v), rounded to float64 from 50 digits."""
    with mpmath.workdps(DPS):
        th = [mpmath.mpf(float(t)) for t in theta]
        P = len(th)
        vv = [mpmath.mpf(float(x)) for x in v]
        # e^{i theta_j} and e^{i theta_j n} once per plane; e^{i (theta_j -+ theta_k) m} is their product
        z = [mpmath.expj(t) for t in th]
        zn = [mpmath.expj(t * n) for t in th]
        G = np.zeros((2 * P, 2 * P))
        for j in range(P):
            for k in range(j, P):          # G is symmetric: block (k, j) is block (j, k) transposed
                D = geometric_mean_phase(z[j] * mpmath.conj(z[k]), zn[j] * mpmath.conj(zn[k]), n)
                S = geometric_mean_phase(z[j] * z[k], zn[j] * zn[k], n)
                x0, x1, y0, y1 = vv[2 * j], vv[2 * j + 1], vv[2 * k], vv[2 * k + 1]
                # mean of R(a) x y^T R(b)^T: cos/sin(a-b) -> Re/Im D, cos/sin(a+b) -> Re/Im S
                # R(a)x = (x0 c_a - x1 s_a, x0 s_a + x1 c_a); products via product-to-sum
                cm, sm, cp, spp = D.real, D.imag, S.real, S.imag
                # c_a c_b = (cm + cp)/2, s_a s_b = (cm - cp)/2, s_a c_b = (sm + spp)/2, c_a s_b = (spp - sm)/2
                cc, ss = (cm + cp) / 2, (cm - cp) / 2
                sc, cs = (sm + spp) / 2, (spp - sm) / 2
                g00 = x0 * y0 * cc - x0 * y1 * cs - x1 * y0 * sc + x1 * y1 * ss
                g01 = x0 * y0 * cs + x0 * y1 * cc - x1 * y0 * ss - x1 * y1 * sc
                g10 = x0 * y0 * sc - x0 * y1 * ss + x1 * y0 * cc - x1 * y1 * cs
                g11 = x0 * y0 * ss + x0 * y1 * sc + x1 * y0 * cs + x1 * y1 * cc
                G[2 * j:2 * j + 2, 2 * k:2 * k + 2] = [[float(g00), float(g01)], [float(g10), float(g11)]]
                G[2 * k:2 * k + 2, 2 * j:2 * j + 2] = [[float(g00), float(g10)], [float(g01), float(g11)]]
    return G


def rank1_metrics_mp(theta, v, n):
    G = rank1_gram_mp(theta, v, n)
    G = 0.5 * (G + G.T)
    lam = np.linalg.eigvalsh(G)[-1]
    return {"rho": np.sqrt(lam), "srank": np.trace(G) / lam}


def rope_row_mp(x: np.ndarray, theta: np.ndarray, i: int) -> np.ndarray:
    """``R_i x`` (interleaved) with angles ``i theta_j`` at 50 digits."""
    with mpmath.workdps(DPS):
        out = np.empty_like(x)
        for j, t in enumerate(theta):
            a = mpmath.mpf(int(i)) * mpmath.mpf(float(t))
            c, s = mpmath.cos(a), mpmath.sin(a)
            x0, x1 = mpmath.mpf(float(x[2 * j])), mpmath.mpf(float(x[2 * j + 1]))
            out[2 * j] = float(c * x0 - s * x1)
            out[2 * j + 1] = float(s * x0 + c * x1)
    return out
