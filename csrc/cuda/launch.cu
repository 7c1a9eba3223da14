// fastflow CUDA backend: device queries, workspace sizes and the test stream kernel.
#include <atomic>
#include <mutex>

#include "cuda_common.cuh"

namespace fastflow {
namespace cuda {

bool compiled() { return true; }

namespace {
thread_local cudaError_t g_last_error = cudaSuccess;
}

void record_error(cudaError_t e) { g_last_error = e; }

const char* last_error() {
  if (g_last_error == cudaSuccess) return "";
  return cudaGetErrorString(g_last_error);  // static strings: no lifetime to manage
}

const char* runtime_problem() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return cudaGetErrorString(e);  // e.g. a driver older than the CUDA runtime _C was built with
  }
  return n > 0 ? "" : "no CUDA device visible to the CUDA runtime";
}

int sm_count() {
  static std::atomic<int> cache[64];  // (zero-initialised; atomic: the bindings release the GIL)
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 80;
  if (dev < 0 || dev >= 64) return 80;
  int n = cache[dev].load(std::memory_order_relaxed);
  if (n == 0) {
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) n = 80;
    cache[dev].store(n, std::memory_order_relaxed);  // every thread computes the same value
  }
  return n;
}

// affine_path_loss.cu keeps one partial per (sample, chunk) when a sample spans chunks.
int64_t affine_path_loss_workspace(int64_t batch, int64_t per_sample) {
  const int64_t nch = (per_sample + kLossChunk - 1) / kLossChunk;
  return nch > 1 ? batch * nch : 0;
}

// Chunks per row of the row kernels: long rows are split when there are too few rows to
// fill the device (deterministic: a function of the shape and the device's SM count).
int64_t row_split(int64_t rows, int64_t vocab, int device) {
  if (vocab < 32768 || rows <= 0) return 1;
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0) n = 80;
  if (rows >= 2 * static_cast<int64_t>(n)) return 1;
  int64_t by_vocab = (vocab + 8191) / 8192;
  int64_t by_fill = (4 * static_cast<int64_t>(n) + rows - 1) / rows;
  int64_t s = by_vocab < by_fill ? by_vocab : by_fill;
  return s < 1 ? 1 : s;
}

namespace {
__global__ void philox_stream_kernel(const int64_t* rng, int64_t n, int kind, void* out) {
  const uint64_t seed = static_cast<uint64_t>(rng[0]), off = static_cast<uint64_t>(rng[1]);
  const int64_t nctr = (n + 3) / 4;
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < nctr;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Words4 w = philox4x32(seed, off + static_cast<uint64_t>(c));
    uint32_t ws[4] = {w.w0, w.w1, w.w2, w.w3};
    float nr[4];
    if (kind == 2) normal4(seed, off + static_cast<uint64_t>(c), nr);
    for (int k = 0; k < 4; ++k) {
      const int64_t i = 4 * c + k;
      if (i >= n) break;
      if (kind == 0) static_cast<uint32_t*>(out)[i] = ws[k];
      else if (kind == 1) static_cast<float*>(out)[i] = uint_to_uniform(ws[k]);
      else if (kind == 2) static_cast<float*>(out)[i] = nr[k];
      else static_cast<float*>(out)[i] = uint_to_open_uniform(ws[k]);
    }
  }
}
}  // namespace

int philox_stream(const int64_t* rng, int64_t n, int kind, void* out, uintptr_t stream) {
  if (n < 0 || !out || !rng || kind < 0 || kind > 3) return kErrArgument;
  if (n == 0) return kOk;
  FF_LAUNCH(grid_for((n + 3) / 4), kThreads, 0, as_stream(stream), philox_stream_kernel)(rng, n, kind, out);
  return launch_status();
}

}  // namespace cuda
}  // namespace fastflow
