"""The 2x2 blocks of the rank-1 RoPE Gram matrix, and the per-plane energy factor.

Lemma 1's proof (THEORY.md) writes ``G_n = Rope(X)^T Rope(X) = sum_i w_i R_i v v^T R_i^T``
blockwise. Block ``(j, k)`` of one term is ``R(a) v_j v_k^T R(b)^T`` with
``a = i theta_j``, ``b = i theta_k``. This script shows, step by step:

1. ``R(a) x y^T R(b)^T = 1/2 [ C_-(p e^{i(a-b)}) + C_+(q e^{i(a+b)}) ]`` where
   ``p = z_x conj(z_y)``, ``q = z_x z_y`` (``z_x = x_0 + i x_1``) and
   ``C_-(c) = [[Re c, -Im c], [Im c, Re c]]`` (a rotation-scaling) and
   ``C_+(c) = [[Re c, Im c], [Im c, -Re c]]`` (a reflection-scaling).
   So every block is linear in the weighted sums
   ``D = sum_i w_i e^{i i (theta_j - theta_k)} / W_n`` and
   ``S = sum_i w_i e^{i i (theta_j + theta_k)} / W_n``: the frequencies
   ``omega in {theta_j - theta_k, theta_j + theta_k}`` (``2 theta_j`` on the diagonal).
2. ``C_-`` and ``C_+`` are orthogonal in the Frobenius inner product and
   ``||C_-(c)||_F = ||C_+(c)||_F = sqrt(2) |c|``: the error bound of
   :mod:`ropetheory.theory.theorems` rests on this.
3. The per-plane energy factor: the time average of ``R(a) M R(a)^T`` for a
   2x2 ``M`` is ``(tr M / 2) I_2 + ((M_10 - M_01)/2) J``; for ``M = v_j v_j^T`` it is
   ``(e_j / 2) I_2`` -- the diagonal block ``(W_n e_j / 2) I_2 + O(...)`` of Lemma 1.
4. A NoPE plane (``theta = 0``, so ``D = S = 1``) keeps ``x y^T`` unchanged.

Run ``python proofs/gram_blocks.py --emit`` to regenerate
``ropetheory/spectra/derived.py`` and ``ropetheory/spectra/cuda/gram_block.cuh`` (the
CUDA kernel's copy) from step 1; the library imports the block formula from there (so it
lives in one place, here), and a test checks both files are what this script generates.
"""
from __future__ import annotations

import pathlib
import sys

import sympy as sp

a, b = sp.symbols("a b", real=True)
x0, x1, y0, y1 = sp.symbols("x0 x1 y0 y1", real=True)
Dr, Di, Sr, Si = sp.symbols("Dr Di Sr Si", real=True)


def R(t):
    return sp.Matrix([[sp.cos(t), -sp.sin(t)], [sp.sin(t), sp.cos(t)]])


def C_minus(c):
    return sp.Matrix([[sp.re(c), -sp.im(c)], [sp.im(c), sp.re(c)]])


def C_plus(c):
    return sp.Matrix([[sp.re(c), sp.im(c)], [sp.im(c), -sp.re(c)]])


def step(msg):
    print(f"  - {msg}")


def derive_block():
    """Return the block as a 2x2 sympy Matrix in (x, y, Dr, Di, Sr, Si); assert it is right."""
    print("Step 1: block of R(a) x y^T R(b)^T in the sums e^{i(a-b)}, e^{i(a+b)}")
    x = sp.Matrix([x0, x1])
    y = sp.Matrix([y0, y1])
    block = R(a) * x * y.T * R(b).T
    zx, zy = x0 + sp.I * x1, y0 + sp.I * y1
    p, q = zx * sp.conjugate(zy), zx * zy
    claim = (C_minus(p * sp.exp(sp.I * (a - b))) + C_plus(q * sp.exp(sp.I * (a + b)))) / 2
    diff = sp.simplify(sp.expand_complex(block - claim).rewrite(sp.cos))
    diff = sp.simplify(sp.expand_trig(diff))
    assert diff == sp.zeros(2, 2), diff
    step("R(a) x y^T R(b)^T == (C_-(p e^{i(a-b)}) + C_+(q e^{i(a+b)}))/2   [checked]")
    # replace the unimodular factors by the weighted averages D, S (linearity)
    D, S = Dr + sp.I * Di, Sr + sp.I * Si
    avg = (C_minus(sp.expand(p * D)) + C_plus(sp.expand(q * S))) / 2
    avg = avg.applyfunc(lambda e: sp.expand(sp.expand_complex(e)))
    # sanity: D = e^{i(a-b)}, S = e^{i(a+b)} gives back the block
    back = avg.subs({Dr: sp.cos(a - b), Di: sp.sin(a - b), Sr: sp.cos(a + b), Si: sp.sin(a + b)})
    assert sp.simplify(sp.expand_trig(back - block)) == sp.zeros(2, 2)
    step("block average = (C_-(p D) + C_+(q S))/2 with D, S the weighted mean phases   [checked]")
    return avg


