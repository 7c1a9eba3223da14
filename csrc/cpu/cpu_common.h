// fastflow CPU backend: helpers shared by csrc/cpu/<op>.cpp.
//
// Each op file is compiled once per instruction-set variant (FF_CPU_NS = baseline, avx2, avx512);
// dispatch.cpp picks one at run time. Inner loops are written to auto-vectorise: the
// transcendental functions are fastflow::fm's branch-free versions, reductions keep
// kLanes explicit partial sums (so results do not depend on the vector width or thread
// count), and noise is generated per sub-block into small stack buffers that stay in L1.
#pragma once

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include "fastflow/common.h"
#include "fastflow/math.h"
#include "fastflow/ops.h"
#include "fastflow/philox.h"

#ifndef FF_CPU_NS
#define FF_CPU_NS baseline
#endif

#include "philox_simd.h"

namespace fastflow {
namespace cpu {
namespace FF_CPU_NS {


constexpr int64_t kSub = 2048;       // elements per sub-block (a multiple of 4)
constexpr int kLanes = 16;           // explicit partial sums of reductions
// Lanes of max / argmax reductions: GCC 12 turns a 16-lane select-max into code 8x slower
// than the 32-lane one (0.40 vs 0.05 ns an element, AVX-512 and AVX2 alike).
constexpr int kMaxLanes = 32;
constexpr int64_t kParallelMin = 1 << 14;  // below this many elements, stay on one thread

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Counter-major scratch of philox_soa: room for a sub-block's counters (kSub + 8 elements,
// any alignment) rounded up to whole SIMD groups.
constexpr int64_t kSoaCap =
    ((kSub + 8) / 4 + simd::kPhiloxGroup - 1) / simd::kPhiloxGroup * simd::kPhiloxGroup;
struct alignas(64) SoaWords {
  uint32_t w[4][kSoaCap];
};

// Words of philox(seed, c0 + k) for k < count <= kSoaCap into w[4 k .. 4 k + 3].
inline void philox_words(uint64_t seed, uint64_t c0, int64_t count, uint32_t* w) {
  SoaWords t;
  simd::philox_soa(seed, c0, count, &t.w[0][0], kSoaCap);
  for (int64_t k = 0; k < count; ++k) {
    w[4 * k + 0] = t.w[0][k];
    w[4 * k + 1] = t.w[1][k];
    w[4 * k + 2] = t.w[2][k];
    w[4 * k + 3] = t.w[3][k];
  }
}

// Gaussians of counters c0 .. c0 + count - 1 (count <= kSoaCap) into out[4 count]: Box-Muller
// of words (0, 1) and (2, 3) of each counter, computed counter-major so the loop vectorises.
inline void normals_block(uint64_t seed, uint64_t c0, int64_t count, float* out) {
  SoaWords t;
  simd::philox_soa(seed, c0, count, &t.w[0][0], kSoaCap);
  for (int64_t k = 0; k < count; ++k) {
    float n0, n1, n2, n3;
    uniform_pair_to_normal(uint_to_uniform(t.w[0][k]), uint_to_uniform(t.w[1][k]), &n0, &n1);
    uniform_pair_to_normal(uint_to_uniform(t.w[2][k]), uint_to_uniform(t.w[3][k]), &n2, &n3);
    out[4 * k + 0] = n0;
    out[4 * k + 1] = n1;
    out[4 * k + 2] = n2;
    out[4 * k + 3] = n3;
  }
}

// Scratch for one sub-block of a stream (kSub elements, any alignment).
struct alignas(64) Scratch {
  float f[kSub + 8];
};
struct alignas(64) WordScratch {
  uint32_t w[kSub + 8];
};

// Gaussian element i (s <= i < e, e - s <= kSub) of the stream based at counter `base`:
// returns p with p[i - s] the value.
inline const float* normals_range(uint64_t seed, uint64_t base, int64_t s, int64_t e, Scratch& tmp) {
  int64_t c0 = s >> 2, c1 = (e + 3) >> 2;
  normals_block(seed, base + static_cast<uint64_t>(c0), c1 - c0, tmp.f);
  return tmp.f + (s - 4 * c0);
}

inline const uint32_t* words_range(uint64_t seed, uint64_t base, int64_t s, int64_t e, WordScratch& tmp) {
  int64_t c0 = s >> 2, c1 = (e + 3) >> 2;
  philox_words(seed, base + static_cast<uint64_t>(c0), c1 - c0, tmp.w);
  return tmp.w + (s - 4 * c0);
}

// m[j] = mask element s + j as 0 / 1 (s <= i < e).
inline void mask_range(const MaskDesc& mk, int64_t s, int64_t e, float* m) {
  if (mk.inner == 1 && mk.period >= e) {
    const uint8_t* p = mk.ptr + s;
    for (int64_t j = 0; j < e - s; ++j) m[j] = p[j] ? 1.0f : 0.0f;
    return;
  }
  int64_t i = s;
  while (i < e) {
    int64_t q = i / mk.inner, r = i - q * mk.inner;
    int64_t idx = q % mk.period;
    if (mk.inner == 1) {
      int64_t run = std::min(e - i, mk.period - idx);
      const uint8_t* p = mk.ptr + idx;
      for (int64_t j = 0; j < run; ++j) m[i - s + j] = p[j] ? 1.0f : 0.0f;
      i += run;
    } else {
      int64_t run = std::min(e - i, mk.inner - r);
      float val = mk.ptr[idx] ? 1.0f : 0.0f;
      for (int64_t j = 0; j < run; ++j) m[i - s + j] = val;
      i += run;
    }
  }
}

// Ops that draw Gaussians consume them in pieces of kNoisePiece elements (one AVX-512 Philox
// group): the memory streams then pause only briefly, which the hardware prefetcher bridges,
// where over a whole sub-block compute and memory took turns (128x3x64x64 path sample from
// cold memory, 2 threads: 1.17 -> 0.85 ms; 1 thread: 2.24 -> 1.64 ms).
constexpr int64_t kNoisePiece = 256;

// Calls f(s, e) for the block-aligned pieces of [lo, hi) (block divides kSub).
template <class F> inline void for_subblocks(int64_t lo, int64_t hi, F&& f, int64_t block = kSub) {
  int64_t s = lo;
  while (s < hi) {
    int64_t e = std::min(hi, (s / block + 1) * block);
    f(s, e);
    s = e;
  }
}

// Calls f(b, s, e) for the per-sample segments of [lo, hi) (sample b owns [b D, (b + 1) D)).
template <class F> inline void for_segments(int64_t lo, int64_t hi, int64_t D, F&& f) {
  int64_t b = lo / D;
  int64_t s = lo;
  while (s < hi) {
    int64_t e = std::min(hi, (b + 1) * D);
    f(b, s, e);
    s = e;
    ++b;
  }
}

// Element-wise ops: f(s, e) over the sub-blocks of [0, n), in parallel.
template <class F> inline void parallel_subblocks(int64_t n, F&& f) {
  int64_t nsub = (n + kSub - 1) / kSub;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t k = 0; k < nsub; ++k) f(k * kSub, std::min(n, (k + 1) * kSub));
}

inline float coef(const float* p, int64_t b) { return p ? p[b] : 0.0f; }

// ------------------------------------------------------------------ fp16 in blocks
// fp32 copies of n elements of a storage type, and back. For fp16 the AVX2 / AVX-512 builds use
// the F16C instructions: GCC 12 cannot vectorise them from scalar code, and the bit-exact
// conversion of common.h, which it does vectorise, costs 3x (load) to 8x (store) more per
// element. Both round to nearest even; they differ only in the payload of a NaN.
template <typename T> inline void load_f32(const T* p, int64_t n, float* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = ld(p, j);
}
template <typename T> inline void store_f32(const float* v, int64_t n, T* p) {
  for (int64_t j = 0; j < n; ++j) st(p, j, v[j]);
}
#if defined(__F16C__)
template <> inline void load_f32<f16>(const f16* p, int64_t n, float* out) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(out + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + j))));
  for (; j < n; ++j) out[j] = ld(p, j);
}
template <> inline void store_f32<f16>(const float* v, int64_t n, f16* p) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + j), _mm256_cvtps_ph(_mm256_loadu_ps(v + j), _MM_FROUND_TO_NEAREST_INT));
  for (; j < n; ++j) st(p, j, v[j]);
}
#endif

