// The work of one thread of the top-k CUDA kernels (csrc/topk.h has the format), written once
// for both compilers as csrc/codec_block.h is: csrc/cuda/topk_cuda.cu runs the phases with a
// barrier between them, the CPU back end's "cuda_emulation" mode runs each phase for every lane
// of a block before the next. One block encodes one record.
//
// encode_topk, per block:
//   gather     each lane: its elements' v into vals, |v| as keys, its partial max;
//   max        the tree of max steps (amax[0]);
//   select     four passes of a radix select over the keys, 8 bits at a time from the top:
//              each clears its bin (lane = bin), counts the keys that share the prefix found
//              so far into 256 bins, and lane 0 walks the bins down to the one that holds the
//              m-th largest key; then the threshold T and how many keys equal to T to keep;
//   slots      each lane owns kTopkRun consecutive elements: it counts its keys equal to T,
//              lane 0 turns the counts into offsets (exclusive scan), each lane marks its kept
//              elements and counts them, lane 0 scans again, and each lane writes its kept
//              elements' offsets and slots (slot_of);
//   int2       each lane sums the units of its kept elements; the tree of sum steps;
//   encode     each lane (strided, as the residuals' tensors are walked) encodes its kept
//              elements into codes[slot] and writes every residual;
//   store      each lane writes its share of the record: offsets, packed codes, padding, and
//              lane 0 the header.
// apply_topk, per block: clear the sums, add each rank's kept values (a barrier after each
// rank: they add in rank order), write the tensors.
#pragma once

#include "topk.h"

