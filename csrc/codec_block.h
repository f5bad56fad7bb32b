// The work of one thread of the compressed-delta CUDA kernels, written once for both compilers:
// csrc/cuda/codec_cuda.cu runs these phases as the kernel bodies (block = blockIdx.x, lane =
// threadIdx.x, __syncthreads() between phases), and the CPU back end's "cuda_emulation" mode
// (csrc/cpu/codec_emulation.cpp) runs each phase for every lane of a block before the next
// phase, which is what the barriers guarantee on the GPU. One block encodes one record
// (kCodecChunk elements, csrc/codec.h).
//
// encode_delta and reduce_encoded need the chunk's max |v| before any value is encoded:
//   phase 1 (gather)  each lane computes its elements' values into shared memory and its
//                     partial max |v| into amax[lane];
//   reduction         log2(kCudaThreads) steps of amax_step_lane (a tree in shared memory);
//   int2 only         each lane sums its elements' units (int2_units) into units[lane], and
//                     the same tree of units_step_lane sums them (integers: exact in any order);
//   phase 2 (store)   each lane encodes its elements from shared memory (a packed codec: each
//                     lane its bytes, and the residuals of its elements).
// The 16-bit codecs skip the reductions. apply_delta, decode_into and apply_sum have one phase.
// reduce_encoded takes the unpacked codecs only.
#pragma once

#include "codec.h"

namespace hvd_hier {

// Shared memory of one block (10 KiB).
struct CodecShared {
  float vals[kCodecChunk];       // the chunk's values to encode: deltas, or scaled sums
  uint32_t amax[kCudaThreads];   // partial max |v| per lane (abs_bits); the block's in amax[0]
  uint32_t units[kCudaThreads];  // int2: partial sums of int2_units; the block's in units[0]
};

// Elements of one record each lane holds in reduce_encoded's phase 1.
constexpr int kCodecPerLane = static_cast<int>(kCodecChunk / kCudaThreads);

// One step of the block-wide max: lanes below `stride` fold in the lane `stride` above. Run for
// stride = kCudaThreads / 2, ..., 1 with a barrier after each; a step reads only lanes at or
// above `stride`, which it does not write, so the lanes of a step are independent.
HVD_HIER_HD void amax_step_lane(CodecShared& sh, int lane, int stride) {
  if (lane < stride) sh.amax[lane] = max_bits(sh.amax[lane], sh.amax[lane + stride]);
}

// One step of the block-wide sum of int2 units, as amax_step_lane.
HVD_HIER_HD void units_step_lane(CodecShared& sh, int lane, int stride) {
  if (lane < stride) sh.units[lane] += sh.units[lane + stride];
}

// int2, between the reductions: the lane's partial sum of units over sh.vals[0, len).
HVD_HIER_HD void units_gather_lane(CodecShared& sh, int64_t len, int lane) {
  const float ia = int2_inverse_amax(sh.amax[0]);
  uint32_t u = 0;
  for (int64_t k = lane; k < len; k += kCudaThreads) u += int2_units(sh.vals[k], ia);
  sh.units[lane] = u;
}

// Encodes sh.vals[0, n) into `q` (a piece of a record); where `r` is not null, writes the
// residual r[k] = v - decode(encode(v)). The 16-bit codecs ignore `s`.
template <Codec C>
HVD_HIER_HD void store_piece_lane(const float* vals, typename CodecTraits<C>::value_t* q, float* r,
                                  int64_t n, Int8Scale s, int lane) {
  for (int64_t k = lane; k < n; k += kCudaThreads) {
    const float v = vals[k];
    const auto e = encode_value<C>(v, s.inv);
    q[k] = e;
    if (r != nullptr) r[k] = v - decode_value<C>(e, s.scale);
  }
}

// The record's zero padding from value `len` on, and the int8 header (lane 0).
template <Codec C>
HVD_HIER_HD void finish_record_lane(uint8_t* rec, int64_t len, Int8Scale s, int lane) {
  auto* q = record_values<C>(rec);
  for (int64_t j = len + lane; j < kCodecChunk; j += kCudaThreads) q[j] = zero_value<C>();
  if constexpr (kScaled<C>) {
    if (lane == 0) store_int8_header(rec, s.scale);
  }
}

// The block's scale once its reductions are done (len: the chunk's real elements).
template <Codec C>
HVD_HIER_HD Int8Scale block_scale(const CodecShared& sh, int64_t len) {
  if constexpr (C == Codec::kInt2) {
    return int2_scale(sh.amax[0], sh.units[0], len);
  } else if constexpr (kScaled<C>) {
    return max_scale<C>(sh.amax[0]);
  } else {
    return {1.0f, 1.0f};
  }
}

// A packed codec's record: the lane's bytes (zero bits past len) and, with residuals, r = v -
// decode(encode(v)) of the lane's elements; the header (lane 0).
template <Codec C>
HVD_HIER_HD void store_packed_lane(const DeltaTable& t, const float* vals, uint8_t* rec, int64_t begin,
                                   int64_t end, Int8Scale s, int lane) {
  uint8_t* q = record_values<C>(rec);
  for (int64_t b = lane; b < kCodecChunk / CodecTraits<C>::kPerValue; b += kCudaThreads) {
    q[b] = pack_byte<C>(vals, b, end - begin, s.inv);
  }
  if (t.with_residuals) {
    for_each_piece(t, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
      float* r = t.residuals[i] + lo;
      const float* v = vals + (at - begin);
      for (int64_t k = lane; k < hi - lo; k += kCudaThreads) {
        r[k] = v[k] - decode_value<C>(encode_value<C>(v[k], s.inv), s.scale);
      }
    });
  }
  if (lane == 0) store_int8_header(rec, s.scale);
}

