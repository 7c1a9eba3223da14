// affine_path_sample (CUDA): x_t = a x_1 + b x_0 + s eps, one pass, 16-byte groups
// (FORMULAS.md section 2; counters as fastflow/reference/affine_path_sample.py).
#include "cuda_common.cuh"

namespace fastflow {
namespace cuda {
namespace {

template <typename T, bool X0, bool S>
__global__ void __launch_bounds__(kThreads) sample_kernel(AffineSampleArgs a, bool aligned) {
  constexpr int VEC = VecOf<T>::n;
  const int64_t D = a.per_sample, n = a.batch * D;
  uint64_t seed = 0, off = 0;
  if (!X0 || S) {
    seed = static_cast<uint64_t>(a.rng[0]);
    off = static_cast<uint64_t>(a.rng[1]);
  }
  const uint64_t nctr = static_cast<uint64_t>((n + 3) / 4);
  const T* x1p = static_cast<const T*>(a.x1);
  const T* x0p = static_cast<const T*>(a.x0);
  T* outp = static_cast<T*>(a.out);
  const int64_t groups = (n + VEC - 1) / VEC;
  for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i0 = g * VEC;
    float x1[VEC], x0[VEC], ep[VEC], o[VEC];
    load_group<T, VEC>(x1p, i0, 0, n, aligned, x1);
    if (X0) load_group<T, VEC>(x0p, i0, 0, n, aligned, x0);
    else normals_group<VEC>(seed, off, i0, x0);
    if (S) normals_group<VEC>(seed, off + nctr, i0, ep);
    int64_t b = i0 / D, next = (b + 1) * D;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      while (i0 + k >= next && b + 1 < a.batch) {
        ++b;
        next += D;
      }
      float v = coef_at(a.a, b) * x1[k] + coef_at(a.b, b) * x0[k];
      if (S) v = v + coef_at(a.s, b) * ep[k];
      o[k] = v;
    }
    store_group<T, VEC>(outp, i0, 0, n, aligned, o);
  }
}

template <typename T, bool X0, bool S>
int launch(const AffineSampleArgs& a, cudaStream_t stream) {
  const int64_t n = a.batch * a.per_sample;
  const bool aligned = aligned16(a.x1) && aligned16(a.out) && (!X0 || aligned16(a.x0));
  const int64_t groups = (n + VecOf<T>::n - 1) / VecOf<T>::n;
  FF_LAUNCH(grid_for(groups), kThreads, 0, stream, sample_kernel<T, X0, S>)(a, aligned);
  return launch_status();
}

}  // namespace

int affine_path_sample(const AffineSampleArgs& a, uintptr_t stream) {
  if (a.batch < 0 || a.per_sample < 0 || !a.x1 || !a.out) return kErrArgument;
  if ((!a.x0 || a.s) && !a.rng) return kErrArgument;
  if (a.batch * a.per_sample == 0) return kOk;
  cudaStream_t s = as_stream(stream);
  return dispatch_float(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.x0) return a.s ? launch<T, true, true>(a, s) : launch<T, true, false>(a, s);
    return a.s ? launch<T, false, true>(a, s) : launch<T, false, false>(a, s);
  });
}

}  // namespace cuda
}  // namespace fastflow