namespace hvd_hier {

// Elements each lane owns in the slot phases.
constexpr int kTopkRun = static_cast<int>(kCodecChunk / kCudaThreads);
constexpr uint16_t kNotKept = 0xffff;

struct TopkShared {
  float vals[kCodecChunk];
  uint32_t keys[kCodecChunk];
  uint16_t offsets[kCodecChunk];  // slot -> element
  uint16_t slot_of[kCodecChunk];  // element -> slot, or kNotKept
  uint8_t codes[kCodecChunk];     // slot -> code
  uint32_t hist[256];
  uint32_t amax[kCudaThreads];
  uint32_t units[kCudaThreads];
  uint32_t counts[kCudaThreads];  // per lane, then the exclusive scan of them
  uint32_t prefix;                // the radix select's key prefix, then T
  uint32_t need;                  // keys still to find; then how many keys equal to T to keep
};

struct TopkSums {
  float sums[kCodecChunk];
};

HVD_HIER_HD void max_step_lane(uint32_t* a, int lane, int stride) {
  if (lane < stride) a[lane] = max_bits(a[lane], a[lane + stride]);
}

HVD_HIER_HD void sum_step_lane(uint32_t* a, int lane, int stride) {
  if (lane < stride) a[lane] += a[lane + stride];
}

// ---- gather -------------------------------------------------------------------------------------
template <typename T>
HVD_HIER_HD void topk_gather_lane(const DeltaTable& t, int64_t block, int lane, TopkShared& sh) {
  const int64_t begin = block * kCodecChunk;
  uint32_t m = 0;
  for_each_piece(t, begin, chunk_end(t, block), [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    const T* x = static_cast<const T*>(t.tensors[i]) + lo;
    const T* a = static_cast<const T*>(t.anchors[i]) + lo;
    const float* r = t.with_residuals ? t.residuals[i] + lo : nullptr;
    for (int64_t k = lane; k < hi - lo; k += kCudaThreads) {
      const float v = r != nullptr ? delta_value(x[k], a[k], r[k]) : delta_value(x[k], a[k]);
      const int64_t j = at - begin + k;
      sh.vals[j] = v;
      sh.keys[j] = abs_bits(v);
      m = max_bits(m, sh.keys[j]);
    }
  });
  sh.amax[lane] = m;
}

// ---- select -------------------------------------------------------------------------------------
// Before the first pass: the m-th largest key is sought.
HVD_HIER_HD void topk_select_begin(TopkShared& sh, int64_t m) {
  sh.prefix = 0;
  sh.need = static_cast<uint32_t>(m);
}

HVD_HIER_HD void topk_hist_clear_lane(TopkShared& sh, int lane) {
  if (lane < 256) sh.hist[lane] = 0;
}

// Pass `pass` (0..3, the bits [24 - 8 pass, 32 - 8 pass)): count the lane's keys that share the
// prefix's higher bits.
HVD_HIER_HD void topk_hist_lane(TopkShared& sh, int64_t len, int pass, int lane) {
  const int shift = 24 - 8 * pass;
  const uint32_t high = pass == 0 ? 0u : ~0u << (shift + 8);
  for (int64_t j = lane; j < len; j += kCudaThreads) {
    const uint32_t key = sh.keys[j];
    if ((key & high) == (sh.prefix & high)) {
#if defined(__CUDA_ARCH__)
      atomicAdd(&sh.hist[(key >> shift) & 0xffu], 1u);
#else
      sh.hist[(key >> shift) & 0xffu] += 1u;
#endif
    }
  }
}

// Lane 0, after each pass: the bin that holds the key sought.
HVD_HIER_HD void topk_pick_lane(TopkShared& sh, int pass, int lane) {
  if (lane != 0) return;
  const int shift = 24 - 8 * pass;
  uint32_t above = 0;
  for (int b = 255; b >= 0; --b) {
    if (above + sh.hist[b] >= sh.need) {
      sh.prefix |= static_cast<uint32_t>(b) << shift;
      sh.need -= above;
      return;
    }
    above += sh.hist[b];
  }
}

// ---- slots --------------------------------------------------------------------------------------
// Lane 0: counts[0..kCudaThreads) becomes its exclusive prefix sum.
HVD_HIER_HD void topk_scan_lane(TopkShared& sh, int lane) {
  if (lane != 0) return;
  uint32_t sum = 0;
  for (int l = 0; l < kCudaThreads; ++l) {
    const uint32_t c = sh.counts[l];
    sh.counts[l] = sum;
    sum += c;
  }
}

HVD_HIER_HD void topk_count_equal_lane(TopkShared& sh, int64_t len, int lane) {
  uint32_t c = 0;
  for (int64_t j = lane * kTopkRun; j < (lane + 1) * kTopkRun && j < len; ++j) c += sh.keys[j] == sh.prefix;
  sh.counts[lane] = c;
}

// After the scan of the equal counts: mark the lane's kept elements (slot_of = 0, the others
// kNotKept) and count them.
HVD_HIER_HD void topk_mark_lane(TopkShared& sh, int64_t len, int lane) {
  int64_t eq = sh.counts[lane];
  uint32_t kept = 0;
  for (int64_t j = lane * kTopkRun; j < (lane + 1) * kTopkRun; ++j) {
    if (j < len && topk_kept(sh.keys[j], sh.prefix, eq, sh.need)) {
      sh.slot_of[j] = 0;
      ++kept;
    } else {
      sh.slot_of[j] = kNotKept;
    }
    if (j < len) eq += sh.keys[j] == sh.prefix;
  }
  sh.counts[lane] = kept;
}

// After the scan of the kept counts: the lane's slots and offsets.
HVD_HIER_HD void topk_slots_lane(TopkShared& sh, int lane) {
  uint32_t slot = sh.counts[lane];
  for (int64_t j = lane * kTopkRun; j < (lane + 1) * kTopkRun; ++j) {
    if (sh.slot_of[j] != kNotKept) {
      sh.slot_of[j] = static_cast<uint16_t>(slot);
      sh.offsets[slot] = static_cast<uint16_t>(j);
      ++slot;
    }
  }
}

// int2: the lane's part of the kept values' units.
HVD_HIER_HD void topk_units_lane(TopkShared& sh, int lane) {
  const float ia = int2_inverse_amax(sh.amax[0]);
  uint32_t u = 0;
  for (int64_t j = lane * kTopkRun; j < (lane + 1) * kTopkRun; ++j) {
    if (sh.slot_of[j] != kNotKept) u += int2_units(sh.vals[j], ia);
  }
  sh.units[lane] = u;
}

// ---- encode and store ---------------------------------------------------------------------------
template <Codec V>
HVD_HIER_HD Int8Scale topk_block_scale(const TopkShared& sh, int64_t m) {
  return topk_scale<V>(sh.amax[0], sh.units[0], m);
}

template <Codec V>
HVD_HIER_HD void topk_encode_lane(const DeltaTable& t, int64_t block, int64_t m, int lane, TopkShared& sh) {
  const int64_t begin = block * kCodecChunk;
  const Int8Scale s = topk_block_scale<V>(sh, m);
  for_each_piece(t, begin, chunk_end(t, block), [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    float* r = t.with_residuals ? t.residuals[i] + lo : nullptr;
    for (int64_t k = lane; k < hi - lo; k += kCudaThreads) {
      const int64_t j = at - begin + k;
      const float v = sh.vals[j];
      float rest = v;
      if (sh.slot_of[j] != kNotKept) {
        const auto code = encode_value<V>(v, s.inv);
        sh.codes[sh.slot_of[j]] = static_cast<uint8_t>(code);
        rest = v - decode_value<V>(code, s.scale);
      }
      if (r != nullptr) r[k] = rest;
    }
  });
}

template <Codec V>
HVD_HIER_HD void topk_store_lane(uint8_t* rec, int64_t k, int64_t m, int lane, const TopkShared& sh) {
  uint16_t* offs = topk_offsets(rec);
  for (int64_t s = lane; s < k; s += kCudaThreads) offs[s] = s < m ? sh.offsets[s] : 0;
  constexpr int per = CodecTraits<V>::kPerValue;
  uint8_t* codes = topk_codes(rec, k);
  const int64_t code_bytes = topk_code_bytes<V>(k);
  for (int64_t b = lane; b < code_bytes; b += kCudaThreads) {
    uint32_t byte = 0;
    for (int u = 0; u < per; ++u) {
      const int64_t s = b * per + u;
      if (s < m) byte |= (static_cast<uint32_t>(sh.codes[s]) & kCodeMask<V>) << (kCodeBits<V> * u);
    }
    codes[b] = static_cast<uint8_t>(byte);
  }
  for (int64_t b = kTopkHeaderBytes + 2 * k + code_bytes + lane; b < topk_record_bytes<V>(k); b += kCudaThreads) {
    rec[b] = 0;
  }
  if (lane == 0) store_topk_header(rec, topk_block_scale<V>(sh, m).scale, static_cast<uint32_t>(m));
}

// ---- apply_topk -----------------------------------------------------------------------------------
HVD_HIER_HD void topk_clear_lane(TopkSums& sh, int64_t len, int lane) {
  for (int64_t j = lane; j < len; j += kCudaThreads) sh.sums[j] = 0.0f;
}

// Rank r's kept values of record `block` added in (offsets past the chunk are ignored).
template <Codec V>
HVD_HIER_HD void topk_add_lane(TopkSums& sh, const uint8_t* src, int64_t records, int64_t k, int64_t r,
                               int64_t block, int64_t len, int lane) {
  const uint8_t* rec = src + (r * records + block) * topk_record_bytes<V>(k);
  const int64_t m = topk_count(rec) < k ? topk_count(rec) : k;
  const uint16_t* offs = topk_offsets(rec);
  for (int64_t s = lane; s < m; s += kCudaThreads) {
    const int64_t j = offs[s];
    if (j < len) sh.sums[j] = add_rn(sh.sums[j], topk_value<V>(rec, k, s));
  }
}

template <typename T>
HVD_HIER_HD void topk_write_lane(const DeltaTable& t, const TopkSums& sh, int64_t block, float scale, int lane) {
  const int64_t begin = block * kCodecChunk;
  for_each_piece(t, begin, chunk_end(t, block), [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    T* x = static_cast<T*>(t.tensors[i]) + lo;
    T* a = t.with_anchors ? static_cast<T*>(t.anchors[i]) + lo : nullptr;
    for (int64_t k = lane; k < hi - lo; k += kCudaThreads) {
      store_sum(x, a, k, mul_rn(sh.sums[at - begin + k], scale));
    }
  });
}

}  // namespace hvd_hier
