// The scheduler of the CUDA-on-CPU emulator (see cuda_runtime.h next to this file).
//
// A launch runs its blocks in order. A block's threads are fibers (ucontext) on the calling
// OS thread, resumed in thread order (or its reverse, below); a fiber gives control back at every barrier, shuffle
// and __syncwarp, and when it returns. After each sweep the scheduler releases a warp whose
// live lanes all wait at a warp barrier, or the block when all its live threads wait at
// __syncthreads() (a thread that has returned there is a bug, as the CUDA guide says); anything
// else that leaves no fiber runnable is a divergent barrier or shuffle and fails the launch, as
// do configurations CUDA refuses.
#include <sys/mman.h>
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_runtime.h"

uint3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0};
dim3 blockDim, gridDim;

namespace ff_emu {
namespace {

constexpr int kSms = 4;                      // the emulated device's multiprocessors
constexpr size_t kStack = 256 * 1024;        // per fiber; kernels keep small frames
constexpr int kMaxThreads = 1024;

enum State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
  ucontext_t ctx;
  State state = kDone;
  uint64_t block_barriers = 0, warp_barriers = 0;  // passed so far: lanes must agree
};

std::mutex g_launch_mutex;  // one launch at a time (the globals above are the device's state)
std::vector<Fiber> g_fibers;
std::vector<char*> g_stacks;
ucontext_t g_scheduler;
int g_current = -1;
unsigned g_threads = 0;
void (*g_body)(void*) = nullptr;
void* g_ctx = nullptr;
uint64_t g_slots[kMaxThreads / 32][32];

// FASTFLOW_CUDA_EMULATOR_ORDER=reverse resumes a block's fibers from the last thread down: a
// read of shared memory that a missing barrier leaves racing sees the other thread's value in
// one order or the other (scripts/sanitize.sh runs the tests in reverse, scripts/test.sh forward).
bool g_reverse = false;

cudaError_t g_last_error = cudaSuccess;
std::string g_message;

void fail(cudaError_t e, const std::string& why) {
  if (g_last_error == cudaSuccess) {
    g_last_error = e;
    g_message = "CUDA emulator: " + why;
  }
}

char* stack(int i) {
  while (static_cast<int>(g_stacks.size()) <= i) {
    // a guard page below each stack: an overflow faults instead of corrupting a neighbour
    void* p = mmap(nullptr, kStack + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    mprotect(p, 4096, PROT_NONE);
    g_stacks.push_back(static_cast<char*>(p) + 4096);
  }
  return g_stacks[i];
}

void set_thread_index(unsigned t) {
  threadIdx.x = t % blockDim.x;
  threadIdx.y = (t / blockDim.x) % blockDim.y;
  threadIdx.z = t / (blockDim.x * blockDim.y);
}

void fiber_entry() {
  g_body(g_ctx);
  g_fibers[g_current].state = kDone;
  // returning resumes uc_link, the scheduler
}

// Gives control back to the scheduler until it releases this fiber.
void wait(State s) {
  const int me = g_current;
  g_fibers[me].state = s;
  swapcontext(&g_fibers[me].ctx, &g_scheduler);
  asm volatile("" ::: "memory");  // shared memory (statics) may have changed meanwhile
}

int thread_id() { return g_current; }

std::string where() {
  char buf[96];
  std::snprintf(buf, sizeof buf, "block (%u, %u, %u), thread %d", blockIdx.x, blockIdx.y, blockIdx.z, g_current);
  return buf;
}

// Runs the current block to completion; false (error set) on a divergent barrier.
bool run_block() {
  const unsigned n = g_threads;
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = g_fibers[t];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = stack(static_cast<int>(t));
    f.ctx.uc_stack.ss_size = kStack;
    f.ctx.uc_link = &g_scheduler;
    makecontext(&f.ctx, fiber_entry, 0);
    f.state = kRunnable;
    f.block_barriers = f.warp_barriers = 0;
  }
  const unsigned warps = (n + 31) / 32;
  for (;;) {
    for (unsigned k = 0; k < n; ++k) {
      const unsigned t = g_reverse ? n - 1 - k : k;
      if (g_fibers[t].state != kRunnable) continue;
      g_current = static_cast<int>(t);
      set_thread_index(t);
      swapcontext(&g_scheduler, &g_fibers[t].ctx);
    }
    g_current = -1;
    bool released = false;
    unsigned live = 0, at_block = 0;
    for (unsigned w = 0; w < warps; ++w) {
      const unsigned lo = 32 * w, hi = lo + 32 < n ? lo + 32 : n;
      unsigned waiting = 0, done = 0;
      for (unsigned t = lo; t < hi; ++t) {
        waiting += g_fibers[t].state == kAtWarpBarrier;
        done += g_fibers[t].state == kDone;
        at_block += g_fibers[t].state == kAtBlockBarrier;
      }
      live += hi - lo - done;
      if (waiting == 0) continue;
      if (waiting != hi - lo) {
        fail(cudaErrorLaunchFailure,
             "block (" + std::to_string(blockIdx.x) + "), warp " + std::to_string(w) + ": " +
                 std::to_string(waiting) + " of " + std::to_string(hi - lo) +
                 " lanes wait at a shuffle or __syncwarp while the others " +
                 (done ? "have returned" : "wait at __syncthreads") + " (divergent warp-synchronous code)");
        return false;
      }
      const uint64_t seq = g_fibers[lo].warp_barriers;
      for (unsigned t = lo; t < hi; ++t) {
        if (g_fibers[t].warp_barriers != seq) {
          fail(cudaErrorLaunchFailure, "block (" + std::to_string(blockIdx.x) + "), warp " + std::to_string(w) +
                                           ": lanes reached different shuffles");
          return false;
        }
        ++g_fibers[t].warp_barriers;
        g_fibers[t].state = kRunnable;
      }
      released = true;
    }
    if (released) continue;
    if (live == 0) return true;
    if (at_block == live) {
      if (live != n) {  // CUDA: a barrier must be reached by the whole block, or by none of it
        fail(cudaErrorLaunchFailure, "block (" + std::to_string(blockIdx.x) + "): " + std::to_string(n - live) +
                                         " threads returned while the others wait at __syncthreads()");
        return false;
      }
      uint64_t seq = ~0ull;
      for (unsigned t = 0; t < n; ++t) {
        Fiber& f = g_fibers[t];
        if (f.state != kAtBlockBarrier) continue;
        if (seq == ~0ull) seq = f.block_barriers;
        if (f.block_barriers != seq) {
          fail(cudaErrorLaunchFailure, "block (" + std::to_string(blockIdx.x) +
                                           "): threads reached different __syncthreads() calls");
          return false;
        }
        ++f.block_barriers;
        f.state = kRunnable;
      }
      continue;
    }
    fail(cudaErrorLaunchFailure, "block (" + std::to_string(blockIdx.x) + "): deadlock, " +
                                     std::to_string(at_block) + " of " + std::to_string(live) +
                                     " live threads wait at __syncthreads()");
    return false;
  }
}

}  // namespace

