// fastflow CPU backend: the entry points. Each op exists in AVX-512, AVX2+FMA and baseline
// builds (same source, compiled three times); the widest the processor has runs, unless
// FASTFLOW_CPU_ISA or set_isa asks for a narrower one.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fastflow/ops.h"
#include "fastflow/philox.h"

namespace fastflow {
namespace cpu {

#define FF_DECLARE_VARIANT(name, Args) int name(const Args& args);
#define FF_DECLARE_EXTRAS int rng_throughput(int64_t n, int kind, uint32_t* checksum);
namespace baseline {
FASTFLOW_OPS(FF_DECLARE_VARIANT)
FF_DECLARE_EXTRAS
}
#if defined(FASTFLOW_CPU_AVX2)
namespace avx2 {
FASTFLOW_OPS(FF_DECLARE_VARIANT)
FF_DECLARE_EXTRAS
}
#endif
#if defined(FASTFLOW_CPU_AVX512)
namespace avx512 {
FASTFLOW_OPS(FF_DECLARE_VARIANT)
FF_DECLARE_EXTRAS
}
#endif
#undef FF_DECLARE_EXTRAS
#undef FF_DECLARE_VARIANT

namespace {
enum Level : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };
const char* const kNames[] = {"baseline", "avx2", "avx512"};

// The widest variant both compiled in and supported by this processor.
int widest() {
  static const int best = [] {
    int l = kBaseline;
#if defined(FASTFLOW_CPU_AVX2)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
      l = kAvx2;
#if defined(FASTFLOW_CPU_AVX512)
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        l = kAvx512;
#endif
    }
#endif
    return l;
  }();
  return best;
}

int level_of(const char* name) {
  for (int l = kBaseline; l <= kAvx512; ++l)
    if (name && std::strcmp(name, kNames[l]) == 0) return l;
  return -1;
}

// The variant in use: the widest, or a narrower one asked for by FASTFLOW_CPU_ISA or set_isa
// (every variant computes the same math, to within an ulp where the wider ones fuse a multiply-add
// into an FMA, and the same tokens; the narrower ones are how tests reach their code).
std::atomic<int> g_level{-1};
int level() {
  int l = g_level.load(std::memory_order_relaxed);
  if (l < 0) {
    l = widest();
    const int asked = level_of(std::getenv("FASTFLOW_CPU_ISA"));
    if (asked >= 0 && asked < l) l = asked;
    g_level.store(l, std::memory_order_relaxed);
  }
  return l;
}
}  // namespace

const char* isa() { return kNames[level()]; }

bool set_isa(const char* name) {
  const int l = level_of(name);
  if (l < 0 || l > widest()) return false;
  g_level.store(l, std::memory_order_relaxed);
  return true;
}

const char* isas() {
  static const std::string all = [] {
    std::string s;
    for (int l = kBaseline; l <= widest(); ++l) s += (l ? "," : "") + std::string(kNames[l]);
    return s;
  }();
  return all.c_str();
}

// fn of the variant the level selects
#if defined(FASTFLOW_CPU_AVX512)
#define FF_BY_LEVEL(fn, ...)                                                                           \
  (level() == kAvx512 ? avx512::fn(__VA_ARGS__) : level() == kAvx2 ? avx2::fn(__VA_ARGS__) : baseline::fn(__VA_ARGS__))
#elif defined(FASTFLOW_CPU_AVX2)
#define FF_BY_LEVEL(fn, ...) (level() == kAvx2 ? avx2::fn(__VA_ARGS__) : baseline::fn(__VA_ARGS__))
#else
#define FF_BY_LEVEL(fn, ...) baseline::fn(__VA_ARGS__)
#endif
#define FF_DEFINE_ENTRY(name, Args) \
  int name(const Args& args) { return FF_BY_LEVEL(name, args); }
FASTFLOW_OPS(FF_DEFINE_ENTRY)
#undef FF_DEFINE_ENTRY

int rng_throughput(int64_t n, int kind, uint32_t* checksum) { return FF_BY_LEVEL(rng_throughput, n, kind, checksum); }
#undef FF_BY_LEVEL

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

namespace {
template <typename T> double as_double(T v) { return Elem<T>::to_f32(v); }
double as_double(double v) { return v; }

template <typename T>
bool values_within(const T* x, int64_t n, double lo, double hi) {
  bool ok = true;  // (no early exit: the common case passes, and the loop stays branch-free)
  for (int64_t i = 0; i < n; ++i) {
    const double v = as_double(x[i]);
    ok &= (v >= lo) & (v <= hi);
  }
  return ok;
}
}  // namespace

bool all_within(const void* data, int64_t n, int dtype, double lo, double hi) {
  if (n <= 0) return true;
  switch (dtype) {
    case kF32: return values_within(static_cast<const float*>(data), n, lo, hi);
    case kBF16: return values_within(static_cast<const bf16*>(data), n, lo, hi);
    case kF16: return values_within(static_cast<const f16*>(data), n, lo, hi);
    case kF64: return values_within(static_cast<const double*>(data), n, lo, hi);
    default: return false;
  }
}

}  // namespace cpu
}  // namespace fastflow