// ---- encode_delta -----------------------------------------------------------------------------
// Phase 1: d = x - a (+ r) of the lane's elements into sh.vals, its max |d| into sh.amax[lane].
template <typename T, Codec C>
HVD_HIER_HD void encode_gather_lane(const DeltaTable& t, int64_t block, int lane, CodecShared& sh) {
  const int64_t begin = block * kCodecChunk;
  uint32_t m = 0;
  for_each_piece(t, begin, chunk_end(t, block), [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    const T* x = static_cast<const T*>(t.tensors[i]) + lo;
    const T* a = static_cast<const T*>(t.anchors[i]) + lo;
    const float* r = t.with_residuals ? t.residuals[i] + lo : nullptr;
    float* d = sh.vals + (at - begin);
    for (int64_t k = lane; k < hi - lo; k += kCudaThreads) {
      const float v = r != nullptr ? delta_value(x[k], a[k], r[k]) : delta_value(x[k], a[k]);
      d[k] = v;
      m = max_bits(m, abs_bits(v));
    }
  });
  sh.amax[lane] = m;
}

// Phase 2: encode the lane's elements into record `block` of `out`, residuals, padding, header.
template <typename T, Codec C>
HVD_HIER_HD void encode_store_lane(const DeltaTable& t, uint8_t* out, int64_t block, int lane,
                                   const CodecShared& sh) {
  const int64_t begin = block * kCodecChunk;
  const int64_t end = chunk_end(t, block);
  const Int8Scale s = block_scale<C>(sh, end - begin);
  uint8_t* rec = out + block * record_bytes<C>();
  if constexpr (kPacked<C>) {
    store_packed_lane<C>(t, sh.vals, rec, begin, end, s, lane);
    return;
  }
  auto* q = record_values<C>(rec);
  for_each_piece(t, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    float* r = t.with_residuals ? t.residuals[i] + lo : nullptr;
    store_piece_lane<C>(sh.vals + (at - begin), q + (at - begin), r, hi - lo, s, lane);
  });
  finish_record_lane<C>(rec, end - begin, s, lane);
}