void syncthreads() { wait(kAtBlockBarrier); }

void syncwarp(unsigned mask) {
  if (mask != 0xffffffffu) fail(cudaErrorLaunchFailure, where() + ": __syncwarp with a partial mask (not emulated)");
  wait(kAtWarpBarrier);
}

int lane() { return thread_id() & 31; }

uint64_t shuffle(uint64_t bits, int src, unsigned mask, int width) {
  if (mask != 0xffffffffu || width != 32)
    fail(cudaErrorLaunchFailure, where() + ": shuffle with a partial mask or width (not emulated)");
  const int t = thread_id(), w = t >> 5, l = t & 31;
  g_slots[w][l] = bits;
  wait(kAtWarpBarrier);  // every lane has written its value
  const uint64_t out = (src >= 0 && src < 32) ? g_slots[w][src] : bits;
  wait(kAtWarpBarrier);  // every lane has read before any writes again
  return out;
}

void run_grid(dim3 grid, dim3 block, void (*body)(void*), void* ctx) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u) {
    fail(cudaErrorInvalidConfiguration, "invalid launch configuration: grid (" + std::to_string(grid.x) + ", " +
                                            std::to_string(grid.y) + ", " + std::to_string(grid.z) + "), block (" +
                                            std::to_string(block.x) + ", " + std::to_string(block.y) + ", " +
                                            std::to_string(block.z) + ")");
    return;
  }
  if (threads % 32 != 0) {
    fail(cudaErrorInvalidConfiguration, "blocks of a multiple of 32 threads only (not emulated)");
    return;
  }
  if (g_fibers.size() < threads) g_fibers.resize(threads);
  for (unsigned t = 0; t < threads; ++t) {
    if (!stack(static_cast<int>(t))) {
      fail(cudaErrorLaunchFailure, "cannot map fiber stacks");
      return;
    }
  }
  const char* order = std::getenv("FASTFLOW_CUDA_EMULATOR_ORDER");
  g_reverse = order && std::string(order) == "reverse";
  g_threads = static_cast<unsigned>(threads);
  g_body = body;
  g_ctx = ctx;
  gridDim = grid;
  blockDim = block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = uint3{x, y, z};
        if (!run_block()) return;
      }
}

}  // namespace ff_emu

// ---------------------------------------------------------------- runtime API
cudaError_t cudaGetLastError() {
  cudaError_t e = ff_emu::g_last_error;
  ff_emu::g_last_error = cudaSuccess;
  return e;
}

const char* cudaGetErrorString(cudaError_t e) {
  // the sentence of the launch that failed last (kept until the next failure)
  return e == cudaSuccess ? "no error" : ff_emu::g_message.c_str();
}

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int dev) {
  if (attr != cudaDevAttrMultiProcessorCount || dev != 0) return cudaErrorInvalidValue;
  *value = ff_emu::kSms;
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* p) {
  attr->type = cudaMemoryTypeDevice;  // the emulated device's memory is the host's
  attr->device = 0;
  attr->devicePointer = const_cast<void*>(p);
  attr->hostPointer = const_cast<void*>(p);
  return cudaSuccess;
}
