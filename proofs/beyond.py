"""Beyond rank 1: the limit for i.i.d. (stationary) rows, and rank-1 plus isotropic noise.

1. For rows with second moment Sigma, E[R_i x x^T R_i^T] = R_i Sigma R_i^T; its time average keeps,
   per plane, (tr Sigma_jj / 2) I_2 (+ an antisymmetric part that vanishes because Sigma is
   symmetric), kills the cross-plane blocks of rotating planes (non-resonant frequencies), and
   keeps the NoPE block Sigma_00: the stationary-rows conjecture of THEORY.md.
2. Rank-1 plus noise: Sigma = v v^T + s I (s = sigma^2 / d). Then the rotating blocks are
   (e_j/2 + s) I_2, the NoPE block v_0 v_0^T + s I, lambda_max(Gbar) = lambda + s, and
   lambda_max(Sigma) = 1 + s, so rho_inf^2 = (lambda + s)/(1 + s) with s = 1/(d snr).
3. Limits: snr -> inf gives lambda (Lemma 1 / partial extension); snr -> 0 gives 1.
"""
import pathlib
import sys

import sympy as sp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from limits import eig_multiset, limit_matrix  # noqa: E402  (proofs/limits.py)


def main():
    print("Beyond rank 1")
    a = sp.symbols("a", real=True)
    R = sp.Matrix([[sp.cos(a), -sp.sin(a)], [sp.sin(a), sp.cos(a)]])
    s00, s01, s11 = sp.symbols("s00 s01 s11", real=True)
    Sig = sp.Matrix([[s00, s01], [s01, s11]])
    avg = (R * Sig * R.T).applyfunc(lambda e: sp.integrate(e, (a, 0, 2 * sp.pi)) / (2 * sp.pi))
    assert sp.simplify(avg - (s00 + s11) / 2 * sp.eye(2)) == sp.zeros(2, 2)
    print("Step 1: mean of R(a) Sigma_jj R(a)^T = (tr Sigma_jj / 2) I for symmetric Sigma_jj   [checked]")
    b = sp.symbols("b", real=True)
    C = sp.Matrix(2, 2, sp.symbols("c0:4", real=True))
    cross = (R * C * R.subs(a, b).T)
    avg2 = cross.subs(b, sp.Rational(3, 2) * a).applyfunc(
        lambda e: sp.integrate(sp.expand(sp.expand_trig(e)), (a, 0, 4 * sp.pi)) / (4 * sp.pi))
    assert sp.simplify(avg2) == sp.zeros(2, 2)
    print("  - cross block of two planes at incommensurate-type rates (theta_k = 3/2 theta_j) averages to 0  [checked]")

    print("Step 2: rank-1 plus isotropic noise, P = 3 (plane 0 NoPE, planes 1, 2 rotating)")
    x = sp.symbols("x0:6", real=True)
    s = sp.symbols("s", positive=True)
    nope = [True, False, False]
    D = [[1 if (j == k or (nope[j] and nope[k])) else 0 for k in range(3)] for j in range(3)]
    S = [[1 if (nope[j] and nope[k]) else 0 for k in range(3)] for j in range(3)]
    G = limit_matrix(x, D, S) + s * sp.eye(6)        # the noise's second moment s I is rotation invariant
    e = [x[2 * j] ** 2 + x[2 * j + 1] ** 2 for j in range(3)]
    ev = eig_multiset(G)
    expected = {sp.simplify(e[0] + s): 1, s: 1, sp.simplify(e[1] / 2 + s): 2, sp.simplify(e[2] / 2 + s): 2}
    assert ev == expected, ev
    print("  - spec(Gbar) = {e_0 + s, s, e_j/2 + s (x2)}: lambda_max = lambda + s   [checked]")
    lam, snr, d = sp.symbols("lambda snr d", positive=True)
    rho2 = (lam + 1 / (d * snr)) / (1 + 1 / (d * snr))
    assert sp.limit(rho2, snr, sp.oo) == lam and sp.limit(rho2, snr, 0) == 1
    print("Step 3: rho_inf^2 = (lambda + 1/(d snr))/(1 + 1/(d snr)) -> lambda (snr -> oo), -> 1 (snr -> 0)   [checked]")
    print("ALL STEPS CHECKED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
