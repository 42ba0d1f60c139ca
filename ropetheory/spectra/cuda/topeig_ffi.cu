// The XLA FFI handler behind the top-eigenvalue method "cuda" (ropetheory.spectra.cuda_topeig): the kernel of
// topeig_kernel.cuh in two launches on XLA's stream, so that it runs inside jit like any other operation.
//   1. every matrix with FIRST_STEPS Lanczos steps and its certificate;
//   2. every matrix again with SECOND_STEPS, each block whose matrix the first launch certified returning at
//      once (redo), so only the few left pay for the longer run.
// Outputs theta (B,) and ok (B,): ok[m] = 1 where mu I - G_m, mu = theta_m (1 + rtol), was shown positive
// definite in the kernel, else 0 (the caller answers those with eigvalsh). Built by nvcc at first use.
// A second handler takes rank-1 clouds V (C, d) and mean phases DS (N, d/2, d/2, 4) instead of Grams and does the
// same for the C x N Grams, each built in the registers (topeig_rank1.cuh): theta and ok of shape (C, N).
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "xla/ffi/api/ffi.h"
// after XLA's headers: the kernel's one-letter macros (D, H, R, P) would rewrite their code
#include "topeig_kernel.cuh"
#include "topeig_rank1.cuh"

namespace ffi = xla::ffi;

// 48 steps certified every Gram of RoPE, Figure 7's five schedules and 99.8% of a batch with a top pair 1e-6 to
// 1e-2 apart (one H100, docs/benchmarks/bench_topeig_cuda_h100_s20.json); 128 steps span the whole space.
#define FIRST_STEPS 48
#define SECOND_STEPS 128

__global__ void __launch_bounds__(NT, 1)
topeig_first(const double* G, const double* v0, double* theta, int* ok, double rtol) {
    topeig_body<FIRST_STEPS>(G, v0, theta, ok, rtol, 1, nullptr, 0);
}

__global__ void __launch_bounds__(NT, 1)
topeig_second(const double* G, const double* v0, double* theta, int* ok, double rtol) {
    topeig_body<SECOND_STEPS>(G, v0, theta, ok, rtol, 1, nullptr, 1);
}

static ffi::Error TopEig(cudaStream_t stream, ffi::Buffer<ffi::F64> G, ffi::Buffer<ffi::F64> v0,
                         ffi::ResultBuffer<ffi::F64> theta, ffi::ResultBuffer<ffi::S32> ok, double rtol) {
    auto dims = G.dimensions();
    if (dims.size() != 3 || dims[1] != D || dims[2] != D || v0.element_count() != D)
        return ffi::Error::InvalidArgument("ropetheory_topeig takes G of shape (B, 128, 128) and v0 of shape (128,)");
    const int64_t B = dims[0];
    if (B == 0) return ffi::Error::Success();
    if (B > INT32_MAX) return ffi::Error::InvalidArgument("ropetheory_topeig: more than 2^31 - 1 matrices");
    const dim3 grid(static_cast<unsigned>(B));
    int32_t* okp = ok->typed_data();
    topeig_first<<<grid, NT, 0, stream>>>(G.typed_data(), v0.typed_data(), theta->typed_data(), okp, rtol);
    topeig_second<<<grid, NT, 0, stream>>>(G.typed_data(), v0.typed_data(), theta->typed_data(), okp, rtol);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return ffi::Error::Internal(std::string("ropetheory_topeig: ") + cudaGetErrorString(e));
    return ffi::Error::Success();
}

__global__ void __launch_bounds__(NT, 1)
topeig_rank1_first(const double* V, const double* DS, int d, int nlen, const double* v0, double* theta, int* ok,
                   double rtol) {
    topeig_rank1_body<FIRST_STEPS>(V, DS, d, nlen, v0, theta, ok, rtol, 0);
}

__global__ void __launch_bounds__(NT, 1)
topeig_rank1_second(const double* V, const double* DS, int d, int nlen, const double* v0, double* theta, int* ok,
                    double rtol) {
    topeig_rank1_body<SECOND_STEPS>(V, DS, d, nlen, v0, theta, ok, rtol, 1);
}

static ffi::Error TopEigRank1(cudaStream_t stream, ffi::Buffer<ffi::F64> V, ffi::Buffer<ffi::F64> DS,
                              ffi::Buffer<ffi::F64> v0, ffi::ResultBuffer<ffi::F64> theta,
                              ffi::ResultBuffer<ffi::S32> ok, double rtol) {
    auto vd = V.dimensions(), sd = DS.dimensions();
    if (vd.size() != 2 || sd.size() != 4 || vd[1] < 2 || vd[1] > D || vd[1] % 2 != 0 || sd[1] != vd[1] / 2 ||
        sd[2] != vd[1] / 2 || sd[3] != 4 || v0.element_count() != D)
        return ffi::Error::InvalidArgument("ropetheory_topeig_rank1 takes V of shape (C, d), d even and <= 128, DS "
                                           "of shape (N, d/2, d/2, 4) and v0 of shape (128,)");
    const int64_t B = vd[0] * sd[0];
    if (B == 0) return ffi::Error::Success();
    if (B > INT32_MAX) return ffi::Error::InvalidArgument("ropetheory_topeig_rank1: more than 2^31 - 1 matrices");
    const dim3 grid(static_cast<unsigned>(B));
    const int d = static_cast<int>(vd[1]), nlen = static_cast<int>(sd[0]);
    int32_t* okp = ok->typed_data();
    topeig_rank1_first<<<grid, NT, 0, stream>>>(V.typed_data(), DS.typed_data(), d, nlen, v0.typed_data(),
                                                theta->typed_data(), okp, rtol);
    topeig_rank1_second<<<grid, NT, 0, stream>>>(V.typed_data(), DS.typed_data(), d, nlen, v0.typed_data(),
                                                 theta->typed_data(), okp, rtol);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return ffi::Error::Internal(std::string("ropetheory_topeig_rank1: ") + cudaGetErrorString(e));
    return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(RopetheoryTopEigRank1, TopEigRank1,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<double>("rtol"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RopetheoryTopEig, TopEig,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<double>("rtol"));
