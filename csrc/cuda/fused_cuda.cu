// CUDA back end: one launch per table. The table travels by value as a kernel argument;
// block b handles bucket elements [b * chunk, (b + 1) * chunk) (cuda_chunk_elems), and each
// thread runs copy_block_lane (csrc/fused_block.h): the same index arithmetic as the CPU
// loop, 16-byte vector loads and stores where both sides of a piece are aligned, a scalar
// path for the rest. Launched on the current stream of the bucket's device.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <stdexcept>
#include <string>

#include "../fused_block.h"
#include "../fused_ops.h"

namespace hvd_hier {
namespace {

template <typename T, typename B, Direction Dir>
__global__ void __launch_bounds__(kCudaThreads)
    copy_kernel(const TensorTable table, B* __restrict__ bucket, double scale, bool scaled) {
  copy_block_lane<T, B, Dir>(table, bucket, scale, scaled, static_cast<int64_t>(blockIdx.x),
                             static_cast<int>(threadIdx.x));
}

}  // namespace

void copy_table_cuda(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                     at::ScalarType bucket_dtype, double scale, Direction dir) {
  const int64_t total = table.offsets[table.count];
  if (total == 0) return;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool scaled = scale != 1.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensor_dtype, "hvd_hier_cuda", [&] {
    using T = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, bucket_dtype, "hvd_hier_cuda", [&] {
      auto* b = static_cast<scalar_t*>(bucket);
      const int64_t blocks = cuda_blocks(total, sizeof(T), sizeof(scalar_t));
      if (blocks > 0x7fffffff) {
        throw std::length_error("hvd_hier: bucket too large for one launch: " + std::to_string(total) +
                                " elements");
      }
      if (dir == Direction::kPack) {
        copy_kernel<T, scalar_t, Direction::kPack>
            <<<static_cast<unsigned>(blocks), kCudaThreads, 0, stream>>>(table, b, scale, scaled);
      } else {
        copy_kernel<T, scalar_t, Direction::kUnpack>
            <<<static_cast<unsigned>(blocks), kCudaThreads, 0, stream>>>(table, b, scale, scaled);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace hvd_hier
