// mixture_path_sample (CPU): x_t = u < kappa[b] ? x_1 : x_0 per token (FORMULAS.md section 4).
// u = noise, or uniform stream 0 (counter offset + i / 4); x_0 given, the mask token, or
// uniform over V: (w * V) >> 32 of stream 1 (counter offset + ceil(n / 4) + i / 4).
#include "cpu_common.h"

namespace fastflow {
namespace cpu {
namespace FF_CPU_NS {
namespace {

enum Src { kGiven, kMaskTok, kUniformTok };

template <typename I, bool NOISE, int SRC>
int run(const MixtureSampleArgs& a) {
  const int64_t n = a.batch * a.per_sample, D = a.per_sample;
  const I* x1 = static_cast<const I*>(a.x1);
  const I* x0 = static_cast<const I*>(a.x0);
  I* out = static_cast<I*>(a.out);
  uint64_t seed = 0, off = 0;
  if (!NOISE || SRC == kUniformTok) {
    seed = static_cast<uint64_t>(a.rng[0]);
    off = static_cast<uint64_t>(a.rng[1]);
  }
  const uint64_t nctr = static_cast<uint64_t>((n + 3) / 4);
  const uint64_t V = static_cast<uint64_t>(a.vocab);
  const I mask_tok = static_cast<I>(a.mask_id);
  parallel_subblocks(n, [&](int64_t s, int64_t e) {
    WordScratch w0, w1;
    const uint32_t* wu = NOISE ? nullptr : words_range(seed, off, s, e, w0);
    const uint32_t* wt = SRC == kUniformTok ? words_range(seed, off + nctr, s, e, w1) : nullptr;
    for_segments(s, e, D, [&](int64_t b, int64_t i, int64_t j) {
      const float k = a.kappa[b];
      const int64_t r = i - s;
      for (int64_t t = 0; t < j - i; ++t) {
        float u = NOISE ? a.noise[i + t] : uint_to_uniform(wu[r + t]);
        I src;
        if (SRC == kGiven) src = x0[i + t];
        else if (SRC == kMaskTok) src = mask_tok;
        else src = static_cast<I>((static_cast<uint64_t>(wt[r + t]) * V) >> 32);
        out[i + t] = u < k ? x1[i + t] : src;
      }
    });
  });
  return kOk;
}

template <typename I>
int pick(const MixtureSampleArgs& a) {
  const bool noise = a.noise != nullptr;
  if (a.x0) return noise ? run<I, true, kGiven>(a) : run<I, false, kGiven>(a);
  if (a.mask_id >= 0) return noise ? run<I, true, kMaskTok>(a) : run<I, false, kMaskTok>(a);
  return noise ? run<I, true, kUniformTok>(a) : run<I, false, kUniformTok>(a);
}

}  // namespace

int mixture_path_sample(const MixtureSampleArgs& a) {
  if (a.batch < 0 || a.per_sample < 0 || !a.x1 || !a.out || !a.kappa) return kErrArgument;
  if (!a.x0 && a.mask_id < 0 && a.vocab <= 0) return kErrArgument;
  if ((!a.noise || (!a.x0 && a.mask_id < 0)) && !a.rng) return kErrArgument;
  if (a.batch * a.per_sample == 0) return kOk;
  return dispatch_index(a.itype, [&](auto tag) { return pick<decltype(tag)>(a); });
}

}  // namespace FF_CPU_NS
}  // namespace cpu
}  // namespace fastflow
