// The kernel of topeig_kernel.cuh on the Grams of rank-1 clouds, each built in the registers from its cloud and
// the mean phases (ropetheory.spectra.cuda_topeig.rank1_top_and_certificate): no Gram is written to memory.
//
// Block b = c * nlen + l takes cloud c (V[c], interleaved, d <= 128 channels) at length l (the mean phases
// DS[l][j][k] = (Re D_jk, Im D_jk, Re S_jk, Im S_jk) of planes j, k < d / 2). Thread (h, r) of topeig_body holds
// column r: entry (row, r), row = h R + i, is gram_entry of block (row / 2, r / 2), always evaluated for the pair
// in the upper triangle (p = min(row, r), q = max(row, r)): the two triangles hold the same expression of the
// same values, so they agree up to how the compiler contracts its multiply-adds in each unrolled iteration (to
// rounding, as assemble_gram's average of G and G^T does), which the Lanczos product (column r read as row r)
// and the certificate, both backward stable, absorb like any rounding of the Gram. Past d (d < 128) the matrix
// is [[G, 0], [0, s I]], s = min_i G_ii, as cuda_topeig.embedded builds it on the host: the same top eigenvalue
// and the same certificate.
#pragma once
#include "gram_block.cuh"

template <int STEPS>
__device__ __forceinline__ void topeig_rank1_body(const double* __restrict__ V, const double* __restrict__ DS, int d,
                                                  int nlen, const double* __restrict__ v0,
                                                  double* __restrict__ theta_out, int* __restrict__ ok_out,
                                                  double cert_rtol, int redo) {
    __shared__ double vs[D], diag[D];
    __shared__ double2 redm[2][NW];
    const int t = threadIdx.x, h = t / D, r = ((((t >> 5) & 3) - h) & 3) * 32 + (t & 31);
    const int mat = blockIdx.x;
    if (redo && ok_out[mat] > 0) return;               // the same value in every thread: uniform
    const int c = mat / nlen, l = mat - c * nlen, np = d >> 1;
    const double2* ds = reinterpret_cast<const double2*>(DS) + 2ull * (unsigned long long)l * np * np;
    if (t < D) vs[t] = t < d ? V[(unsigned long long)c * d + t] : 0.0;
    __syncthreads();
    // the diagonal first (its minimum s fills the embedding's tail), kept in shared memory so that the entries
    // on the diagonal are these very values
    double g = __longlong_as_double(0x7ff0000000000000LL);
    if (t < d) {
        const int j = t >> 1;
        const double2 dd = ds[2 * (j * np + j)], ss = ds[2 * (j * np + j) + 1];
        g = gram_entry(t & 1, t & 1, vs[2 * j], vs[2 * j + 1], vs[2 * j], vs[2 * j + 1], dd.x, dd.y, ss.x, ss.y);
        diag[t] = g;
    }
    const double s = d < D ? -block_max2(make_double2(-g, 0.0), redm, 0).x : 0.0;   // a barrier: diag written
    if (d == D) __syncthreads();
    double a[R], amax = 0.0;
#pragma unroll
    for (int i = 0; i < R; i++) {
        const int row = h * R + i, p = min(row, r), q = max(row, r);
        double x;
        if (row == r) {
            x = r < d ? diag[r] : s;
        } else if (q < d) {
            const int j = p >> 1, k = q >> 1;
            const double2 dd = ds[2 * (j * np + k)], ss = ds[2 * (j * np + k) + 1];
            x = gram_entry(p & 1, q & 1, vs[2 * j], vs[2 * j + 1], vs[2 * k], vs[2 * k + 1], dd.x, dd.y, ss.x, ss.y);
        } else {
            x = 0.0;
        }
        a[i] = x;
        amax = fmax(amax, fabs(x));
    }
    topeig_solve<STEPS>(a, amax, v0, theta_out, ok_out, cert_rtol, 1, mat);
}
