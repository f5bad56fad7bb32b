// CUDA back end: one launch per table. The table travels by value as a kernel argument;
// block b handles bucket elements [b * kCudaChunkElems, (b + 1) * kCudaChunkElems) and
// walks the tensors that range overlaps with the same index arithmetic as the CPU.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "../fused_ops.h"

namespace hvd_hier {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kCudaChunkElems = kThreads * 16;

template <typename T, typename B, Direction Dir>
__global__ void __launch_bounds__(kThreads)
    copy_kernel(const TensorTable table, B* __restrict__ bucket, double scale, bool scaled) {
  const int64_t total = table.offsets[table.count];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kCudaChunkElems;
  const int64_t end = begin + kCudaChunkElems < total ? begin + kCudaChunkElems : total;
  for_each_piece(table, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    const int64_t n = hi - lo;
    if (Dir == Direction::kPack) {
      const ScaleCast<T, B> f{static_cast<typename ScaleCast<T, B>::acc_t>(scale), scaled};
      const T* src = static_cast<const T*>(table.ptrs[i]) + lo;
      B* dst = bucket + at;
      for (int64_t k = threadIdx.x; k < n; k += kThreads) dst[k] = f(src[k]);
    } else {
      const ScaleCast<B, T> f{static_cast<typename ScaleCast<B, T>::acc_t>(scale), scaled};
      const B* src = bucket + at;
      T* dst = static_cast<T*>(table.ptrs[i]) + lo;
      for (int64_t k = threadIdx.x; k < n; k += kThreads) dst[k] = f(src[k]);
    }
  });
}

}  // namespace

void copy_table_cuda(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                     at::ScalarType bucket_dtype, double scale, Direction dir) {
  const int64_t total = table.offsets[table.count];
  if (total == 0) return;
  const int64_t blocks = (total + kCudaChunkElems - 1) / kCudaChunkElems;
  TORCH_CHECK(blocks <= 0x7fffffff, "bucket too large for one launch: ", total, " elements");
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool scaled = scale != 1.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensor_dtype, "hvd_hier_cuda", [&] {
    using T = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, bucket_dtype, "hvd_hier_cuda", [&] {
      auto* b = static_cast<scalar_t*>(bucket);
      if (dir == Direction::kPack) {
        copy_kernel<T, scalar_t, Direction::kPack>
            <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(table, b, scale, scaled);
      } else {
        copy_kernel<T, scalar_t, Direction::kUnpack>
            <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(table, b, scale, scaled);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace hvd_hier
