// fastflow CPU backend: cross_entropy and generalized_kl share this row machinery
// (FORMULAS.md section 4). Per row: one streaming pass for (max, sum exp) in L1-sized
// chunks, the loss from logsumexp, z[x_1] and z[x_t], then (if asked) one pass writing
// the gradient. Few long rows are split into fixed chunks (deterministic: the split depends
// only on the shape) so every thread has work.
#pragma once

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu_common.h"

namespace fastflow {
namespace cpu {
namespace FF_CPU_NS {
namespace rows {

constexpr int64_t kRowChunk = 4096;       // elements per (max, sum) chunk
constexpr int64_t kSplitChunk = 1 << 15;  // elements per work item when rows are split
constexpr int64_t kSplitRows = 16;        // split rows when there are fewer than this ...
constexpr int64_t kSplitVocab = 1 << 16;  // ... and the vocabulary is at least this large

// Running (max, sum exp(z - max)) of a row. A NaN logit makes both NaN; a +inf logit (and no
// NaN) gives (+inf, 1): logsumexp = +inf as torch's, so the cross-entropy is +inf (NaN if the
// target is the +inf one; torch's cross_entropy gives NaN either way), and the probabilities
// are NaN (see inv_sum).
struct Stats {
  double m = -std::numeric_limits<double>::infinity();  // running max
  double s = 0.0;                                       // sum exp(z - m)
};

inline void merge(Stats& acc, double m, double s) {
  if (std::isnan(acc.m) || std::isnan(acc.s)) return;
  if (std::isnan(m) || std::isnan(s)) {
    acc.m = acc.s = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  if (acc.m == -std::numeric_limits<double>::infinity() && m != std::numeric_limits<double>::infinity()) {
    acc.m = m;  // the first chunk (a short row's only one): no exp, which costs more than its sum
    acc.s = m == -std::numeric_limits<double>::infinity() ? 0.0 : s;
    return;
  }
  double mn = acc.m > m ? acc.m : m;
  if (mn == -std::numeric_limits<double>::infinity() || mn == std::numeric_limits<double>::infinity()) {
    acc.m = mn;
    acc.s = mn > 0 ? 1.0 : 0.0;
    return;
  }
  acc.s = acc.s * std::exp(acc.m - mn) + s * std::exp(m - mn);
  acc.m = mn;
}

// 1 / sum of a row's statistics; NaN for a +inf max (torch.softmax of such a row is all NaN)
inline float inv_sum(const Stats& st) {
  return st.m == std::numeric_limits<double>::infinity() ? std::numeric_limits<float>::quiet_NaN()
                                                         : 1.0f / static_cast<float>(st.s);
}

// x[0] = the largest of x[0, 2W) / the sum of x[0, 2W), halving with constant widths (each
// step one vector operation; a loop of dependent scalar steps is what the compiler makes of
// a plain reduction, whose order it may not change)
template <int W> inline void fold_max(float* x) {
  for (int l = 0; l < W; ++l) x[l] = x[l + W] > x[l] ? x[l + W] : x[l];
  if constexpr (W > 1) fold_max<W / 2>(x);
}
template <int W> inline void fold_add(double* x) {
  for (int l = 0; l < W; ++l) x[l] += x[l + W];
  if constexpr (W > 1) fold_add<W / 2>(x);
}

// (max, sum exp(z - max)) of z[0, len), len <= kRowChunk, merged into acc; with e, the
// terms exp(z - shift) are also stored there (e may alias z) and the shift is returned
template <typename T>
inline float chunk_stats(const T* z, int64_t len, Stats& acc, float* e = nullptr) {
  if constexpr (std::is_same<T, f16>::value) {  // one block conversion for both loops below
    alignas(64) float zf[kRowChunk];
    load_f32(z, len, zf);
    return chunk_stats<float>(zf, len, acc, e);
  }
  const float ninf = -std::numeric_limits<float>::infinity();
  // Whole groups of lanes folded as a tree, then the tail as a chain: a chain over the 32 lanes
  // was a fifth of a row of 64, and scalar tail stores into the lanes stall the fold's vector
  // loads. The max skips NaN (`v > m` is false for one), so its order cannot matter.
  float m = ninf;
  int64_t j0 = 0;
  if (len >= kMaxLanes) {
    float mx[kMaxLanes];
    for (int l = 0; l < kMaxLanes; ++l) mx[l] = ninf;
    for (; j0 + kMaxLanes <= len; j0 += kMaxLanes)
      for (int l = 0; l < kMaxLanes; ++l) {
        float v = ld(z, j0 + l);
        mx[l] = v > mx[l] ? v : mx[l];
      }
    fold_max<kMaxLanes / 2>(mx);
    m = mx[0];
  }
  for (int64_t j = j0; j < len; ++j) m = ld(z, j) > m ? ld(z, j) : m;
  if (m == std::numeric_limits<float>::infinity()) {  // rare: a NaN among the logits still wins
    bool nan = false;
    for (int64_t j = 0; j < len; ++j) nan |= ld(z, j) != ld(z, j);
    if (e)
      for (int64_t j = 0; j < len; ++j) e[j] = 0.0f;  // rescaled by NaN later (inv_sum)
    merge(acc, nan ? std::numeric_limits<double>::quiet_NaN() : m, 1.0);
    return 0.0f;
  }
  const float shift = m == ninf ? 0.0f : m;
  double s = 0.0;  // the same way: whole lane groups as a tree in double, then the tail
  j0 = 0;
  if (len >= kLanes) {
    float sm[kLanes] = {0.0f};
    if (e) {
      for (; j0 + kLanes <= len; j0 += kLanes)
        for (int l = 0; l < kLanes; ++l) sm[l] += (e[j0 + l] = fm::exp_nonpos(ld(z, j0 + l) - shift));
    } else {
      for (; j0 + kLanes <= len; j0 += kLanes)
        for (int l = 0; l < kLanes; ++l) sm[l] += fm::exp_nonpos(ld(z, j0 + l) - shift);
    }
    double d[kLanes];
    for (int l = 0; l < kLanes; ++l) d[l] = sm[l];
    fold_add<kLanes / 2>(d);
    s = d[0];
  }
  for (int64_t j = j0; j < len; ++j) {
    const float t = fm::exp_nonpos(ld(z, j) - shift);
    if (e) e[j] = t;
    s += t;
  }
  merge(acc, m, s);  // a NaN logit made the sum NaN: so is the row
  return shift;
}

template <typename T>
inline void range_stats(const T* z, int64_t lo, int64_t hi, Stats& acc) {
  for (int64_t j = lo; j < hi; j += kRowChunk) chunk_stats(z + j, std::min(kRowChunk, hi - j), acc);
}

// g_j = ((exp(z_j - M) * inv) * a) * coef for j in [lo, hi)
template <typename T>
inline void write_probs(const T* z, T* g, int64_t lo, int64_t hi, float M, float inv, float a, float coef) {
  const float shift = M == -std::numeric_limits<float>::infinity() ? 0.0f : M;
  staged(hi - lo, g + lo, [&](int64_t, int64_t n, auto* gs, auto* zs) {
    for (int64_t j = 0; j < n; ++j) st(gs, j, ((fm::exp_nonpos(ld(zs, j) - shift) * inv) * a) * coef);
  }, z + lo);
}

// An fp32 row's statistics and probabilities with one exp an element instead of two: the
// stats pass stores exp(z - shift_c) of each chunk into g, then each chunk is rescaled by
// exp(shift_c - M) * inv * a * coef (g may alias z: each element is read before written).
// Only for fp32 gradients: a bf16 / fp16 buffer would round the terms twice.
inline Stats row_stats_into(const float* z, float* g, int64_t V, std::vector<float>& shifts) {
  Stats s;
  shifts.clear();
  for (int64_t j = 0; j < V; j += kRowChunk) shifts.push_back(chunk_stats(z + j, std::min(kRowChunk, V - j), s, g + j));
  return s;
}

inline void rescale_probs(float* g, int64_t V, const std::vector<float>& shifts, float M, float inv, float a,
                          float coef) {
  const float shift = M == -std::numeric_limits<float>::infinity() ? 0.0f : M;
  for (int64_t j = 0, c = 0; j < V; j += kRowChunk, ++c) {
    // a chunk of -inf logits stored zeros with shift 0, which may exceed M: its factor is 0
    const float sc = shifts[static_cast<size_t>(c)];
    const float k = sc > shift ? 0.0f : ((fm::exp_nonpos(sc - shift) * inv) * a) * coef;
    float* gc = g + j;
    const int64_t len = std::min(kRowChunk, V - j);
    for (int64_t t = 0; t < len; ++t) gc[t] = gc[t] * k;
  }
}

template <typename T>
inline void write_zero(T* g, int64_t lo, int64_t hi) {
  for (int64_t j = lo; j < hi; ++j) st(g, j, 0.0f);
}

// What one row needs besides the bulk pass.
struct RowInfo {
  bool valid;
  int64_t i1, it;   // x_1 and x_t indices (0 where not valid)
  float z1, zt;     // z[x_1], z[x_t] (read before any gradient is written)
  float jump, coef;
};

// The row's loss, gradient scale factor `a` of the bulk pass and the fixed-up gradient
// entries; GKL == false is cross-entropy.
template <bool GKL>
struct RowMath {
  float loss, a;
  float g1, gt;  // final gradient values at x_1 and x_t (GKL), g1 only (CE)
};

template <bool GKL>
inline RowMath<GKL> row_math(const RowInfo& r, const Stats& st_, bool xt_differs) {
  RowMath<GKL> out{0.0f, 1.0f, 0.0f, 0.0f};
  const float M = static_cast<float>(st_.m);
  const float S = static_cast<float>(st_.s);
  const float logS = std::log(S);
  const float shift = M == -std::numeric_limits<float>::infinity() ? 0.0f : M;
  const float inv = inv_sum(st_);
  if (!GKL) {
    // (M - z1) + log S: (M + log S) - z1 would round log S away next to logits of 1e8 and more
    const bool finite = std::isfinite(M);
    out.loss = r.valid ? (finite ? (M - r.z1) + logS : (M + logS) - r.z1) : 0.0f;
    const float p1 = fm::exp_nonpos(r.z1 - shift) * inv;
    out.g1 = (p1 - 1.0f) * r.coef;
    return out;
  }
  const float off = xt_differs ? 1.0f : 0.0f;
  const float log_p1 = (r.z1 - M) - logS;
  const float p_t = fm::exp_nonpos(r.zt - shift) * inv;
  // (1 - delta) log p1 is 0 where delta = 1, even if p1 = 0 (0 * -inf would be NaN)
  out.loss = r.valid ? -r.jump * (p_t - (1.0f - off) + (xt_differs ? log_p1 : 0.0f)) : 0.0f;
  out.a = p_t + off;
  const float coef = r.coef;  // grad_scale * jump * valid
  const float p1 = fm::exp_nonpos(r.z1 - shift) * inv;
  // g = -(p_t + off) p + p_t e_xt + off e_x1;  grad = -g * coef
  float g_t = -(p_t + off) * p_t + p_t + (r.it == r.i1 ? off : 0.0f);
  float g_1 = -(p_t + off) * p1 + off + (r.it == r.i1 ? p_t : 0.0f);
  out.gt = -g_t * coef;
  out.g1 = -g_1 * coef;
  return out;
}

template <typename T, bool GKL>
int run(const RowLossArgs& a) {
  const int64_t N = a.rows, V = a.vocab;
  const T* logits = static_cast<const T*>(a.logits);
  T* grad = static_cast<T*>(a.grad);
  const bool want_grad = grad != nullptr;
  int err = kOk;

  auto info = [&](int64_t i) {
    RowInfo r;
    const int64_t x1 = a.x1[i];
    r.valid = x1 != a.ignore_index;
    r.i1 = r.valid ? x1 : 0;
    r.it = GKL ? (r.valid ? a.xt[i] : 0) : 0;
    r.jump = GKL ? a.jump[i] : 1.0f;
    const float gs = want_grad ? a.grad_scale[i] : 0.0f;
    r.coef = r.valid ? (GKL ? gs * r.jump : gs) : 0.0f;
    const T* z = logits + i * a.row_stride;
    bool ok = r.i1 >= 0 && r.i1 < V && r.it >= 0 && r.it < V;
    r.z1 = ok && r.valid ? ld(z, r.i1) : 0.0f;  // an ignored row's logits are not read at all
    r.zt = ok && r.valid ? ld(z, r.it) : 0.0f;
    return std::make_pair(r, ok);
  };
  auto finish = [&](int64_t i, const RowInfo& r, const RowMath<GKL>& m) {
    a.loss[i] = m.loss;
    if (!want_grad) return;
    T* g = grad + i * a.grad_stride;
    if (!r.valid) return;
    st(g, r.i1, m.g1);
    if (GKL) st(g, r.it, r.it == r.i1 ? m.g1 : m.gt);
  };
  auto differs = [&](int64_t i) { return GKL ? a.xt[i] != a.x1[i] : false; };

  if (!(N < kSplitRows && V >= kSplitVocab)) {
    const int64_t chunk_rows = std::max<int64_t>(1, std::min<int64_t>(65536 / V, N / (8 * max_threads())));
#pragma omp parallel if (N * V >= kParallelMin && N > 1)
    {
      std::vector<float> shifts;  // per thread: the chunk shifts of the fp32 one-exp path
      // dynamic, in chunks of at most ~64K logits and 1/8 of a thread's share of the rows:
      // ignored rows cost next to nothing, and padding often sits together (the tail of a
      // batch), where a static split would leave a thread idle
#pragma omp for schedule(dynamic, chunk_rows)
      for (int64_t i = 0; i < N; ++i) {
        auto [r, ok] = info(i);
        if (!ok) {
#pragma omp atomic write
          err = kErrIndex;
          continue;
        }
        T* g = want_grad ? grad + i * a.grad_stride : nullptr;
        if (!r.valid) {  // an ignored row: loss 0, gradient zeros, its logits never read
          a.loss[i] = 0.0f;
          if (want_grad) write_zero(g, 0, V);
          continue;
        }
        const T* z = logits + i * a.row_stride;
        constexpr bool kF32 = std::is_same<T, float>::value;
        const bool one_exp = kF32 && want_grad;
        Stats s;
        if (one_exp)
          s = row_stats_into(reinterpret_cast<const float*>(z), reinterpret_cast<float*>(g), V, shifts);
        else
          range_stats(z, 0, V, s);
        RowMath<GKL> m = row_math<GKL>(r, s, differs(i));
        const float M = static_cast<float>(s.m), inv = inv_sum(s);
        if (one_exp)
          rescale_probs(reinterpret_cast<float*>(g), V, shifts, M, inv, m.a, r.coef);
        else if (want_grad)
          write_probs(z, g, 0, V, M, inv, m.a, r.coef);
        finish(i, r, m);
      }
    }
    return err;
  }

  // few long rows: (row, chunk) work items
  const int64_t nch = (V + kSplitChunk - 1) / kSplitChunk;
  const int64_t items = N * nch;
  std::vector<RowInfo> ri(static_cast<size_t>(N));
  std::vector<Stats> part(static_cast<size_t>(items)), tot(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    auto [r, ok] = info(i);
    if (!ok) return kErrIndex;
    ri[static_cast<size_t>(i)] = r;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t i = it / nch, c = it - i * nch;
    const int64_t lo = c * kSplitChunk, hi = std::min(V, lo + kSplitChunk);
    if (!ri[static_cast<size_t>(i)].valid) continue;  // ignored: not read (loss 0, gradient zeros)
    range_stats(logits + i * a.row_stride, lo, hi, part[static_cast<size_t>(it)]);
  }
  std::vector<RowMath<GKL>> rm(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    Stats& s = tot[static_cast<size_t>(i)];
    for (int64_t c = 0; c < nch; ++c) {
      const Stats& p = part[static_cast<size_t>(i * nch + c)];
      merge(s, p.m, p.s);
    }
    rm[static_cast<size_t>(i)] = row_math<GKL>(ri[static_cast<size_t>(i)], s, differs(i));
  }
  if (want_grad) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t i = it / nch, c = it - i * nch;
      const int64_t lo = c * kSplitChunk, hi = std::min(V, lo + kSplitChunk);
      const RowInfo& r = ri[static_cast<size_t>(i)];
      const Stats& s = tot[static_cast<size_t>(i)];
      T* g = grad + i * a.grad_stride;
      if (r.valid)
        write_probs(logits + i * a.row_stride, g, lo, hi, static_cast<float>(s.m), inv_sum(s),
                    rm[static_cast<size_t>(i)].a, r.coef);
      else
        write_zero(g, lo, hi);
    }
  }
  for (int64_t i = 0; i < N; ++i) finish(i, ri[static_cast<size_t>(i)], rm[static_cast<size_t>(i)]);
  return kOk;
}

inline int check(const RowLossArgs& a, bool gkl) {
  if (a.rows < 0 || a.vocab <= 0 || !a.logits || !a.x1 || !a.loss) return kErrArgument;
  if (gkl && (!a.xt || !a.jump)) return kErrArgument;
  if (a.grad && !a.grad_scale) return kErrArgument;
  return kOk;
}

}  // namespace rows
}  // namespace FF_CPU_NS
}  // namespace cpu
}  // namespace fastflow
