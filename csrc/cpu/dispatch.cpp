// fastflow CPU backend: the entry points. Each op exists in AVX-512, AVX2+FMA and baseline
// builds (same source, compiled three times); the widest the processor has runs.
#include <cstdint>

#include "fastflow/ops.h"
#include "fastflow/philox.h"

namespace fastflow {
namespace cpu {

#define FF_DECLARE_VARIANT(name, Args) int name(const Args& args);
namespace baseline {
FASTFLOW_OPS(FF_DECLARE_VARIANT)
}
#if defined(FASTFLOW_CPU_AVX2)
namespace avx2 {
FASTFLOW_OPS(FF_DECLARE_VARIANT)
}
#endif
#if defined(FASTFLOW_CPU_AVX512)
namespace avx512 {
FASTFLOW_OPS(FF_DECLARE_VARIANT)
}
#endif
#undef FF_DECLARE_VARIANT

namespace {
bool use_avx2() {
#if defined(FASTFLOW_CPU_AVX2)
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return ok;
#else
  return false;
#endif
}
bool use_avx512() {
#if defined(FASTFLOW_CPU_AVX512)
  static const bool ok = [] {
    __builtin_cpu_init();
    return use_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  }();
  return ok;
#else
  return false;
#endif
}
}  // namespace

const char* isa() { return use_avx512() ? "avx512" : use_avx2() ? "avx2" : "baseline"; }

#if defined(FASTFLOW_CPU_AVX512)
#define FF_DEFINE_ENTRY(name, Args)                                               \
  int name(const Args& args) {                                                    \
    return use_avx512() ? avx512::name(args) : use_avx2() ? avx2::name(args) : baseline::name(args); \
  }
#elif defined(FASTFLOW_CPU_AVX2)
#define FF_DEFINE_ENTRY(name, Args) \
  int name(const Args& args) { return use_avx2() ? avx2::name(args) : baseline::name(args); }
#else
#define FF_DEFINE_ENTRY(name, Args) \
  int name(const Args& args) { return baseline::name(args); }
#endif
FASTFLOW_OPS(FF_DEFINE_ENTRY)
#undef FF_DEFINE_ENTRY

// kind 0: uint32 words, 1: uniforms (tl.rand), 2: Gaussians (tl.randn), 3: open uniforms.
int philox_stream(int64_t seed, int64_t offset, int64_t n, int kind, void* out) {
  if (n < 0 || !out || kind < 0 || kind > 3) return kErrArgument;
  const uint64_t s = static_cast<uint64_t>(seed), o = static_cast<uint64_t>(offset);
  for (int64_t c = 0; 4 * c < n; ++c) {
    Words4 w = philox4x32(s, o + static_cast<uint64_t>(c));
    uint32_t ws[4] = {w.w0, w.w1, w.w2, w.w3};
    float nr[4];
    if (kind == 2) normal4(s, o + static_cast<uint64_t>(c), nr);
    for (int k = 0; k < 4 && 4 * c + k < n; ++k) {
      const int64_t i = 4 * c + k;
      if (kind == 0) static_cast<uint32_t*>(out)[i] = ws[k];
      else if (kind == 1) static_cast<float*>(out)[i] = uint_to_uniform(ws[k]);
      else if (kind == 2) static_cast<float*>(out)[i] = nr[k];
      else static_cast<float*>(out)[i] = uint_to_open_uniform(ws[k]);
    }
  }
  return kOk;
}

}  // namespace cpu
}  // namespace fastflow
