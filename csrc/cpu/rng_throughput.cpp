// rng_throughput (CPU): the kernels' random-number generators alone, for the benchmark's
// random-number bound (benchmarks/harness.py): n uint32 words (kind 0, counter-major as the
// jump race reads them) or Gaussians (kind 2, in element order as the affine path reads them)
// drawn per sub-block into scratch that stays in L1,
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
    if (kind == 0) {  // counter-major, where the jump race reads them (s is a multiple of 4)
      SoaWords t;
      const int64_t count = (e - s + 3) / 4;
      simd::philox_soa(0x5eed, static_cast<uint64_t>(s / 4), count, &t.w[0][0], kSoaCap);
      const int64_t full = (e - s) / 4;
      for (int r = 0; r < 4; ++r)
        for (int64_t c = 0; c < full; ++c) x ^= t.w[r][c];
      for (int64_t r = 0; r < (e - s) % 4; ++r) x ^= t.w[r][full];
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
