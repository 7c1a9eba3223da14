// generalized_kl (CPU): flow_matching's MixturePathGeneralizedKL per row (FORMULAS.md
// section 4; fastflow/reference/generalized_kl.py), p = softmax(z_i), delta = [x_t == x_1]:
//   loss_i = -jump_i (p[x_t] - delta + (1 - delta) log p[x_1])
//   grad_i = -grad_scale_i jump_i (p[x_t] (e_{x_t} - p) + (1 - delta) (e_{x_1} - p))
#include "row_losses.h"

namespace fastflow {
namespace cpu {
namespace FF_CPU_NS {

int generalized_kl(const RowLossArgs& a) {
  if (int st = rows::check(a, true)) return st;
  if (a.rows == 0) return kOk;
  return dispatch_float(a.dtype, [&](auto tag) { return rows::run<decltype(tag), true>(a); });
}

}  // namespace FF_CPU_NS
}  // namespace cpu
}  // namespace fastflow
