// The CPU loop of the top-k ops (csrc/topk.h has the format), included by codec_cpu_impl.h
// after its helpers, once per instruction set. A record at a time: the chunk's values gathered into a
// buffer in L1, the threshold found by std::nth_element on a copy of the keys (the m-th largest
// key is the same however it is found), then one pass in index order keeps, encodes and
// leaves the residuals.
#pragma once

#include <algorithm>
#include <functional>

#include "../topk.h"

namespace hvd_hier {
namespace HVD_HIER_CPU_NS {
namespace codec {

// One record: keeps the top m of vals[0, len), writes the record at `rec`, leaves the
// residuals in vals.
template <Codec V>
inline void encode_topk_record(float* __restrict vals, int64_t len, int64_t k, uint8_t* __restrict rec) {
  alignas(64) uint32_t keys[kCodecChunk];
  alignas(64) uint32_t order[kCodecChunk];
  const int64_t m = std::min(k, len);
  uint32_t amax = 0;
  for (int64_t j = 0; j < len; ++j) {
    keys[j] = abs_bits(vals[j]);
    amax = max_bits(amax, keys[j]);
  }
  std::copy(keys, keys + len, order);
  std::nth_element(order, order + (m - 1), order + len, std::greater<uint32_t>());
  const uint32_t threshold = order[m - 1];
  int64_t above = 0;
  for (int64_t j = 0; j < len; ++j) above += keys[j] > threshold;
  const int64_t need = m - above;
  // which are kept (kept[j]: slot + 1, or 0)
  uint16_t* offs = topk_offsets(rec);
  int64_t slot = 0, eq = 0;
  uint32_t units = 0;
  const float ia = int2_inverse_amax(amax);
  for (int64_t j = 0; j < len; ++j) {
    if (topk_kept(keys[j], threshold, eq, need)) {
      offs[slot++] = static_cast<uint16_t>(j);
      if constexpr (V == Codec::kInt2) units += int2_units(vals[j], ia);
    }
    eq += keys[j] == threshold;
  }
  const Int8Scale s = topk_scale<V>(amax, units, m);
  store_topk_header(rec, s.scale, static_cast<uint32_t>(m));
  uint8_t* codes = topk_codes(rec, k);
  constexpr int per = CodecTraits<V>::kPerValue;
  for (int64_t q = 0; q < m; ++q) {
    const int64_t j = offs[q];
    const auto code = encode_value<V>(vals[j], s.inv);
    codes[q / per] = static_cast<uint8_t>(codes[q / per] |
                                          ((static_cast<uint32_t>(static_cast<uint8_t>(code)) & kCodeMask<V>)
                                           << (kCodeBits<V> * (q % per))));
    vals[j] = vals[j] - decode_value<V>(code, s.scale);
  }
}

template <typename T, Codec V>
void encode_topk(const DeltaTable& t, uint8_t* out, int64_t records, int64_t k) {
  const int64_t rb = topk_record_bytes<V>(k);
  at::parallel_for(0, records, kRecordsPerTask, [&](int64_t first, int64_t last) {
    alignas(64) float vals[kCodecChunk];
    for (int64_t c = first; c < last; ++c) {
      const int64_t begin = c * kCodecChunk;
      const int64_t end = chunk_end(t, c);
      uint8_t* rec = out + c * rb;
      std::memset(rec, 0, rb);
      gather_delta<T>(t, begin, end, vals);
      encode_topk_record<V>(vals, end - begin, k, rec);
      if (t.with_residuals) scatter_residuals(t, begin, end, vals);
    }
  });
}

template <typename T, Codec V>
void apply_topk(const DeltaTable& t, const uint8_t* src, int64_t records, int64_t count, int64_t k, float scale) {
  const int64_t rb = topk_record_bytes<V>(k);
  at::parallel_for(0, records, kRecordsPerTask, [&](int64_t first, int64_t last) {
    alignas(64) float s[kCodecChunk];
    for (int64_t c = first; c < last; ++c) {
      const int64_t begin = c * kCodecChunk;
      const int64_t len = chunk_end(t, c) - begin;
      std::fill(s, s + len, 0.0f);
      for (int64_t r = 0; r < count; ++r) {
        const uint8_t* rec = src + (r * records + c) * rb;
        const int64_t m = std::min<int64_t>(topk_count(rec), k);
        const uint16_t* offs = topk_offsets(rec);
        for (int64_t q = 0; q < m; ++q) {
          if (offs[q] < len) s[offs[q]] = add_rn(s[offs[q]], topk_value<V>(rec, k, q));
        }
      }
      write_sums<T>(t, begin, begin + len, s, scale);
    }
  });
}

}  // namespace codec
}  // namespace HVD_HIER_CPU_NS
}  // namespace hvd_hier
