// The CPU loop of the compressed-delta ops, included next to fused_cpu_impl.h by one
// translation unit per instruction set (see fused_cpu.cpp); HVD_HIER_CPU_NS names the namespace
// of each copy. Records run in parallel on ATen's thread pool. A record is one pass over the
// data in memory: its values are gathered into a buffer of kCodecChunk floats (8 KiB, in L1),
// and what needs the whole chunk (the int8 max, the encoding, the residuals) loops over that
// buffer. Every loop is a plain element loop over the shared rules of csrc/codec.h, which the
// compiler vectorises for the target instruction set.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <functional>

#include "../codec_ops.h"

namespace hvd_hier {
namespace HVD_HIER_CPU_NS {
namespace codec {

// Records per at::parallel_for task at least: as many elements as a pack/unpack task.
constexpr int64_t kRecordsPerTask = kChunkElems / kCodecChunk;

// vals[0, len) := the deltas (plus residuals) of bucket elements [begin, begin + len).
template <typename T>
inline void gather_delta(const DeltaTable& t, int64_t begin, int64_t end, float* __restrict vals) {
  for_each_piece(t, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    const T* __restrict x = static_cast<const T*>(t.tensors[i]) + lo;
    const T* __restrict a = static_cast<const T*>(t.anchors[i]) + lo;
    float* __restrict d = vals + (at - begin);
    const int64_t n = hi - lo;
    if (t.with_residuals) {
      const float* __restrict r = t.residuals[i] + lo;
      for (int64_t k = 0; k < n; ++k) d[k] = delta_value(x[k], a[k], r[k]);
    } else {
      for (int64_t k = 0; k < n; ++k) d[k] = delta_value(x[k], a[k]);
    }
  });
}

// The residuals of bucket elements [begin, end) := vals.
inline void scatter_residuals(const DeltaTable& t, int64_t begin, int64_t end, const float* vals) {
  for_each_piece(t, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    std::memcpy(t.residuals[i] + lo, vals + (at - begin), (hi - lo) * sizeof(float));
  });
}

// x = a = a + m (with anchors) or x = m, m = s[j] * scale, for bucket elements [begin, end).
template <typename T>
inline void write_sums(const DeltaTable& t, int64_t begin, int64_t end, const float* __restrict s, float scale) {
  const bool with_anchors = t.with_anchors != 0;
  for_each_piece(t, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    T* __restrict x = static_cast<T*>(t.tensors[i]) + lo;
    const float* __restrict sp = s + (at - begin);
    if (with_anchors) {
      T* __restrict a = static_cast<T*>(t.anchors[i]) + lo;
      for (int64_t k = 0; k < hi - lo; ++k) {
        const T v = apply_value(a[k], mul_rn(sp[k], scale));
        x[k] = v;
        a[k] = v;
      }
    } else {
      for (int64_t k = 0; k < hi - lo; ++k) x[k] = static_cast<T>(mul_rn(sp[k], scale));
    }
  });
}

// The scale of the chunk vals[0, len) (the 16-bit codecs: 1).
template <Codec C>
inline Int8Scale chunk_scale(const float* __restrict vals, int64_t len) {
  if constexpr (!kScaled<C>) {
    return {1.0f, 1.0f};
  } else {
    uint32_t m = 0;
    for (int64_t k = 0; k < len; ++k) m = max_bits(m, abs_bits(vals[k]));
    if constexpr (C == Codec::kInt2) {
      const float ia = int2_inverse_amax(m);
      uint32_t units = 0;
      for (int64_t k = 0; k < len; ++k) units += int2_units(vals[k], ia);
      return int2_scale(m, units, len);
    } else {
      return max_scale<C>(m);
    }
  }
}

