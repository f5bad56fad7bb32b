// Compressed deltas: the wire format and the per-element rules that encode and decode it,
// shared by the CPU loop, the CUDA kernels and their CPU emulation (everything __host__
// __device__, so that all three compute the same bytes).
//
// Wire format. A bucket of n elements (the concatenation of a list of tensors, as pack lays
// them out) is cut into ceil(n / kCodecChunk) chunks; chunk c covers bucket elements
// [c * kCodecChunk, min((c + 1) * kCodecChunk, n)). The encoded buffer is one fixed-size
// record per chunk, back to back:
//   fp16 / bf16  kCodecChunk float16 / bfloat16 values (4096 bytes);
//   int8         a 16-byte header (float32 scale in bytes 0-3, bytes 4-15 zero), then
//                kCodecChunk int8 values (2064 bytes).
// Elements past n in the last chunk are 0.
//
// Rules (all arithmetic in float32, each product and sum rounded once):
//   fp16 / bf16  encode: round to nearest even (as c10::Half / c10::BFloat16); decode: widen.
//   int8         over the chunk's real elements v: amax = max |v|, scale = amax / 127,
//                inv = scale > 0 ? 1 / scale : 0, q = clamp(nearbyint(v * inv), -127, 127)
//                (half to even); decode: q * scale.
// Non-finite input: a chunk holding an inf or a NaN gets scale inf or NaN, so all of it decodes
// to NaN (the non-finite value is not hidden). Where v * inv is NaN (0 * inf, when amax is so
// small a denormal that 1 / scale overflows) q is 0.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fused.h"

namespace hvd_hier {

enum class Codec : int { kFp16 = 0, kBf16 = 1, kInt8 = 2 };

// Elements per chunk (one record of the encoded buffer; one CUDA block).
constexpr int64_t kCodecChunk = 2048;
// Bytes before an int8 record's values: the float32 scale and 12 zero bytes (the values then
// start 16-byte aligned, as every record does: 4096 and 2064 are multiples of 16).
constexpr int64_t kInt8HeaderBytes = 16;
// Alignment the ops require of an encoded buffer.
constexpr int64_t kRecordAlign = 16;
constexpr float kInt8Max = 127.0f;

static_assert(kCodecChunk % kCudaThreads == 0, "every CUDA thread handles the same number of "
                                               "elements of a record");

template <Codec C>
struct CodecTraits;
template <>
struct CodecTraits<Codec::kFp16> {
  using value_t = c10::Half;
  static constexpr int64_t kHeaderBytes = 0;
};
template <>
struct CodecTraits<Codec::kBf16> {
  using value_t = c10::BFloat16;
  static constexpr int64_t kHeaderBytes = 0;
};
template <>
struct CodecTraits<Codec::kInt8> {
  using value_t = int8_t;
  static constexpr int64_t kHeaderBytes = kInt8HeaderBytes;
};

template <Codec C>
HVD_HIER_HD constexpr int64_t record_bytes() {
  return CodecTraits<C>::kHeaderBytes +
         kCodecChunk * static_cast<int64_t>(sizeof(typename CodecTraits<C>::value_t));
}

HVD_HIER_HD int64_t record_bytes(Codec c) {
  return c == Codec::kInt8   ? record_bytes<Codec::kInt8>()
         : c == Codec::kBf16 ? record_bytes<Codec::kBf16>()
                             : record_bytes<Codec::kFp16>();
}

// Records (chunks) of a bucket of n elements.
HVD_HIER_HD int64_t codec_records(int64_t n) { return (n + kCodecChunk - 1) / kCodecChunk; }

// Calls f(std::integral_constant<Codec, c>{}), so that a generic lambda sees the codec as a
// compile-time constant (host side: the dispatch to the templated loops and kernels).
template <typename F>
inline void dispatch_codec(Codec c, F&& f) {
  switch (c) {
    case Codec::kFp16:
      f(std::integral_constant<Codec, Codec::kFp16>{});
      break;
    case Codec::kBf16:
      f(std::integral_constant<Codec, Codec::kBf16>{});
      break;
    case Codec::kInt8:
      f(std::integral_constant<Codec, Codec::kInt8>{});
      break;
  }
}

// ---- float32 arithmetic rounded once per operation ------------------------------------------
// nvcc fuses a product and a following sum into one FMA (one rounding instead of two) unless
// told otherwise, and so does GCC where FMA is available; the byte-for-byte agreement of the
// back ends depends on every product being rounded on its own. The device code therefore uses
// the _rn intrinsics (never contracted), and the CPU translation units are compiled with
// -ffp-contract=off (CMakeLists.txt).
HVD_HIER_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

HVD_HIER_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

HVD_HIER_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

HVD_HIER_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// Round to the nearest integer, half to even (the default rounding mode).
HVD_HIER_HD float round_half_even(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return std::nearbyint(x);
#endif
}

// |v| as the bits of a float32. For non-negative floats the bits order like the values (and
// NaN above inf), so a chunk's max |v| is an integer max: exact, in any order, and a loop the
// compiler vectorises (a float max reduction it does not).
HVD_HIER_HD uint32_t abs_bits(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v) & 0x7fffffffu;
#else
  uint32_t b;
  std::memcpy(&b, &v, sizeof(b));
  return b & 0x7fffffffu;
#endif
}

