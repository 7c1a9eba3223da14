// fastflow: shared definitions for the C++ and CUDA kernels (torch-free).
//
// Error codes, dtype codes, fp32/bf16/fp16 conversions written by hand (the CPU code needs
// no compiler support for half types) and bit casts usable on host and device.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__CUDACC__)
#define FF_HD __host__ __device__ __forceinline__
#define FF_DEVICE __device__ __forceinline__
#else
#define FF_HD inline __attribute__((always_inline))
#endif

#if defined(__CUDA_ARCH__)
#define FF_ON_DEVICE 1
#else
#define FF_ON_DEVICE 0
#endif

namespace fastflow {

// ------------------------------------------------------------------ status codes
enum Status : int {
  kOk = 0,
  kErrDtype = 1,      // unsupported dtype code
  kErrArgument = 2,   // bad size / pointer / option
  kErrIndex = 3,      // a token id outside [0, V)
  kErrCuda = 4,       // a CUDA launch failed
  kErrNoCuda = 5,     // CUDA was not compiled in
  kErrTooLarge = 6,   // more blocks than one CUDA launch takes
};

inline const char* status_message(int code) {
  switch (code) {
    case kOk: return "ok";
    case kErrDtype: return "unsupported dtype";
    case kErrArgument: return "invalid argument (size, pointer or option)";
    case kErrIndex: return "token id outside [0, V)";
    case kErrCuda: return "CUDA kernel launch failed";
    case kErrNoCuda: return "fastflow._C was built without CUDA";
    case kErrTooLarge: return "too large for one CUDA launch (more than 2^31 - 1 blocks)";
    default: return "unknown error";
  }
}

// ------------------------------------------------------------------ dtype codes
enum DType : int { kF32 = 0, kBF16 = 1, kF16 = 2, kF64 = 3 };  // (kF64: the host checks only, no kernel)
enum IType : int { kI64 = 0, kI32 = 1 };

// 16-bit storage types: plain bit containers, converted by hand.
struct bf16 { uint16_t bits; };
struct f16 { uint16_t bits; };

// ------------------------------------------------------------------ bit casts
FF_HD uint32_t f2u(float x) {
#if FF_ON_DEVICE
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
#endif
}

FF_HD float u2f(uint32_t u) {
#if FF_ON_DEVICE
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, 4);
  return x;
#endif
}

// ------------------------------------------------------------------ conversions (RNE)
FF_HD float bf16_to_f32(uint16_t h) { return u2f(static_cast<uint32_t>(h) << 16); }

FF_HD uint16_t f32_to_bf16(float f) {
  uint32_t x = f2u(f);
  uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
  bool nan = (x & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<uint16_t>(nan ? 0x7FC0u : rounded);
}

FF_HD float f16_to_f32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t em = h & 0x7FFFu;  // exponent and mantissa
  // normal numbers: rebias the exponent (127 - 15 = 112); inf / nan: exponent 31 -> 255
  uint32_t normal = (em << 13) + (em >= 0x7C00u ? (224u << 23) : (112u << 23));
  // subnormal halves (and zero): mantissa * 2^-24, exact in fp32
  uint32_t sub = f2u(static_cast<float>(static_cast<int32_t>(em)) * 5.9604644775390625e-8f);
  return u2f(sign | (em < 0x0400u ? sub : normal));
}

