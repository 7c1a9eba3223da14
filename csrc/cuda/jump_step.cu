// jump_step (CUDA): one CTMC Euler step over the vocabulary for every row (FORMULAS.md
// section 5; fastflow/reference/jump_step.py is the spec, random layout included; the
// per-row logic is shared with the CPU in fastflow/jump_common.h).
//
// G threads per row: all compute the row's jump test (identical, so the group agrees);
// a row that cannot jump writes its token and its logits are never read. Otherwise the
// group races over the row (one Philox call per 4 elements, 8- or 16-byte loads) and
// reduces the argmax in a fixed order (lowest index on ties, as torch.argmax). A quad whose
// largest key cannot beat the thread's best score even with the largest possible generated
// noise skips its Philox call and logarithms (exact). Few long rows are split into chunks
// over several blocks, with a finishing kernel that merges the chunk winners in order.
#include "cuda_common.cuh"
#include "fastflow/jump_common.h"

namespace fastflow {
namespace cuda {
namespace {

template <typename T> struct alignas(4 * sizeof(T)) Quad { T v[4]; };

struct Stream {
  uint64_t seed, off, n_tok;
};

// Race over keys of row `row`, columns [lo, hi). KEY: 0 logits, 1 probabilities, 2 log p0
// (x_t excluded). Thread t of G takes quads t, t + G, ... of the row's global elements.
template <typename T, int KEY>
__device__ ArgBest race_range(const JumpStepArgs& a, const Stream& s, int64_t row, int64_t lo, int64_t hi,
                              int64_t xt, int t, int G, bool contiguous) {
  ArgBest best = arg_init();
  const int64_t V = a.vocab;
  const int64_t rb = row * V;  // global element index of the row's first element
  const T* z = static_cast<const T*>(a.logits) + row * a.row_stride;
  const float* noise = KEY == 2 ? a.noise_race_p0 : a.noise_race;
  const uint64_t base = s.off + static_cast<uint64_t>(a.rows) + (KEY == 2 ? s.n_tok : 0);
  const float temp = a.temperature;
  const int64_t q_end = (rb + hi + 3) / 4;
  for (int64_t q = (rb + lo) / 4 + t; q < q_end; q += G) {
    const int64_t e0 = 4 * q;
    const bool full = e0 >= rb + lo && e0 + 4 <= rb + hi;
    float key[4];
    if (KEY == 2) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t j = e0 + k - rb;
        key[k] = (j >= lo && j < hi) ? (j == xt ? -INFINITY : __ldg(a.logp0 + j)) : -INFINITY;
      }
    } else {
      float zv[4];
      if (full && contiguous) {
        Quad<T> pk = *reinterpret_cast<const Quad<T>*>(z + (e0 - rb));
#pragma unroll
        for (int k = 0; k < 4; ++k) zv[k] = Elem<T>::to_f32(pk.v[k]);
      } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int64_t j = e0 + k - rb;
          zv[k] = (j >= lo && j < hi) ? ld(z, j) : 0.0f;
        }
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) key[k] = (KEY == 1 ? logf(zv[k]) : zv[k]) / temp;
    }
    if (!noise) {
      bool skip = true;
#pragma unroll
      for (int k = 0; k < 4; ++k) skip = skip && (key[k] + kRaceGumbelMax < best.v);
      if (skip) continue;
    }
    float u[4];
    if (noise) {
      if (full && (reinterpret_cast<uintptr_t>(noise) & 15u) == 0) {
        float4 v = *reinterpret_cast<const float4*>(noise + e0);
        u[0] = v.x;
        u[1] = v.y;
        u[2] = v.z;
        u[3] = v.w;
      } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int64_t j = e0 + k - rb;
          u[k] = (j >= lo && j < hi) ? noise[e0 + k] : 0.5f;
        }
      }
    } else {
      Words4 w = philox4x32(s.seed, base + static_cast<uint64_t>(q));
      u[0] = uint_to_open_uniform(w.w0);
      u[1] = uint_to_open_uniform(w.w1);
      u[2] = uint_to_open_uniform(w.w2);
      u[3] = uint_to_open_uniform(w.w3);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t j = e0 + k - rb;
      if (j < lo || j >= hi) continue;
      const ArgBest c{key[k] - logf(race_exp1(u[k])), j};
      if (arg_better(c, best)) best = c;
    }
  }
  return best;
}