// ---- reduce_encoded ---------------------------------------------------------------------------
// Phase 1: for the lane's elements j = lane + u * kCudaThreads of record `block`,
// s = sum over k of decode(src_k) in order k = 0, 1, ..., m = s * scale into sh.vals.
template <Codec C>
HVD_HIER_HD void reduce_gather_lane(const uint8_t* src, int64_t records, int64_t count, float scale,
                                    int64_t block, int lane, CodecShared& sh) {
  float s[kCodecPerLane];
  for (int64_t k = 0; k < count; ++k) {
    const uint8_t* rec = src + (k * records + block) * record_bytes<C>();
    const float sc = record_scale<C>(rec);
    const auto* q = record_values<C>(rec);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int u = 0; u < kCodecPerLane; ++u) {
      const float d = decode_value<C>(code_at<C>(q, lane + u * kCudaThreads), sc);
      s[u] = k == 0 ? d : add_rn(s[u], d);
    }
  }
  uint32_t m = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int u = 0; u < kCodecPerLane; ++u) {
    const float v = reduce_value(s[u], scale);
    sh.vals[lane + u * kCudaThreads] = v;
    m = max_bits(m, abs_bits(v));
  }
  sh.amax[lane] = m;
}

// Phase 2: encode record `block` of dst (every element: padding sums to 0 and stays 0).
template <Codec C>
HVD_HIER_HD void reduce_store_lane(uint8_t* dst, int64_t block, int lane, const CodecShared& sh) {
  const Int8Scale s = block_scale<C>(sh, kCodecChunk);
  uint8_t* rec = dst + block * record_bytes<C>();
  store_piece_lane<C>(sh.vals, record_values<C>(rec), nullptr, kCodecChunk, s, lane);
  finish_record_lane<C>(rec, kCodecChunk, s, lane);
}

// ---- apply_delta, decode_into and apply_sum (one phase) -----------------------------------------
// x = cast_T(a + d), then a = x.
template <typename T, Codec C>
HVD_HIER_HD void apply_lane(const DeltaTable& t, const uint8_t* src, int64_t block, int lane) {
  for_each_record_piece<C>(t, src, block, [&](int32_t i, int64_t lo, int64_t hi, const auto* values,
                                              int64_t at, float sc) {
    T* x = static_cast<T*>(t.tensors[i]) + lo;
    T* a = static_cast<T*>(t.anchors[i]) + lo;
    for (int64_t k = lane; k < hi - lo; k += kCudaThreads) {
      const T v = apply_value(a[k], decode_value<C>(code_at<C>(values, at + k), sc));
      x[k] = v;
      a[k] = v;
    }
  });
}

// t = cast_T(d * scale).
template <typename T, Codec C>
HVD_HIER_HD void decode_lane(const DeltaTable& t, const uint8_t* src, delta_acc_t<T> scale,
                             int64_t block, int lane) {
  for_each_record_piece<C>(t, src, block, [&](int32_t i, int64_t lo, int64_t hi, const auto* values,
                                              int64_t at, float sc) {
    T* x = static_cast<T*>(t.tensors[i]) + lo;
    for (int64_t k = lane; k < hi - lo; k += kCudaThreads) {
      x[k] = scaled_value<T>(decode_value<C>(code_at<C>(values, at + k), sc), scale);
    }
  });
}

// m = (sum over k of decode(src_k)) * scale in rank order; x = a = cast_T(a + m) with anchors,
// else x = cast_T(m). src: `count` encoded buffers of `records` records back to back.
template <typename T, Codec C>
HVD_HIER_HD void apply_sum_lane(const DeltaTable& t, const uint8_t* src, int64_t records, int64_t count,
                                float scale, int64_t block, int lane) {
  const int64_t begin = block * kCodecChunk;
  for_each_piece(t, begin, chunk_end(t, block), [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    T* x = static_cast<T*>(t.tensors[i]) + lo;
    T* a = t.with_anchors ? static_cast<T*>(t.anchors[i]) + lo : nullptr;
    for (int64_t k = lane; k < hi - lo; k += kCudaThreads) {
      float s = 0.0f;
      for (int64_t r = 0; r < count; ++r) {
        const uint8_t* rec = src + (r * records + block) * record_bytes<C>();
        const float d = decode_value<C>(code_at<C>(record_values<C>(rec), at - begin + k), record_scale<C>(rec));
        s = r == 0 ? d : add_rn(s, d);
      }
      store_sum(x, a, k, mul_rn(s, scale));
    }
  });
}

}  // namespace hvd_hier