HVD_HIER_HD float float_from_bits(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float v;
  std::memcpy(&v, &b, sizeof(v));
  return v;
#endif
}

HVD_HIER_HD uint32_t max_bits(uint32_t a, uint32_t b) { return a > b ? a : b; }

// ---- int8 -----------------------------------------------------------------------------------
struct Int8Scale {
  float scale;  // decode: q * scale
  float inv;    // encode: v * inv
};

// The chunk's scale from amax = max |v| given as abs_bits.
HVD_HIER_HD Int8Scale int8_scale(uint32_t amax_bits) {
  const float scale = div_rn(float_from_bits(amax_bits), kInt8Max);
  return {scale, scale > 0.0f ? div_rn(1.0f, scale) : 0.0f};
}

HVD_HIER_HD int8_t quantize_int8(float v, float inv) {
  float q = round_half_even(mul_rn(v, inv));
  q = q > kInt8Max ? kInt8Max : q;
  q = q < -kInt8Max ? -kInt8Max : q;
  q = q == q ? q : 0.0f;  // NaN (see the top of the file)
  return static_cast<int8_t>(static_cast<int32_t>(q));
}

// ---- one element of any codec ---------------------------------------------------------------
// `inv` and `scale` matter for int8 only.
template <Codec C>
HVD_HIER_HD typename CodecTraits<C>::value_t encode_value(float v, float inv) {
  if constexpr (C == Codec::kInt8) {
    return quantize_int8(v, inv);
  } else {
    return static_cast<typename CodecTraits<C>::value_t>(v);
  }
}

template <Codec C>
HVD_HIER_HD float decode_value(typename CodecTraits<C>::value_t q, float scale) {
  if constexpr (C == Codec::kInt8) {
    return mul_rn(static_cast<float>(q), scale);
  } else {
    return static_cast<float>(q);
  }
}

// What fills a record past the bucket's end: all bits zero.
template <Codec C>
HVD_HIER_HD typename CodecTraits<C>::value_t zero_value() {
  if constexpr (C == Codec::kInt8) {
    return 0;
  } else {
    return typename CodecTraits<C>::value_t(0, CodecTraits<C>::value_t::from_bits());
  }
}

// ---- records --------------------------------------------------------------------------------
template <Codec C>
HVD_HIER_HD typename CodecTraits<C>::value_t* record_values(uint8_t* rec) {
  return reinterpret_cast<typename CodecTraits<C>::value_t*>(rec + CodecTraits<C>::kHeaderBytes);
}

template <Codec C>
HVD_HIER_HD const typename CodecTraits<C>::value_t* record_values(const uint8_t* rec) {
  return reinterpret_cast<const typename CodecTraits<C>::value_t*>(rec + CodecTraits<C>::kHeaderBytes);
}

