// cross_entropy (CPU): loss_i = logsumexp(z_i) - z_i[x_1] (0 on ignored rows) and, when a
// gradient buffer is given, grad_i = grad_scale_i (softmax(z_i) - e_{x_1}) written in the
// same call (FORMULAS.md section 4; fastflow/reference/cross_entropy.py).
#include "row_losses.h"

namespace fastflow {
namespace cpu {
namespace FF_CPU_NS {

int cross_entropy(const RowLossArgs& a) {
  if (int st = rows::check(a, false)) return st;
  if (a.rows == 0) return kOk;
  return dispatch_float(a.dtype, [&](auto tag) { return rows::run<decltype(tag), false>(a); });
}

}  // namespace FF_CPU_NS
}  // namespace cpu
}  // namespace fastflow
