// cross_entropy (CUDA): loss_i = logsumexp(z_i) - z_i[x_1] (0 on ignored rows) and, when a
// gradient buffer is given, grad_i = grad_scale_i (softmax(z_i) - e_{x_1}) in the same call
// (FORMULAS.md section 4; fastflow/reference/cross_entropy.py). Kernels: row_losses.cuh.
#include "row_losses.cuh"

namespace fastflow {
namespace cuda {

int cross_entropy(const RowLossArgs& a, uintptr_t stream) {
  if (int st = rowk::check(a, false)) return st;
  if (a.rows == 0) return kOk;
  return dispatch_float(a.dtype, [&](auto tag) { return rowk::launch<decltype(tag), false>(a, as_stream(stream)); });
}

}  // namespace cuda
}  // namespace fastflow
