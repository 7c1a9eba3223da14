// mixture_path_sample (CUDA): x_t = u < kappa[b] ? x_1 : x_0 per token (FORMULAS.md
// section 4). One Philox call per 4 tokens and stream: u = uniform stream 0 (or noise),
// the uniform source token (w * V) >> 32 of stream 1 (counter offset + ceil(n / 4) + i / 4).
#include "cuda_common.cuh"

namespace fastflow {
namespace cuda {
namespace {

enum Src { kGiven, kMaskTok, kUniformTok };

template <typename I, bool NOISE, int SRC>
__global__ void __launch_bounds__(kThreads) mixture_kernel(MixtureSampleArgs a) {
  const int64_t D = a.per_sample, n = a.batch * D;
  uint64_t seed = 0, off = 0;
  if (!NOISE || SRC == kUniformTok) {
    seed = static_cast<uint64_t>(a.rng[0]);
    off = static_cast<uint64_t>(a.rng[1]);
  }
  const uint64_t nctr = static_cast<uint64_t>((n + 3) / 4);
  const uint64_t V = static_cast<uint64_t>(a.vocab);
  const I* x1 = static_cast<const I*>(a.x1);
  const I* x0 = static_cast<const I*>(a.x0);
  I* out = static_cast<I*>(a.out);
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i0 = 4 * g;
    Words4 wu{0, 0, 0, 0}, wt{0, 0, 0, 0};
    if (!NOISE) wu = philox4x32(seed, off + static_cast<uint64_t>(g));
    if (SRC == kUniformTok) wt = philox4x32(seed, off + nctr + static_cast<uint64_t>(g));
    int64_t b = i0 / D, next = (b + 1) * D;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = i0 + k;
      if (i >= n) break;
      while (i >= next) {
        ++b;
        next += D;
      }
      const float u = NOISE ? a.noise[i] : uint_to_uniform(word_of(wu, k));
      I src;
      if (SRC == kGiven) src = x0[i];
      else if (SRC == kMaskTok) src = static_cast<I>(a.mask_id);
      else src = static_cast<I>((static_cast<uint64_t>(word_of(wt, k)) * V) >> 32);
      out[i] = u < __ldg(a.kappa + b) ? x1[i] : src;
    }
  }
}

template <typename I, bool NOISE, int SRC>
int launch(const MixtureSampleArgs& a, cudaStream_t s) {
  const int64_t n = a.batch * a.per_sample;
  FF_LAUNCH(grid_for((n + 3) / 4), kThreads, 0, s, mixture_kernel<I, NOISE, SRC>)(a);
  return launch_status();
}

template <typename I>
int pick(const MixtureSampleArgs& a, cudaStream_t s) {
  const bool noise = a.noise != nullptr;
  if (a.x0) return noise ? launch<I, true, kGiven>(a, s) : launch<I, false, kGiven>(a, s);
  if (a.mask_id >= 0) return noise ? launch<I, true, kMaskTok>(a, s) : launch<I, false, kMaskTok>(a, s);
  return noise ? launch<I, true, kUniformTok>(a, s) : launch<I, false, kUniformTok>(a, s);
}

}  // namespace

int mixture_path_sample(const MixtureSampleArgs& a, uintptr_t stream) {
  if (a.batch < 0 || a.per_sample < 0 || !a.x1 || !a.out || !a.kappa) return kErrArgument;
  if (!a.x0 && a.mask_id < 0 && a.vocab <= 0) return kErrArgument;
  if ((!a.noise || (!a.x0 && a.mask_id < 0)) && !a.rng) return kErrArgument;
  if (a.batch * a.per_sample == 0) return kOk;
  return dispatch_index(a.itype, [&](auto tag) { return pick<decltype(tag)>(a, as_stream(stream)); });
}

}  // namespace cuda
}  // namespace fastflow
