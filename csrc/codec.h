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
//                kCodecChunk int8 values (2064 bytes);
//   int4         the same header, then kCodecChunk 4-bit two's-complement codes, two per byte,
//                element 2b in the low nibble of byte b and 2b + 1 in the high one (1040 bytes);
//   int2         the same header, then kCodecChunk 2-bit codes, four per byte, element 4b + u
//                in bits 2u, 2u + 1 of byte b (528 bytes).
// Codes past n in the last chunk are all zero bits.
//
// Rules (all arithmetic in float32, each product and sum rounded once):
//   fp16 / bf16  encode: round to nearest even (as c10::Half / c10::BFloat16); decode: widen.
//   int8, int4   over the chunk's real elements v: amax = max |v|, scale = amax / L (L = 127
//                or 7), inv = scale > 0 ? 1 / scale : 0, q = clamp(nearbyint(v * inv), -L, L)
//                (half to even); decode: q * scale.
//   int2         four levels (2c - 3) * scale, c = 0..3: {-3, -1, 1, 3} * scale, no zero.
//                The scale follows the chunk's mean |v| (which a max would overstate): with
//                amax as above and ia = 1 / amax, each element's |v| * ia (at most 1) is
//                counted in units of 2^-20, f = trunc(min(|v| * ia, 1) * 2^20), and the
//                integer sum F of the f (exact, in any order) gives mean = F / (len * 2^20)
//                * amax and scale = mean * 0.625 (levels near the best four for a normal
//                distribution). amax = 0, or so small a denormal that 1 / amax overflows:
//                scale 0. Encode: t = v * inv, c = 3 if t >= 2, 2 if t >= 0, 1 if t >= -2,
//                else 0 (a NaN t too). Decode: (2c - 3) * scale.
// Non-finite input: a chunk holding an inf or a NaN gets scale inf or NaN (int2: NaN), so all
// of it decodes to NaN (the non-finite value is not hidden). Where v * inv is NaN (0 * inf,
// when amax is so small a denormal that 1 / scale overflows) q is 0 (int2: c = 0).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fused.h"