// Encodes vals[0, len) into the record at `rec` with its padding and header; with `residual`,
// leaves v - decode(encode(v)) in vals[0, len).
template <Codec C>
inline void encode_record(float* __restrict vals, int64_t len, uint8_t* __restrict rec, bool residual) {
  const Int8Scale s = chunk_scale<C>(vals, len);
  if constexpr (kScaled<C>) store_int8_header(rec, s.scale);
  typename CodecTraits<C>::value_t* __restrict q = record_values<C>(rec);
  constexpr int per = CodecTraits<C>::kPerValue;
  const int64_t used = (len + per - 1) / per;  // values holding a code
  if constexpr (kPacked<C>) {
    for (int64_t b = 0; b < used; ++b) q[b] = pack_byte<C>(vals, b, len, s.inv);
  } else {
    for (int64_t k = 0; k < len; ++k) q[k] = encode_value<C>(vals[k], s.inv);
  }
  // Two loops over data in L1 rather than one: GCC vectorises each, not their fusion. The
  // residual decodes the code just stored (quantising each value again made int8's encoding
  // with residuals 3.5x slower).
  if (residual) {
    for (int64_t k = 0; k < len; ++k) vals[k] = vals[k] - decode_value<C>(code_at<C>(q, k), s.scale);
  }
  std::memset(static_cast<void*>(q + used), 0, (kCodecChunk / per - used) * sizeof(*q));
}

template <typename T, Codec C>
void encode_delta(const DeltaTable& t, uint8_t* out, int64_t records) {
  const bool with_residuals = t.with_residuals != 0;
  at::parallel_for(0, records, kRecordsPerTask, [&](int64_t first, int64_t last) {
    alignas(64) float vals[kCodecChunk];
    for (int64_t c = first; c < last; ++c) {
      const int64_t begin = c * kCodecChunk;
      const int64_t end = chunk_end(t, c);
      gather_delta<T>(t, begin, end, vals);
      encode_record<C>(vals, end - begin, out + c * record_bytes<C>(), with_residuals);
      if (with_residuals) scatter_residuals(t, begin, end, vals);
    }
  });
}

template <Codec C>
void reduce_encoded(const uint8_t* src, uint8_t* dst, int64_t records, int64_t count, float scale) {
  at::parallel_for(0, records, kRecordsPerTask, [&](int64_t first, int64_t last) {
    alignas(64) float s[kCodecChunk];
    for (int64_t c = first; c < last; ++c) {
      for (int64_t k = 0; k < count; ++k) {
        const uint8_t* rec = src + (k * records + c) * record_bytes<C>();
        const float sc = record_scale<C>(rec);
        const typename CodecTraits<C>::value_t* __restrict q = record_values<C>(rec);
        if (k == 0) {
          for (int64_t j = 0; j < kCodecChunk; ++j) s[j] = decode_value<C>(code_at<C>(q, j), sc);
        } else {
          for (int64_t j = 0; j < kCodecChunk; ++j) s[j] = add_rn(s[j], decode_value<C>(code_at<C>(q, j), sc));
        }
      }
      for (int64_t j = 0; j < kCodecChunk; ++j) s[j] = reduce_value(s[j], scale);
      encode_record<C>(s, kCodecChunk, dst + c * record_bytes<C>(), false);
    }
  });
}

template <typename T, Codec C>
void apply_delta(const DeltaTable& t, const uint8_t* src, int64_t records) {
  using value_t = typename CodecTraits<C>::value_t;
  at::parallel_for(0, records, kRecordsPerTask, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      for_each_record_piece<C>(t, src, c, [&](int32_t i, int64_t lo, int64_t hi, const value_t* values,
                                               int64_t at, float sc) {
        T* __restrict x = static_cast<T*>(t.tensors[i]) + lo;
        T* __restrict a = static_cast<T*>(t.anchors[i]) + lo;
        const value_t* __restrict qp = values;
        for (int64_t k = 0; k < hi - lo; ++k) {
          const T v = apply_value(a[k], decode_value<C>(code_at<C>(qp, at + k), sc));
          x[k] = v;
          a[k] = v;
        }
      });
    }
  });
}

