// fastflow: the launcher contract shared by the CPU and CUDA backends (torch-free).
//
// Every op takes one argument struct of raw pointers, sizes and coefficients (see each
// struct), reads the int64 (seed, offset) pair through `rng` (on the device for CUDA: no
// host sync), and returns a Status code (common.h). Tensors are contiguous unless a stride
// is given. Per-sample coefficients are fp32 [batch]; a null coefficient pointer means 0
// (or "absent" where the reference takes None). The stream layouts and counter offsets are
// those of the reference ops (fastflow/reference/<op>.py).
#pragma once

#include <cstdint>

#include "common.h"

namespace fastflow {

// Element i of a boolean mask broadcast to the data: mask[(i / inner) % period]
// (a full mask has inner = 1, period = numel; a [B, L, 1] padding mask expanded over D
// has inner = D, period = B * L). ptr == nullptr: no mask.
struct MaskDesc {
  const uint8_t* ptr = nullptr;
  int64_t inner = 1;
  int64_t period = 1;
};

// x_t = a x_1 + b x_0 + s eps (x_0 == nullptr: Gaussian stream 0; eps: stream 1).
struct AffineSampleArgs {
  const void* x1 = nullptr;
  const void* x0 = nullptr;
  const float* a = nullptr;
  const float* b = nullptr;
  const float* s = nullptr;
  const int64_t* rng = nullptr;
  void* out = nullptr;
  int64_t batch = 0, per_sample = 0;
  int dtype = kF32;  // of x1, x0 and out
};

// target = c x_1 + d x_0 + e eps: loss[b] = sum mask (v - target)^2 (fp32 [B]) and, when dv
// is given, in the same pass dv = 2 grad_scale[b] mask (v - target) in v's dtype.
struct AffineLossArgs {
  const void* v = nullptr;
  const void* x1 = nullptr;
  const void* x0 = nullptr;
  const float* c = nullptr;
  const float* d = nullptr;
  const float* e = nullptr;
  const int64_t* rng = nullptr;
  MaskDesc mask;
  const float* grad_scale = nullptr;  // with dv
  float* loss = nullptr;              // output, fp32 [batch]
  void* dv = nullptr;                 // optional output: the gradient, written in the forward
  float* workspace = nullptr;         // CUDA forward: affine_path_loss_workspace() floats
  int64_t batch = 0, per_sample = 0;
  int dtype = kF32;    // of v and dv
  int x_dtype = kF32;  // of x1 and x0: dtype, or kF32 under a bf16 / fp16 v (autocast's model
                       // output against fp32 data, read as it is)
};

// kOk when the affine_path_loss arguments are complete (both backends check the same way).
FF_HD int check_args(const AffineLossArgs& a) {  // always inlined: the ISA variants never share a copy
  if (a.batch < 0 || a.per_sample < 0 || !a.v || !a.x1 || !a.loss) return kErrArgument;
  if ((!a.x0 || a.e) && !a.rng) return kErrArgument;
  if (a.mask.ptr && (a.mask.inner < 1 || a.mask.period < 1)) return kErrArgument;
  if (a.dv && !a.grad_scale) return kErrArgument;
  return kOk;
}

// out = A x + B p + C q + N z (z = noise, or Gaussian stream 0). out may alias x.
struct StepCombineArgs {
  const void* x = nullptr;
  const void* p = nullptr;
  const void* q = nullptr;
  const float* A = nullptr;
  const float* B = nullptr;
  const float* C = nullptr;
  const float* N = nullptr;
  const int64_t* rng = nullptr;
  const void* noise = nullptr;
  void* out = nullptr;
  int64_t batch = 0, per_sample = 0;
  int dtype = kF32;         // of x, noise and out
  int p_dtype = kF32;       // of p and q: dtype, or bf16 / fp16 under an fp32 x (autocast's model
                            // output on an fp32 state, read as it is)
  int64_t coef_stride = 1;  // of A, B, C, N: 1 per sample; 0 one value for every sample (CPU only)
};

// out = u < kappa[b] ? x_1 : x_0 (integer tokens, itype for x1, x0 and out).
struct MixtureSampleArgs {
  const void* x1 = nullptr;
  const void* x0 = nullptr;        // nullptr: mask_id if >= 0, else uniform over vocab
  const float* kappa = nullptr;
  const int64_t* rng = nullptr;
  const float* noise = nullptr;    // explicit uniforms (fp32, x1's shape) or nullptr
  void* out = nullptr;
  int64_t batch = 0, per_sample = 0;
  int64_t vocab = 0;
  int64_t mask_id = -1;
  int itype = kI64;
};

// Row losses over [rows, vocab] logits: cross_entropy (xt == nullptr) or generalized_kl.
struct RowLossArgs {
  const void* logits = nullptr;
  int64_t row_stride = 0;          // in elements; the last dimension is contiguous
  const int64_t* x1 = nullptr;
  const int64_t* xt = nullptr;     // generalized_kl only
  const float* jump = nullptr;     // generalized_kl only, fp32 [rows]
  int64_t ignore_index = -100;
  const float* grad_scale = nullptr;
  void* grad = nullptr;            // nullptr: no gradient; may alias logits
  int64_t grad_stride = 0;
  float* loss = nullptr;           // fp32 [rows]
  float* workspace = nullptr;      // CUDA split rows: 4 * rows * row_split() floats
  int64_t rows = 0, vocab = 0;
  int dtype = kF32;                // of logits and grad
};

enum JumpSource : int { kSourceNone = 0, kSourceUniform = 1, kSourceMask = 2, kSourceGeneral = 3 };

struct JumpStepArgs {
  const void* logits = nullptr;
  int64_t row_stride = 0;
  const void* xt = nullptr;
  int itype = kI64;                // of xt and out
  const float* h = nullptr;        // fp32 [rows]
  const float* r1 = nullptr;
  const float* r0 = nullptr;
  const float* p0 = nullptr;       // general source: fp32 [vocab]
  const float* logp0 = nullptr;    // general source: log(p0), fp32 [vocab]
  int source = kSourceUniform;
  int64_t mask_id = -1;
  float temperature = 1.0f;
  bool final_step = false;
  bool probs = false;
  const int64_t* rng = nullptr;
  const float* noise_token = nullptr;    // [rows, 3] or nullptr
  const float* noise_race = nullptr;     // [rows, vocab]
  const float* noise_race_p0 = nullptr;  // [rows, vocab]
  void* out = nullptr;
  float* workspace = nullptr;      // CUDA split rows: 4 * rows * row_split() floats
  int64_t rows = 0, vocab = 0;
  int dtype = kF32;
};

// grad[i, :] *= g[i] where g[i] != 1 (the product taken in fp32, rounded once to grad's dtype).
struct ScaleRowsArgs {
  void* grad = nullptr;
  int64_t row_stride = 0;
  const float* g = nullptr;
  int64_t rows = 0, cols = 0;
  int dtype = kF32;
};

#define FASTFLOW_OPS(X)                       \
  X(affine_path_sample, AffineSampleArgs)     \
  X(affine_path_loss, AffineLossArgs)         \
  X(step_combine, StepCombineArgs)            \
  X(mixture_path_sample, MixtureSampleArgs)   \
  X(cross_entropy, RowLossArgs)               \
  X(generalized_kl, RowLossArgs)              \
  X(jump_step, JumpStepArgs)                  \
  X(scale_rows, ScaleRowsArgs)

namespace cpu {
#define FF_DECLARE_CPU(name, Args) int name(const Args& args);
FASTFLOW_OPS(FF_DECLARE_CPU)
#undef FF_DECLARE_CPU
// The uint32 / uniform / normal element-wise streams, for tests: out[i] for i < n.
int philox_stream(int64_t seed, int64_t offset, int64_t n, int kind, void* out);
// The kernels' generators alone (kind 0: n uint32 words, 2: n Gaussians), for the benchmarks'
// random-number bound; *checksum: the xor of every value.
int rng_throughput(int64_t n, int kind, uint32_t* checksum);
// Whether the n contiguous values at data (dtype kF32, kBF16, kF16 or kF64) all lie in
// [lo, hi] (NaN never does): the Python side's host checks of small coefficient vectors, where
// NumPy's or torch's reductions cost a few microseconds each.
bool all_within(const void* data, int64_t n, int dtype, double lo, double hi);
const char* isa();  // which compiled variant runs ("avx512", "avx2" or "baseline")
bool set_isa(const char* name);  // run a narrower variant (tests); false if unknown or unsupported
const char* isas();  // the variants this build and processor can run, comma-separated, narrowest first
}  // namespace cpu

namespace cuda {
bool compiled();
// "" when the CUDA runtime linked into _C can use a device here, else why not.
const char* runtime_problem();
// The CUDA error behind this thread's last kErrCuda ("" if none): the runtime's own words.
const char* last_error();
#define FF_DECLARE_CUDA(name, Args) int name(const Args& args, uintptr_t stream);
FASTFLOW_OPS(FF_DECLARE_CUDA)
#undef FF_DECLARE_CUDA
int philox_stream(const int64_t* rng, int64_t n, int kind, void* out, uintptr_t stream);
int64_t affine_path_loss_workspace(int64_t batch, int64_t per_sample);
int64_t row_split(int64_t rows, int64_t vocab, int device);
}  // namespace cuda

}  // namespace fastflow