template <typename I>
__device__ __forceinline__ Stream stream_of(const JumpStepArgs& a) {
  Stream s{0, 0, static_cast<uint64_t>((a.rows * a.vocab + 3) / 4)};
  if (a.rng) {
    s.seed = static_cast<uint64_t>(a.rng[0]);
    s.off = static_cast<uint64_t>(a.rng[1]);
  }
  return s;
}

template <typename T, typename I, int G, int BLOCK>
__global__ void __launch_bounds__(BLOCK) jump_kernel(JumpStepArgs a, bool contiguous) {
  __shared__ ArgBest smem[32];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (BLOCK / G) + threadIdx.x / G;
  const int t = threadIdx.x % G;
  if (row >= a.rows) return;  // whole warps only (G == 32)
  const Stream s = stream_of<I>(a);
  const int64_t xt = static_cast<int64_t>(static_cast<const I*>(a.xt)[row]);
  I* out = static_cast<I*>(a.out);
  if (xt < 0 || xt >= a.vocab) {  // checked by fastflow.ops; never read out of bounds
    if (t == 0) out[row] = static_cast<I>(xt);
    return;
  }
  const JumpRow r = jump_row(a, s.seed, s.off, row, xt);
  if (!r.may_jump) {
    if (t == 0) out[row] = static_cast<I>(xt);
    return;
  }
  ArgBest b = a.probs ? race_range<T, 1>(a, s, row, 0, a.vocab, xt, t, G, contiguous)
                      : race_range<T, 0>(a, s, row, 0, a.vocab, xt, t, G, contiguous);
  b = group_reduce<G>(b, smem);
  const int choice = jump_choice(a, row, r, b.j);
  int64_t res = choice == kStay ? xt : b.j;
  if (choice == kTakeSource) {
    if (a.source == kSourceGeneral) {
      ArgBest b0 = race_range<T, 2>(a, s, row, 0, a.vocab, xt, t, G, contiguous);
      res = group_reduce<G>(b0, smem).j;
    } else {
      res = jump_source_token(a, r);
    }
  }
  if (!drawn(b.v)) res = kNoDraw;  // (every thread of the group holds the reduced b)
  if (t == 0) out[row] = static_cast<I>(res);
}

// split rows, pass 1: the winners of chunk c of row i (x_1 race, and the p0 race of a general
// source) into ws[4 (i S + c) + {0, 1, 2, 3}] (score, index bits, score, index bits)
template <typename T, typename I>
__global__ void __launch_bounds__(kThreads) split_race_kernel(JumpStepArgs a, int64_t S, int64_t chunk,
                                                              bool contiguous) {
  __shared__ ArgBest smem[32];
  const int64_t row = blockIdx.x / S, c = blockIdx.x % S;
  const Stream s = stream_of<I>(a);
  const int64_t xt = static_cast<int64_t>(static_cast<const I*>(a.xt)[row]);
  if (xt < 0 || xt >= a.vocab) return;
  const JumpRow r = jump_row(a, s.seed, s.off, row, xt);
  if (!r.may_jump) return;
  const int64_t lo = c * chunk, hi = min(a.vocab, lo + chunk);
  ArgBest b = a.probs ? race_range<T, 1>(a, s, row, lo, hi, xt, threadIdx.x, kThreads, contiguous)
                      : race_range<T, 0>(a, s, row, lo, hi, xt, threadIdx.x, kThreads, contiguous);
  b = group_reduce<kThreads>(b, smem);
  ArgBest b0 = arg_init();
  if (a.source == kSourceGeneral && !a.final_step) {
    b0 = race_range<T, 2>(a, s, row, lo, hi, xt, threadIdx.x, kThreads, contiguous);
    b0 = group_reduce<kThreads>(b0, smem);
  }
  if (threadIdx.x == 0) {
    float* w = a.workspace + 4 * (row * S + c);
    w[0] = b.v;
    w[1] = __int_as_float(static_cast<int>(b.j < INT32_MAX ? b.j : INT32_MAX));
    w[2] = b0.v;
    w[3] = __int_as_float(static_cast<int>(b0.j < INT32_MAX ? b0.j : INT32_MAX));
  }
}

