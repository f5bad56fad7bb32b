// The compressed-delta CUDA kernels' code run on the CPU (set_cpu_kernel_isa("cuda_emulation")):
// block after block, each phase of csrc/codec_block.h for every lane of the block before the next
// phase starts, which is what the kernels' __syncthreads() guarantees on the GPU; the block-wide
// max runs as the same tree of steps. The block's shared memory is poisoned before every block,
// so a value read that no lane wrote shows in the tests as it would on the GPU (uninitialised
// shared memory). Slow by design (a test mode).
#include <ATen/Dispatch.h>

#include <algorithm>
#include <limits>
#include <memory>

#include "../codec_block.h"
#include "../codec_ops.h"
#include "../topk_block.h"

namespace hvd_hier {
namespace {

void poison(CodecShared& sh) {
  std::fill(std::begin(sh.vals), std::end(sh.vals), std::numeric_limits<float>::quiet_NaN());
  std::fill(std::begin(sh.amax), std::end(sh.amax), 0x7fc00000u);  // a NaN's bits: scale NaN
  std::fill(std::begin(sh.units), std::end(sh.units), 0xdeadbeefu);
}

// int2's block-wide sum of units, after the max: each lane's part, then the tree.
void block_units(CodecShared& sh, int64_t len) {
  for (int lane = 0; lane < kCudaThreads; ++lane) units_gather_lane(sh, len, lane);
  for (int stride = kCudaThreads / 2; stride > 0; stride /= 2) {
    for (int lane = 0; lane < kCudaThreads; ++lane) units_step_lane(sh, lane, stride);
  }
}

// The block-wide max: kCudaThreads / 2, ..., 1, a barrier after each step.
void block_max(CodecShared& sh) {
  for (int stride = kCudaThreads / 2; stride > 0; stride /= 2) {
    for (int lane = 0; lane < kCudaThreads; ++lane) amax_step_lane(sh, lane, stride);
  }
}

template <typename T, Codec C>
void encode_delta(const CodecJob& job, CodecShared& sh) {
  for (int64_t block = 0; block < job.records; ++block) {
    poison(sh);
    for (int lane = 0; lane < kCudaThreads; ++lane) encode_gather_lane<T, C>(job.table, block, lane, sh);
    if (kScaled<C>) block_max(sh);
    if (C == Codec::kInt2) block_units(sh, chunk_end(job.table, block) - block * kCodecChunk);
    for (int lane = 0; lane < kCudaThreads; ++lane) encode_store_lane<T, C>(job.table, job.dst, block, lane, sh);
  }
}

template <Codec C>
void reduce_encoded(const CodecJob& job, CodecShared& sh) {
  const float scale = static_cast<float>(job.scale);
  for (int64_t block = 0; block < job.records; ++block) {
    poison(sh);
    for (int lane = 0; lane < kCudaThreads; ++lane) {
      reduce_gather_lane<C>(job.src, job.records, job.count, scale, block, lane, sh);
    }
    if (C == Codec::kInt8) block_max(sh);
    for (int lane = 0; lane < kCudaThreads; ++lane) reduce_store_lane<C>(job.dst, block, lane, sh);
  }
}

template <typename T, Codec C>
void apply_delta(const CodecJob& job) {
  for (int64_t block = 0; block < job.records; ++block) {
    for (int lane = 0; lane < kCudaThreads; ++lane) apply_lane<T, C>(job.table, job.src, block, lane);
  }
}

template <typename T, Codec C>
void apply_sum(const CodecJob& job) {
  const auto scale = static_cast<float>(job.scale);
  for (int64_t block = 0; block < job.records; ++block) {
    for (int lane = 0; lane < kCudaThreads; ++lane) {
      apply_sum_lane<T, C>(job.table, job.src, job.records, job.count, scale, block, lane);
    }
  }
}

template <typename T, Codec C>
void decode_into(const CodecJob& job) {
  const auto scale = static_cast<delta_acc_t<T>>(job.scale);
  for (int64_t block = 0; block < job.records; ++block) {
    for (int lane = 0; lane < kCudaThreads; ++lane) decode_lane<T, C>(job.table, job.src, scale, block, lane);
  }
}

// ---- top-k ----------------------------------------------------------------------------------------
template <typename F>
void each_lane(F&& f) {
  for (int lane = 0; lane < kCudaThreads; ++lane) f(lane);
}

void poison(TopkShared& sh) {
  std::fill(std::begin(sh.vals), std::end(sh.vals), std::numeric_limits<float>::quiet_NaN());
  std::fill(std::begin(sh.keys), std::end(sh.keys), 0xdeadbeefu);
  std::fill(std::begin(sh.offsets), std::end(sh.offsets), 0xbeefu);
  std::fill(std::begin(sh.slot_of), std::end(sh.slot_of), 0xbeefu);
  std::fill(std::begin(sh.codes), std::end(sh.codes), 0xabu);
  std::fill(std::begin(sh.hist), std::end(sh.hist), 0xdeadbeefu);
  std::fill(std::begin(sh.counts), std::end(sh.counts), 0xdeadbeefu);
  std::fill(std::begin(sh.units), std::end(sh.units), 0xdeadbeefu);
  sh.prefix = sh.need = 0xdeadbeefu;
}

template <typename T, Codec V>
void encode_topk(const CodecJob& job, TopkShared& sh) {
  const int64_t k = job.slots;
  for (int64_t block = 0; block < job.records; ++block) {
    poison(sh);
    const int64_t len = chunk_end(job.table, block) - block * kCodecChunk;
    const int64_t m = len < k ? len : k;
    each_lane([&](int lane) { topk_gather_lane<T>(job.table, block, lane, sh); });
    for (int stride = kCudaThreads / 2; stride > 0; stride /= 2) {
      each_lane([&](int lane) { max_step_lane(sh.amax, lane, stride); });
    }
    topk_select_begin(sh, m);
    for (int pass = 0; pass < 4; ++pass) {
      each_lane([&](int lane) { topk_hist_clear_lane(sh, lane); });
      each_lane([&](int lane) { topk_hist_lane(sh, len, pass, lane); });
      each_lane([&](int lane) { topk_pick_lane(sh, pass, lane); });
    }
    each_lane([&](int lane) { topk_count_equal_lane(sh, len, lane); });
    each_lane([&](int lane) { topk_scan_lane(sh, lane); });
    each_lane([&](int lane) { topk_mark_lane(sh, len, lane); });
    each_lane([&](int lane) { topk_scan_lane(sh, lane); });
    each_lane([&](int lane) { topk_slots_lane(sh, lane); });
    if (V == Codec::kInt2) {
      each_lane([&](int lane) { topk_units_lane(sh, lane); });
      for (int stride = kCudaThreads / 2; stride > 0; stride /= 2) {
        each_lane([&](int lane) { sum_step_lane(sh.units, lane, stride); });
      }
    }
    each_lane([&](int lane) { topk_encode_lane<V>(job.table, block, m, lane, sh); });
    uint8_t* rec = job.dst + block * topk_record_bytes<V>(k);
    each_lane([&](int lane) { topk_store_lane<V>(rec, k, m, lane, sh); });
  }
}

template <typename T, Codec V>
void apply_topk(const CodecJob& job, TopkSums& sh) {
  const auto scale = static_cast<float>(job.scale);
  for (int64_t block = 0; block < job.records; ++block) {
    std::fill(std::begin(sh.sums), std::end(sh.sums), std::numeric_limits<float>::quiet_NaN());
    const int64_t len = chunk_end(job.table, block) - block * kCodecChunk;
    each_lane([&](int lane) { topk_clear_lane(sh, len, lane); });
    for (int64_t r = 0; r < job.count; ++r) {
      each_lane([&](int lane) { topk_add_lane<V>(sh, job.src, job.records, job.slots, r, block, len, lane); });
    }
    each_lane([&](int lane) { topk_write_lane<T>(job.table, sh, block, scale, lane); });
  }
}

void run_topk(const CodecJob& job) {
  dispatch_topk_values(job.codec, [&](auto tag) {
    constexpr Codec V = decltype(tag)::value;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.dtype, "hvd_hier_topk_emulated", [&] {
      if (job.op == CodecOp::kEncodeTopk) {
        auto sh = std::make_unique<TopkShared>();
        encode_topk<scalar_t, V>(job, *sh);
      } else {
        auto sums = std::make_unique<TopkSums>();
        apply_topk<scalar_t, V>(job, *sums);
      }
    });
  });
}

}  // namespace

void run_codec_cuda_emulated(const CodecJob& job) {
  if (job.op == CodecOp::kEncodeTopk || job.op == CodecOp::kApplyTopk) {
    run_topk(job);
    return;
  }
  auto sh = std::make_unique<CodecShared>();
  dispatch_codec(job.codec, [&](auto tag) {
    constexpr Codec C = decltype(tag)::value;
    if (job.op == CodecOp::kReduceEncoded) {
      if constexpr (!kPacked<C>) reduce_encoded<C>(job, *sh);
      return;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.dtype, "hvd_hier_codec_emulated", [&] {
      using T = scalar_t;
      switch (job.op) {
        case CodecOp::kEncodeDelta:
          encode_delta<T, C>(job, *sh);
          break;
        case CodecOp::kApplyDelta:
          apply_delta<T, C>(job);
          break;
        case CodecOp::kDecodeInto:
          decode_into<T, C>(job);
          break;
        case CodecOp::kApplySum:
          apply_sum<T, C>(job);
          break;
        default:
          break;
      }
    });
  });
}

}  // namespace hvd_hier
