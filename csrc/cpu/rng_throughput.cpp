// rng_throughput (CPU): the kernels' random-number generators alone, for the benchmark's
// random-number bound (benchmarks/harness.py): n uint32 words (kind 0, the jump race's) or
// Gaussians (kind 2, the affine path's) drawn per sub-block into scratch that stays in L1,
// on as many threads as the kernels use. Nothing goes to memory; a checksum of every value
// keeps the work from being optimised away (and costs what a kernel's use of them would).
#include <cstring>

#include "cpu_common.h"

namespace fastflow {
namespace cpu {
namespace FF_CPU_NS {

int rng_throughput(int64_t n, int kind, uint32_t* checksum) {
  if (n < 0 || (kind != 0 && kind != 2) || !checksum) return kErrArgument;
  const int64_t nsub = (n + kSub - 1) / kSub;
  uint32_t total = 0;
#pragma omp parallel for schedule(static) reduction(^ : total)
  for (int64_t k = 0; k < nsub; ++k) {
    const int64_t s = k * kSub, e = std::min(n, s + kSub);
    uint32_t x = 0;
    if (kind == 0) {
      WordScratch ws;
      const uint32_t* w = words_range(0x5eed, 0, s, e, ws);
      for (int64_t j = 0; j < e - s; ++j) x ^= w[j];
    } else {
      Scratch t;
      const float* f = normals_range(0x5eed, 0, s, e, t);
      for (int64_t j = 0; j < e - s; ++j) {
        uint32_t b;
        std::memcpy(&b, f + j, sizeof b);
        x ^= b;
      }
    }
    total ^= x;
  }
  *checksum = total;
  return kOk;
}

}  // namespace FF_CPU_NS
}  // namespace cpu
}  // namespace fastflow
