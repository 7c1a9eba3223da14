// Kernels that break CUDA's rules on purpose, so the tests can check that the emulator
// reports each one (tests/test_cuda_backend.py::test_emulator_reports_broken_kernels).
#include <string>

#include "cuda_runtime.h"

namespace ff_emu {
namespace {

__global__ void sum_kernel(float* out) {  // correct: a warp sum, then a block sum
  __shared__ float part[32];
  float v = static_cast<float>(threadIdx.x);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.0f;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) s += part[w];
    out[blockIdx.x] = s;
  }
}

__global__ void lane_leaves_kernel(float* out) {  // lane 3 returns before its warp's shuffle
  if (threadIdx.x == 3) return;
  out[0] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

__global__ void skipped_barrier_kernel(float* out) {  // warp 1 never reaches __syncthreads
  if (threadIdx.x / 32 == 1) {
    out[0] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
    return;
  }
  __syncthreads();
}

__global__ void barrier_in_branch_kernel(float* out) {  // a barrier inside a divergent branch
  if (threadIdx.x < 64) {
    __syncthreads();
  } else {
    out[0] = 1.0f;
    __syncthreads();
    __syncthreads();
  }
}

__global__ void racy_read_kernel(float* out) {  // thread 0 reads what thread 64 writes, no barrier
  __shared__ float cell;
  if (threadIdx.x == 0) cell = 0.0f;
  __syncthreads();
  if (threadIdx.x == 64) cell = 1.0f;
  if (threadIdx.x == 0) out[0] = cell;
}

__global__ void split_shuffle_kernel(float* out) {  // half the warp at one shuffle, half at another
  float v = 1.0f;
  if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  else v = __shfl_xor_sync(0xffffffffu, v, 2);
  out[0] = v;
}

}  // namespace

// 0: the correct kernel; 1-3, 6: broken ones; 4: a block of 2048 threads; 5: the racy read,
// whose value ("read 0" / "read 1") depends on the emulator's order. Returns the launch's
// error ("" when none), or kernel 5's value.
std::string self_test(int kind) {
  float out[4] = {0, 0, 0, 0};
  cudaStream_t s = nullptr;
  switch (kind) {
    case 0: FF_LAUNCH(dim3(2), dim3(128), 0, s, sum_kernel)(out); break;
    case 1: FF_LAUNCH(dim3(1), dim3(64), 0, s, lane_leaves_kernel)(out); break;
    case 2: FF_LAUNCH(dim3(1), dim3(96), 0, s, skipped_barrier_kernel)(out); break;
    case 3: FF_LAUNCH(dim3(1), dim3(128), 0, s, barrier_in_branch_kernel)(out); break;
    case 4: FF_LAUNCH(dim3(1), dim3(2048), 0, s, sum_kernel)(out); break;
    case 5: FF_LAUNCH(dim3(1), dim3(128), 0, s, racy_read_kernel)(out); break;
    default: FF_LAUNCH(dim3(1), dim3(32), 0, s, split_shuffle_kernel)(out); break;
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return cudaGetErrorString(e);
  if (kind == 0 && (out[0] != 8128.0f || out[1] != 8128.0f)) return "wrong sums";
  if (kind == 5) return out[0] == 1.0f ? "read 1" : "read 0";
  return "";
}

}  // namespace ff_emu
