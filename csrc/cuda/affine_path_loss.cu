// affine_path_loss (CUDA): the target c x_1 + d x_0 + e eps is recomputed in registers
// (x_0 == nullptr: Gaussian stream 0, eps: stream 1), never stored. One pass:
//   loss[b] = sum_i mask_i (v_i - target_i)^2      (fp32 [B])
//   dv      = 2 grad_scale[b] mask (v - target)    (v's dtype, only when dv is given)
// x_1 and x_0 are v's dtype, or fp32 under a bf16 / fp16 v (a group of VEC of them is then
// two 16-byte loads where v's is one).
// Deterministic: each sample is cut into kChunk-element chunks; a group of G threads
// reduces a chunk in a fixed order, and a second small kernel adds the chunk partials of a
// sample in chunk order (skipped when every sample is one chunk). No atomics.
#include "cuda_common.cuh"

namespace fastflow {
namespace cuda {
namespace {

constexpr int64_t kChunk = kLossChunk;

template <typename TV, typename TX, bool X0, bool E, bool M, int VEC>
__device__ __forceinline__ void residual_group(const AffineLossArgs& a, int64_t i0, int64_t lo, int64_t hi,
                                               bool aligned, uint64_t seed, uint64_t off, uint64_t nctr,
                                               float c, float d, float e, float (&r)[VEC]) {
  float v[VEC], x1[VEC], x0[VEC], ep[VEC];
  load_group<TV, VEC>(static_cast<const TV*>(a.v), i0, lo, hi, aligned, v);
  load_group<TX, VEC>(static_cast<const TX*>(a.x1), i0, lo, hi, aligned, x1);
  if (X0) load_group<TX, VEC>(static_cast<const TX*>(a.x0), i0, lo, hi, aligned, x0);
  else normals_group<VEC>(seed, off, i0, x0);
  if (E) normals_group<VEC>(seed, off + nctr, i0, ep);
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    float t = c * x1[k] + d * x0[k];
    if (E) t = t + e * ep[k];
    float rk = v[k] - t;
    const int64_t i = i0 + k;
    if (M && i >= lo && i < hi) rk = rk * mask_at(a.mask, i);
    r[k] = (i >= lo && i < hi) ? rk : 0.0f;
  }
}

template <typename TV, typename TX, bool X0, bool E, bool M, bool GRAD, int G>
__global__ void __launch_bounds__(kThreads) loss_kernel(AffineLossArgs a, int64_t nch, bool aligned) {
  constexpr int VEC = VecOf<TV>::n;
  __shared__ float smem[32];
  const int64_t D = a.per_sample, n = a.batch * D;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (kThreads / G) + threadIdx.x / G;
  const int t = threadIdx.x % G;
  if (item >= a.batch * nch) return;  // only whole warps (G == 32) leave here
  uint64_t seed = 0, off = 0;
  if (!X0 || E) {
    seed = static_cast<uint64_t>(a.rng[0]);
    off = static_cast<uint64_t>(a.rng[1]);
  }
  const uint64_t nctr = static_cast<uint64_t>((n + 3) / 4);
  const int64_t b = item / nch, ch = item - b * nch;
  const int64_t lo = b * D + ch * kChunk, hi = min(b * D + D, lo + kChunk);
  const float c = coef_at(a.c, b), d = coef_at(a.d, b), e = coef_at(a.e, b);
  const float g2 = GRAD ? 2.0f * __ldg(a.grad_scale + b) : 0.0f;
  float acc = 0.0f;
  for (int64_t g = lo / VEC + t; g * VEC < hi; g += G) {
    float r[VEC];
    residual_group<TV, TX, X0, E, M, VEC>(a, g * VEC, lo, hi, aligned, seed, off, nctr, c, d, e, r);
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc += r[k] * r[k];
    if (GRAD) {
      float o[VEC];
#pragma unroll
      for (int k = 0; k < VEC; ++k) o[k] = g2 * r[k];
      store_group<TV, VEC>(static_cast<TV*>(a.dv), g * VEC, lo, hi, aligned, o);
    }
  }
  const float sum = group_sum<G>(acc, smem);
  if (t == 0) {
    if (nch == 1) a.loss[b] = sum;
    else a.workspace[item] = sum;
  }
}

// One warp a sample: lane k adds the partials k, k + 32, ... in double, then a fixed shuffle
// tree (the same order on every run); a thread a sample would add 65536 partials of a
// [1, 2^28] input one after another.
__global__ void finish_kernel(const float* part, float* loss, int64_t batch, int64_t nch) {
  const int64_t b = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (b >= batch) return;  // whole warps: blockDim.x is a multiple of 32
  double s = 0.0;
  for (int64_t c = lane; c < nch; c += 32) s += part[b * nch + c];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  if (lane == 0) loss[b] = static_cast<float>(s);
}

bool all_aligned(const AffineLossArgs& a) {
  return aligned16(a.v) && aligned16(a.x1) && (!a.x0 || aligned16(a.x0)) && (!a.dv || aligned16(a.dv));
}

template <typename TV, typename TX, bool X0, bool E, bool M, bool GRAD>
int run(const AffineLossArgs& a, cudaStream_t s) {
  const int64_t nch = (a.per_sample + kChunk - 1) / kChunk;
  const int64_t items = a.batch * nch;
  if (nch > 1 && !a.workspace) return kErrArgument;
  const bool aligned = all_aligned(a);
  const bool warp_items = a.per_sample <= 2048;  // one warp an item, else one block
  const int64_t blocks = warp_items ? (items + (kThreads / 32) - 1) / (kThreads / 32) : items;
  if (!grid_fits(blocks)) return kErrTooLarge;
  if (warp_items)
    FF_LAUNCH(static_cast<unsigned>(blocks), kThreads, 0, s, loss_kernel<TV, TX, X0, E, M, GRAD, 32>)(a, nch, aligned);
  else
    FF_LAUNCH(static_cast<unsigned>(blocks), kThreads, 0, s, loss_kernel<TV, TX, X0, E, M, GRAD, kThreads>)(a, nch, aligned);
  if (nch > 1)  // batch <= items / 2 warps here, so its grid fits too
    FF_LAUNCH(static_cast<unsigned>((a.batch + kThreads / 32 - 1) / (kThreads / 32)), kThreads, 0, s, finish_kernel)(
        a.workspace, a.loss, a.batch, nch);
  return launch_status();
}

__global__ void zero_kernel(float* p, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) p[i] = 0.0f;
}

}  // namespace

int affine_path_loss(const AffineLossArgs& a, uintptr_t stream) {
  if (int st = check_args(a)) return st;
  if (a.batch == 0) return kOk;
  if (a.per_sample == 0) {
    FF_LAUNCH(static_cast<unsigned>((a.batch + kThreads - 1) / kThreads), kThreads, 0, as_stream(stream), zero_kernel)(
        a.loss, a.batch);
    return launch_status();
  }
  return dispatch_float_pair(a.dtype, a.x_dtype, [&](auto tv, auto tx) {
    return dispatch_flags([&](auto x0, auto e, auto m, auto g) {
      return run<decltype(tv), decltype(tx), decltype(x0)::value, decltype(e)::value, decltype(m)::value,
                 decltype(g)::value>(a, as_stream(stream));
    }, a.x0 != nullptr, a.e != nullptr, a.mask.ptr != nullptr, a.dv != nullptr);
  });
}

}  // namespace cuda
}  // namespace fastflow
