// fastflow CUDA backend: cross_entropy and generalized_kl share these row kernels
// (FORMULAS.md section 4). G threads per row (a warp for short rows, a block for long
// ones): one streaming pass for (max, sum exp) with 16-byte loads, a fixed-order group
// reduction, the loss, then (if asked) one pass writing the gradient, the x_1 / x_t
// entries included (no second write). Few long rows: split into chunks over several
// blocks (stats kernel, then a gradient kernel that merges the chunk stats in order).
// An ignored row (x_1 == ignore_index) is never read: its loss is 0, its gradient zeros.
#pragma once

#include "cuda_common.cuh"

namespace fastflow {
namespace cuda {
namespace rowk {

struct RowMath {
  float loss, a, coef, g1, gt;
  int64_t i1, it;
  bool valid;
};

// Everything about a row but the bulk pass; z1 = z[x_1], zt = z[x_t] read before any write.
template <bool GKL>
__device__ __forceinline__ RowMath row_math(const RowLossArgs& a, int64_t row, MaxSum st, float z1, float zt) {
  RowMath r;
  const int64_t x1 = a.x1[row];
  r.valid = x1 != a.ignore_index;
  r.i1 = r.valid ? x1 : 0;
  r.it = GKL ? (r.valid ? a.xt[row] : 0) : -1;
  const float gs = a.grad_scale ? a.grad_scale[row] : 0.0f;
  const float jump = GKL ? a.jump[row] : 1.0f;
  r.coef = r.valid ? (GKL ? gs * jump : gs) : 0.0f;
  const bool bad = r.i1 < 0 || r.i1 >= a.vocab || (GKL && (r.it < 0 || r.it >= a.vocab));
  const float M = st.m, S = st.s;
  const float logS = logf(S);
  const float shift = M == -INFINITY ? 0.0f : M;
  const float inv = inv_sum(st);
  const float p1 = expf(z1 - shift) * inv;
  if (!GKL) {
    // (M - z1) + log S: (M + log S) - z1 would round log S away next to logits of 1e8 and more
    r.loss = r.valid ? (M > -INFINITY && M < INFINITY ? (M - z1) + logS : (M + logS) - z1) : 0.0f;
    r.a = 1.0f;
    r.g1 = (p1 - 1.0f) * r.coef;
    r.gt = r.g1;
  } else {
    const float off = a.xt[row] != x1 ? 1.0f : 0.0f;
    const float log_p1 = (z1 - M) - logS;
    const float pt = expf(zt - shift) * inv;
    r.loss = r.valid ? -jump * (pt - (1.0f - off) + (off != 0.0f ? log_p1 : 0.0f)) : 0.0f;  // 0 * -inf: 0
    r.a = pt + off;
    const bool same = r.it == r.i1;
    const float g_t = -(pt + off) * pt + pt + (same ? off : 0.0f);
    const float g_1 = -(pt + off) * p1 + off + (same ? pt : 0.0f);
    r.gt = -g_t * r.coef;
    r.g1 = -g_1 * r.coef;
  }
  if (bad && r.valid) r.loss = NAN;  // a token id outside [0, V): checked by fastflow.ops
  return r;
}

template <typename T, int VEC>
__device__ __forceinline__ void stats_range(const T* z, int64_t lo, int64_t hi, int t, int G, bool aligned,
                                            MaxSum& ms) {
  for (int64_t g = lo / VEC + t; g * VEC < hi; g += G) {
    float v[VEC];
    load_group<T, VEC>(z, g * VEC, lo, hi, aligned, v);
    float gm = -INFINITY;
#pragma unroll
    for (int k = 0; k < VEC; ++k)
      if (g * VEC + k >= lo && g * VEC + k < hi) gm = fmaxf(gm, v[k]);
    if (gm > ms.m) {
      ms.s = ms.s * expf(ms.m - gm);
      ms.m = gm;
    }
    const float sh = ms.m == -INFINITY || ms.m == INFINITY ? 0.0f : ms.m;
#pragma unroll
    for (int k = 0; k < VEC; ++k)
      if (g * VEC + k >= lo && g * VEC + k < hi) ms.s += expf(v[k] - sh);
  }
  // a +inf logit: (+inf, 1), logsumexp +inf as torch's (the loss +inf, as on the CPU); a NaN
  // logit made s NaN, and it stays
  if (ms.m == INFINITY) ms.s = ms.s != ms.s ? NAN : 1.0f;
}

template <typename T, int VEC>
__device__ __forceinline__ void grad_range(const T* z, T* gp, int64_t lo, int64_t hi, int t, int G, bool aligned,
                                           MaxSum st, const RowMath& r) {
  const float shift = st.m == -INFINITY ? 0.0f : st.m;
  const float inv = inv_sum(st);
  for (int64_t g = lo / VEC + t; g * VEC < hi; g += G) {
    float v[VEC], o[VEC];
    load_group<T, VEC>(z, g * VEC, lo, hi, aligned, v);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const int64_t j = g * VEC + k;
      float x = ((expf(v[k] - shift) * inv) * r.a) * r.coef;  // (ignored rows take zero_range)
      if (j == r.i1) x = r.g1;
      if (j == r.it) x = r.gt;
      o[k] = x;
    }
    store_group<T, VEC>(gp, g * VEC, lo, hi, aligned, o);
  }
}

// zeros into gp[lo, hi): the gradient of an ignored row, whose logits are never read
template <typename T, int VEC>
__device__ __forceinline__ void zero_range(T* gp, int64_t lo, int64_t hi, int t, int G, bool aligned) {
  float o[VEC];
#pragma unroll
  for (int k = 0; k < VEC; ++k) o[k] = 0.0f;
  for (int64_t g = lo / VEC + t; g * VEC < hi; g += G) store_group<T, VEC>(gp, g * VEC, lo, hi, aligned, o);
}

template <typename T, bool GKL, int G, int BLOCK>
__global__ void __launch_bounds__(BLOCK) row_kernel(RowLossArgs a, bool aligned) {
  constexpr int VEC = VecOf<T>::n;
  __shared__ MaxSum smem[32];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (BLOCK / G) + threadIdx.x / G;
  const int t = threadIdx.x % G;
  if (row >= a.rows) return;  // whole warps only (G == 32)
  const int64_t V = a.vocab;
  const T* z = static_cast<const T*>(a.logits) + row * a.row_stride;
  // z[x_1], z[x_t] before any thread of the row writes the gradient (which may alias z)
  const int64_t x1 = a.x1[row];
  const bool valid = x1 != a.ignore_index;
  if (!valid) {  // the row's group (a warp or the block) leaves together: no barrier is skipped
    if (t == 0) a.loss[row] = 0.0f;
    if (a.grad) zero_range<T, VEC>(static_cast<T*>(a.grad) + row * a.grad_stride, 0, V, t, G, aligned);
    return;
  }
  const int64_t i1 = x1 >= 0 && x1 < V ? x1 : 0;
  int64_t it = 0;
  if (GKL) {
    const int64_t xt = a.xt[row];
    it = xt >= 0 && xt < V ? xt : 0;
  }
  const float z1 = ld(z, i1), zt = GKL ? ld(z, it) : 0.0f;
  MaxSum ms{-INFINITY, 0.0f};
  stats_range<T, VEC>(z, 0, V, t, G, aligned, ms);
  ms = group_reduce<G>(ms, smem);
  // shuffles order no memory: every lane's reads of z (z_1, z_t included) before any lane
  // writes a gradient that may alias z (G == block: group_reduce's __syncthreads does it)
  if (G == 32) __syncwarp();
  const RowMath r = row_math<GKL>(a, row, ms, z1, zt);
  if (t == 0) a.loss[row] = r.loss;
  if (a.grad) grad_range<T, VEC>(z, static_cast<T*>(a.grad) + row * a.grad_stride, 0, V, t, G, aligned, ms, r);
}

// split rows, pass 1: (max, sum) of chunk c of row i into ws[2 (i S + c)]; z[x_1], z[x_t]
// into ws[2 N S + 2 i + {0, 1}] by the chunk that holds them
template <typename T, bool GKL>
__global__ void __launch_bounds__(kThreads) split_stats_kernel(RowLossArgs a, int64_t S, int64_t chunk, bool aligned) {
  constexpr int VEC = VecOf<T>::n;
  __shared__ MaxSum smem[32];
  const int64_t row = blockIdx.x / S, c = blockIdx.x % S;
  const int64_t lo = c * chunk, hi = min(a.vocab, lo + chunk);
  const T* z = static_cast<const T*>(a.logits) + row * a.row_stride;
  MaxSum ms{-INFINITY, 0.0f};
  const int64_t x1 = a.x1[row];
  const bool valid = x1 != a.ignore_index;
  if (valid) {  // an ignored row (the whole block) is not read: pass 2 gives it loss 0 and zeros
    stats_range<T, VEC>(z, lo, hi, threadIdx.x, kThreads, aligned, ms);
    ms = group_reduce<kThreads>(ms, smem);
  }
  if (threadIdx.x == 0) {
    float* ws = a.workspace;
    ws[2 * (row * S + c)] = ms.m;
    ws[2 * (row * S + c) + 1] = ms.s;
    const int64_t i1 = valid && x1 >= 0 && x1 < a.vocab ? x1 : 0;
    if (i1 >= lo && i1 < hi) ws[2 * a.rows * S + 2 * row] = valid ? ld(z, i1) : 0.0f;
    if (GKL) {
      const int64_t xt = a.xt[row];
      const int64_t it = valid && xt >= 0 && xt < a.vocab ? xt : 0;
      if (it >= lo && it < hi) ws[2 * a.rows * S + 2 * row + 1] = valid ? ld(z, it) : 0.0f;
    }
  }
}

// split rows, pass 2: merge the row's chunk stats in chunk order, loss (chunk 0), gradient of chunk c
template <typename T, bool GKL>
__global__ void __launch_bounds__(kThreads) split_grad_kernel(RowLossArgs a, int64_t S, int64_t chunk, bool aligned) {
  constexpr int VEC = VecOf<T>::n;
  const int64_t row = blockIdx.x / S, c = blockIdx.x % S;
  const float* ws = a.workspace;
  MaxSum ms{-INFINITY, 0.0f};
  for (int64_t k = 0; k < S; ++k) ms = merge_ms(ms, MaxSum{ws[2 * (row * S + k)], ws[2 * (row * S + k) + 1]});
  const float z1 = ws[2 * a.rows * S + 2 * row], zt = GKL ? ws[2 * a.rows * S + 2 * row + 1] : 0.0f;
  const RowMath r = row_math<GKL>(a, row, ms, z1, zt);
  if (c == 0 && threadIdx.x == 0) a.loss[row] = r.loss;
  if (!a.grad) return;
  const int64_t lo = c * chunk, hi = min(a.vocab, lo + chunk);
  T* gp = static_cast<T*>(a.grad) + row * a.grad_stride;
  if (!r.valid) return zero_range<T, VEC>(gp, lo, hi, threadIdx.x, kThreads, aligned);
  const T* z = static_cast<const T*>(a.logits) + row * a.row_stride;
  grad_range<T, VEC>(z, gp, lo, hi, threadIdx.x, kThreads, aligned, ms, r);
}

template <typename T, bool GKL>
int launch(const RowLossArgs& a, cudaStream_t s) {
  const int64_t N = a.rows, V = a.vocab;
  const int64_t S = row_split(N, V, device_of(a.logits));
  const bool aligned = aligned16(a.logits) && (a.row_stride * static_cast<int64_t>(sizeof(T))) % 16 == 0 &&
                       (!a.grad || (aligned16(a.grad) && (a.grad_stride * static_cast<int64_t>(sizeof(T))) % 16 == 0));
  const int G = row_threads(V);
  const int64_t blocks = row_blocks(N, S, G);
  if (!grid_fits(blocks)) return kErrTooLarge;
  const unsigned grid = static_cast<unsigned>(blocks);
  if (S > 1) {
    if (!a.workspace) return kErrArgument;
    const int64_t chunk = (((V + S - 1) / S) + 15) / 16 * 16;
    FF_LAUNCH(grid, kThreads, 0, s, split_stats_kernel<T, GKL>)(a, S, chunk, aligned);
    FF_LAUNCH(grid, kThreads, 0, s, split_grad_kernel<T, GKL>)(a, S, chunk, aligned);
    return launch_status();
  }
  if (G == 32) {
    FF_LAUNCH(grid, kThreads, 0, s, row_kernel<T, GKL, 32, kThreads>)(a, aligned);
  } else if (G == 256) {
    FF_LAUNCH(grid, 256, 0, s, row_kernel<T, GKL, 256, 256>)(a, aligned);
  } else {
    FF_LAUNCH(grid, 512, 0, s, row_kernel<T, GKL, 512, 512>)(a, aligned);
  }
  return launch_status();
}

inline int check(const RowLossArgs& a, bool gkl) {
  if (a.rows < 0 || a.vocab <= 0 || !a.logits || !a.x1 || !a.loss) return kErrArgument;
  if (gkl && (!a.xt || !a.jump)) return kErrArgument;
  if (a.grad && !a.grad_scale) return kErrArgument;
  return kOk;
}

}  // namespace rowk
}  // namespace cuda
}  // namespace fastflow
