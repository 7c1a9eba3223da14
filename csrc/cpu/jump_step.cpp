// jump_step (CPU): one CTMC Euler step over the vocabulary for every row (FORMULAS.md
// section 5; fastflow/reference/jump_step.py is the spec, including the random layout):
// row i uses the four words of philox(seed, offset + i) (jump test, component choice,
// uniform token); race element e = i V + j uses word e % 4 of counter offset + N + e / 4;
// the p0 race the same at offset + N + ceil(N V / 4) + e / 4.
//
// Pass 1 (cheap, per row): the jump test against the largest possible total rate; rows
// that cannot jump keep their token and their logits are never read. Pass 2 (the rows that
// may jump): the exponential race for x_1 over the row, the exact jump test, and the
// source draw. The race takes logarithms only for keys that can still win (race_pruned,
// race_short); its winner is the full race's. Few long rows are raced in fixed chunks by all
// threads (the argmax with the lowest index on ties is the same however the row is cut);
// short rows (V <= kRaceBlock) share their Philox draws.
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>

#include "cpu_common.h"
#include "fastflow/jump_common.h"

namespace fastflow {
namespace cpu {
namespace FF_CPU_NS {
namespace {

constexpr int64_t kRaceBlock = 1024;      // keys per inner block (L1)
constexpr int kRaceLanes = kMaxLanes;     // lanes of a block (lane_max's): kRaceBlock / kRaceLanes keys each
constexpr int64_t kSplitChunk = 1 << 15;  // race chunk per work item when rows are split
constexpr float kInf = std::numeric_limits<float>::infinity();

struct Best {
  float v = -kInf;
  int64_t j = 0;
  bool any = false;  // whether v/j were set
};

// torch.argmax order: NaN is the largest value; ties keep the lowest index.
inline bool better(float v, int64_t j, const Best& b) {
  if (!b.any) return true;
  bool vn = v != v, bn = b.v != b.v;
  if (bn) return vn && j < b.j;
  if (vn) return true;
  return v > b.v || (v == b.v && j < b.j);
}

inline void combine(Best& acc, const Best& o) {
  if (o.any && better(o.v, o.j, acc)) acc = o;
}

// Largest key of each lane l (elements l, l + kMaxLanes, ... of a block; NaN sticks: NaN is
// torch.argmax's largest value). Lanes rather than runs of neighbours: the loop vectorises.
// Always inlined: GCC's out-of-line copy is 1.7x slower (the race then lost 15%).
inline __attribute__((always_inline)) void lane_max(const float* sc, int64_t len, float* mx) {
  int nanl[kMaxLanes];
  for (int l = 0; l < kMaxLanes; ++l) {
    mx[l] = -kInf;
    nanl[l] = 0;
  }
  int64_t k0 = 0;
  for (; k0 + kMaxLanes <= len; k0 += kMaxLanes)
    for (int l = 0; l < kMaxLanes; ++l) {
      const float v = sc[k0 + l];
      mx[l] = v > mx[l] ? v : mx[l];
      nanl[l] |= v != v;
    }
  for (int64_t k = k0; k < len; ++k) {
    mx[k - k0] = sc[k] > mx[k - k0] ? sc[k] : mx[k - k0];
    nanl[k - k0] |= sc[k] != sc[k];
  }
  for (int l = 0; l < kMaxLanes; ++l) mx[l] = nanl[l] ? std::numeric_limits<float>::quiet_NaN() : mx[l];
}

// argmax of sc[0, len) (offset by j0) merged into acc
inline void block_argmax(const float* sc, int64_t len, int64_t j0, Best& acc) {
  float mx[kMaxLanes];
  lane_max(sc, len, mx);
  float m = -kInf;
  int nan = 0;
  for (int l = 0; l < kMaxLanes; ++l) {
    m = mx[l] > m ? mx[l] : m;
    nan |= mx[l] != mx[l];
  }
  Best b;
  if (nan) {
    for (int64_t k = 0; k < len; ++k)
      if (sc[k] != sc[k]) {
        b.v = sc[k];
        b.j = j0 + k;
        break;
      }
  } else {
    int64_t k = 0;
    while (k < len && !(sc[k] == m)) ++k;
    b.v = m;
    b.j = j0 + (k < len ? k : 0);
  }
  b.any = len > 0;
  combine(acc, b);
}

// key - log E in place: a loop of its own, because the compiler keeps the fused
// log(log1p(.)) body in far fewer vector registers than it needs (1.9 vs 1.1 ns an element,
// same bits)
inline void race_keys(float* sc, const float* ex, int64_t len) {
  for (int64_t k = 0; k < len; ++k) sc[k] = sc[k] - fm::log(ex[k]);
}

// The race over one block with generated noise, with the logarithms taken only where they can
// win, in two steps. Lane l's keys are at most its largest key plus the noise bound of its
// smallest word (E grows with u, and u with the word): once some key is known, a lane whose
// bound stays below it is never raced. In a lane that is, each element is checked against its
// own bound before its two logarithms. 512 rows x 32768 (normal logits): a third of the blocks
// have a lane open, and about 12 keys a row are computed. Exact: the same winner, ties to the
// lowest index (bound_slack covers the rounding of the bounds and the last-ulp wobble of the
// computed logarithms).
// (the slack of an infinite v is finite, so -inf less or plus its slack stays -inf; a select,
// not std::fmin, which is a call into libm)
inline float bound_slack(float v) {
  const float a = std::fabs(v);
  return 1e-4f + 1e-6f * (a < 1e38f ? a : 1e38f);
}

// An element's own bound on its noise without a logarithm: -log E <= -log u <= (32 - log2 w) ln 2
// (E >= u; u >= w 2^-32 for w = float(word)), and log2 w >= the bits of w read as a number,
// 2^-23 bits - 127 = exponent + mantissa fraction (log2(1 + f) >= f): within 0.06 of -log u.
inline float gumbel_bound(uint32_t word) {
  const float w = static_cast<float>(word);
  int32_t bits;
  std::memcpy(&bits, &w, sizeof bits);
  return 0.6931472f * (159.0f - static_cast<float>(bits) * 0x1p-23f);
}

// An upper bound on log p without a logarithm (probability keys), as gumbel_bound: log2 p is
// at most p's bits read as a number, 2^-23 bits - 127, plus 0.0862 (log2(1 + f) - f <= 0.0861,
// subnormals included). +inf for p = +inf; NaN where log p is NaN (p < 0, NaN: never pruned).
inline float log_bound(float p) {
  int32_t bits;
  std::memcpy(&bits, &p, sizeof bits);
  const float b = 0.6931472f * (static_cast<float>(bits) * 0x1p-23f - 126.9138f);
  return p >= 0.0f ? (p == kInf ? kInf : b) : std::numeric_limits<float>::quiet_NaN();
}

// The threshold below which a bound cannot beat acc: its key less the slack, +inf for an
// infinite key (only a NaN or a tie can follow it); NaN (nothing is beaten) for a NaN key.
inline float race_threshold(const Best& acc) {
  return acc.v == kInf ? kInf : acc.v - bound_slack(acc.v);
}

// Whether keys bounded by `bound`, the first at column j, lose to acc: below the threshold, or
// all -inf and after acc's column while acc's key is -inf too (a tie the lowest column wins).
inline bool race_loses(float bound, float t, int64_t j, const Best& acc) {
  return bound < t || (bound == -kInf && j > acc.j);
}

// The race key of column j (its key and Philox word), merged into acc
inline void merge_key(float key, uint32_t word, int64_t j, Best& acc) {
  Best b;
  b.v = key - fm::log(race_exp1(uint_to_open_uniform(word)));
  b.j = j;
  b.any = true;
  combine(acc, b);
}

// A block's Philox words: element k's, and the smallest of each lane (k = l, l + kRaceLanes, ...).
// Any block, from words_range (counter-major words reordered into element order):
struct ElementWords {
  const uint32_t* w;
  int64_t len;
  uint32_t operator()(int64_t k) const { return w[k]; }
  void lane_min(uint32_t* wmin) const {
    for (int l = 0; l < kRaceLanes; ++l) wmin[l] = 0xFFFFFFFFu;
    int64_t k0 = 0;
    for (; k0 + kRaceLanes <= len; k0 += kRaceLanes)
      for (int l = 0; l < kRaceLanes; ++l) wmin[l] = w[k0 + l] < wmin[l] ? w[k0 + l] : wmin[l];
    for (int64_t k = k0; k < len; ++k) wmin[k - k0] = w[k] < wmin[k - k0] ? w[k] : wmin[k - k0];
  }
};

// A whole block that starts at a counter (most of a row's), read where philox_soa left its
// words: element k is word k % 4 of counter k / 4, so lane l holds word l % 4 of the counters
// l / 4 + 8 m, and philox_soa folds the lane minima while the words are still in registers.
// Skips the reordering, a tenth of a nanosecond a word, and the pass over the words.
struct CounterWords {
  const uint32_t* w;     // w[r * kSoaCap + c]: word r of the block's counter c
  const uint32_t* mins;  // philox_soa's lane_min
  uint32_t operator()(int64_t k) const { return w[(k & 3) * kSoaCap + (k >> 2)]; }
  void lane_min(uint32_t* wmin) const {
    static_assert(kRaceLanes == 32 && kRaceBlock % (4 * simd::kPhiloxGroup) == 0,
                  "lanes of 8 counters x 4 words; a block of whole Philox groups");
    for (int l = 0; l < kRaceLanes; ++l) wmin[l] = mins[l];
  }
};

// A bound of a key from its unscaled value v (race_keys_of's scale = 1 / temperature): v * scale
// is within an ulp or two of the key v / temperature, which the threshold's bound_slack covers
// (the lane test before a block's words are drawn adds it itself), except near fp32's largest
// values: where the key may overflow to inf the bound is inf, and where the product overflows
// to -inf but the key may not, -1e38 (above any such key). -inf and NaN stay. At scale 1 the
// value is the key itself.
inline float bound_of(float v, float scale) {
  if (scale == 1.0f) return v;
  const float b = v * scale;
  if (b > 1e38f) return kInf;
  return b < -1e38f && v != -kInf ? -1e38f : b;
}

// sc: the keys, or upper bounds of them (probabilities), to be multiplied by `scale` (bound_of);
// mx: sc's lane maxima, scaled; key(k): element k's key.
template <class Words, class Key>
inline void race_pruned(const float* sc, float scale, const Key& key, const float* mx, const Words& w, int64_t len,
                        int64_t j0, Best& acc) {
  uint32_t wmin[kRaceLanes];
  alignas(64) float bound[kRaceLanes];
  w.lane_min(wmin);
  for (int l = 0; l < kRaceLanes; ++l) bound[l] = mx[l] + gumbel_bound(wmin[l]);
  auto race_at = [&](int64_t k) { merge_key(key(k), w(k), j0 + k, acc); };  // element k raced
  if (!acc.any || acc.v == -kInf) {  // nothing useful known yet: first the likeliest winner, the
    int lb = 0;  // element with the largest own bound in the lane with the largest bound
    float top = bound[0];
    for (int l = 1; l < kRaceLanes && l < len; ++l)
      if (bound[l] > top) top = bound[l], lb = l;
    int64_t kb = lb;
    top = -kInf;
    for (int64_t k = lb; k < len; k += kRaceLanes) {
      const float cb = bound_of(sc[k], scale) + gumbel_bound(w(k));
      if (cb > top) top = cb, kb = k;
    }
    race_at(kb);
  }
  // lane l is beaten when bound[l] < t (a NaN threshold, a NaN key so far, beats none)
  float t = race_threshold(acc);
  uint32_t open = 0;  // bit l: lane l open; the common case, none, in one vectorised pass
  for (int l = 0; l < kRaceLanes; ++l) open |= (bound[l] < t ? 0u : 1u) << l;
  if (len < kRaceLanes) open &= (1u << len) - 1;  // lanes past the end have no keys
  // the open lanes in order, each raced unless beaten by then; in a lane, a key is computed
  // only where the element's own bound can win
  for (; open; open &= open - 1) {
    const int l = __builtin_ctz(open);
    if (race_loses(bound[l], t, j0 + l, acc)) continue;
    for (int64_t k = l; k < len; k += kRaceLanes) {
      if (race_loses(bound_of(sc[k], scale) + gumbel_bound(w(k)), t, j0 + k, acc)) continue;
      race_at(k);
      t = race_threshold(acc);
    }
  }
}

struct Ctx {
  int64_t N, V;
  uint64_t seed = 0, off = 0, n_tok = 0;
};

// The keys of columns [j0, j0 + len) of a row (KEY as in race), in sc or, for fp32 logits and
// generated noise, where they are. With generated noise (pruned races) the keys are only bounded
// (race_key computes those that are raced): probabilities get upper bounds of their keys, and
// logits at a temperature other than 1 are left undivided, with `scale` = 1 / temperature for
// their bounds (bound_of; a pass of divisions over every logit cost a fifth of the step).
template <typename T, int KEY>
inline const float* race_keys_of(const JumpStepArgs& a, const T* z, int64_t j0, int64_t len, int64_t xt,
                                 bool explicit_noise, float* sc, float& scale) {
  const float temp = a.temperature;
  scale = 1.0f;
  if (KEY == 0 && !explicit_noise) {
    if (temp != 1.0f) scale = 1.0f / temp;
    if (std::is_same<T, float>::value) return reinterpret_cast<const float*>(z + j0);  // no copy
    load_f32(z + j0, len, sc);
    return sc;
  }
  if (KEY == 0) {
    load_f32(z + j0, len, sc);
    if (temp != 1.0f)
      for (int64_t k = 0; k < len; ++k) sc[k] = sc[k] / temp;
  } else if (KEY == 1) {
    load_f32(z + j0, len, sc);
    if (explicit_noise)
      for (int64_t k = 0; k < len; ++k) sc[k] = fm::log(sc[k]) / temp;
    else if (temp == 1.0f)
      for (int64_t k = 0; k < len; ++k) sc[k] = log_bound(sc[k]);
    else  // a bound: a product's rounding is within bound_slack, and a division is slow
      for (int64_t k = 0; k < len; ++k) sc[k] = log_bound(sc[k]) * (1.0f / temp);
  } else {
    for (int64_t k = 0; k < len; ++k) sc[k] = a.logp0[j0 + k];
    if (xt >= j0 && xt < j0 + len) sc[xt - j0] = -kInf;
  }
  return sc;
}

// The race key of column j of a row whose keys race_keys_of gave as `keys` (from j0 on)
template <typename T, int KEY>
inline float race_key(const JumpStepArgs& a, const T* z, const float* keys, int64_t j0, int64_t j) {
  if (KEY == 1) return fm::log(ld(z, j)) / a.temperature;
  return KEY == 0 && a.temperature != 1.0f ? ld(z, j) / a.temperature : keys[j - j0];
}

// Race over keys of row i, columns [lo, hi): argmax_j key_j - log E_j.
// KEY: 0 logits, 1 probabilities (log), 2 log p0 with x_t excluded.
template <typename T, int KEY>
void race(const JumpStepArgs& a, const Ctx& cx, int64_t i, int64_t lo, int64_t hi, int64_t xt, Best& acc) {
  const T* z = static_cast<const T*>(a.logits) + i * a.row_stride;
  const float* noise = KEY == 2 ? a.noise_race_p0 : a.noise_race;
  const uint64_t base = cx.off + static_cast<uint64_t>(cx.N) + (KEY == 2 ? cx.n_tok : 0);
  alignas(64) float sc[kRaceBlock], ex[kRaceBlock], mx[kRaceLanes];
  WordScratch ws;
  SoaWords soa;
  for (int64_t j0 = lo, len = 0; j0 < hi; j0 += len) {
    const int64_t e0 = i * cx.V + j0;
    // the first block ends where a Philox counter starts, so that the whole blocks after it
    // start at one (CounterWords)
    len = std::min(j0 == lo ? kRaceBlock - (e0 & 3) : kRaceBlock, hi - j0);
    float scale;
    const float* keys = race_keys_of<T, KEY>(a, z, j0, len, xt, noise != nullptr, sc, scale);
    auto key = [&](int64_t k) { return race_key<T, KEY>(a, z, keys, j0, j0 + k); };
    if (noise) {  // explicit noise: every key
      const float* u = noise + e0;
      for (int64_t k = 0; k < len; ++k) ex[k] = race_exp1(u[k]);
      race_keys(sc, ex, len);
      block_argmax(sc, len, j0, acc);
      continue;
    }
    // a block whose largest key cannot beat the best so far even with the largest possible
    // generated noise is skipped before its words are drawn
    lane_max(keys, len, mx);
    if (scale != 1.0f)  // (a product is monotone: the scaled maxima bound the scaled keys)
      for (int l = 0; l < kRaceLanes; ++l) mx[l] = bound_of(mx[l], scale) + bound_slack(mx[l] * scale);
    if (acc.any) {
      uint32_t may_win = 0;  // (an integer or-reduction vectorises; a bool and-chain does not)
      for (int l = 0; l < kRaceLanes; ++l) may_win |= mx[l] + kRaceGumbelMax < acc.v ? 0u : 1u;
      if (!may_win) continue;
    }
    if (len == kRaceBlock && (e0 & 3) == 0) {
      uint32_t mins[kRaceLanes];
      simd::philox_soa(cx.seed, base + static_cast<uint64_t>(e0 >> 2), kRaceBlock / 4, &soa.w[0][0], kSoaCap, mins);
      race_pruned(keys, scale, key, mx, CounterWords{&soa.w[0][0], mins}, len, j0, acc);
    } else {
      race_pruned(keys, scale, key, mx, ElementWords{words_range(cx.seed, base, e0, e0 + len, ws), len}, len, j0, acc);
    }
  }
}

// Rows of at most kRaceBlock keys (small vocabularies: V = 33 for proteins) with generated
// noise. Their words come from one Philox draw shared by the consecutive rows it covers (a row
// of V = 33 needs 9 counters, not the 64 of a Philox group), and the race needs no lanes: each
// element's own bound in one vectorised pass, the largest one's key first, then the keys of the
// few elements whose bound can still win (exact, as race_pruned).
struct ShortRowWords {
  WordScratch ws;
  int64_t lo = 0, hi = 0;  // ws holds the words of elements [lo, hi) of the stream
  // words of elements [e0, e1); a new draw covers at least `span` elements, at most kSub
  const uint32_t* get(uint64_t seed, uint64_t base, int64_t e0, int64_t e1, int64_t span, int64_t end) {
    if (e0 < lo || e1 > hi) {
      lo = e0 & ~int64_t{3};
      hi = std::max(e1, std::min(lo + span, std::min(lo + kSub, end)));
      words_range(seed, base, lo, hi, ws);
    }
    return ws.w + (e0 - lo);
  }
};

template <typename T, int KEY>
void race_short(const JumpStepArgs& a, int64_t i, int64_t V, const uint32_t* w, Best& acc) {
  alignas(64) float sc[kRaceBlock], cb[kRaceBlock], mx[kMaxLanes];
  const T* z = static_cast<const T*>(a.logits) + i * a.row_stride;
  float scale;
  const float* keys = race_keys_of<T, KEY>(a, z, 0, V, -1, false, sc, scale);
  const int64_t padded = (V + kMaxLanes - 1) / kMaxLanes * kMaxLanes;  // <= kRaceBlock
  for (int64_t k = 0; k < V; ++k) cb[k] = bound_of(keys[k], scale) + gumbel_bound(w[k]);
  for (int64_t k = V; k < padded; ++k) cb[k] = -kInf;
  lane_max(cb, padded, mx);
  float top = mx[0];
  for (int l = 1; l < kMaxLanes; ++l) top = mx[l] > top ? mx[l] : top;
  int64_t kb = 0;  // the seed: the first largest bound (any element would do: a NaN one, say)
  while (kb < V - 1 && !(cb[kb] == top)) ++kb;
  merge_key(race_key<T, KEY>(a, z, keys, 0, kb), w[kb], kb, acc);
  float t = race_threshold(acc);
  for (int64_t k0 = 0; k0 < padded; k0 += kMaxLanes) {
    uint32_t open = 0;  // bit l: element k0 + l may win (a NaN bound or threshold does)
    for (int l = 0; l < kMaxLanes; ++l) open |= (cb[k0 + l] < t ? 0u : 1u) << l;
    if (V - k0 < kMaxLanes) open &= (1u << (V - k0)) - 1;  // the padding never races
    for (; open; open &= open - 1) {
      const int64_t k = k0 + __builtin_ctz(open);
      if (race_loses(cb[k], t, k, acc)) continue;
      merge_key(race_key<T, KEY>(a, z, keys, 0, k), w[k], k, acc);
      t = race_threshold(acc);
    }
  }
}

// Row i's state from its token words (tok[4 i ..], drawn in pass 1; null with explicit noise)
template <typename I>
inline JumpRow row_state(const JumpStepArgs& a, const uint32_t* tok, int64_t i) {
  const Words4 w = tok ? Words4{tok[4 * i], tok[4 * i + 1], tok[4 * i + 2], tok[4 * i + 3]} : Words4{0u, 0u, 0u, 0u};
  return jump_row_of(a, w, i, static_cast<int64_t>(static_cast<const I*>(a.xt)[i]));
}

// The new token of a row that may jump, given its x_1 race result.
template <typename T>
int64_t decide(const JumpStepArgs& a, const Ctx& cx, int64_t i, const JumpRow& r, const Best& x1_race,
               const Best* p0_race) {
  if (!drawn(x1_race.v)) return kNoDraw;
  const int64_t x1 = x1_race.j;
  switch (jump_choice(a, i, r, x1)) {
    case kStay: return r.xt;
    case kTakeX1: return x1;
    default: break;
  }
  if (a.source != kSourceGeneral) return jump_source_token(a, r);
  if (p0_race) return p0_race->j;
  Best b;
  race<T, 2>(a, cx, i, 0, cx.V, r.xt, b);
  return b.j;
}

template <typename T, typename I>
int run(const JumpStepArgs& a) {
  Ctx cx;
  cx.N = a.rows;
  cx.V = a.vocab;
  const int64_t N = cx.N, V = cx.V;
  if (a.rng) {
    cx.seed = static_cast<uint64_t>(a.rng[0]);
    cx.off = static_cast<uint64_t>(a.rng[1]);
  }
  cx.n_tok = static_cast<uint64_t>((N * V + 3) / 4);
  const I* xt = static_cast<const I*>(a.xt);
  I* out = static_cast<I*>(a.out);
  for (int64_t i = 0; i < N; ++i)
    if (xt[i] < 0 || xt[i] >= V) return kErrIndex;

  // pass 1: the jump test; rows that cannot jump are done. The rows' token words are drawn
  // on SIMD registers a chunk of rows at a time (counters offset + i are consecutive) and kept
  // for pass 2: 16 bytes a row, a fraction of a nanosecond a word instead of a scalar Philox each.
  std::unique_ptr<uint8_t[]> may(new uint8_t[static_cast<size_t>(N)]);
  std::unique_ptr<uint32_t[]> tok_words(a.noise_token ? nullptr : new uint32_t[4 * static_cast<size_t>(N)]);
  const uint32_t* tok = tok_words.get();
  constexpr int64_t kTokRows = kSub / 4;  // counters a chunk (philox_words takes up to kSoaCap)
  const int64_t chunks = (N + kTokRows - 1) / kTokRows;
#pragma omp parallel for schedule(static) if (N >= 4096)
  for (int64_t q = 0; q < chunks; ++q) {
    const int64_t i0 = q * kTokRows, i1 = std::min(N, i0 + kTokRows);
    if (tok) philox_words(cx.seed, cx.off + static_cast<uint64_t>(i0), i1 - i0, tok_words.get() + 4 * i0);
    for (int64_t i = i0; i < i1; ++i) {
      JumpRow r = row_state<I>(a, tok, i);
      may[static_cast<size_t>(i)] = r.may_jump;
      if (!r.may_jump) out[i] = static_cast<I>(r.xt);
    }
  }
  std::vector<int64_t> cand;
  for (int64_t i = 0; i < N; ++i)
    if (may[static_cast<size_t>(i)]) cand.push_back(i);
  const int64_t nc = static_cast<int64_t>(cand.size());
  if (nc == 0) return kOk;

  if (!(nc < 16 && V >= 2 * kSplitChunk)) {
    // rows handed out a few at a time: short rows (V = 33, say) take ~0.3 us each, less than
    // a one-row hand-out costs; with 16K keys a chunk, load balance still holds for long ones
    const int chunk = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nc / (4 * max_threads()) + 1, (1 << 14) / V)));
    const bool short_rows = !a.noise_race && V <= kRaceBlock;
    const int64_t span = std::max(V, kSub * nc / N);  // one draw per row when few rows race
#pragma omp parallel if (nc * V >= kParallelMin && nc > 1)
    {
      ShortRowWords words;
#pragma omp for schedule(dynamic, chunk)
      for (int64_t k = 0; k < nc; ++k) {
        const int64_t i = cand[static_cast<size_t>(k)];
        JumpRow r = row_state<I>(a, tok, i);
        Best b;
        if (short_rows) {
          const uint32_t* w = words.get(cx.seed, cx.off + static_cast<uint64_t>(N), i * V, i * V + V, span, N * V);
          if (a.probs) race_short<T, 1>(a, i, V, w, b);
          else race_short<T, 0>(a, i, V, w, b);
        } else if (a.probs) {
          race<T, 1>(a, cx, i, 0, V, r.xt, b);
        } else {
          race<T, 0>(a, cx, i, 0, V, r.xt, b);
        }
        out[i] = static_cast<I>(decide<T>(a, cx, i, r, b, nullptr));
      }
    }
    return kOk;
  }

