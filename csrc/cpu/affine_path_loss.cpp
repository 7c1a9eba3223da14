// affine_path_loss (CPU): the target c x_1 + d x_0 + e eps is recomputed on the fly
// (x_0 == nullptr: Gaussian stream 0, eps: stream 1), never stored. One pass:
//   loss[b] = sum_i mask_i (v_i - target_i)^2              (fp32 [B])
//   dv      = 2 grad_scale[b] mask (v - target)            (v's dtype, only when dv is given)
// x_1 and x_0 are v's dtype, or fp32 under a bf16 / fp16 v (read as they are: no copies).
// Deterministic: each sample is cut into fixed kChunk-element chunks whose partial sums
// (kLanes fp32 lanes, then double) are added in chunk order, whatever the number of threads.
#include "cpu_common.h"

namespace fastflow {
namespace cpu {
namespace FF_CPU_NS {
namespace {

constexpr int64_t kChunk = 1 << 15;

struct Coefs {
  float c, d, e, g;
};

// residual r_j = mask_j (v_j - (c x1_j + d x0_j + e eps_j)) of one segment
template <typename TV, typename TX, bool X0, bool E, bool M>
inline float residual(const TV* v, const TX* x1, const TX* x0, const float* z0, const float* eps,
                      const float* m, int64_t j, const Coefs& k) {
  float t = k.c * ld(x1, j) + k.d * (X0 ? ld(x0, j) : z0[j]);
  if (E) t = t + k.e * eps[j];
  float r = ld(v, j) - t;
  return M ? r * m[j] : r;
}

// sum of r^2 over one segment; with G, also dv_j = g2 r_j
template <typename TV, typename TX, bool X0, bool E, bool M, bool G>
double segment(const TV* v, const TX* x1, const TX* x0, const float* z0, const float* eps, const float* m, TV* dv,
               int64_t len, const Coefs& k) {
  const float g2 = 2.0f * k.g;
  float acc[kLanes] = {0.0f};
  int64_t j0 = 0;
  for (; j0 + kLanes <= len; j0 += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      float r = residual<TV, TX, X0, E, M>(v, x1, x0, z0, eps, m, j0 + l, k);
      acc[l] += r * r;
      if (G) st(dv, j0 + l, g2 * r);
    }
  }
  for (int64_t j = j0; j < len; ++j) {
    float r = residual<TV, TX, X0, E, M>(v, x1, x0, z0, eps, m, j, k);
    acc[j - j0] += r * r;
    if (G) st(dv, j, g2 * r);
  }
  double s = 0.0;
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

struct Streams {
  uint64_t seed = 0, off = 0, nctr = 0;
};

// The noise / mask buffers of the sub-block [s, e) and the callback per sample segment.
template <bool X0, bool E, bool M, class F>
inline void with_buffers(const AffineLossArgs& a, const Streams& st_, int64_t s, int64_t e, F&& f) {
  Scratch t0, t1, tm;
  const float* z0 = X0 ? nullptr : normals_range(st_.seed, st_.off, s, e, t0);
  const float* ep = E ? normals_range(st_.seed, st_.off + st_.nctr, s, e, t1) : nullptr;
  if (M) mask_range(a.mask, s, e, tm.f);
  f(z0, ep, M ? tm.f : nullptr);
}

// The sum over elements [s, e) of sample k's segment (dv written too), its noise and mask
// read from buffers that start at element g0.
template <typename TV, typename TX, bool X0, bool E, bool M, bool G>
double piece_sum(const AffineLossArgs& a, const Coefs& k, int64_t s, int64_t e, int64_t g0, const float* z0,
                 const float* ep, const float* m) {
  const int64_t o0 = s - g0;
  double sum = 0.0;
  staged(e - s, G ? static_cast<TV*>(a.dv) + s : nullptr, [&](int64_t o, int64_t len, auto* dvs, auto* vs, auto* x1s,
                                                              auto* x0s) {
    using UV = std::remove_const_t<std::remove_pointer_t<decltype(vs)>>;
    using UX = std::remove_const_t<std::remove_pointer_t<decltype(x1s)>>;
    sum += segment<UV, UX, X0, E, M, G>(vs, x1s, x0s, z0 ? z0 + o0 + o : nullptr, ep ? ep + o0 + o : nullptr,
                                        m ? m + o0 + o : nullptr, dvs, len, k);
  }, static_cast<const TV*>(a.v) + s, static_cast<const TX*>(a.x1) + s,
     X0 ? static_cast<const TX*>(a.x0) + s : static_cast<const TX*>(nullptr));
  return sum;
}

inline Coefs coefs_of(const AffineLossArgs& a, int64_t b, bool grad) {
  return Coefs{coef(a.c, b), coef(a.d, b), coef(a.e, b), grad ? a.grad_scale[b] : 0.0f};
}

// Samples shorter than kNoisePiece with drawn noise: a work item draws it once for a group of
// whole samples (up to kSub elements), not a Philox group (kNoisePiece Gaussians) per sample.
// The samples are cut into the same pieces as in run, so the sums are the same bits.
// 256 samples of 2 elements: 49 -> 17 us.
template <typename TV, typename TX, bool X0, bool E, bool M, bool G>
int run_short(const AffineLossArgs& a, const Streams& sr) {
  const int64_t B = a.batch, D = a.per_sample, per_group = kSub / D;
  const int64_t groups = (B + per_group - 1) / per_group;
#pragma omp parallel for schedule(static) if (B * D >= kParallelMin && groups > 1)
  for (int64_t q = 0; q < groups; ++q) {
    const int64_t b0 = q * per_group, b1 = std::min(B, b0 + per_group), g0 = b0 * D;
    with_buffers<X0, E, M>(a, sr, g0, b1 * D, [&](const float* z0, const float* ep, const float* m) {
      for (int64_t b = b0; b < b1; ++b) {
        const Coefs k = coefs_of(a, b, G);
        double sum = 0.0;
        for_subblocks(b * D, b * D + D, [&](int64_t s, int64_t e) {
          sum += piece_sum<TV, TX, X0, E, M, G>(a, k, s, e, g0, z0, ep, m);
        }, kNoisePiece);
        a.loss[b] = static_cast<float>(sum);
      }
    });
  }
  return kOk;
}

template <typename TV, typename TX, bool X0, bool E, bool M, bool G>
int run(const AffineLossArgs& a) {
  const int64_t B = a.batch, D = a.per_sample;
  Streams sr;
  if (!X0 || E) {
    sr.seed = static_cast<uint64_t>(a.rng[0]);
    sr.off = static_cast<uint64_t>(a.rng[1]);
    sr.nctr = static_cast<uint64_t>((B * D + 3) / 4);
  }
  if ((!X0 || E) && D < kNoisePiece) return run_short<TV, TX, X0, E, M, G>(a, sr);
  const int64_t nch = (D + kChunk - 1) / kChunk;
  const int64_t items = B * nch;
  std::vector<double> part(static_cast<size_t>(items));
#pragma omp parallel for schedule(static) if (B * D >= kParallelMin && items > 1)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t b = it / nch, c = it - b * nch;
    const int64_t lo = b * D + c * kChunk, hi = std::min(b * D + D, lo + kChunk);
    const Coefs k = coefs_of(a, b, G);
    double sum = 0.0;
    for_subblocks(lo, hi, [&](int64_t s, int64_t e) {
      with_buffers<X0, E, M>(a, sr, s, e, [&](const float* z0, const float* ep, const float* m) {
        sum += piece_sum<TV, TX, X0, E, M, G>(a, k, s, e, s, z0, ep, m);
      });
    }, X0 && !E ? kSub : kNoisePiece);
    part[static_cast<size_t>(it)] = sum;
  }
  for (int64_t b = 0; b < B; ++b) {
    double s = 0.0;
    for (int64_t c = 0; c < nch; ++c) s += part[static_cast<size_t>(b * nch + c)];
    a.loss[b] = static_cast<float>(s);
  }
  return kOk;
}

}  // namespace

int affine_path_loss(const AffineLossArgs& a) {
  if (int st = check_args(a)) return st;
  if (a.batch == 0) return kOk;
  if (a.per_sample == 0) {
    for (int64_t b = 0; b < a.batch; ++b) a.loss[b] = 0.0f;
    return kOk;
  }
  return dispatch_float_pair(a.dtype, a.x_dtype, [&](auto tv, auto tx) {
    return dispatch_flags([&](auto x0, auto e, auto m, auto g) {
      return run<decltype(tv), decltype(tx), decltype(x0)::value, decltype(e)::value, decltype(m)::value,
                 decltype(g)::value>(a);
    }, a.x0 != nullptr, a.e != nullptr, a.mask.ptr != nullptr, a.dv != nullptr);
  });
}

}  // namespace FF_CPU_NS
}  // namespace cpu
}  // namespace fastflow
