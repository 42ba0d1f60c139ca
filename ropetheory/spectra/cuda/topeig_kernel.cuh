// Certified top eigenvalue of a batch of symmetric float64 128 x 128 matrices, one thread block per matrix,
// the matrix held in registers for the whole computation (ropetheory.spectra.cuda_topeig, the method "cuda").
//
// Thread t holds rows h*R .. h*R+R-1 of column r (R = D*D/NT doubles in registers), h = t / D. Because the
// matrix is symmetric, column r is row r, so (G x)_r = sum_h sum_i a[i] x[h*R + i]: each thread's partial
// over its rows, summed over the H row groups in a fixed order. A warp holds one 32 x 32 block, (h, cb):
// its threads share h, so their reads of a shared vector's rows h*R + i are broadcasts, and warp 4 h + s
// holds column block cb = (s - h) mod 4, so that the blocks on and below the diagonal, the certificate's
// work, spread over the four warp schedulers (warp w runs on scheduler w mod 4 = (h + cb) mod 4).
//   0. The matrix is scaled by 2^-e, e the binary exponent of its largest |entry| (exact where normal), and
//      theta scaled back by 2^e at the end: the caller need not scale it.
//   1. STEPS Lanczos steps from the fixed unit vector v0, one local reorthogonalisation against q a step
//      (the upper bound is the certificate's; the lower, theta <= lambda_max, is a Ritz value's, to
//      rounding): diagonals alpha, off-diagonals beta. Two barriers a step: the matrix-vector product is
//      linear, so the partial of G q_k over a thread's rows is (partial of G w_{k-1} - c partial of
//      G q_{k-1}) / beta_{k-1}, with w_{k-1} the one vector shared.
//   2. The top eigenvalue theta of that STEPS x STEPS tridiagonal by multisection on Sturm counts (NS shifts a round,
//      one a thread of the first NS / 32 warps, one warp a scheduler, whose maxima alone each round reduces;
//      ROUNDS rounds shrink the bracket by NS^ROUNDS = 2^56),
//      each count by the determinant recurrence d_i = (alpha_i - x) d_{i-1} - beta_{i-1}^2 d_{i-2}, rescaled
//      by an exact power of two every RESCALE steps (no division on the chain). For a matrix scaled to
//      entries below 1, |alpha| and beta are at most lambda_max <= D and |x| at most 3 D (the Gershgorin
//      interval), so a step grows the pair (d_i, d_{i-1}) by at most 4 D + D^2 and RESCALE steps by at most
//      (4 D + D^2)^RESCALE ~ 4e29, far inside float64's range.
//   3. Certificate (cert == 1; cert == 2 stops after step 1, for timing; cert == 3 certifies theta_out's
//      values as given, skipping steps 1 and 2, to show a value below lambda_max fails): a block LDL^T
//      factorisation of A = mu I - G, mu = theta (1 + cert_rtol), in the registers, P columns a barrier;
//      ok = every pivot is positive (mu I - G positive definite, so lambda_max < mu). For the panel of
//      columns j .. j+P-1 every thread factors the P x P diagonal block A11 = L D L^T itself (the same
//      operations on the same values, so the same verdict everywhere; P reciprocals of pivots, the panel's only
//      divisions: dividing by the pivots in the solve instead took the kernel from 1.35M/s to 1.10M/s on one
//      H100), solves A11 w = A[j..j+P-1][r] for its column r, and updates its entries
//      A[i][r] -= sum_m A[i][j+m] w_m: the Schur complement
//      A22 - A21 A11^-1 A12, whose pivots are the remaining ones. Only entries on or below the diagonal's
//      32 x 32 blocks are updated (a panel reads a column only at rows below it), and only warps holding
//      trailing rows and columns.
// A batch is certified in two passes: every matrix with STEPS = 48, then the few that pass does not certify
// with STEPS = 128 (the whole Krylov space of a 128 x 128 matrix): topeig_ffi.cu (the package's method "cuda")
// launches the second over the whole batch with redo = 1 (a certified matrix's block returns at once);
// benchmarks/bench_topeig_cuda.py, through NVRTC with -DK=..., over an index list (idx).
// Included by topeig_ffi.cu (nvcc) and compiled alone by NVRTC (which defines K and gets the kernel topeig).
#pragma once
#define D 128
#ifndef P
#define P 4
#endif
#define NT 512
#define H (NT / D)
#define R (D / H)
#define NS 128
#define ROUNDS 8
#define RESCALE 7
#define NW (NT / 32)
#if H != 4 || D != 128
#error "the sums over row groups and warps below are written for H = 4, D = 128"
#endif

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_max(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Component-wise maximum of v over the threads of the first nw warps (the others' v is not read); every thread
// returns it. One barrier: red[parity] is written by this call only, and callers alternate parity, so a call's
// writes cannot overtake the previous call's reads.
__device__ double2 block_max2(double2 v, double2 (*red)[NW], int parity, int nw = NW) {
    v.x = warp_max(v.x);
    v.y = warp_max(v.y);
    if ((threadIdx.x & 31) == 0) red[parity][threadIdx.x >> 5] = v;
    __syncthreads();
    double2 s = red[parity][0];
#pragma unroll
    for (int i = 1; i < nw; i++) {
        s.x = fmax(s.x, red[parity][i].x);
        s.y = fmax(s.y, red[parity][i].y);
    }
    return s;
}

// Number of eigenvalues of the tridiagonal (al, b2 = beta^2) below x: negative LDL^T pivots, i.e. sign
// changes of the leading principal minors d_i of T - x I. A zero minor counts as a negative pivot (LAPACK's
// pivmin rule, as ropetheory.spectra.tridiag.sturm_bracket).
template <int STEPS> __device__ int sturm_count(const double* al, const double* b2, double x) {
    double dm = 1.0, d = al[0] - x;
    int cnt = d <= 0.0;
    if (d == 0.0) d = -1e-300;
    for (int i0 = 1; i0 < STEPS; i0 += RESCALE) {
#pragma unroll
        for (int i = i0; i < i0 + RESCALE && i < STEPS; i++) {
            double dn = fma(al[i] - x, d, -b2[i - 1] * dm);
            if (dn == 0.0) dn = -1e-300 * d;
            cnt += (dn < 0.0) != (d < 0.0);
            dm = d;
            d = dn;
        }
        // rescale both by the power of two 2^-e, e the exponent of |d| + |dm|: exact, signs kept
        long long e = (__double_as_longlong(fabs(d) + fabs(dm)) >> 52) - 1023;
        double sc = __longlong_as_double((1023 - e) << 52);
        d *= sc;
        dm *= sc;
    }
    return cnt;
}

// The Lanczos recurrence's state between steps: q_k[r], q_{k-1}[r] and w_k[r] of the thread's column r (the
// same values in the H threads of a column), the thread's partial of G q_k, c = w.q and 1/beta of the last
// step, and beta of the one before. wbuf (shared) holds w.
struct Lanczos {
    double qr, qpr, wr, sp, c, ib, bprev;
};

// STEPS steps: w = G q_k - alpha_k q_k - beta_{k-1} q_{k-1}, then w's component c = w.q along q_k removed
// (local reorthogonalisation: without it the top Ritz value of 64 steps overshot lambda_max by up to 1.4e-13
// of it, measured on an H100), beta_k = ||w - c q_k||, q_{k+1} = (w - c q_k) / beta_k: diagonals al[k],
// squared off-diagonals b2[k]. Step k first makes its partial of G q_k from G w_{k-1} by linearity
// ((partial of G w_{k-1} - c partial of G q_{k-1}) / beta_{k-1}; q_0 = v0: w_{-1} = v0, c = 0, 1/beta = 1).
// Barrier 1 publishes the partials and alpha's warp sums (alpha = sum over every thread of its partial times
// q_k[r]); barrier 2 publishes w and the warp sums of c and ||w||^2. beta^2 = ||w||^2 - c^2 (q a unit vector)
// then, unless that difference cancels (c^2 > ||w||^2 / 2: w of rounding size, mostly along q, as at a
// breakdown; on G = 0.75 I the difference gave a top Ritz value of 0.86): then a third barrier reduces
// ||w - c q||^2 itself, so beta^2 is always correct to a few ulps and every q a unit vector.
template <int STEPS>
__device__ __forceinline__ void lanczos_steps(const double* a, Lanczos& z, double* wbuf,
                                              double (*part)[D], double* redA, double2* redB, double* redC,
                                              double* al, double* b2, int t, int h, int r) {
    for (int k = 0; k < STEPS; k++) {
        const double2* w2 = reinterpret_cast<const double2*>(wbuf + h * R);
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
#pragma unroll
        for (int i = 0; i < R / 2; i += 2) {
            double2 x = w2[i], y = w2[i + 1];
            s0 = fma(a[2 * i], x.x, s0);
            s1 = fma(a[2 * i + 1], x.y, s1);
            s2 = fma(a[2 * i + 2], y.x, s2);
            s3 = fma(a[2 * i + 3], y.y, s3);
        }
        z.sp = ((s0 + s1) + (s2 + s3) - z.c * z.sp) * z.ib;
        double qn = (z.wr - z.c * z.qr) * z.ib;
        z.qpr = z.qr;
        z.qr = qn;
        part[h][r] = z.sp;
        double pa = warp_sum(z.sp * z.qr);
        if ((t & 31) == 0) redA[t >> 5] = pa;
        __syncthreads();                               // 1: partials and alpha's warp sums written
        const double2* ra = reinterpret_cast<const double2*>(redA);   // 16 warp sums, added in pairs
        double alpha = (((ra[0].x + ra[0].y) + (ra[1].x + ra[1].y)) + ((ra[2].x + ra[2].y) + (ra[3].x + ra[3].y)))
                     + (((ra[4].x + ra[4].y) + (ra[5].x + ra[5].y)) + ((ra[6].x + ra[6].y) + (ra[7].x + ra[7].y)));
        z.wr = (part[0][r] + part[1][r]) + (part[2][r] + part[3][r]) - alpha * z.qr - z.bprev * z.qpr;
        if (h == 0) {
            wbuf[r] = z.wr;                            // every read of wbuf this step came before barrier 1
            double u = warp_sum(z.wr * z.qr), v = warp_sum(z.wr * z.wr);
            if ((t & 31) == 0) redB[t >> 5] = make_double2(u, v);
        }
        __syncthreads();                               // 2: w, c's and ||w||^2's warp sums written
        z.c = (redB[0].x + redB[1].x) + (redB[2].x + redB[3].x);
        double ww = (redB[0].y + redB[1].y) + (redB[2].y + redB[3].y);
        double bb = ww - z.c * z.c;
        if (!(bb >= 0.5 * ww)) {                       // the same values in every thread: uniform
            if (h == 0) {
                double u = z.wr - z.c * z.qr, v = warp_sum(u * u);
                if ((t & 31) == 0) redC[t >> 5] = v;
            }
            __syncthreads();                           // 3 (rare): ||w - c q||^2's warp sums written
            bb = (redC[0] + redC[1]) + (redC[2] + redC[3]);
        }
        z.ib = bb > 0.0 ? rsqrt(bb) : 0.0;
        if (t == 0) { al[k] = alpha; b2[k] = bb; }
        z.bprev = bb * z.ib;
    }
    __syncthreads();                                   // al, b2 written
}

// The top eigenvalue of the STEPS x STEPS tridiagonal (al, b2) by multisection from its Gershgorin interval; with
// gershgorin_only, that interval's top (for timing the Lanczos steps alone).
template <int STEPS>
__device__ double top_of_tridiagonal(const double* al, const double* b2, double2 (*red2)[NW], int t,
                                     bool gershgorin_only) {
    static_assert(STEPS <= NS, "the bracket and the counts are reduced over the first NS / 32 warps only");
    double gl = __longlong_as_double(0x7ff0000000000000LL), gh = -gl;
    if (t < STEPS) {
        double bl = t < STEPS - 1 ? sqrt(b2[t]) : 0.0, bp = t > 0 ? sqrt(b2[t - 1]) : 0.0;
        gl = al[t] - bl - bp;
        gh = al[t] + bl + bp;
    }
    double2 m = block_max2(make_double2(-gl, gh), red2, 0, NS / 32);     // rows t < STEPS <= NS
    double lo = -m.x, hi = m.y;
    if (gershgorin_only) return hi;
    hi += 4.0 * 2.220446049250313e-16 * fmax(fabs(hi), fabs(lo));
    for (int s = 0; s < ROUNDS; s++) {
        double x = lo + (hi - lo) * ((double)(t + 1) / NS), clo = lo, chi = hi;
        if (t < NS) {                                  // a shift below lambda_max raises lo, any other lowers hi
            if (sturm_count<STEPS>(al, b2, x) >= STEPS) chi = x;
            else clo = x;
        }
        m = block_max2(make_double2(clo, -chi), red2, (s + 1) & 1, NS / 32);
        lo = m.x;
        hi = -m.y;
    }
    return 0.5 * (lo + hi);
}

// Whether mu I - G is positive definite: block LDL^T of A = mu I - G on the registers a (overwritten),
// cbuf[pb] broadcasting the panel's P columns (step 3 above).
__device__ bool positive_definite(double* a, double mu, double (*cbuf)[P][D], int h, int r) {
#pragma unroll
    for (int i = 0; i < R; i++) a[i] = (h * R + i == r ? mu : 0.0) - a[i];
    if (r < P) {
#pragma unroll
        for (int i = 0; i < R; i++) cbuf[0][r][h * R + i] = a[i];
    }
    for (int j = 0, pb = 0; j < D; j += P, pb ^= 1) {
        __syncthreads();                               // panel j's columns (updated through column j - 1) written
        const double (*cb)[D] = cbuf[pb];
        double L[P][P], dg[P], idg[P];                 // A11 = L diag(dg) L^T, L unit lower triangular
        bool good = true;
#pragma unroll
        for (int q = 0; q < P; q++) {
            double v[P];
#pragma unroll
            for (int k = 0; k < q; k++) v[k] = L[q][k] * dg[k];
            double s = cb[q][j + q];
#pragma unroll
            for (int k = 0; k < q; k++) s = fma(-L[q][k], v[k], s);
            dg[q] = s;
            good = good && s > 0.0;
            const double is = 1.0 / s;                 // the pivot's reciprocal: the only divisions of a panel
            idg[q] = is;
#pragma unroll
            for (int l = q + 1; l < P; l++) {
                double e = cb[q][j + l];
#pragma unroll
                for (int k = 0; k < q; k++) e = fma(-L[l][k], v[k], e);
                L[l][q] = e * is;
            }
        }
        if (!good) return false;                       // the same values in every thread: uniform
        // the warps holding trailing entries update them; the next panel's owners, all among them (the rows of
        // their column block and those below, the only rows a panel reads), publish its columns right after
        const int jn = j + P;
        if (h >= (r >> 5) && h * R + R - 1 >= jn && (r | 31) >= jn) {    // warp-uniform
            double w[P];                               // A11 w = A12[:, r] (0 for columns already eliminated)
#pragma unroll
            for (int q = 0; q < P; q++) {
                double s = r >= jn ? cb[q][r] : 0.0;
#pragma unroll
                for (int k = 0; k < q; k++) s = fma(-L[q][k], w[k], s);
                w[q] = s;
            }
#pragma unroll
            for (int q = P - 1; q >= 0; q--) {
                double s = w[q] * idg[q];
#pragma unroll
                for (int l = q + 1; l < P; l++) s = fma(-L[l][q], w[l], s);
                w[q] = s;
            }
#pragma unroll
            for (int q = 0; q < P; q++) {
                const double2* x2 = reinterpret_cast<const double2*>(cb[q] + h * R);
#pragma unroll
                for (int i = 0; i < R / 2; i++) {
                    double2 x = x2[i];
                    a[2 * i] = fma(-x.x, w[q], a[2 * i]);
                    a[2 * i + 1] = fma(-x.y, w[q], a[2 * i + 1]);
                }
            }
            if (r >= jn && r < jn + P) {               // read after the next barrier
#pragma unroll
                for (int i = 0; i < R; i++) cbuf[pb ^ 1][r - jn][h * R + i] = a[i];
            }
        }
    }
    return true;
}

// Steps 0-3 on the matrix in registers: a[i] = G[h R + i][r] of the block's matrix mat, amax = max |a[i]| over
// the thread's entries; writes theta_out[mat], ok_out[mat] (cert as in step 3; cert == 3 reads theta_out[mat]).
template <int STEPS>
__device__ __forceinline__ void topeig_solve(double* a, double amax, const double* __restrict__ v0,
                                             double* __restrict__ theta_out, int* __restrict__ ok_out,
                                             double cert_rtol, int cert, int mat) {
    __shared__ __align__(16) double wbuf[D];
    __shared__ double part[H][D];
    __shared__ double al[STEPS], b2[STEPS];
    __shared__ __align__(16) double cbuf[2][P][D];
    __shared__ __align__(16) double redA[NW];
    __shared__ double2 redB[D / 32];
    __shared__ double redC[D / 32];
    __shared__ double2 red2[2][NW];
    const int t = threadIdx.x, h = t / D, r = ((((t >> 5) & 3) - h) & 3) * 32 + (t & 31);
    // scale by 2^-e, e the binary exponent of max |G| read from its bits, so the largest entry is in [1/2, 1)
    // (the bounds of step 2 assume entries below 1; a subnormal maximum gets e = -1021, a smaller scaling),
    // as two products by normal powers of two: exact where the results are normal, as
    // topeig._times_power_of_two (1.6% faster than ldexp on every entry: 957k/s against 942k/s, 64 steps, one H200)
    const double m = block_max2(make_double2(amax, 0.0), red2, 1).x;
    const int biased = (int)((__double_as_longlong(m) >> 52) & 0x7ff);
    const int e = (m > 0.0 && biased < 0x7ff) ? max(biased, 1) - 1022 : 0;
    if (e != 0) {
        const int h = (-e) >> 1;                       // -e = h + (-e - h), both halves in [-512, 511]
        const double p1 = __longlong_as_double((long long)(h + 1023) << 52);
        const double p2 = __longlong_as_double((long long)(-e - h + 1023) << 52);
#pragma unroll
        for (int i = 0; i < R; i++) a[i] = a[i] * p1 * p2;
    }
    Lanczos z = {0.0, 0.0, v0[r], 0.0, 0.0, 1.0, 0.0};
    if (h == 0) wbuf[r] = z.wr;
    __syncthreads();
    double th = ldexp(theta_out[mat], -e);
    if (cert != 3) {
        lanczos_steps<STEPS>(a, z, wbuf, part, redA, redB, redC, al, b2, t, h, r);
        th = top_of_tridiagonal<STEPS>(al, b2, red2, t, cert == 2);
    }
    int ok = (cert == 1 || cert == 3) && th > 0.0 && positive_definite(a, th * (1.0 + cert_rtol), cbuf, h, r);
    if (t == 0) {
        theta_out[mat] = ldexp(th, e);
        ok_out[mat] = ok;
    }
}

// Block b works on matrix m = idx[b] (m = b when idx is null: a pass over a subset, e.g. the matrices a
// shorter run did not certify, needs no gathered copy) and writes theta_out[m], ok_out[m]; with redo, a
// block whose matrix is already certified (ok_out[m] > 0) returns at once.
template <int STEPS>
__device__ __forceinline__ void topeig_body(const double* __restrict__ G, const double* __restrict__ v0,
                                            double* __restrict__ theta_out, int* __restrict__ ok_out,
                                            double cert_rtol, int cert, const int* __restrict__ idx, int redo) {
    const int t = threadIdx.x, h = t / D, r = ((((t >> 5) & 3) - h) & 3) * 32 + (t & 31);
    const int mat = idx ? idx[blockIdx.x] : blockIdx.x;
    if (redo && ok_out[mat] > 0) return;               // the same value in every thread: uniform
    const double* Gb = G + (unsigned long long)mat * D * D;
    double a[R], amax = 0.0;
#pragma unroll
    for (int i = 0; i < R; i++) {
        a[i] = Gb[(unsigned long long)(h * R + i) * D + r];
        amax = fmax(amax, fabs(a[i]));
    }
    topeig_solve<STEPS>(a, amax, v0, theta_out, ok_out, cert_rtol, cert, mat);
}

#ifdef K
extern "C" __global__ void __launch_bounds__(NT, 1)
topeig(const double* __restrict__ G, const double* __restrict__ v0, double* __restrict__ theta_out,
       int* __restrict__ ok_out, double cert_rtol, int cert, const int* __restrict__ idx) {
    topeig_body<K>(G, v0, theta_out, ok_out, cert_rtol, cert, idx, 0);
}
#endif
