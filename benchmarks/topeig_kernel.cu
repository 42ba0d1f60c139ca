// Certified top eigenvalue of a batch of symmetric float64 128 x 128 matrices, one thread block per matrix,
// the matrix held in registers for the whole computation (issue #39 item 1; benchmarks/bench_topeig_cuda.py).
//
// Thread t = h * D + r holds rows h*R .. h*R+R-1 of column r (R = D*D/NT doubles in registers). Because the
// matrix is symmetric, column r is row r, so (G q)_r = sum_h sum_i a[i] q[h*R + i]: each thread's partial
// over its rows, summed over the H row groups in a fixed order.
//   1. K Lanczos steps from the fixed unit vector v0, one local reorthogonalisation against q a step (the
//      certificate, not the recurrence, vouches for the value): diagonals alpha, off-diagonals beta.
//   2. The top eigenvalue theta of that K x K tridiagonal by multisection on Sturm counts (NS shifts a
//      round, ROUNDS rounds: the bracket shrinks by NS^ROUNDS = 2^56), each count by the determinant
//      recurrence d_i = (alpha_i - x) d_{i-1} - beta_{i-1}^2 d_{i-2}, rescaled by an exact power of two
//      every RESCALE steps (no division on the chain). For a matrix scaled to entries below 1, |alpha| and
//      beta are at most lambda_max <= D and |x| at most 3 D (the Gershgorin interval), so a step grows the
//      pair (d_i, d_{i-1}) by at most 4 D + D^2 and RESCALE steps by at most (4 D + D^2)^RESCALE ~ 4e29,
//      far inside float64's range.
//   3. Certificate (cert == 1; cert == 2 stops after step 1, for timing): an LDL^T factorisation of
//      mu I - G, mu = theta (1 + cert_rtol), in the registers, two columns a barrier; ok = every pivot is
//      positive (mu I - G positive definite, so lambda_max < mu).
#define D 128
#ifndef K
#define K 64
#endif
#define NT 512
#define H (NT / D)
#define R (D / H)
#define NS 128
#define ROUNDS 8
#define RESCALE 7
#define NW (NT / 32)

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
__device__ __forceinline__ double warp_min(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmin(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide reductions; every thread returns the result. The first barrier keeps red[] from being
// overwritten while a previous reduction is still reading it.
__device__ double block_max(double v, double* red) {
    v = warp_max(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    double s = red[0];
#pragma unroll
    for (int i = 1; i < NW; i++) s = fmax(s, red[i]);
    return s;
}
__device__ double block_min(double v, double* red) {
    v = warp_min(v);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    double s = red[0];
#pragma unroll
    for (int i = 1; i < NW; i++) s = fmin(s, red[i]);
    return s;
}

// Number of eigenvalues of the tridiagonal (al, b2 = beta^2) below x: negative LDL^T pivots, i.e. sign
// changes of the leading principal minors d_i of T - x I. A zero minor counts as a negative pivot
// (LAPACK's pivmin rule, as ropetheory.spectra.tridiag.sturm_bracket).
__device__ int sturm_count(const double* al, const double* b2, double x) {
    double dm = 1.0, d = al[0] - x;
    int cnt = d <= 0.0;
    if (d == 0.0) d = -1e-300;
    for (int i0 = 1; i0 < K; i0 += RESCALE) {
#pragma unroll
        for (int i = i0; i < i0 + RESCALE && i < K; i++) {
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

extern "C" __global__ void __launch_bounds__(NT, 1)
topeig(const double* __restrict__ G, const double* __restrict__ v0, double* __restrict__ theta_out,
       int* __restrict__ ok_out, double cert_rtol, int cert) {
    __shared__ __align__(16) double q[D];
    __shared__ double part[H][D];
    __shared__ double al[K], b2[K];
    __shared__ __align__(16) double colbuf[2][2][D];
    __shared__ double red[NW], redA[NW];
    __shared__ double2 redB[D / 32];
    const int t = threadIdx.x, r = t % D, h = t / D;
    const double* Gb = G + (unsigned long long)blockIdx.x * D * D;
    double a[R];
#pragma unroll
    for (int i = 0; i < R; i++) a[i] = Gb[(unsigned long long)(h * R + i) * D + r];

    // 1. Lanczos: element r of the vectors lives in thread r of row group 0; q[] is the shared copy of q.
    // Three barriers a step: alpha = sum over every thread of (its partial of (G q)_r) q_r needs no gathered
    // G q, so it is reduced with the partials' barrier; c = w.q and ||w||^2 with the second;
    // ||w - c q||^2 = ||w||^2 - c^2 (q a unit vector), so beta^2 needs no third reduction.
    double qi = 0.0, qp = 0.0, bprev = 0.0;
    if (h == 0) { qi = v0[r]; q[r] = qi; }
    __syncthreads();
    for (int k = 0; k < K; k++) {
        const double2* q2 = reinterpret_cast<const double2*>(q + h * R);
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
#pragma unroll
        for (int i = 0; i < R / 2; i += 2) {
            double2 x = q2[i], y = q2[i + 1];
            s0 = fma(a[2 * i], x.x, s0);
            s1 = fma(a[2 * i + 1], x.y, s1);
            s2 = fma(a[2 * i + 2], y.x, s2);
            s3 = fma(a[2 * i + 3], y.y, s3);
        }
        double sp = (s0 + s1) + (s2 + s3);
        part[h][r] = sp;
        double pa = warp_sum(sp * q[r]);
        if ((t & 31) == 0) redA[t >> 5] = pa;
        __syncthreads();                               // 1: partials and alpha's warp sums written
        double alpha = 0.0;
#pragma unroll
        for (int i = 0; i < NW; i++) alpha += redA[i];
        double w = 0.0;
        if (h == 0) {
#pragma unroll
            for (int g = 0; g < H; g++) w += part[g][r];
            w = w - alpha * qi - bprev * qp;
            double u = warp_sum(w * qi), v = warp_sum(w * w);
            if ((t & 31) == 0) redB[t >> 5] = make_double2(u, v);
        }
        __syncthreads();                               // 2: c and ||w||^2's warp sums written
        double c = 0.0, ww = 0.0;
#pragma unroll
        for (int i = 0; i < D / 32; i++) { c += redB[i].x; ww += redB[i].y; }
        double bb = fmax(ww - c * c, 0.0);
        double ib = bb > 0.0 ? rsqrt(bb) : 0.0;
        if (t == 0) { al[k] = alpha; b2[k] = bb; }
        qp = qi;
        qi = (w - c * qi) * ib;
        bprev = bb * ib;
        if (h == 0) q[r] = qi;                         // every read of q this step came before barrier 1
        __syncthreads();                               // 3: q written
    }

    // 2. multisection for the top eigenvalue of the tridiagonal, from its Gershgorin interval
    double gl = __longlong_as_double(0x7ff0000000000000LL), gh = -gl;
    if (t < K) {
        double bl = t < K - 1 ? sqrt(b2[t]) : 0.0, bp = t > 0 ? sqrt(b2[t - 1]) : 0.0;
        gl = al[t] - bl - bp;
        gh = al[t] + bl + bp;
    }
    double lo = block_min(gl, red), hi = block_max(gh, red);
    if (cert == 2) {                                   // timing only: Lanczos alone (value: Gershgorin's top)
        if (t == 0) { theta_out[blockIdx.x] = hi; ok_out[blockIdx.x] = 0; }
        return;
    }
    hi += 4.0 * 2.220446049250313e-16 * fmax(fabs(hi), fabs(lo));
    for (int s = 0; s < ROUNDS; s++) {
        double x = lo + (hi - lo) * ((double)((t % NS) + 1) / NS);
        bool above = t < NS ? sturm_count(al, b2, x) >= K : false;     // every eigenvalue below x
        double nlo = block_max(t < NS && !above ? x : lo, red);
        double nhi = block_min(t < NS && above ? x : hi, red);
        lo = nlo;
        hi = nhi;
    }
    double th = 0.5 * (lo + hi);

    // 3. certificate: LDL^T of mu I - G, right-looking, on the registers; colbuf broadcasts column j
    int ok = th > 0.0;
    if (cert && ok) {
        double mu = th * (1.0 + cert_rtol);
#pragma unroll
        for (int i = 0; i < R; i++) a[i] = (h * R + i == r ? mu : 0.0) - a[i];
        // two columns a barrier: owners of columns j and j + 1 publish them (both updated through column
        // j - 1); every thread then eliminates both from its entries (a rank-2 update). p1 is the pivot of
        // column j + 1 after column j's elimination: A[j+1][j+1] - m^2 / p0, m = A[j+1][j]. Rows <= j + 1
        // are updated too (no per-entry test): they are eliminated, and what they then hold is read only
        // to update themselves (a published column's rows <= j + 1 meet only rows <= j + 1), never a pivot.
        for (int j = 0; j < D; j += 2) {
            double* c0 = colbuf[(j >> 1) & 1][0];
            double* c1 = colbuf[(j >> 1) & 1][1];          // pair j + 4 rewrites them after pair j + 2's barrier
            if (r == j || r == j + 1) {
                double* cw = r == j ? c0 : c1;
#pragma unroll
                for (int i = 0; i < R; i++) cw[h * R + i] = a[i];
            }
            __syncthreads();
            double p0 = c0[j], m = c0[j + 1];
            double ip0 = 1.0 / p0, mp = m * ip0;
            double p1 = c1[j + 1] - m * mp;
            if (!(p0 > 0.0) || !(p1 > 0.0)) { ok = 0; break; }   // the same values in every thread: uniform
            if (h * R + R - 1 > j + 1 && (r | 31) > j + 1) {     // warp-uniform: entries still to update
                double ip1 = 1.0 / p1;
                double u0 = r > j + 1 ? c0[r] * ip0 : 0.0;
                double u1 = r > j + 1 ? (c1[r] - c0[r] * mp) * ip1 : 0.0;
                const double2* x2 = reinterpret_cast<const double2*>(c0 + h * R);
                const double2* y2 = reinterpret_cast<const double2*>(c1 + h * R);
#pragma unroll
                for (int i = 0; i < R / 2; i++) {
                    double2 x = x2[i], y = y2[i];
                    a[2 * i] = fma(-fma(-x.x, mp, y.x), u1, fma(-x.x, u0, a[2 * i]));
                    a[2 * i + 1] = fma(-fma(-x.y, mp, y.y), u1, fma(-x.y, u0, a[2 * i + 1]));
                }
            }
        }
    }
    if (t == 0) {
        theta_out[blockIdx.x] = th;
        ok_out[blockIdx.x] = ok;
    }
}
