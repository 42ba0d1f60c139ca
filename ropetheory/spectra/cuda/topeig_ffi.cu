// The XLA FFI handler behind the top-eigenvalue method "cuda" (ropetheory.spectra.cuda_topeig): the kernel of
// topeig_kernel.cuh in two launches on XLA's stream, so that it runs inside jit like any other operation.
//   1. every matrix with FIRST_STEPS Lanczos steps and its certificate;
//   2. every matrix again with SECOND_STEPS, each block whose matrix the first launch certified returning at
//      once (redo), so only the few left pay for the longer run.
// Outputs theta (B,) and ok (B,): ok[m] = 1 where mu I - G_m, mu = theta_m (1 + rtol), was shown positive
// definite in the kernel, else 0 (the caller answers those with eigvalsh). Built by nvcc at first use.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "xla/ffi/api/ffi.h"
// after XLA's headers: the kernel's one-letter macros (D, H, R, P) would rewrite their code
#include "topeig_kernel.cuh"

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

XLA_FFI_DEFINE_HANDLER_SYMBOL(RopetheoryTopEig, TopEig,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<double>("rtol"));
