// scale_rows (CPU): grad[i, :] *= g[i] in place, skipping rows with g[i] == 1 (the backward
// of the fused losses when the upstream gradient is not 1). The product is computed in fp32
// and rounded once: an fp16 gradient's g is often 1 / numel (fp16 losses do not fold their
// divisor into the forward-written gradient), which fp16 would round as a subnormal first.
#include "cpu_common.h"

namespace fastflow {
namespace cpu {
namespace FF_CPU_NS {
namespace {

template <typename T>
int run(const ScaleRowsArgs& a) {
  T* grad = static_cast<T*>(a.grad);
  const int64_t N = a.rows, V = a.cols;
#pragma omp parallel for schedule(dynamic, 4) if (N * V >= kParallelMin && N > 1)
  for (int64_t i = 0; i < N; ++i) {
    const float gi = a.g[i];
    if (gi == 1.0f) continue;
    const float s = gi;
    T* row = grad + i * a.row_stride;
    staged(V, row, [&](int64_t, int64_t n, auto* y, auto* x) {
      for (int64_t j = 0; j < n; ++j) st(y, j, ld(x, j) * s);
    }, static_cast<const T*>(row));
  }
  return kOk;
}

}  // namespace

int scale_rows(const ScaleRowsArgs& a) {
  if (a.rows < 0 || a.cols < 0 || !a.g || (!a.grad && a.rows * a.cols > 0)) return kErrArgument;
  if (a.rows * a.cols == 0) return kOk;
  return dispatch_float(a.dtype, [&](auto tag) { return run<decltype(tag)>(a); });
}

}  // namespace FF_CPU_NS
}  // namespace cpu
}  // namespace fastflow
