// step_combine (CUDA): x_next = A x + B p + C q + N z in one pass, 16-byte groups
// (FORMULAS.md section 3). z = noise, or Gaussian stream 0 (counter offset + i / 4).
// out may alias x (each group is read before it is written, by the same thread). p and q are
// x's dtype, or bf16 / fp16 beside an fp32 x (a group is VEC of the narrower type: x's then
// takes two 16-byte loads).
#include "cuda_common.cuh"

namespace fastflow {
namespace cuda {
namespace {

template <typename T, typename TP, bool Q, bool NZ, bool GIVEN>
__global__ void __launch_bounds__(kThreads) step_kernel(StepCombineArgs a, bool aligned) {
  constexpr int VEC = VecOf<TP>::n;  // (TP is T or narrower)
  const int64_t D = a.per_sample, n = a.batch * D;
  uint64_t seed = 0, off = 0;
  if (NZ && !GIVEN) {
    seed = static_cast<uint64_t>(a.rng[0]);
    off = static_cast<uint64_t>(a.rng[1]);
  }
  const int64_t groups = (n + VEC - 1) / VEC;
  for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i0 = g * VEC;
    float x[VEC], p[VEC], q[VEC], z[VEC], o[VEC];
    load_group<T, VEC>(static_cast<const T*>(a.x), i0, 0, n, aligned, x);
    load_group<TP, VEC>(static_cast<const TP*>(a.p), i0, 0, n, aligned, p);
    if (Q) load_group<TP, VEC>(static_cast<const TP*>(a.q), i0, 0, n, aligned, q);
    if (NZ) {
      if (GIVEN) load_group<T, VEC>(static_cast<const T*>(a.noise), i0, 0, n, aligned, z);
      else normals_group<VEC>(seed, off, i0, z);
    }
    int64_t b = i0 / D, next = (b + 1) * D;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      while (i0 + k >= next && b + 1 < a.batch) {
        ++b;
        next += D;
      }
      float y = coef_at(a.A, b) * x[k] + coef_at(a.B, b) * p[k];
      if (Q) y = y + coef_at(a.C, b) * q[k];
      if (NZ) y = y + coef_at(a.N, b) * z[k];
      o[k] = y;
    }
    store_group<T, VEC>(static_cast<T*>(a.out), i0, 0, n, aligned, o);
  }
}

template <typename T, typename TP, bool Q, bool NZ, bool GIVEN>
int launch(const StepCombineArgs& a, cudaStream_t stream) {
  const int64_t n = a.batch * a.per_sample;
  const bool aligned = aligned16(a.x) && aligned16(a.p) && aligned16(a.out) && (!Q || aligned16(a.q)) &&
                       (!GIVEN || aligned16(a.noise));
  const unsigned grid = grid_for((n + VecOf<TP>::n - 1) / VecOf<TP>::n);
  FF_LAUNCH(grid, kThreads, 0, stream, step_kernel<T, TP, Q, NZ, GIVEN>)(a, aligned);
  return launch_status();
}

template <typename T, typename TP>
int pick(const StepCombineArgs& a, cudaStream_t s) {
  const bool q = a.q != nullptr, nz = a.N != nullptr, given = a.noise != nullptr;
  if (q) {
    if (!nz) return launch<T, TP, true, false, false>(a, s);
    return given ? launch<T, TP, true, true, true>(a, s) : launch<T, TP, true, true, false>(a, s);
  }
  if (!nz) return launch<T, TP, false, false, false>(a, s);
  return given ? launch<T, TP, false, true, true>(a, s) : launch<T, TP, false, true, false>(a, s);
}

}  // namespace

int step_combine(const StepCombineArgs& a, uintptr_t stream) {
  if (a.batch < 0 || a.per_sample < 0 || !a.x || !a.p || !a.out) return kErrArgument;
  if (a.N && !a.noise && !a.rng) return kErrArgument;
  if (a.coef_stride != 1) return kErrArgument;  // scalar coefficients live in host memory
  if (a.batch * a.per_sample == 0) return kOk;
  return dispatch_float_pair(a.p_dtype, a.dtype, [&](auto tp, auto tx) {
    return pick<decltype(tx), decltype(tp)>(a, as_stream(stream));
  });
}

}  // namespace cuda
}  // namespace fastflow
