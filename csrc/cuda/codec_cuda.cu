// CUDA back end of the compressed-delta ops: one block per record (kCodecChunk elements), each
// thread running the phases of csrc/codec_block.h with a barrier between them; the delta table
// travels by value as a kernel argument. Launched on the current stream of the job's device (the
// caller holds a device guard), each launch checked.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <stdexcept>
#include <string>

#include "../codec_block.h"
#include "../codec_ops.h"

namespace hvd_hier {
namespace {

// int2's block-wide sum of units into sh.units[0], after block_max; every thread calls it.
__device__ __forceinline__ void block_units(CodecShared& sh, int64_t len, int lane) {
  units_gather_lane(sh, len, lane);
  __syncthreads();
#pragma unroll
  for (int stride = kCudaThreads / 2; stride > 0; stride /= 2) {
    units_step_lane(sh, lane, stride);
    __syncthreads();
  }
}

// The block-wide max of sh.amax into sh.amax[0]; every thread of the block calls it.
__device__ __forceinline__ void block_max(CodecShared& sh, int lane) {
#pragma unroll
  for (int stride = kCudaThreads / 2; stride > 0; stride /= 2) {
    amax_step_lane(sh, lane, stride);
    __syncthreads();
  }
}

template <typename T, Codec C>
__global__ void __launch_bounds__(kCudaThreads) encode_delta_kernel(const DeltaTable table, uint8_t* out) {
  __shared__ CodecShared sh;
  const int64_t block = static_cast<int64_t>(blockIdx.x);
  const int lane = static_cast<int>(threadIdx.x);
  encode_gather_lane<T, C>(table, block, lane, sh);
  __syncthreads();
  if constexpr (kScaled<C>) block_max(sh, lane);
  if constexpr (C == Codec::kInt2) block_units(sh, chunk_end(table, block) - block * kCodecChunk, lane);
  encode_store_lane<T, C>(table, out, block, lane, sh);
}

template <Codec C>
__global__ void __launch_bounds__(kCudaThreads)
    reduce_encoded_kernel(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int64_t records,
                          int64_t count, float scale) {
  __shared__ CodecShared sh;
  const int64_t block = static_cast<int64_t>(blockIdx.x);
  const int lane = static_cast<int>(threadIdx.x);
  reduce_gather_lane<C>(src, records, count, scale, block, lane, sh);
  __syncthreads();
  if constexpr (C == Codec::kInt8) block_max(sh, lane);
  reduce_store_lane<C>(dst, block, lane, sh);
}

template <typename T, Codec C>
__global__ void __launch_bounds__(kCudaThreads) apply_delta_kernel(const DeltaTable table, const uint8_t* src) {
  apply_lane<T, C>(table, src, static_cast<int64_t>(blockIdx.x), static_cast<int>(threadIdx.x));
}

template <typename T, Codec C>
__global__ void __launch_bounds__(kCudaThreads)
    apply_sum_kernel(const DeltaTable table, const uint8_t* src, int64_t records, int64_t count, float scale) {
  apply_sum_lane<T, C>(table, src, records, count, scale, static_cast<int64_t>(blockIdx.x),
                       static_cast<int>(threadIdx.x));
}

template <typename T, Codec C>
__global__ void __launch_bounds__(kCudaThreads)
    decode_into_kernel(const DeltaTable table, const uint8_t* src, delta_acc_t<T> scale) {
  decode_lane<T, C>(table, src, scale, static_cast<int64_t>(blockIdx.x), static_cast<int>(threadIdx.x));
}

}  // namespace

void run_codec_cuda(const CodecJob& job) {
  if (job.records == 0) return;
  if (job.op == CodecOp::kEncodeTopk || job.op == CodecOp::kApplyTopk) {
    run_topk_cuda(job);
    return;
  }
  if (job.records > 0x7fffffff) {
    throw std::length_error("hvd_hier: too many records for one launch: " + std::to_string(job.records));
  }
  const dim3 grid(static_cast<unsigned>(job.records));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_codec(job.codec, [&](auto tag) {
    constexpr Codec C = decltype(tag)::value;
    if (job.op == CodecOp::kReduceEncoded) {
      if constexpr (!kPacked<C>) {
        reduce_encoded_kernel<C><<<grid, kCudaThreads, 0, stream>>>(job.src, job.dst, job.records, job.count,
                                                                   static_cast<float>(job.scale));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      return;
    }
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.dtype, "hvd_hier_codec_cuda", [&] {
      using T = scalar_t;
      switch (job.op) {
        case CodecOp::kEncodeDelta:
          encode_delta_kernel<T, C><<<grid, kCudaThreads, 0, stream>>>(job.table, job.dst);
          break;
        case CodecOp::kApplyDelta:
          apply_delta_kernel<T, C><<<grid, kCudaThreads, 0, stream>>>(job.table, job.src);
          break;
        case CodecOp::kDecodeInto:
          decode_into_kernel<T, C>
              <<<grid, kCudaThreads, 0, stream>>>(job.table, job.src, static_cast<delta_acc_t<T>>(job.scale));
          break;
        case CodecOp::kApplySum:
          apply_sum_kernel<T, C><<<grid, kCudaThreads, 0, stream>>>(job.table, job.src, job.records, job.count,
                                                                     static_cast<float>(job.scale));
          break;
        default:
          break;
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace hvd_hier