template <typename T, Codec C>
void decode_into(const DeltaTable& t, const uint8_t* src, int64_t records, delta_acc_t<T> scale) {
  using value_t = typename CodecTraits<C>::value_t;
  at::parallel_for(0, records, kRecordsPerTask, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      for_each_record_piece<C>(t, src, c, [&](int32_t i, int64_t lo, int64_t hi, const value_t* values,
                                               int64_t at, float sc) {
        T* __restrict x = static_cast<T*>(t.tensors[i]) + lo;
        const value_t* __restrict qp = values;
        for (int64_t k = 0; k < hi - lo; ++k) {
          x[k] = scaled_value<T>(decode_value<C>(code_at<C>(qp, at + k), sc), scale);
        }
      });
    }
  });
}

// apply_sum: m = (sum over k of decode(src_k)) * scale, in rank order; x = a = a + m with
// anchors, else x = m. Record by record: the sums of one record in a float32 buffer.
template <typename T, Codec C>
void apply_sum(const DeltaTable& t, const uint8_t* src, int64_t records, int64_t count, float scale) {
  at::parallel_for(0, records, kRecordsPerTask, [&](int64_t first, int64_t last) {
    alignas(64) float s[kCodecChunk];
    for (int64_t c = first; c < last; ++c) {
      const int64_t begin = c * kCodecChunk;
      const int64_t len = chunk_end(t, c) - begin;
      for (int64_t k = 0; k < count; ++k) {
        const uint8_t* rec = src + (k * records + c) * record_bytes<C>();
        const float sc = record_scale<C>(rec);
        const typename CodecTraits<C>::value_t* __restrict q = record_values<C>(rec);
        if (k == 0) {
          for (int64_t j = 0; j < len; ++j) s[j] = decode_value<C>(code_at<C>(q, j), sc);
        } else {
          for (int64_t j = 0; j < len; ++j) s[j] = add_rn(s[j], decode_value<C>(code_at<C>(q, j), sc));
        }
      }
      write_sums<T>(t, begin, begin + len, s, scale);
    }
  });
}

}  // namespace codec
}  // namespace HVD_HIER_CPU_NS
}  // namespace hvd_hier

#include "topk_cpu_impl.h"

namespace hvd_hier {
namespace HVD_HIER_CPU_NS {
namespace codec {

inline void run_topk(const CodecJob& job) {
  dispatch_topk_values(job.codec, [&](auto tag) {
    constexpr Codec V = decltype(tag)::value;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.dtype, "hvd_hier_topk_cpu", [&] {
      if (job.op == CodecOp::kEncodeTopk) {
        encode_topk<scalar_t, V>(job.table, job.dst, job.records, job.slots);
      } else {
        apply_topk<scalar_t, V>(job.table, job.src, job.records, job.count, job.slots,
                                static_cast<float>(job.scale));
      }
    });
  });
}

inline void run(const CodecJob& job) {
  if (job.op == CodecOp::kEncodeTopk || job.op == CodecOp::kApplyTopk) {
    run_topk(job);
    return;
  }
  dispatch_codec(job.codec, [&](auto tag) {
    constexpr Codec C = decltype(tag)::value;
    if (job.op == CodecOp::kReduceEncoded) {
      if constexpr (!kPacked<C>) {
        reduce_encoded<C>(job.src, job.dst, job.records, job.count, static_cast<float>(job.scale));
      }
      return;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.dtype, "hvd_hier_codec_cpu", [&] {
      using T = scalar_t;
      switch (job.op) {
        case CodecOp::kEncodeDelta:
          encode_delta<T, C>(job.table, job.dst, job.records);
          break;
        case CodecOp::kApplyDelta:
          apply_delta<T, C>(job.table, job.src, job.records);
          break;
        case CodecOp::kDecodeInto:
          decode_into<T, C>(job.table, job.src, job.records, static_cast<delta_acc_t<T>>(job.scale));
          break;
        case CodecOp::kApplySum:
          apply_sum<T, C>(job.table, job.src, job.records, job.count, static_cast<float>(job.scale));
          break;
        default:
          break;
      }
    });
  });
}

}  // namespace codec
}  // namespace HVD_HIER_CPU_NS
}  // namespace hvd_hier