// split rows, pass 2: one thread per row merges the chunk winners in chunk order and decides
template <typename T, typename I>
__global__ void split_finish_kernel(JumpStepArgs a, int64_t S) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (row >= a.rows) return;
  const Stream s = stream_of<I>(a);
  const int64_t xt = static_cast<int64_t>(static_cast<const I*>(a.xt)[row]);
  I* out = static_cast<I*>(a.out);
  if (xt < 0 || xt >= a.vocab) {
    out[row] = static_cast<I>(xt);
    return;
  }
  const JumpRow r = jump_row(a, s.seed, s.off, row, xt);
  if (!r.may_jump) {
    out[row] = static_cast<I>(xt);
    return;
  }
  ArgBest b = arg_init(), b0 = arg_init();
  for (int64_t c = 0; c < S; ++c) {
    const float* w = a.workspace + 4 * (row * S + c);
    b = merge_arg(b, ArgBest{w[0], static_cast<int64_t>(__float_as_int(w[1]))});
    b0 = merge_arg(b0, ArgBest{w[2], static_cast<int64_t>(__float_as_int(w[3]))});
  }
  const int choice = jump_choice(a, row, r, b.j);
  int64_t res = choice == kStay ? xt : b.j;
  if (choice == kTakeSource) res = a.source == kSourceGeneral ? b0.j : jump_source_token(a, r);
  out[row] = static_cast<I>(drawn(b.v) ? res : kNoDraw);
}

template <typename T, typename I>
int launch(const JumpStepArgs& a, cudaStream_t st) {
  const int64_t N = a.rows, V = a.vocab;
  const bool contiguous = a.row_stride == V && (reinterpret_cast<uintptr_t>(a.logits) % (4 * sizeof(T))) == 0;
  const int64_t S = row_split(N, V, device_of(a.logits));
  const int G = row_threads(V);
  const int64_t blocks = row_blocks(N, S, G);
  if (!grid_fits(blocks)) return kErrTooLarge;
  const unsigned grid = static_cast<unsigned>(blocks);
  if (S > 1) {
    if (!a.workspace) return kErrArgument;
    const int64_t chunk = (((V + S - 1) / S) + 15) / 16 * 16;
    FF_LAUNCH(grid, kThreads, 0, st, split_race_kernel<T, I>)(a, S, chunk, contiguous);
    FF_LAUNCH(static_cast<unsigned>((N + kThreads - 1) / kThreads), kThreads, 0, st, split_finish_kernel<T, I>)(a, S);
    return launch_status();
  }
  if (G == 32) {
    FF_LAUNCH(grid, kThreads, 0, st, jump_kernel<T, I, 32, kThreads>)(a, contiguous);
  } else if (G == 256) {
    FF_LAUNCH(grid, 256, 0, st, jump_kernel<T, I, 256, 256>)(a, contiguous);
  } else {
    FF_LAUNCH(grid, 512, 0, st, jump_kernel<T, I, 512, 512>)(a, contiguous);
  }
  return launch_status();
}

}  // namespace

int jump_step(const JumpStepArgs& a, uintptr_t stream) {
  if (a.rows < 0 || a.vocab <= 0 || !a.logits || !a.xt || !a.out || !a.h || !a.r1 || !a.r0)
    return kErrArgument;
  const bool need_rng = !a.noise_token || !a.noise_race ||
                        (a.source == kSourceGeneral && !a.final_step && !a.noise_race_p0);
  if (need_rng && !a.rng) return kErrArgument;
  if (a.source == kSourceGeneral && (!a.p0 || !a.logp0)) return kErrArgument;
  if (a.source < kSourceNone || a.source > kSourceGeneral) return kErrArgument;
  if (!(a.temperature > 0.0f)) return kErrArgument;
  if (a.vocab >= INT32_MAX) return kErrArgument;
  if (a.rows == 0) return kOk;
  return dispatch_float(a.dtype, [&](auto tf) {
    using T = decltype(tf);
    return dispatch_index(a.itype, [&](auto ti) { return launch<T, decltype(ti)>(a, as_stream(stream)); });
  });
}

}  // namespace cuda
}  // namespace fastflow
