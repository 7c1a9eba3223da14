// affine_path_sample (CPU): x_t = a x_1 + b x_0 + s eps, one pass (FORMULAS.md section 2).
// x_0 == nullptr draws the source from Gaussian stream 0 (counter offset + i / 4), eps is
// stream 1 (counter offset + ceil(n / 4) + i / 4), as fastflow/reference/affine_path_sample.py.
#include "cpu_common.h"

namespace fastflow {
namespace cpu {
namespace FF_CPU_NS {
namespace {

template <typename T, bool X0, bool S>
void segment(const T* x1, const T* x0, const float* z0, const float* eps, T* out, int64_t len,
             float ca, float cb, float cs) {
  for (int64_t j = 0; j < len; ++j) {
    float v = ca * ld(x1, j) + cb * (X0 ? ld(x0, j) : z0[j]);
    if (S) v = v + cs * eps[j];
    st(out, j, v);
  }
}

template <typename T, bool X0, bool S>
int run(const AffineSampleArgs& a) {
  const int64_t n = a.batch * a.per_sample, D = a.per_sample;
  const T* x1 = static_cast<const T*>(a.x1);
  const T* x0 = static_cast<const T*>(a.x0);
  T* out = static_cast<T*>(a.out);
  uint64_t seed = 0, off = 0;
  if (!X0 || S) {
    seed = static_cast<uint64_t>(a.rng[0]);
    off = static_cast<uint64_t>(a.rng[1]);
  }
  const uint64_t nctr = static_cast<uint64_t>((n + 3) / 4);
  parallel_subblocks(n, [&](int64_t s0, int64_t e0) {
    for_subblocks(s0, e0, [&](int64_t s, int64_t e) {
      Scratch t0, t1;
      const float* z0 = X0 ? nullptr : normals_range(seed, off, s, e, t0);
      const float* ep = S ? normals_range(seed, off + nctr, s, e, t1) : nullptr;
      for_segments(s, e, D, [&](int64_t b, int64_t i, int64_t j) {
        const float ca = coef(a.a, b), cb = coef(a.b, b), cs = S ? a.s[b] : 0.0f;
        staged(j - i, out + i, [&](int64_t o, int64_t len, auto* y, auto* x1s, auto* x0s) {
          segment<std::remove_pointer_t<decltype(y)>, X0, S>(x1s, x0s, X0 ? nullptr : z0 + (i - s) + o,
                                                             S ? ep + (i - s) + o : nullptr, y, len, ca, cb, cs);
        }, x1 + i, X0 ? x0 + i : nullptr);
      });
    }, X0 && !S ? kSub : kNoisePiece);
  });
  return kOk;
}

}  // namespace

int affine_path_sample(const AffineSampleArgs& a) {
  if (a.batch < 0 || a.per_sample < 0 || !a.x1 || !a.out) return kErrArgument;
  if ((!a.x0 || a.s) && !a.rng) return kErrArgument;
  if (a.batch * a.per_sample == 0) return kOk;
  return dispatch_float(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.x0) return a.s ? run<T, true, true>(a) : run<T, true, false>(a);
    return a.s ? run<T, false, true>(a) : run<T, false, false>(a);
  });
}

}  // namespace FF_CPU_NS
}  // namespace cpu
}  // namespace fastflow
