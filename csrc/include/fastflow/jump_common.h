// fastflow: the per-row logic of jump_step shared by the CPU and CUDA kernels
// (FORMULAS.md section 5; fastflow/reference/jump_step.py): the jump test against the
// largest possible total rate, and the final choice once x_1 is known.
#pragma once

#include <cstdint>

#include "common.h"
#include "math.h"
#include "ops.h"
#include "philox.h"

namespace fastflow {

constexpr float kJumpInf = __builtin_huge_valf();

// Largest value of -log E for generated race noise: u >= 2^-33 gives E >= ~2^-33 and
// -log E <= 33 ln 2 = 22.87 (a margin covers rounding). Lets the race skip blocks whose
// largest key cannot win; explicit noise has no such bound.
constexpr float kRaceGumbelMax = 23.5f;

struct JumpRow {
  int64_t xt;
  float e_tok, u_choice;
  int64_t y_unif;
  float rate0;
  bool may_jump;
};

// h * rate with h * inf = inf for h > 0 and 0 for h = 0
FF_HD float jump_times(float h, float rate) {
  return fm::isinf(rate) ? (h > 0.0f ? kJumpInf : 0.0f) : h * rate;
}

// The jump test E < h * rate; an infinite h * rate jumps even where E is (its 32-bit uniform
// rounds to 1 with probability 2^-25)
FF_HD bool jumps(float e, float h, float rate) {
  const float t = jump_times(h, rate);
  return e < t || t == kJumpInf;
}

// Row i's state from its token words w = philox(seed, offset + i) (unused with explicit noise).
FF_HD JumpRow jump_row_of(const JumpStepArgs& a, const Words4& w, int64_t i, int64_t xt) {
  JumpRow r;
  r.xt = xt;
  const int64_t V = a.vocab;
  if (a.noise_token) {
    const float* u = a.noise_token + 3 * i;
    r.e_tok = exp1_from_uniform(u[0]);
    r.u_choice = u[1];
    if (V > 1) {
      int64_t y = static_cast<int64_t>(fm::floor(u[2] * static_cast<float>(V - 1)));
      r.y_unif = y > V - 2 ? V - 2 : y;
    } else {
      r.y_unif = 0;
    }
  } else {
    r.e_tok = exp1_from_uniform(uint_to_open_uniform(w.w0));
    r.u_choice = uint_to_uniform(w.w1);
    r.y_unif = static_cast<int64_t>((static_cast<uint64_t>(w.w2) * static_cast<uint64_t>(V - 1)) >> 32);
  }
  r.y_unif += r.y_unif >= r.xt ? 1 : 0;  // uniform over y != x_t
  float p0_xt = 1.0f;
  if (a.source == kSourceUniform) p0_xt = static_cast<float>(1.0 / static_cast<double>(V));
  else if (a.source == kSourceMask) p0_xt = r.xt == a.mask_id ? 1.0f : 0.0f;
  else if (a.source == kSourceGeneral) p0_xt = a.p0[r.xt];
  // r0 * (1 - p0(x_t)) with 0 * inf = 0: no p0 mass off x_t means no p0 rate
  r.rate0 = p0_xt >= 1.0f ? 0.0f : a.r0[i] * (1.0f - p0_xt);
  const float tmax = a.r1[i] + r.rate0;
  r.may_jump = a.final_step || jumps(r.e_tok, a.h[i], tmax);
  return r;
}

FF_HD JumpRow jump_row(const JumpStepArgs& a, uint64_t seed, uint64_t off, int64_t i, int64_t xt) {
  const Words4 w = a.noise_token ? Words4{0u, 0u, 0u, 0u} : philox4x32(seed, off + static_cast<uint64_t>(i));
  return jump_row_of(a, w, i, xt);
}

// A row that may jump draws x_1 from its logits; a race without a finite winner (every logit
// -inf or probability 0, or a NaN among them) had no distribution to draw from. Such a row's
// token is kNoDraw, which fastflow.ops turns into a ValueError (torch.multinomial's refusal).
constexpr int64_t kNoDraw = -1;
FF_HD bool drawn(float race_score) { return race_score > -kJumpInf; }  // (false for NaN)

enum JumpChoice : int { kStay = 0, kTakeX1 = 1, kTakeSource = 2 };

// What a row that may jump does once its x_1 is drawn.
FF_HD int jump_choice(const JumpStepArgs& a, int64_t i, const JumpRow& r, int64_t x1) {
  if (a.final_step) return kTakeX1;
  const float ri1 = x1 != r.xt ? a.r1[i] : 0.0f;
  const float total = ri1 + r.rate0;
  if (!jumps(r.e_tok, a.h[i], total)) return kStay;
  const bool pick_x1 = fm::isinf(ri1) ? true : (fm::isinf(r.rate0) ? false : r.u_choice * total < ri1);
  if (pick_x1 || a.source == kSourceNone) return kTakeX1;
  return kTakeSource;
}

// The source token of a row taking the source component (general p0: the caller's race).
FF_HD int64_t jump_source_token(const JumpStepArgs& a, const JumpRow& r) {
  return a.source == kSourceUniform ? r.y_unif : a.mask_id;
}

}  // namespace fastflow
