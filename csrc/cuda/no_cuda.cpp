// Built instead of csrc/cuda/*.cu when CUDA is not compiled in: every CUDA entry point
// answers kErrNoCuda (fastflow._C.has_cuda() is False).
#include "fastflow/ops.h"

namespace fastflow {
namespace cuda {

bool compiled() { return false; }
const char* runtime_problem() { return "fastflow._C was built without CUDA"; }
const char* last_error() { return ""; }
#define FF_NO_CUDA(name, Args) \
  int name(const Args&, uintptr_t) { return kErrNoCuda; }
FASTFLOW_OPS(FF_NO_CUDA)
#undef FF_NO_CUDA
int philox_stream(const int64_t*, int64_t, int, void*, uintptr_t) { return kErrNoCuda; }
int64_t affine_path_loss_workspace(int64_t, int64_t) { return 0; }
int64_t row_split(int64_t, int64_t, int) { return 1; }

}  // namespace cuda
}  // namespace fastflow
