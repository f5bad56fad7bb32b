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

#include "../codec_ops.h"

namespace hvd_hier {
namespace HVD_HIER_CPU_NS {
namespace codec {

// Records per at::parallel_for task at least: as many elements as a pack/unpack task.
constexpr int64_t kRecordsPerTask = kChunkElems / kCodecChunk;

// Encodes vals[0, len) into the record at `rec` with its padding and header; with `residual`,
// leaves v - decode(encode(v)) in vals[0, len).
template <Codec C>
inline void encode_record(float* __restrict vals, int64_t len, uint8_t* __restrict rec, bool residual) {
  Int8Scale s{1.0f, 1.0f};
  if constexpr (C == Codec::kInt8) {
    uint32_t m = 0;
    for (int64_t k = 0; k < len; ++k) m = max_bits(m, abs_bits(vals[k]));
    s = int8_scale(m);
    store_int8_header(rec, s.scale);
  }
  typename CodecTraits<C>::value_t* __restrict q = record_values<C>(rec);
  for (int64_t k = 0; k < len; ++k) q[k] = encode_value<C>(vals[k], s.inv);
  // Two loops over data in L1 rather than one: GCC vectorises each, not their fusion.
  if (residual) {
    for (int64_t k = 0; k < len; ++k) vals[k] = vals[k] - decode_value<C>(q[k], s.scale);
  }
  std::memset(static_cast<void*>(q + len), 0, (kCodecChunk - len) * sizeof(*q));
}

template <typename T, Codec C>
void encode_delta(const DeltaTable& t, uint8_t* out, int64_t records) {
  const bool with_residuals = t.with_residuals != 0;
  at::parallel_for(0, records, kRecordsPerTask, [&](int64_t first, int64_t last) {
    alignas(64) float vals[kCodecChunk];
    for (int64_t c = first; c < last; ++c) {
      const int64_t begin = c * kCodecChunk;
      const int64_t end = chunk_end(t, c);
      for_each_piece(t, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
        const T* __restrict x = static_cast<const T*>(t.tensors[i]) + lo;
        const T* __restrict a = static_cast<const T*>(t.anchors[i]) + lo;
        float* __restrict d = vals + (at - begin);
        const int64_t n = hi - lo;
        if (with_residuals) {
          const float* __restrict r = t.residuals[i] + lo;
          for (int64_t k = 0; k < n; ++k) d[k] = delta_value(x[k], a[k], r[k]);
        } else {
          for (int64_t k = 0; k < n; ++k) d[k] = delta_value(x[k], a[k]);
        }
      });
      encode_record<C>(vals, end - begin, out + c * record_bytes<C>(), with_residuals);
      if (with_residuals) {
        for_each_piece(t, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
          std::memcpy(t.residuals[i] + lo, vals + (at - begin), (hi - lo) * sizeof(float));
        });
      }
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
          for (int64_t j = 0; j < kCodecChunk; ++j) s[j] = decode_value<C>(q[j], sc);
        } else {
          for (int64_t j = 0; j < kCodecChunk; ++j) s[j] = add_rn(s[j], decode_value<C>(q[j], sc));
        }
      }
      for (int64_t j = 0; j < kCodecChunk; ++j) s[j] = reduce_value(s[j], scale);
      encode_record<C>(s, kCodecChunk, dst + c * record_bytes<C>(), false);
    }
  });
}

template <typename T, Codec C>
void apply_delta(const DeltaTable& t, const uint8_t* src, int64_t records) {
  using code_t = typename CodecTraits<C>::value_t;
  at::parallel_for(0, records, kRecordsPerTask, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      for_each_record_piece<C>(t, src, c, [&](int32_t i, int64_t lo, int64_t hi,
                                               const code_t* codes, float sc) {
        T* __restrict x = static_cast<T*>(t.tensors[i]) + lo;
        T* __restrict a = static_cast<T*>(t.anchors[i]) + lo;
        const code_t* __restrict qp = codes;
        for (int64_t k = 0; k < hi - lo; ++k) {
          const T v = apply_value(a[k], decode_value<C>(qp[k], sc));
          x[k] = v;
          a[k] = v;
        }
      });
    }
  });
}

template <typename T, Codec C>
void decode_into(const DeltaTable& t, const uint8_t* src, int64_t records, delta_acc_t<T> scale) {
  using code_t = typename CodecTraits<C>::value_t;
  at::parallel_for(0, records, kRecordsPerTask, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      for_each_record_piece<C>(t, src, c, [&](int32_t i, int64_t lo, int64_t hi,
                                               const code_t* codes, float sc) {
        T* __restrict x = static_cast<T*>(t.tensors[i]) + lo;
        const code_t* __restrict qp = codes;
        for (int64_t k = 0; k < hi - lo; ++k) x[k] = scaled_value<T>(decode_value<C>(qp[k], sc), scale);
      });
    }
  });
}

inline void run(const CodecJob& job) {
  dispatch_codec(job.codec, [&](auto tag) {
    constexpr Codec C = decltype(tag)::value;
    if (job.op == CodecOp::kReduceEncoded) {
      reduce_encoded<C>(job.src, job.dst, job.records, job.count, static_cast<float>(job.scale));
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
        case CodecOp::kReduceEncoded:
          break;
      }
    });
  });
}

}  // namespace codec
}  // namespace HVD_HIER_CPU_NS
}  // namespace hvd_hier
