// fastflow: Philox-4x32-10, the one random stream of every backend (FORMULAS.md section 6).
//
// Key (lo32(seed), hi32(seed)), counter (lo32(c), hi32(c), 0, 0), ten rounds of
//   c0' = umulhi(0xCD9E8D57, c2) ^ c1 ^ k0    c1' = 0xCD9E8D57 * c2
//   c2' = umulhi(0xD2511F53, c0) ^ c3 ^ k1    c3' = 0xD2511F53 * c0
//   k0 += 0x9E3779B9, k1 += 0xBB67AE85
// exactly as Triton's tl.randint4x and fastflow/reference/philox.py. Element i of an
// element-wise stream uses word i % 4 of philox(seed, offset + i / 4).
#pragma once

#include <cstdint>

#include "common.h"
#include "math.h"

namespace fastflow {

struct Words4 {
  uint32_t w0, w1, w2, w3;
};

FF_HD void mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
#if FF_ON_DEVICE
  *hi = __umulhi(a, b);
  *lo = a * b;
#else
  uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
#endif
}

FF_HD Words4 philox4x32(uint64_t seed, uint64_t counter) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0u, c3 = 0u;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    uint32_t hi_b, lo_b, hi_a, lo_a;
    mulhilo(0xCD9E8D57u, c2, &hi_b, &lo_b);
    mulhilo(0xD2511F53u, c0, &hi_a, &lo_a);
    uint32_t n0 = hi_b ^ c1 ^ k0;
    uint32_t n2 = hi_a ^ c3 ^ k1;
    c0 = n0;
    c1 = lo_b;
    c2 = n2;
    c3 = lo_a;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Words4{c0, c1, c2, c3};
}

// tl.rand's map: bitcast to int32, ~x where negative, times 4.6566127342e-10 (fp32), in [0, 1).
FF_HD float uint_to_uniform(uint32_t w) {
  int32_t x = static_cast<int32_t>(w);
  x = x < 0 ? ~x : x;
  return static_cast<float>(x) * 4.6566127342e-10f;
}

// (w + 0.5) * 2^-32 in fp32 (w rounded to fp32 first, as the reference): never 0.
FF_HD float uint_to_open_uniform(uint32_t w) {
  return (static_cast<float>(w) + 0.5f) * 2.3283064365386963e-10f;
}

// Exp(1) race noise from an open uniform: -log1p(-u).
FF_HD float exp1_from_uniform(float u) { return -fm::log1p(-u); }

// The race's Exp(1) noise: u held below 1. The top 128 words round to u = 1 in fp32, whose E is
// infinite and its key's score -inf: a row of one finite key would have lost its only token
// (probability 2^-25 a key), and every finite key must keep a finite score.
constexpr float kBelowOne = 0x1.fffffep-1f;
FF_HD float race_exp1(float u) { return exp1_from_uniform(u < kBelowOne ? u : kBelowOne); }

// Box-Muller as Triton's pair_uniform_to_normal (u1 clamped to >= 1e-7).
FF_HD void uniform_pair_to_normal(float u1, float u2, float* n1, float* n2) {
  u1 = u1 < 1.0e-7f ? 1.0e-7f : u1;
  float th = 6.2831854820251465f * u2;
  float r = fm::sqrt(-2.0f * fm::log_positive(u1));
  float s, c;
  fm::sincos(th, &s, &c);
  *n1 = r * c;
  *n2 = r * s;
}

// The four Gaussians of counter `counter` (tl.randn4x).
FF_HD void normal4(uint64_t seed, uint64_t counter, float* out) {
  Words4 w = philox4x32(seed, counter);
  uniform_pair_to_normal(uint_to_uniform(w.w0), uint_to_uniform(w.w1), &out[0], &out[1]);
  uniform_pair_to_normal(uint_to_uniform(w.w2), uint_to_uniform(w.w3), &out[2], &out[3]);
}

FF_HD uint32_t word_of(const Words4& w, int k) {
  return k == 0 ? w.w0 : (k == 1 ? w.w1 : (k == 2 ? w.w2 : w.w3));
}

}  // namespace fastflow