// The decode scale of a record: the int8 header, 1 for the 16-bit codecs.
template <Codec C>
HVD_HIER_HD float record_scale(const uint8_t* rec) {
  if constexpr (C == Codec::kInt8) {
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<const float*>(rec);
#else
    float s;
    std::memcpy(&s, rec, sizeof(s));
    return s;
#endif
  } else {
    return 1.0f;
  }
}

// The int8 header: the scale, then 12 zero bytes.
HVD_HIER_HD void store_int8_header(uint8_t* rec, float scale) {
  uint32_t words[kInt8HeaderBytes / 4] = {};
#if defined(__CUDA_ARCH__)
  words[0] = __float_as_uint(scale);
  for (int w = 0; w < static_cast<int>(kInt8HeaderBytes / 4); ++w) {
    reinterpret_cast<uint32_t*>(rec)[w] = words[w];
  }
#else
  std::memcpy(&words[0], &scale, sizeof(scale));
  std::memcpy(rec, words, sizeof(words));
#endif
}

// Bucket elements [block * kCodecChunk, chunk_end) of record `block`.
template <typename Table>
HVD_HIER_HD int64_t chunk_end(const Table& t, int64_t block) {
  const int64_t total = t.offsets[t.count];
  const int64_t end = (block + 1) * kCodecChunk;
  return end < total ? end : total;
}

// Calls f(i, lo, hi, codes, scale) for every piece of a tensor that record `block` of the
// encoded buffer `src` covers: elements [lo, hi) of tensor i, whose codes start at `codes`;
// `scale` is the record's decode scale. The decoding ops (apply_delta, decode_into) walk a
// record this way in the CPU loop and in the CUDA thread code alike.
template <Codec C, typename Table, typename F>
HVD_HIER_HD void for_each_record_piece(const Table& t, const uint8_t* src, int64_t block, F&& f) {
  const int64_t begin = block * kCodecChunk;
  const uint8_t* rec = src + block * record_bytes<C>();
  const float scale = record_scale<C>(rec);
  const auto* codes = record_values<C>(rec);
  for_each_piece(t, begin, chunk_end(t, block), [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    f(i, lo, hi, codes + (at - begin), scale);
  });
}

// ---- the ops' per-element arithmetic --------------------------------------------------------
// float32, or float64 for float64 tensors.
template <typename T>
using delta_acc_t = typename AccType<T, float>::type;

// encode_delta: d = x - a (+ r). float64 tensors: the delta (and the residual added to it) in
// float64, then rounded to float32 once.
template <typename T>
HVD_HIER_HD float delta_value(T x, T a) {
  using acc = delta_acc_t<T>;
  return static_cast<float>(static_cast<acc>(x) - static_cast<acc>(a));
}

template <typename T>
HVD_HIER_HD float delta_value(T x, T a, float r) {
  using acc = delta_acc_t<T>;
  return static_cast<float>((static_cast<acc>(x) - static_cast<acc>(a)) + static_cast<acc>(r));
}

// apply_delta: x = cast_T(a + d), in float64 for float64 tensors.
template <typename T>
HVD_HIER_HD T apply_value(T a, float d) {
  using acc = delta_acc_t<T>;
  return static_cast<T>(static_cast<acc>(a) + static_cast<acc>(d));
}

// decode_into: t = cast_T(d * scale), in float64 for float64 tensors.
template <typename T>
HVD_HIER_HD T scaled_value(float d, delta_acc_t<T> scale) {
  using acc = delta_acc_t<T>;
  return static_cast<T>(mul_rn(static_cast<acc>(d), scale));
}

// reduce_encoded: m = s * scale, a zero written as +0 (so that with a negative scale the
// padding of a 16-bit record stays all zero bits).
HVD_HIER_HD float reduce_value(float s, float scale) {
  const float m = mul_rn(s, scale);
  return m == 0.0f ? 0.0f : m;
}

}  // namespace hvd_hier