  // few long rows: (row, chunk) items for the x_1 race, and for the p0 race of a general source
  const int64_t nch = (V + kSplitChunk - 1) / kSplitChunk;
  const bool p0 = a.source == kSourceGeneral && !a.final_step;
  const int64_t kinds = p0 ? 2 : 1;
  const int64_t items = nc * nch * kinds;
  std::vector<Best> part(static_cast<size_t>(items));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t kind = it / (nc * nch), rem = it - kind * nc * nch;
    const int64_t k = rem / nch, c = rem - k * nch;
    const int64_t i = cand[static_cast<size_t>(k)];
    const int64_t lo = c * kSplitChunk, hi = std::min(V, lo + kSplitChunk);
    const int64_t x = static_cast<int64_t>(xt[i]);
    Best& b = part[static_cast<size_t>(it)];
    if (kind == 1) race<T, 2>(a, cx, i, lo, hi, x, b);
    else if (a.probs) race<T, 1>(a, cx, i, lo, hi, x, b);
    else race<T, 0>(a, cx, i, lo, hi, x, b);
  }
  for (int64_t k = 0; k < nc; ++k) {
    const int64_t i = cand[static_cast<size_t>(k)];
    Best b1, b0;
    for (int64_t c = 0; c < nch; ++c) {
      combine(b1, part[static_cast<size_t>(k * nch + c)]);
      if (p0) combine(b0, part[static_cast<size_t>(nc * nch + k * nch + c)]);
    }
    JumpRow r = row_state<I>(a, tok, i);
    out[i] = static_cast<I>(decide<T>(a, cx, i, r, b1, p0 ? &b0 : nullptr));
  }
  return kOk;
}

}  // namespace

int jump_step(const JumpStepArgs& a) {
  if (a.rows < 0 || a.vocab <= 0 || !a.logits || !a.xt || !a.out || !a.h || !a.r1 || !a.r0)
    return kErrArgument;
  const bool need_rng = !a.noise_token || !a.noise_race ||
                        (a.source == kSourceGeneral && !a.final_step && !a.noise_race_p0);
  if (need_rng && !a.rng) return kErrArgument;
  if (a.source == kSourceGeneral && (!a.p0 || !a.logp0)) return kErrArgument;
  if (a.source < kSourceNone || a.source > kSourceGeneral) return kErrArgument;
  if (!(a.temperature > 0.0f)) return kErrArgument;
  if (a.rows == 0) return kOk;
  return dispatch_float(a.dtype, [&](auto tf) {
    using T = decltype(tf);
    return dispatch_index(a.itype, [&](auto ti) { return run<T, decltype(ti)>(a); });
  });
}

}  // namespace FF_CPU_NS
}  // namespace cpu
}  // namespace fastflow
