// step_combine (CPU): x_next = A x + B p + C q + N z in one pass (FORMULAS.md section 3).
// z is `noise` when given, else Gaussian stream 0 (counter offset + i / 4). out may alias x.
// p and q are x's dtype, or bf16 / fp16 beside an fp32 x (read as they are: no copies).
#include "cpu_common.h"

namespace fastflow {
namespace cpu {
namespace FF_CPU_NS {
namespace {

template <bool Q, bool NZ, bool GIVEN, typename T, typename TP>
void segment(const T* x, const TP* p, const TP* q, const T* noise, const float* z, T* out, int64_t len,
             float ca, float cb, float cc, float cn) {
  for (int64_t j = 0; j < len; ++j) {
    float y = ca * ld(x, j) + cb * ld(p, j);
    if (Q) y = y + cc * ld(q, j);
    if (NZ) y = y + cn * (GIVEN ? ld(noise, j) : z[j]);
    st(out, j, y);
  }
}

template <typename T, typename TP, bool Q, bool NZ, bool GIVEN>
int run(const StepCombineArgs& a) {
  const int64_t n = a.batch * a.per_sample, D = a.per_sample;
  const T* x = static_cast<const T*>(a.x);
  const TP* p = static_cast<const TP*>(a.p);
  const TP* q = static_cast<const TP*>(a.q);
  const T* noise = static_cast<const T*>(a.noise);
  T* out = static_cast<T*>(a.out);
  uint64_t seed = 0, off = 0;
  if (NZ && !GIVEN) {
    seed = static_cast<uint64_t>(a.rng[0]);
    off = static_cast<uint64_t>(a.rng[1]);
  }
  parallel_subblocks(n, [&](int64_t s, int64_t e) {
    Scratch t0;
    const float* z = (NZ && !GIVEN) ? normals_range(seed, off, s, e, t0) : nullptr;
    for_segments(s, e, D, [&](int64_t b, int64_t i, int64_t j) {
      const int64_t k = b * a.coef_stride;
      const float ca = coef(a.A, k), cb = coef(a.B, k), cc = coef(a.C, k), cn = coef(a.N, k);
      staged(j - i, out + i, [&](int64_t o, int64_t len, auto* y, auto* xs, auto* ps, auto* qs, auto* ns) {
        segment<Q, NZ, GIVEN>(xs, ps, qs, ns, z ? z + (i - s) + o : nullptr, y, len, ca, cb, cc, cn);
      }, x + i, p + i, Q ? q + i : nullptr, GIVEN ? noise + i : nullptr);
    });
  });
  return kOk;
}

template <typename T, typename TP>
int pick(const StepCombineArgs& a) {
  const bool q = a.q != nullptr, nz = a.N != nullptr, given = a.noise != nullptr;
  if (q) {
    if (!nz) return run<T, TP, true, false, false>(a);
    return given ? run<T, TP, true, true, true>(a) : run<T, TP, true, true, false>(a);
  }
  if (!nz) return run<T, TP, false, false, false>(a);
  return given ? run<T, TP, false, true, true>(a) : run<T, TP, false, true, false>(a);
}

}  // namespace

int step_combine(const StepCombineArgs& a) {
  if (a.batch < 0 || a.per_sample < 0 || !a.x || !a.p || !a.out) return kErrArgument;
  if (a.N && !a.noise && !a.rng) return kErrArgument;
  if (a.coef_stride != 0 && a.coef_stride != 1) return kErrArgument;
  if (a.batch * a.per_sample == 0) return kOk;
  return dispatch_float_pair(a.p_dtype, a.dtype, [&](auto tp, auto tx) { return pick<decltype(tx), decltype(tp)>(a); });
}

}  // namespace FF_CPU_NS
}  // namespace cpu
}  // namespace fastflow
