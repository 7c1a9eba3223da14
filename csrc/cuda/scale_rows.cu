// scale_rows (CUDA): grad[i, :] *= g[i] in place; a row with g[i] == 1 is left alone (its
// blocks read one float and return), so there is no host sync to test "all ones". The product
// is computed in fp32 and rounded once (as the CPU kernel: an fp16 g of 1 / numel would be
// subnormal).
#include "cuda_common.cuh"

namespace fastflow {
namespace cuda {
namespace {

constexpr int64_t kCols = 8192;  // columns per block

template <typename T>
__global__ void __launch_bounds__(kThreads) scale_kernel(ScaleRowsArgs a, int64_t chunks, bool aligned) {
  constexpr int VEC = VecOf<T>::n;
  const int64_t row = blockIdx.x / chunks, c = blockIdx.x % chunks;
  const float gi = __ldg(a.g + row);
  if (gi == 1.0f) return;
  const float s = gi;
  T* p = static_cast<T*>(a.grad) + row * a.row_stride;
  const int64_t lo = c * kCols, hi = min(a.cols, lo + kCols);
  for (int64_t g = lo / VEC + threadIdx.x; g * VEC < hi; g += blockDim.x) {
    float v[VEC];
    load_group<T, VEC>(p, g * VEC, lo, hi, aligned, v);
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[k] *= s;
    store_group<T, VEC>(p, g * VEC, lo, hi, aligned, v);
  }
}

}  // namespace

int scale_rows(const ScaleRowsArgs& a, uintptr_t stream) {
  if (a.rows < 0 || a.cols < 0 || !a.g || (!a.grad && a.rows * a.cols > 0)) return kErrArgument;
  if (a.rows * a.cols == 0) return kOk;
  return dispatch_float(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    const int64_t chunks = (a.cols + kCols - 1) / kCols;
    if (!grid_fits(a.rows * chunks)) return static_cast<int>(kErrTooLarge);
    const bool aligned = aligned16(a.grad) && (a.row_stride * static_cast<int64_t>(sizeof(T))) % 16 == 0;
    const unsigned grid = static_cast<unsigned>(a.rows * chunks);
    FF_LAUNCH(grid, kThreads, 0, as_stream(stream), scale_kernel<T>)(a, chunks, aligned);
    return launch_status();
  });
}

}  // namespace cuda
}  // namespace fastflow
