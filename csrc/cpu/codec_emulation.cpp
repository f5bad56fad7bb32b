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

}  // namespace

void run_codec_cuda_emulated(const CodecJob& job) {
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
        case CodecOp::kReduceEncoded:
          break;
      }
    });
  });
}

}  // namespace hvd_hier
