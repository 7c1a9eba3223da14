// The scheduler of the CUDA-on-CPU emulator (see cuda_runtime.h next to this file).
//
// A launch runs its blocks in turn. A block's threads are fibers on the calling OS thread (a
// switch saves the callee-saved registers and the stack pointer; ucontext, which makes a system
// call per switch, where that is not written for the architecture), resumed in thread order
// (or blocks and threads both reversed, below); a fiber gives control back at every barrier,
// shuffle and __syncwarp, and when it returns. After each sweep the scheduler releases a warp
// whose lanes all wait at the same shuffle or __syncwarp (the same source line, the same number
// of them passed), or the block when all its threads wait at the same __syncthreads(). A thread
// that has returned while others wait at a barrier, lanes at different source lines, or a
// deadlock is a kernel bug and fails the launch, as do launch configurations CUDA refuses.
#include <sys/mman.h>
#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include <cstdio>
#include <cstdlib>
#include <cstring>
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

// ---------------------------------------------------------------- context switches
#if defined(__x86_64__) && !defined(FF_EMU_UCONTEXT)  // (-DFF_EMU_UCONTEXT tests the fallback here)
// ff_emu_switch(&from_sp, to_sp): pushes the System V callee-saved registers on the current
// stack, saves the stack pointer in *from_sp, loads to_sp and pops the other context's.
extern "C" void ff_emu_switch(void** from_sp, void* to_sp);
asm(R"(
  .text
  .p2align 4
  .hidden ff_emu_switch
  .type ff_emu_switch, @function
ff_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size ff_emu_switch, .-ff_emu_switch
)");

struct Context {
  void* sp = nullptr;
};
void fiber_trampoline();
void start_context(Context* c, char* stack, size_t size) {
  // the first switch pops six zero registers and "returns" into the trampoline with the stack
  // as a call leaves it (16-byte aligned before the call's return address)
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~static_cast<uintptr_t>(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                                        // the trampoline's own return address
  *--sp = reinterpret_cast<void*>(&fiber_trampoline);
  for (int k = 0; k < 6; ++k) *--sp = nullptr;
  c->sp = sp;
}
inline void switch_context(Context* from, Context* to) { ff_emu_switch(&from->sp, to->sp); }
#else
struct Context {
  ucontext_t uc;
};
void fiber_trampoline();
void start_context(Context* c, char* stack, size_t size) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack;
  c->uc.uc_stack.ss_size = size;
  c->uc.uc_link = nullptr;
  makecontext(&c->uc, fiber_trampoline, 0);
}
inline void switch_context(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }
#endif

struct Fiber {
  Context ctx;
  State state = kDone;
  Site site = {nullptr, 0};                         // the source line of the barrier it waits at
  uint64_t block_barriers = 0, warp_barriers = 0;  // passed so far: lanes must agree
};

std::mutex g_launch_mutex;  // one launch at a time (the globals above are the device's state)
std::vector<Fiber> g_fibers;
std::vector<char*> g_stacks;
Context g_scheduler;
int g_current = -1;
unsigned g_threads = 0;
void (*g_body)(void*) = nullptr;
void* g_ctx = nullptr;
uint64_t g_slots[kMaxThreads / 32][32];

// FASTFLOW_CUDA_EMULATOR_ORDER=reverse runs the blocks from the last one down and resumes a
// block's fibers from the last thread down: a read that a missing barrier leaves racing with a
// write sees the other side (scripts/sanitize.sh runs the tests in reverse, scripts/test.sh
// forward). Read-modify-write races between blocks (no atomics) stay invisible in both orders.
bool g_reverse = false;

// per OS thread, as CUDA's last error is (the fibers run on the launching thread)
thread_local cudaError_t g_last_error = cudaSuccess;
thread_local std::string g_message;

void fail(cudaError_t e, const std::string& why) {
  if (g_last_error == cudaSuccess) {
    g_last_error = e;
    g_message = "CUDA emulator: " + why;
  }
}

std::string block_name() {
  return "block (" + std::to_string(blockIdx.x) + ", " + std::to_string(blockIdx.y) + ", " +
         std::to_string(blockIdx.z) + ")";
}