// Runs an element-wise body f(o, n, out, in...) over [0, len). fp16 operands arrive as fp32
// copies of at most kStage elements from offset o (null stays null; fp32 operands beside them,
// in a mixed-dtype call, are read or written in place from o) and an fp16 `out` as fp32 scratch,
// stored back after each call, so the body's loop is the fp32 one; every other type passes
// straight through (o = 0, n = len). All inputs of a piece are read before `out` is written,
// so out may alias an input.
constexpr int64_t kStage = 512;
template <typename T, class F, class... In>
inline void staged(int64_t len, T* out, F&& f, const In*... in) {
  constexpr bool out_f16 = std::is_same<T, f16>::value;
  if constexpr (!out_f16 && !(std::is_same<In, f16>::value || ...)) {
    f(int64_t{0}, len, out, in...);
  } else {
    alignas(64) float ib[sizeof...(In) > 0 ? sizeof...(In) : 1][kStage];
    alignas(64) float ob[kStage];
    for (int64_t o = 0; o < len; o += kStage) {
      const int64_t n = std::min(kStage, len - o);
      int k = 0;
      auto copy = [&](auto* p) -> const float* {  // an fp16 input staged, an fp32 one read in place
        float* b = ib[k++];
        if (!p) return nullptr;
        if constexpr (std::is_same<std::remove_const_t<std::remove_pointer_t<decltype(p)>>, float>::value) {
          return p + o;
        } else {
          load_f32(p + o, n, b);
          return b;
        }
      };
      std::tuple<decltype(copy(in))...> args{copy(in)...};  // braces: evaluated in order
      if constexpr (out_f16) {
        std::apply([&](auto... p) { f(o, n, out ? ob : nullptr, p...); }, args);
        if (out) store_f32(ob, n, out + o);
      } else {  // an fp32 out beside fp16 inputs (a mixed-dtype call): written in place
        std::apply([&](auto... p) { f(o, n, out ? out + o : nullptr, p...); }, args);
      }
    }
  }
}

}  // namespace FF_CPU_NS
}  // namespace cpu
}  // namespace fastflow