FF_HD uint16_t f32_to_f16(float f) {
  // Round to nearest even by adding (half ulp - 1) plus the lowest kept bit, then truncating:
  // a carry into the exponent is the correct rounding. Few selects, so loops vectorise.
  uint32_t x = f2u(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t a = x & 0x7FFFFFFFu;
  // normal halves (|f| >= 2^-14): rebias the exponent (127 - 15 = 112), drop 13 bits;
  // |f| >= 65520 (clamped to it) rounds to 0x7C00, inf
  uint32_t an = a < 0x477FF000u ? a : 0x477FF000u;
  uint32_t normal = ((an + 0x0FFFu + ((an >> 13) & 1u)) >> 13) - (112u << 10);
  // below 2^-14: the value in units of 2^-24, rounded to even (0 below 2^-25)
  int32_t sh = 126 - static_cast<int32_t>(a >> 23);
  sh = sh < 14 ? 14 : sh;
  sh = sh > 25 ? 25 : sh;
  uint32_t shift = static_cast<uint32_t>(sh);
  uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  uint32_t subn = (m + ((1u << (shift - 1u)) - 1u) + ((m >> shift) & 1u)) >> shift;
  uint32_t out = a >= 0x38800000u ? normal : subn;
  out = a > 0x7F800000u ? 0x7E00u : out;  // nan
  return static_cast<uint16_t>(sign | out);
}

// load / store one element of a storage type with fp32 math
template <typename T> struct Elem;
template <> struct Elem<float> {
  static FF_HD float load(const float* p, int64_t i) { return p[i]; }
  static FF_HD void store(float* p, int64_t i, float v) { p[i] = v; }
  static FF_HD float to_f32(float v) { return v; }
  static FF_HD float from_f32(float v) { return v; }
};
template <> struct Elem<bf16> {
  static FF_HD float load(const bf16* p, int64_t i) { return bf16_to_f32(p[i].bits); }
  static FF_HD void store(bf16* p, int64_t i, float v) { p[i].bits = f32_to_bf16(v); }
  static FF_HD float to_f32(bf16 v) { return bf16_to_f32(v.bits); }
  static FF_HD bf16 from_f32(float v) { return bf16{f32_to_bf16(v)}; }
};
template <> struct Elem<f16> {
  static FF_HD float load(const f16* p, int64_t i) { return f16_to_f32(p[i].bits); }
  static FF_HD void store(f16* p, int64_t i, float v) { p[i].bits = f32_to_f16(v); }
  static FF_HD float to_f32(f16 v) { return f16_to_f32(v.bits); }
  static FF_HD f16 from_f32(float v) { return f16{f32_to_f16(v)}; }
};

template <typename T> FF_HD float ld(const T* p, int64_t i) { return Elem<T>::load(p, i); }
template <typename T> FF_HD void st(T* p, int64_t i, float v) { Elem<T>::store(p, i, v); }

// Calls f(T{}) with the storage type of a dtype code; returns kErrDtype for unknown codes.
template <class F> inline int dispatch_float(int dtype, F&& f) {
  switch (dtype) {
    case kF32: return f(float{});
    case kBF16: return f(bf16{});
    case kF16: return f(f16{});
    default: return kErrDtype;
  }
}

// Calls f(TV{}, TX{}) with the storage types of two operand groups of an op (dtype, x_dtype):
// the same type, or x_dtype fp32 beside a bf16 / fp16 dtype (autocast's model output against
// fp32 data or state); kErrDtype for any other pair.
template <class F> inline int dispatch_float_pair(int dtype, int x_dtype, F&& f) {
  return dispatch_float(dtype, [&](auto tv) -> int {
    using TV = decltype(tv);
    if (x_dtype == dtype) return f(tv, tv);
    if (x_dtype == kF32) return f(tv, float{});  // (dtype != kF32 here)
    return kErrDtype;
  });
}

// Calls f(std::integral_constant<bool, b>{}...) with each runtime flag as a compile-time one,
// so a kernel template is instantiated for every combination (2^k cases, no macro table).
template <class F> inline int dispatch_flags(F&& f) { return f(); }
template <class F, class... Rest> inline int dispatch_flags(F&& f, bool b, Rest... rest) {
  if (b) return dispatch_flags([&](auto... c) { return f(std::true_type{}, c...); }, rest...);
  return dispatch_flags([&](auto... c) { return f(std::false_type{}, c...); }, rest...);
}

template <class F> inline int dispatch_index(int itype, F&& f) {
  switch (itype) {
    case kI64: return f(int64_t{});
    case kI32: return f(int32_t{});
    default: return kErrDtype;
  }
}

}  // namespace fastflow
