// CPU back end: the bucket is cut into chunks of kChunkElems elements, run in parallel
// with ATen's thread pool; inside a chunk each piece is one tight loop that the compiler
// vectorises for same-dtype copies.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "../fused_ops.h"

namespace hvd_hier {
namespace {

template <typename T, typename B>
void run(const TensorTable& table, B* bucket, double scale, Direction dir) {
  const int64_t total = table.offsets[table.count];
  const int64_t chunks = (total + kChunkElems - 1) / kChunkElems;
  const bool scaled = scale != 1.0;
  at::parallel_for(0, chunks, 1, [&](int64_t first_chunk, int64_t last_chunk) {
    const int64_t begin = first_chunk * kChunkElems;
    const int64_t end = std::min(total, last_chunk * kChunkElems);
    if (dir == Direction::kPack) {
      ScaleCast<T, B> f{static_cast<typename ScaleCast<T, B>::acc_t>(scale), scaled};
      for_each_piece(table, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
        const T* __restrict__ src = static_cast<const T*>(table.ptrs[i]) + lo;
        B* __restrict__ dst = bucket + at;
        const int64_t n = hi - lo;
        for (int64_t k = 0; k < n; ++k) dst[k] = f(src[k]);
      });
    } else {
      ScaleCast<B, T> f{static_cast<typename ScaleCast<B, T>::acc_t>(scale), scaled};
      for_each_piece(table, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
        const B* __restrict__ src = bucket + at;
        T* __restrict__ dst = static_cast<T*>(table.ptrs[i]) + lo;
        const int64_t n = hi - lo;
        for (int64_t k = 0; k < n; ++k) dst[k] = f(src[k]);
      });
    }
  });
}

}  // namespace

void copy_table_cpu(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                    at::ScalarType bucket_dtype, double scale, Direction dir) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensor_dtype, "hvd_hier_cpu", [&] {
    using T = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, bucket_dtype, "hvd_hier_cpu", [&] {
      run<T, scalar_t>(table, static_cast<scalar_t*>(bucket), scale, dir);
    });
  });
}

}  // namespace hvd_hier
