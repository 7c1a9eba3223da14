// fastflow CUDA backend: helpers shared by csrc/cuda/<op>.cu.
//
// Kernels read (seed, offset) from the device pointer `rng` (no host sync), take the
// stream from Python as an integer, use 64-bit indices, 128-bit loads where the pointers
// are 16-byte aligned, and fixed-order reductions (no atomics), so results never depend
// on scheduling.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastflow/common.h"
#include "fastflow/math.h"
#include "fastflow/ops.h"
#include "fastflow/philox.h"

namespace fastflow {
namespace cuda {

constexpr int kThreads = 256;
// Elements per work item of affine_path_loss (one block, or one warp for short samples): small
// enough that a 128 x 3 x 64 x 64 batch makes 384 blocks, about 3 per SM. The partials of a
// sample that spans chunks go through a workspace (affine_path_loss_workspace).
constexpr int64_t kLossChunk = 4096;

inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// FF_LAUNCH(grid, block, smem, stream, kernel<...>)(args...) is kernel<<<grid, block, smem, stream>>>(args...),
// spelt so that the tests' CUDA emulator (csrc/cuda/emulator, which defines it) compiles it too.
#ifndef FF_CUDA_EMULATOR
#define FF_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#endif

int sm_count();  // of the current device (cached per device)

inline unsigned grid_for(int64_t items, int threads_per_item_group = kThreads, int per_sm = 32) {
  int64_t blocks = (items + threads_per_item_group - 1) / threads_per_item_group;
  int64_t cap = static_cast<int64_t>(sm_count()) * per_sm;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

// kOk, or kErrCuda with the runtime's error kept for last_error() (a launch error, or an earlier
// asynchronous one of any CUDA work on this thread that the launch surfaced).
void record_error(cudaError_t e);
inline int launch_status() {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return kOk;
  record_error(e);
  return kErrCuda;
}

// gridDim.x takes at most 2^31 - 1 blocks: launchers that size a grid by rows check it first,
// so a huge input is refused (kErrTooLarge) instead of running a wrapped, silently short grid.
constexpr int64_t kMaxBlocks = 2147483647;
inline bool grid_fits(int64_t blocks) { return blocks <= kMaxBlocks; }

// Blocks of the row kernels (row losses, jump step): S > 1 chunks of every row a block each,
// else a warp a row for short rows (G == 32, kThreads / 32 rows a block) or a block a row.
inline int64_t row_blocks(int64_t N, int64_t S, int G) {
  return S > 1 ? N * S : G == 32 ? (N + kThreads / 32 - 1) / (kThreads / 32) : N;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---------------------------------------------------------------- vector groups
// A group is VEC = 16 / sizeof(T) consecutive elements starting at a multiple of VEC.
template <typename T> struct VecOf { static constexpr int n = 16 / static_cast<int>(sizeof(T)); };

template <typename T, int VEC> struct alignas(16) Pack { T v[VEC]; };

// out[k] = p[i0 + k] for lo <= i0 + k < hi (0 elsewhere); one 16-byte load when the group
// lies inside [lo, hi) and p is aligned.
template <typename T, int VEC>
__device__ __forceinline__ void load_group(const T* p, int64_t i0, int64_t lo, int64_t hi, bool aligned,
                                           float (&out)[VEC]) {
  if (aligned && i0 >= lo && i0 + VEC <= hi) {
    Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(p + i0);
#pragma unroll
    for (int k = 0; k < VEC; ++k) out[k] = Elem<T>::to_f32(pk.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      int64_t i = i0 + k;
      out[k] = (i >= lo && i < hi) ? ld(p, i) : 0.0f;
    }
  }
}

template <typename T, int VEC>
__device__ __forceinline__ void store_group(T* p, int64_t i0, int64_t lo, int64_t hi, bool aligned,
                                            const float (&v)[VEC]) {
  if (aligned && i0 >= lo && i0 + VEC <= hi) {
    Pack<T, VEC> pk;
#pragma unroll
    for (int k = 0; k < VEC; ++k) pk.v[k] = Elem<T>::from_f32(v[k]);
    *reinterpret_cast<Pack<T, VEC>*>(p + i0) = pk;
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      int64_t i = i0 + k;
      if (i >= lo && i < hi) st(p, i, v[k]);
    }
  }
}

// Gaussians of elements i0 .. i0 + VEC - 1 (i0 a multiple of 4) of the stream at `base`.
template <int VEC>
__device__ __forceinline__ void normals_group(uint64_t seed, uint64_t base, int64_t i0, float (&out)[VEC]) {
#pragma unroll
  for (int q = 0; q < VEC / 4; ++q) normal4(seed, base + static_cast<uint64_t>(i0 / 4 + q), &out[4 * q]);
}

__device__ __forceinline__ float mask_at(const MaskDesc& m, int64_t i) {
  int64_t idx = m.inner == 1 ? i : i / m.inner;
  if (idx >= m.period) idx %= m.period;
  return m.ptr[idx] ? 1.0f : 0.0f;
}

// A per-sample coefficient (null: 0).
__device__ __forceinline__ float coef_at(const float* p, int64_t b) { return p ? __ldg(p + b) : 0.0f; }

// ---------------------------------------------------------------- reductions
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over a group of G threads (G = 32: a warp; G = blockDim.x: the block). Every thread
// of the group gets the result. `smem` holds 32 floats; fixed order, deterministic.
template <int G>
__device__ __forceinline__ float group_sum(float v, float* smem) {
  v = warp_sum(v);
  if (G == 32) return v;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  float t = lane < (G >> 5) ? smem[lane] : 0.0f;
  return warp_sum(t);
}

// (max, sum exp(x - max)) pairs, merged; -inf maxima contribute nothing, NaN propagates.
struct MaxSum {
  float m, s;
};

// The device that holds p (the current one if CUDA cannot say): launchers size their row split
// for the logits' device, as Python sized the workspace (row_split(rows, V, tensor.device)).
inline int device_of(const void* p) {
  cudaPointerAttributes attr;
  const cudaError_t e = cudaPointerGetAttributes(&attr, p);
  if (e == cudaSuccess && attr.type == cudaMemoryTypeDevice) return attr.device;
  if (e != cudaSuccess) cudaGetLastError();  // clear the failed query's error (and leave any other)
  int dev = 0;
  cudaGetDevice(&dev);
  return dev;
}

// 1 / sum of a row's (max, sum); NaN for a +inf max (torch.softmax of such a row is all NaN)
__device__ __forceinline__ float inv_sum(MaxSum st) { return st.m == INFINITY ? NAN : 1.0f / st.s; }

__device__ __forceinline__ MaxSum merge_ms(MaxSum a, MaxSum b) {
  if (a.m != a.m || a.s != a.s) return a;
  if (b.m != b.m || b.s != b.s) return b;
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return MaxSum{m, 0.0f};
  if (m == INFINITY) return MaxSum{m, 1.0f};  // a +inf logit (and no NaN): logsumexp +inf
  const float s = (a.m == -INFINITY ? 0.0f : a.s * expf(a.m - m)) + (b.m == -INFINITY ? 0.0f : b.s * expf(b.m - m));
  return MaxSum{m, s};
}

// argmax candidates: torch.argmax order (NaN is largest; ties keep the lowest index)
struct ArgBest {
  float v;
  int64_t j;
};

__device__ __forceinline__ ArgBest arg_init() { return ArgBest{-INFINITY, INT64_MAX}; }

__device__ __forceinline__ bool arg_better(const ArgBest& a, const ArgBest& b) {
  const bool an = a.v != a.v, bn = b.v != b.v;
  if (an || bn) return an && (!bn || a.j < b.j);
  return a.v > b.v || (a.v == b.v && a.j < b.j);
}

__device__ __forceinline__ ArgBest merge_arg(const ArgBest& a, const ArgBest& b) { return arg_better(b, a) ? b : a; }

__device__ __forceinline__ MaxSum shfl_xor(MaxSum v, int o) {
  return MaxSum{__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)};
}
__device__ __forceinline__ ArgBest shfl_xor(ArgBest v, int o) {
  return ArgBest{__shfl_xor_sync(0xffffffffu, v.v, o),
                 static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(v.j), o))};
}
__device__ __forceinline__ MaxSum merge_any(MaxSum a, MaxSum b) { return merge_ms(a, b); }
__device__ __forceinline__ ArgBest merge_any(ArgBest a, ArgBest b) { return merge_arg(a, b); }

// Reduce over a group of G threads (G = 32: a warp; G = blockDim.x: the whole block); every
// thread of the group gets the result. The merge order is fixed (butterfly within warps,
// then warps in order), so the result is deterministic. smem: 32 entries of V.
template <int G, typename V>
__device__ __forceinline__ V group_reduce(V v, V* smem) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = merge_any(v, shfl_xor(v, o));
  if (G == 32) return v;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  V t = smem[0];
#pragma unroll 1
  for (int w = 1; w < (G >> 5); ++w) t = merge_any(t, smem[w]);
  return t;
}

// Threads per row of the row kernels, by vocabulary size.
inline int row_threads(int64_t vocab) { return vocab <= 2048 ? 32 : (vocab <= 16384 ? 256 : 512); }

}  // namespace cuda
}  // namespace fastflow
