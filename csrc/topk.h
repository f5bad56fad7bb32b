// Top-k deltas: the wire format and the rules shared by the CPU loop, the CUDA kernels and their
// CPU emulation (everything __host__ __device__, so that all three compute the same bytes).
//
// A bucket of n elements is cut into chunks of kCodecChunk elements as for the dense codecs
// (csrc/codec.h). Of each chunk, the k elements of largest |v| are kept (k, the slots, is
// fixed for the bucket, so every record has the same size): v the delta plus this rank's
// residual, and the rest of the chunk goes to the residual. A chunk of len < k elements keeps
// all of them. The record of a chunk, with m = min(k, len) entries:
//   bytes 0-3    the float32 scale of the kept values (as the dense codec `values`);
//   bytes 4-7    m, a uint32;
//   bytes 8-15   zero;
//   then k uint16 offsets within the chunk, ascending (slots past m zero);
//   then the k codes of `values` (int8: one byte each; int4: two to a byte; int2: four),
//   packed as the dense codec packs elements (slots past m zero bits);
//   zero bytes up to a multiple of 16 (topk_record_bytes).
//
// Which elements: those whose |v| (as abs_bits: a NaN counts above inf) is above T, the m-th
// largest |v| of the chunk, and of those equal to T the first ones in index order, as many as
// m needs. The scale and codes are those of the dense codec over the m kept values (int2: the
// mean |v| over those m). The residual of a kept element is v - decode(code), of the others v.
//
// The sum of P contributions (apply_topk), per element, in float32: s = 0, then for each rank
// k = 0, 1, ... in order s += the decoded value it kept there (ranks that did not keep the
// element add nothing); m = s * scale; x = cast_T(a + m) (and the anchor too), or x = cast_T(m)
// without anchors.
#pragma once

#include "codec.h"

namespace hvd_hier {

constexpr int64_t kTopkHeaderBytes = 16;

// The slots of a chunk for a fraction of kCodecChunk: ceil(fraction * kCodecChunk), at least 1.
inline int64_t topk_slots_for(double fraction) {
  int64_t k = static_cast<int64_t>(fraction * static_cast<double>(kCodecChunk));
  if (static_cast<double>(k) < fraction * static_cast<double>(kCodecChunk)) ++k;
  return k < 1 ? 1 : (k > kCodecChunk ? kCodecChunk : k);
}

template <Codec V>
HVD_HIER_HD int64_t topk_code_bytes(int64_t k) {
  constexpr int per = CodecTraits<V>::kPerValue;
  return (k + per - 1) / per;
}

template <Codec V>
HVD_HIER_HD int64_t topk_record_bytes(int64_t k) {
  const int64_t raw = kTopkHeaderBytes + 2 * k + topk_code_bytes<V>(k);
  return (raw + kRecordAlign - 1) / kRecordAlign * kRecordAlign;
}

HVD_HIER_HD int64_t topk_record_bytes(Codec v, int64_t k) {
  return v == Codec::kInt2 ? topk_record_bytes<Codec::kInt2>(k)
         : v == Codec::kInt4 ? topk_record_bytes<Codec::kInt4>(k)
                             : topk_record_bytes<Codec::kInt8>(k);
}

// Calls f(integral_constant<Codec, V>) for the value codecs top-k takes (int8, int4, int2).
template <typename F>
inline void dispatch_topk_values(Codec v, F&& f) {
  switch (v) {
    case Codec::kInt4:
      f(std::integral_constant<Codec, Codec::kInt4>{});
      break;
    case Codec::kInt2:
      f(std::integral_constant<Codec, Codec::kInt2>{});
      break;
    default:
      f(std::integral_constant<Codec, Codec::kInt8>{});
      break;
  }
}

// The parts of a record.
HVD_HIER_HD uint16_t* topk_offsets(uint8_t* rec) { return reinterpret_cast<uint16_t*>(rec + kTopkHeaderBytes); }
HVD_HIER_HD const uint16_t* topk_offsets(const uint8_t* rec) {
  return reinterpret_cast<const uint16_t*>(rec + kTopkHeaderBytes);
}
HVD_HIER_HD uint8_t* topk_codes(uint8_t* rec, int64_t k) { return rec + kTopkHeaderBytes + 2 * k; }
HVD_HIER_HD const uint8_t* topk_codes(const uint8_t* rec, int64_t k) { return rec + kTopkHeaderBytes + 2 * k; }

HVD_HIER_HD uint32_t topk_count(const uint8_t* rec) {
#if defined(__CUDA_ARCH__)
  return reinterpret_cast<const uint32_t*>(rec)[1];
#else
  uint32_t m;
  std::memcpy(&m, rec + 4, sizeof(m));
  return m;
#endif
}

// The header: scale, m, zeros.
HVD_HIER_HD void store_topk_header(uint8_t* rec, float scale, uint32_t m) {
  uint32_t words[kTopkHeaderBytes / 4] = {};
#if defined(__CUDA_ARCH__)
  words[0] = __float_as_uint(scale);
  words[1] = m;
  for (int w = 0; w < static_cast<int>(kTopkHeaderBytes / 4); ++w) reinterpret_cast<uint32_t*>(rec)[w] = words[w];
#else
  std::memcpy(&words[0], &scale, sizeof(scale));
  words[1] = m;
  std::memcpy(rec, words, sizeof(words));
#endif
}

// The value of slot s of a record (its code decoded with the record's scale).
template <Codec V>
HVD_HIER_HD float topk_value(const uint8_t* rec, int64_t k, int64_t s) {
  const auto* codes = reinterpret_cast<const typename CodecTraits<V>::value_t*>(topk_codes(rec, k));
  return decode_value<V>(code_at<V>(codes, s), record_scale<V>(rec));
}

// The scale of the kept values: over their max |v| (int8, int4), with int2 also the sum of
// their units (int2_units) over m values.
template <Codec V>
HVD_HIER_HD Int8Scale topk_scale(uint32_t amax_bits, uint32_t units, int64_t m) {
  if constexpr (V == Codec::kInt2) {
    return int2_scale(amax_bits, units, m);
  } else {
    return max_scale<V>(amax_bits);
  }
}

// Is element j (key = abs_bits of its value) kept, given the threshold T and how many of the
// elements equal to T come before it (eq_before) and are to be kept (need_eq)?
HVD_HIER_HD bool topk_kept(uint32_t key, uint32_t threshold, int64_t eq_before, int64_t need_eq) {
  return key > threshold || (key == threshold && eq_before < need_eq);
}

}  // namespace hvd_hier