def check_orthogonality():
    print("Step 2: C_- and C_+ are Frobenius-orthogonal, each of norm sqrt(2)|c|")
    c1r, c1i, c2r, c2i = sp.symbols("c1r c1i c2r c2i", real=True)
    A = C_minus(c1r + sp.I * c1i)
    B = C_plus(c2r + sp.I * c2i)
    inner = sum(A[i, j] * B[i, j] for i in range(2) for j in range(2))
    assert sp.simplify(inner) == 0
    assert sp.simplify(sum(A[i, j] ** 2 for i in range(2) for j in range(2)) - 2 * (c1r**2 + c1i**2)) == 0
    assert sp.simplify(sum(B[i, j] ** 2 for i in range(2) for j in range(2)) - 2 * (c2r**2 + c2i**2)) == 0
    step("<C_-(c1), C_+(c2)>_F = 0, ||C_+-(c)||_F^2 = 2|c|^2   [checked]")
    step("so ||(C_-(p dD) + C_+(q dS))/2||_F^2 = e_j e_k (|dD|^2 + |dS|^2) / 2")


def check_energy_factor(block):
    print("Step 3: per-plane energy factor")
    m00, m01, m10, m11 = sp.symbols("m00 m01 m10 m11", real=True)
    M = sp.Matrix([[m00, m01], [m10, m11]])
    avg = (R(a) * M * R(a).T).applyfunc(lambda e: sp.integrate(e, (a, 0, 2 * sp.pi)) / (2 * sp.pi))
    J = sp.Matrix([[0, -1], [1, 0]])
    target = (M.trace() / 2) * sp.eye(2) + ((m10 - m01) / 2) * J
    assert sp.simplify(avg - target) == sp.zeros(2, 2)
    step("mean over a of R(a) M R(a)^T = (tr M/2) I + ((M10-M01)/2) J   [checked]")
    # the same from the block formula: diagonal block j = k, D = 1 (a - b = 0), S -> 0
    diag = block.subs({y0: x0, y1: x1, Dr: 1, Di: 0, Sr: 0, Si: 0})
    e = x0**2 + x1**2
    assert sp.simplify(diag - (e / 2) * sp.eye(2)) == sp.zeros(2, 2)
    step("diagonal block with D = 1, S = 0: (e_j / 2) I_2, e_j = ||v_j||^2   [checked]")
    print("Step 4: a NoPE plane keeps its outer product")
    nope = block.subs({Dr: 1, Di: 0, Sr: 1, Si: 0})
    assert sp.simplify(nope - sp.Matrix([x0, x1]) * sp.Matrix([y0, y1]).T) == sp.zeros(2, 2)
    step("D = S = 1 gives x y^T   [checked]")


HEADER = '''"""GENERATED by proofs/gram_blocks.py --emit; do not edit by hand.

``gram_block(x0, x1, y0, y1, Dr, Di, Sr, Si)`` returns the four entries
``(g00, g01, g10, g11)`` of block ``(j, k)`` of ``G_n / W_n`` for a rank-1 cloud,
where ``x = v_j``, ``y = v_k`` and ``D = Dr + i Di``, ``S = Sr + i Si`` are the
weighted mean phases at ``theta_j - theta_k`` and ``theta_j + theta_k``.
Pure arithmetic: works on numpy arrays, JAX arrays and mpmath numbers alike.
"""


def gram_block(x0, x1, y0, y1, Dr, Di, Sr, Si):
'''


def emit(block) -> str:
    body = []
    for i, name in enumerate(["g00", "g01", "g10", "g11"]):
        body.append(f"    {name} = {sp.pycode(sp.factor_terms(block[i // 2, i % 2]))}")
    body.append("    return g00, g01, g10, g11")
    return HEADER + "\n".join(body) + "\n"


CUDA_HEADER = """// GENERATED by proofs/gram_blocks.py --emit; do not edit by hand.
//
// gram_entry(s, t, x0, x1, y0, y1, Dr, Di, Sr, Si): entry (s, t) of block (j, k) of G_n / W_n for a rank-1
// cloud, x = v_j, y = v_k, D = Dr + i Di and S = Sr + i Si the weighted mean phases at theta_j - theta_k and
// theta_j + theta_k: the formula of ropetheory/spectra/derived.py, for the kernel that builds each Gram in
// registers (topeig_rank1.cuh).
#pragma once

__device__ __forceinline__ double gram_entry(int s, int t, double x0, double x1, double y0, double y1, double Dr,
                                             double Di, double Sr, double Si) {
"""


def emit_cuda(block) -> str:
    g = [sp.ccode(sp.factor_terms(block[i // 2, i % 2])) for i in range(4)]
    return (CUDA_HEADER + f"    if (s == 0) return t == 0 ? {g[0]}\n                          : {g[1]};\n"
            f"    return t == 0 ? {g[2]}\n                  : {g[3]};\n}}\n")


TARGET = pathlib.Path(__file__).resolve().parents[1] / "ropetheory" / "spectra" / "derived.py"
CUDA_TARGET = TARGET.parent / "cuda" / "gram_block.cuh"


def main(argv):
    print("Gram blocks of a rank-1 RoPE cloud (Lemma 1, proof)")
    block = derive_block()
    check_orthogonality()
    check_energy_factor(block)
    texts = {TARGET: emit(block), CUDA_TARGET: emit_cuda(block)}
    for target, text in texts.items():
        if "--emit" in argv:
            target.write_text(text)
            print(f"wrote {target}")
        elif "--check" in argv:
            assert target.read_text() == text, f"{target} is stale: run python proofs/gram_blocks.py --emit"
            print(f"{target.name} matches the derivation")
    print("ALL STEPS CHECKED")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
