// A CUDA-on-CPU emulator for fastflow's tests (not part of the installed library).
//
// With csrc/cuda/emulator first on the include path, csrc/cuda/*.cu compile with the host
// compiler into fastflow._C_cuda_emu (CMake option FASTFLOW_CUDA_EMULATOR): this header stands
// in for <cuda_runtime.h>, and emulator.cpp runs a launch's blocks one after another, each
// block's threads as fibers on one OS thread. A fiber runs until it reaches __syncthreads(),
// a warp shuffle or __syncwarp(), so every barrier and shuffle of the kernels has its CUDA
// meaning, and a broken one is reported instead of hanging: a thread that skips a barrier its
// block waits at, a lane that leaves while its warp shuffles, lanes at different barriers, a
// launch configuration CUDA refuses. The launch fails with cudaErrorLaunchFailure and the
// emulator's sentence, which fastflow._C_cuda_emu.cuda_last_error() returns, as on a GPU.
//
// What it checks: the launchers' grids, the kernels' index arithmetic and 64-bit offsets,
// the vector loads' alignment paths (the module is built with -fsanitize=alignment, so a
// 16-byte load from an address that is not 16-byte aligned aborts, as it faults on a GPU),
// every reduction and the split-row paths, bit for bit against the reference where the
// kernels are exact. What it cannot: device math (the host functions of fastflow/math.h run),
// timing, coalescing, and races that a sequential schedule hides (read-modify-write races
// between threads or blocks). The device has kSms = 4 multiprocessors (few, so the split-row
// paths are taken at test sizes).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#define FF_CUDA_EMULATOR 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// One block runs at a time, so a static is the block's shared memory. Unlike CUDA's, it starts
// zeroed and keeps the previous block's values (GCC ignores a section attribute on statics of
// templates, so there is no poisoning it between blocks): a kernel that reads shared memory
// before writing it is not caught. fastflow's kernels write every slot they read first.
#define __shared__ static

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct alignas(16) float4 {
  float x, y, z, w;
};

// set by the scheduler before it resumes a fiber (one OS thread runs them all)
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

// ---------------------------------------------------------------- runtime API (the part used)
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9,
                   cudaErrorLaunchFailure = 719 };
typedef struct CUstream_st* cudaStream_t;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
enum cudaMemoryType { cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost = 1, cudaMemoryTypeDevice = 2 };
struct cudaPointerAttributes {
  cudaMemoryType type;
  int device;
  void* devicePointer;
  void* hostPointer;
};

cudaError_t cudaGetLastError();
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDevice(int* dev);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int dev);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* p);

// ---------------------------------------------------------------- device functions
template <typename T> inline T __ldg(const T* p) { return *p; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
// CUDA overloads min / max for many type pairs; the kernels use int64_t pairs only, and any
// other pair fails to compile here rather than convert differently from CUDA.
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }
template <typename A, typename B> A min(A, B) = delete;
template <typename A, typename B> A max(A, B) = delete;

namespace ff_emu {

// Where a barrier or shuffle is called from: the lanes of a warp (the threads of a block) must
// all wait at the same one. The wrappers below take it as __builtin_FILE() / __builtin_LINE()
// default arguments, the caller's source line (a return address would differ between copies
// of one call that the optimiser makes).
struct Site {
  const char* file;
  int line;
};

void syncthreads(Site site);                  // block barrier
void syncwarp(unsigned mask, Site site);      // warp barrier (full mask only)
// The value lane `src` of this warp gave (its own when src is outside the warp); every lane
// of the warp must call it (full mask, width 32), as CUDA requires of these shuffles.
uint64_t shuffle(uint64_t bits, int src, unsigned mask, int width, Site site);
int lane();

template <typename T> inline T shuffle_as(T v, int src, unsigned mask, int width, Site site) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a 1-8 byte value");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = shuffle(bits, src, mask, width, site);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// Runs body() as every thread of every block of the grid (sets the launch error on failure).
void run_grid(dim3 grid, dim3 block, void (*body)(void*), void* ctx);

template <typename... P> struct Launcher {
  static_assert(!(std::is_reference<P>::value || ...), "kernel parameters are passed by value");
  void (*kernel)(P...);
  dim3 grid, block;
  template <typename... A> void operator()(A&&... args) const {
    // the arguments are converted once, as CUDA copies them at the launch; every thread
    // gets its own copy of each (by-value parameters)
    std::tuple<typename std::decay<P>::type...> copy(std::forward<A>(args)...);
    struct Ctx {
      void (*kernel)(P...);
      std::tuple<typename std::decay<P>::type...>* args;
    } ctx{kernel, &copy};
    run_grid(grid, block, [](void* c) {
      Ctx* x = static_cast<Ctx*>(c);
      std::apply(x->kernel, *x->args);
    }, &ctx);
  }
};

template <typename... P> Launcher<P...> launcher(dim3 grid, dim3 block, size_t smem, cudaStream_t, void (*k)(P...)) {
  (void)smem;
  return Launcher<P...>{k, grid, block};
}

}  // namespace ff_emu

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ff_emu::syncthreads({file, line});
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ff_emu::syncwarp(mask, {file, line});
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32, const char* file = __builtin_FILE(),
                         int line = __builtin_LINE()) {
  return ff_emu::shuffle_as(v, ff_emu::lane() ^ lane_mask, mask, width, {file, line});
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                          int line = __builtin_LINE()) {
  return ff_emu::shuffle_as(v, ff_emu::lane() + static_cast<int>(delta), mask, width, {file, line});
}

#define FF_LAUNCH(grid, block, smem, stream, ...) ::ff_emu::launcher(grid, block, smem, stream, __VA_ARGS__)