namespace hvd_hier {

enum class Codec : int { kFp16 = 0, kBf16 = 1, kInt8 = 2, kInt4 = 3, kInt2 = 4 };

// Elements per chunk (one record of the encoded buffer; one CUDA block).
constexpr int64_t kCodecChunk = 2048;
// Bytes before an int8, int4 or int2 record's codes: the float32 scale and 12 zero bytes (the
// codes then start 16-byte aligned, as every record does: 4096, 2064, 1040 and 528 are
// multiples of 16).
constexpr int64_t kInt8HeaderBytes = 16;
// Alignment the ops require of an encoded buffer.
constexpr int64_t kRecordAlign = 16;
constexpr float kInt8Max = 127.0f;
constexpr float kInt4Max = 7.0f;
// int2: the scale is this times the chunk's mean |v|; |v| / amax is counted in 2^-20 units.
constexpr float kInt2MeanFactor = 0.625f;
constexpr float kInt2Units = 1048576.0f;

static_assert(kCodecChunk % kCudaThreads == 0, "every CUDA thread handles the same number of "
                                               "elements of a record");

// value_t: the type a record stores its codes in; kPerValue: codes per value_t (packed codecs:
// 2 or 4 to a byte); kScaled: a float32 scale in a 16-byte header.
template <Codec C>
struct CodecTraits;
template <>
struct CodecTraits<Codec::kFp16> {
  using value_t = c10::Half;
  static constexpr int64_t kHeaderBytes = 0;
  static constexpr int kPerValue = 1;
};
template <>
struct CodecTraits<Codec::kBf16> {
  using value_t = c10::BFloat16;
  static constexpr int64_t kHeaderBytes = 0;
  static constexpr int kPerValue = 1;
};
template <>
struct CodecTraits<Codec::kInt8> {
  using value_t = int8_t;
  static constexpr int64_t kHeaderBytes = kInt8HeaderBytes;
  static constexpr int kPerValue = 1;
};
template <>
struct CodecTraits<Codec::kInt4> {
  using value_t = uint8_t;
  static constexpr int64_t kHeaderBytes = kInt8HeaderBytes;
  static constexpr int kPerValue = 2;
};
template <>
struct CodecTraits<Codec::kInt2> {
  using value_t = uint8_t;
  static constexpr int64_t kHeaderBytes = kInt8HeaderBytes;
  static constexpr int kPerValue = 4;
};

template <Codec C>
constexpr bool kPacked = CodecTraits<C>::kPerValue > 1;
template <Codec C>
constexpr bool kScaled = CodecTraits<C>::kHeaderBytes > 0;
// Bits of one packed code, and its mask.
template <Codec C>
constexpr int kCodeBits = 8 / CodecTraits<C>::kPerValue;
template <Codec C>
constexpr uint32_t kCodeMask = (1u << kCodeBits<C>)-1u;

template <Codec C>
HVD_HIER_HD constexpr int64_t record_bytes() {
  return CodecTraits<C>::kHeaderBytes +
         kCodecChunk / CodecTraits<C>::kPerValue * static_cast<int64_t>(sizeof(typename CodecTraits<C>::value_t));
}

HVD_HIER_HD int64_t record_bytes(Codec c) {
  return c == Codec::kInt2   ? record_bytes<Codec::kInt2>()
         : c == Codec::kInt4 ? record_bytes<Codec::kInt4>()
         : c == Codec::kInt8 ? record_bytes<Codec::kInt8>()
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
    case Codec::kInt4:
      f(std::integral_constant<Codec, Codec::kInt4>{});
      break;
    case Codec::kInt2:
      f(std::integral_constant<Codec, Codec::kInt2>{});
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

// ---- scales ---------------------------------------------------------------------------------
struct Int8Scale {
  float scale;  // decode: q * scale
  float inv;    // encode: v * inv
};

// int8 and int4: the chunk's scale from amax = max |v| given as abs_bits.
template <Codec C>
HVD_HIER_HD Int8Scale max_scale(uint32_t amax_bits) {
  const float levels = C == Codec::kInt4 ? kInt4Max : kInt8Max;
  const float scale = div_rn(float_from_bits(amax_bits), levels);
  return {scale, scale > 0.0f ? div_rn(1.0f, scale) : 0.0f};
}

HVD_HIER_HD Int8Scale int8_scale(uint32_t amax_bits) { return max_scale<Codec::kInt8>(amax_bits); }

// int2: 1 / amax, or 0 where the chunk's scale is 0 or NaN (see the top of the file).
HVD_HIER_HD float int2_inverse_amax(uint32_t amax_bits) {
  if (amax_bits == 0u || amax_bits >= 0x7f800000u) return 0.0f;  // zero, inf, NaN
  const float ia = div_rn(1.0f, float_from_bits(amax_bits));
  return ia < float_from_bits(0x7f800000u) ? ia : 0.0f;
}

// int2: one element's |v| / amax in units of 2^-20 (ia = int2_inverse_amax).
HVD_HIER_HD uint32_t int2_units(float v, float ia) {
  float t = mul_rn(float_from_bits(abs_bits(v)), ia);
  t = t < 1.0f ? t : 1.0f;
  return static_cast<uint32_t>(mul_rn(t, kInt2Units));
}

// int2: the chunk's scale from amax and the sum of the units of its `len` elements.
HVD_HIER_HD Int8Scale int2_scale(uint32_t amax_bits, uint32_t units, int64_t len) {
  if (amax_bits >= 0x7f800000u) return {float_from_bits(0x7fc00000u), 0.0f};  // inf or NaN
  if (int2_inverse_amax(amax_bits) == 0.0f) return {0.0f, 0.0f};
  const float mean = mul_rn(div_rn(static_cast<float>(units), mul_rn(static_cast<float>(len), kInt2Units)),
                            float_from_bits(amax_bits));
  const float scale = mul_rn(mean, kInt2MeanFactor);
  return {scale, scale > 0.0f ? div_rn(1.0f, scale) : 0.0f};
}

// ---- codes --------------------------------------------------------------------------------------
// The integer codes: q in [-levels, levels] for int8 and int4, c in 0..3 for int2.
HVD_HIER_HD int32_t quantize_symmetric(float v, float inv, float levels) {
  float q = round_half_even(mul_rn(v, inv));
  q = q > levels ? levels : q;
  q = q < -levels ? -levels : q;
  q = q == q ? q : 0.0f;  // NaN (see the top of the file)
  return static_cast<int32_t>(q);
}

HVD_HIER_HD int8_t quantize_int8(float v, float inv) {
  return static_cast<int8_t>(quantize_symmetric(v, inv, kInt8Max));
}

HVD_HIER_HD uint32_t quantize_int2(float v, float inv) {
  const float t = mul_rn(v, inv);
  return t >= 2.0f ? 3u : t >= 0.0f ? 2u : t >= -2.0f ? 1u : 0u;
}

// ---- one element of any codec ---------------------------------------------------------------
// code_t: what encode_value returns, one element's code (a packed codec's in its low bits).
template <Codec C>
using code_t = typename CodecTraits<C>::value_t;

// `inv` and `scale` matter for the scaled codecs only.
template <Codec C>
HVD_HIER_HD code_t<C> encode_value(float v, float inv) {
  if constexpr (C == Codec::kInt8) {
    return quantize_int8(v, inv);
  } else if constexpr (C == Codec::kInt4) {
    return static_cast<uint8_t>(static_cast<uint32_t>(quantize_symmetric(v, inv, kInt4Max)) & kCodeMask<C>);
  } else if constexpr (C == Codec::kInt2) {
    return static_cast<uint8_t>(quantize_int2(v, inv));
  } else {
    return static_cast<code_t<C>>(v);
  }
}

template <Codec C>
HVD_HIER_HD float decode_value(code_t<C> q, float scale) {
  if constexpr (C == Codec::kInt8) {
    return mul_rn(static_cast<float>(q), scale);
  } else if constexpr (C == Codec::kInt4) {
    const int32_t v = static_cast<int32_t>(q) >= 8 ? static_cast<int32_t>(q) - 16 : static_cast<int32_t>(q);
    return mul_rn(static_cast<float>(v), scale);
  } else if constexpr (C == Codec::kInt2) {
    return mul_rn(static_cast<float>(2 * static_cast<int32_t>(q) - 3), scale);
  } else {
    return static_cast<float>(q);
  }
}

// What fills a record past the bucket's end: all bits zero.
template <Codec C>
HVD_HIER_HD code_t<C> zero_value() {
  if constexpr (C == Codec::kFp16 || C == Codec::kBf16) {
    return code_t<C>(0, code_t<C>::from_bits());
  } else {
    return 0;
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

// The code of element j of a record's values (unpacked: the value itself).
template <Codec C>
HVD_HIER_HD code_t<C> code_at(const typename CodecTraits<C>::value_t* values, int64_t j) {
  if constexpr (kPacked<C>) {
    constexpr int per = CodecTraits<C>::kPerValue;
    return static_cast<uint8_t>((values[j / per] >> (kCodeBits<C> * (j % per))) & kCodeMask<C>);
  } else {
    return values[j];
  }
}

// A packed codec's byte b from the codes of elements b * per + u (u = 0..per-1) of vals,
// zero bits for the elements at or past len.
template <Codec C>
HVD_HIER_HD uint8_t pack_byte(const float* vals, int64_t b, int64_t len, float inv) {
  constexpr int per = CodecTraits<C>::kPerValue;
  uint32_t byte = 0;
  for (int u = 0; u < per; ++u) {
    const int64_t j = b * per + u;
    if (j < len) byte |= static_cast<uint32_t>(encode_value<C>(vals[j], inv)) << (kCodeBits<C> * u);
  }
  return static_cast<uint8_t>(byte);
}

// The decode scale of a record: the header, 1 for the 16-bit codecs.
template <Codec C>
HVD_HIER_HD float record_scale(const uint8_t* rec) {
  if constexpr (kScaled<C>) {
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

// The header of a scaled record: the scale, then 12 zero bytes.
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

// Calls f(i, lo, hi, values, first, scale) for every piece of a tensor that record `block` of
// the encoded buffer `src` covers: elements [lo, hi) of tensor i, whose codes start at element
// `first` of the record's `values` (code_at); `scale` is the record's decode scale. The decoding
// ops walk a record this way in the CPU loop and in the CUDA thread code alike.
template <Codec C, typename Table, typename F>
HVD_HIER_HD void for_each_record_piece(const Table& t, const uint8_t* src, int64_t block, F&& f) {
  const int64_t begin = block * kCodecChunk;
  const uint8_t* rec = src + block * record_bytes<C>();
  const float scale = record_scale<C>(rec);
  const auto* values = record_values<C>(rec);
  for_each_piece(t, begin, chunk_end(t, block), [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    f(i, lo, hi, values, at - begin, scale);
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

// apply_sum and apply_topk: element k takes the scaled sum m: x = a = cast_T(a + m) where there
// are anchors (a not null), else x = cast_T(m).
template <typename T>
HVD_HIER_HD void store_sum(T* x, T* a, int64_t k, float m) {
  if (a != nullptr) {
    const T v = apply_value(a[k], m);
    x[k] = v;
    a[k] = v;
  } else {
    x[k] = static_cast<T>(m);
  }
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
