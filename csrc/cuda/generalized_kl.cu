// generalized_kl (CUDA): flow_matching's MixturePathGeneralizedKL per row with the gradient
// written in the same call (FORMULAS.md section 4; fastflow/reference/generalized_kl.py).
// Kernels: row_losses.cuh.
#include "row_losses.cuh"

namespace fastflow {
namespace cuda {

int generalized_kl(const RowLossArgs& a, uintptr_t stream) {
  if (int st = rowk::check(a, true)) return st;
  if (a.rows == 0) return kOk;
  return dispatch_float(a.dtype, [&](auto tag) { return rowk::launch<decltype(tag), true>(a, as_stream(stream)); });
}

}  // namespace cuda
}  // namespace fastflow