char* stack(int i) {
  while (static_cast<int>(g_stacks.size()) <= i) {
    // a guard page below each stack: an overflow faults instead of corrupting a neighbour
    void* p = mmap(nullptr, kStack + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    if (mprotect(p, 4096, PROT_NONE) != 0) {
      munmap(p, kStack + 4096);
      return nullptr;
    }
    g_stacks.push_back(static_cast<char*>(p) + 4096);
  }
  return g_stacks[i];
}

void set_thread_index(unsigned t) {
  threadIdx.x = t % blockDim.x;
  threadIdx.y = (t / blockDim.x) % blockDim.y;
  threadIdx.z = t / (blockDim.x * blockDim.y);
}

Context g_finished;  // where a finished fiber's context goes (never resumed)

// A fiber's first frame: runs the kernel, then hands back to the scheduler for good. It has no
// local variable: under ASan a local's redzones would stay poisoned on the stack (this frame
// never returns), and the next block's fiber on that stack would trip over them.
void fiber_trampoline() {
  g_body(g_ctx);
  g_fibers[g_current].state = kDone;
  switch_context(&g_finished, &g_scheduler);
  __builtin_unreachable();
}

// Gives control back to the scheduler until it releases this fiber. The kernels' code does not
// cache shared memory across the call: it is opaque to them (another translation unit).
void wait(State s, Site site) {
  const int me = g_current;
  g_fibers[me].state = s;
  g_fibers[me].site = site;
  switch_context(&g_fibers[me].ctx, &g_scheduler);
}

// Releases fibers [lo, hi) waiting at `what`, or fails the launch if they disagree on where.
bool release(unsigned lo, unsigned hi, bool warp, const std::string& what) {
  const uint64_t seq = warp ? g_fibers[lo].warp_barriers : g_fibers[lo].block_barriers;
  for (unsigned t = lo; t < hi; ++t) {
    Fiber& f = g_fibers[t];
    const Site& a = g_fibers[lo].site;
    if (f.site.line != a.line || std::strcmp(f.site.file, a.file) != 0 ||
        (warp ? f.warp_barriers : f.block_barriers) != seq) {
      fail(cudaErrorLaunchFailure, block_name() + ", " + what + ": threads " + std::to_string(lo) + " and " +
                                       std::to_string(t) + " wait at different " +
                                       (warp ? "shuffles / __syncwarp() calls" : "__syncthreads() calls") + " (" +
                                       a.file + ":" + std::to_string(a.line) + ", " + f.site.file + ":" +
                                       std::to_string(f.site.line) + ")");
      return false;
    }
  }
  for (unsigned t = lo; t < hi; ++t) {
    Fiber& f = g_fibers[t];
    ++(warp ? f.warp_barriers : f.block_barriers);
    f.state = kRunnable;
  }
  return true;
}

// Runs the current block to completion; false (error set) on a broken barrier.
bool run_block() {
  const unsigned n = g_threads;
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = g_fibers[t];
    start_context(&f.ctx, stack(static_cast<int>(t)), kStack);
    f.state = kRunnable;
    f.site = Site{"", 0};
    f.block_barriers = f.warp_barriers = 0;
  }
  const unsigned warps = (n + 31) / 32;
  for (;;) {
    for (unsigned k = 0; k < n; ++k) {
      const unsigned t = g_reverse ? n - 1 - k : k;
      if (g_fibers[t].state != kRunnable) continue;
      g_current = static_cast<int>(t);
      set_thread_index(t);
      switch_context(&g_scheduler, &g_fibers[t].ctx);
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
        fail(cudaErrorLaunchFailure, block_name() + ", warp " + std::to_string(w) + ": " + std::to_string(waiting) +
                                         " of " + std::to_string(hi - lo) +
                                         " lanes wait at a shuffle or __syncwarp while the others " +
                                         (done ? "have returned" : "wait at __syncthreads") +
                                         " (divergent warp-synchronous code)");
        return false;
      }
      if (!release(lo, hi, true, "warp " + std::to_string(w))) return false;
      released = true;
    }
    if (released) continue;
    if (live == 0) return true;
    if (at_block == live) {
      if (live != n) {  // CUDA: a barrier must be reached by the whole block, or by none of it
        fail(cudaErrorLaunchFailure, block_name() + ": " + std::to_string(n - live) +
                                         " threads returned while the others wait at __syncthreads()");
        return false;
      }
      if (!release(0, n, false, "the block")) return false;
      continue;
    }
    fail(cudaErrorLaunchFailure, block_name() + ": deadlock, " + std::to_string(at_block) + " of " +
                                     std::to_string(live) + " live threads wait at __syncthreads()");
    return false;
  }
}

void check_full_warp(unsigned mask, int width, const char* what) {
  if (mask != 0xffffffffu || width != 32)
    fail(cudaErrorLaunchFailure, block_name() + ", thread " + std::to_string(g_current) + ": " + what +
                                     " with a partial mask or width (not emulated)");
}

}  // namespace

void syncthreads(Site site) { wait(kAtBlockBarrier, site); }

void syncwarp(unsigned mask, Site site) {
  check_full_warp(mask, 32, "__syncwarp");
  wait(kAtWarpBarrier, site);
}

int lane() { return g_current & 31; }

uint64_t shuffle(uint64_t bits, int src, unsigned mask, int width, Site site) {
  check_full_warp(mask, width, "a shuffle");
  const int t = g_current, w = t >> 5, l = t & 31;
  g_slots[w][l] = bits;
  wait(kAtWarpBarrier, site);  // every lane has written its value
  const uint64_t out = (src >= 0 && src < 32) ? g_slots[w][src] : bits;
  wait(kAtWarpBarrier, site);  // every lane has read before any writes again
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
  const uint64_t blocks = static_cast<uint64_t>(grid.x) * grid.y * grid.z;
  for (uint64_t k = 0; k < blocks; ++k) {
    const uint64_t b = g_reverse ? blocks - 1 - k : k;
    blockIdx = uint3{static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                     static_cast<unsigned>(b / (static_cast<uint64_t>(grid.x) * grid.y))};
    if (!run_block()) {
#if defined(__SANITIZE_ADDRESS__)
      // fibers left suspended mid-kernel keep ASan's poison on their frames: clear it for reuse
      for (unsigned t = 0; t < threads; ++t) __asan_unpoison_memory_region(g_stacks[t], kStack);
#endif
      return;
    }
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
  // the sentence of this thread's last failed launch (kept until its next failure)
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
