// The CUDA kernel's code run on the CPU (set_cpu_kernel_isa("cuda_emulation")): every block,
// and every thread of a block, calls copy_block_lane exactly as the GPU does, one after the
// other. The kernel's threads write disjoint elements and never synchronise, so running them
// in sequence computes what the GPU computes; tests use it to exercise the kernel's index,
// alignment and vector code on machines without a GPU. Slow by design (a test mode).
#include <ATen/Dispatch.h>

#include "../fused_block.h"
#include "../fused_ops.h"

namespace hvd_hier {
namespace {

template <typename T, typename B, Direction Dir>
void emulate(const TensorTable& table, B* bucket, double scale) {
  const int64_t total = table.offsets[table.count];
  const int64_t blocks = cuda_blocks(total, sizeof(T), sizeof(B));
  const bool scaled = scale != 1.0;
  for (int64_t block = 0; block < blocks; ++block) {
    for (int lane = 0; lane < kCudaThreads; ++lane) {
      copy_block_lane<T, B, Dir>(table, bucket, scale, scaled, block, lane);
    }
  }
}

}  // namespace

void copy_table_cuda_emulated(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                              at::ScalarType bucket_dtype, double scale, Direction dir) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensor_dtype, "hvd_hier_emulated", [&] {
    using T = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, bucket_dtype, "hvd_hier_emulated", [&] {
      auto* b = static_cast<scalar_t*>(bucket);
      if (dir == Direction::kPack) {
        emulate<T, scalar_t, Direction::kPack>(table, b, scale);
      } else {
        emulate<T, scalar_t, Direction::kUnpack>(table, b, scale);
      }
    });
  });
}

VecSplit vector_split(uint64_t src, int src_size, uint64_t dst, int dst_size, int64_t n) {
  return split_for_vectors(src, src_size, dst, dst_size, n);
}

}  // namespace hvd_hier
