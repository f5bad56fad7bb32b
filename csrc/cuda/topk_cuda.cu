// CUDA back end of the top-k ops: one block per record, each thread running the phases of
// csrc/topk_block.h with a barrier between them (the CPU back end's "cuda_emulation" mode runs
// the same phases lane by lane). Launched on the current stream of the job's device.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <stdexcept>
#include <string>

#include "../codec_ops.h"
#include "../topk_block.h"

namespace hvd_hier {
namespace {

__device__ __forceinline__ void block_max(uint32_t* a, int lane) {
#pragma unroll
  for (int stride = kCudaThreads / 2; stride > 0; stride /= 2) {
    max_step_lane(a, lane, stride);
    __syncthreads();
  }
}

__device__ __forceinline__ void block_sum(uint32_t* a, int lane) {
#pragma unroll
  for (int stride = kCudaThreads / 2; stride > 0; stride /= 2) {
    sum_step_lane(a, lane, stride);
    __syncthreads();
  }
}

template <typename T, Codec V>
__global__ void __launch_bounds__(kCudaThreads) encode_topk_kernel(const DeltaTable table, uint8_t* out, int64_t k) {
  __shared__ TopkShared sh;
  const int64_t block = static_cast<int64_t>(blockIdx.x);
  const int lane = static_cast<int>(threadIdx.x);
  const int64_t len = chunk_end(table, block) - block * kCodecChunk;
  const int64_t m = len < k ? len : k;
  topk_gather_lane<T>(table, block, lane, sh);
  __syncthreads();
  block_max(sh.amax, lane);
  if (lane == 0) topk_select_begin(sh, m);
  __syncthreads();
  for (int pass = 0; pass < 4; ++pass) {
    topk_hist_clear_lane(sh, lane);
    __syncthreads();
    topk_hist_lane(sh, len, pass, lane);
    __syncthreads();
    topk_pick_lane(sh, pass, lane);
    __syncthreads();
  }
  topk_count_equal_lane(sh, len, lane);
  __syncthreads();
  topk_scan_lane(sh, lane);
  __syncthreads();
  topk_mark_lane(sh, len, lane);
  __syncthreads();
  topk_scan_lane(sh, lane);
  __syncthreads();
  topk_slots_lane(sh, lane);
  __syncthreads();
  if constexpr (V == Codec::kInt2) {
    topk_units_lane(sh, lane);
    __syncthreads();
    block_sum(sh.units, lane);
  }
  topk_encode_lane<V>(table, block, m, lane, sh);
  __syncthreads();
  topk_store_lane<V>(out + block * topk_record_bytes<V>(k), k, m, lane, sh);
}

template <typename T, Codec V>
__global__ void __launch_bounds__(kCudaThreads)
    apply_topk_kernel(const DeltaTable table, const uint8_t* src, int64_t records, int64_t count, int64_t k,
                      float scale) {
  __shared__ TopkSums sh;
  const int64_t block = static_cast<int64_t>(blockIdx.x);
  const int lane = static_cast<int>(threadIdx.x);
  const int64_t len = chunk_end(table, block) - block * kCodecChunk;
  topk_clear_lane(sh, len, lane);
  __syncthreads();
  for (int64_t r = 0; r < count; ++r) {
    topk_add_lane<V>(sh, src, records, k, r, block, len, lane);
    __syncthreads();
  }
  topk_write_lane<T>(table, sh, block, scale, lane);
}

}  // namespace

void run_topk_cuda(const CodecJob& job) {
  if (job.records == 0) return;
  if (job.records > 0x7fffffff) {
    throw std::length_error("hvd_hier: too many records for one launch: " + std::to_string(job.records));
  }
  const dim3 grid(static_cast<unsigned>(job.records));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_topk_values(job.codec, [&](auto tag) {
    constexpr Codec V = decltype(tag)::value;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, job.dtype, "hvd_hier_topk_cuda", [&] {
      if (job.op == CodecOp::kEncodeTopk) {
        encode_topk_kernel<scalar_t, V><<<grid, kCudaThreads, 0, stream>>>(job.table, job.dst, job.slots);
      } else {
        apply_topk_kernel<scalar_t, V><<<grid, kCudaThreads, 0, stream>>>(
            job.table, job.src, job.records, job.count, job.slots, static_cast<float>(job.scale));
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace hvd_hier
