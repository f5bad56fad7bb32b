// Argument checks and table building, shared by both back ends.
#include "fused_ops.h"

#include <c10/core/DeviceGuard.h>

#include <sstream>

namespace hvd_hier {
namespace {

bool supported(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

const char* dir_name(Direction dir) { return dir == Direction::kPack ? "pack" : "unpack"; }

}  // namespace

bool built_with_cuda() {
#ifdef HVD_HIER_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int64_t check_copy(const std::vector<at::Tensor>& tensors, const at::Tensor& bucket, int64_t offset,
                   Direction dir) {
  const char* op = dir_name(dir);
  TORCH_CHECK(bucket.defined(), op, ": bucket is undefined");
  TORCH_CHECK(bucket.is_contiguous(), op, ": bucket must be contiguous");
  TORCH_CHECK(supported(bucket.scalar_type()), op, ": bucket dtype ", bucket.scalar_type(),
              " is not supported (float32, float64, float16, bfloat16)");
  TORCH_CHECK(bucket.device().is_cpu() || bucket.device().is_cuda(), op, ": bucket device ",
              bucket.device(), " is not supported (cpu, cuda)");
  TORCH_CHECK(offset >= 0, op, ": offset must be >= 0, got ", offset);
#ifndef HVD_HIER_WITH_CUDA
  TORCH_CHECK(!bucket.device().is_cuda(), op,
              ": hvd_hier._C was built without CUDA; rebuild with HVD_HIER_WITH_CUDA=1");
#endif

  int64_t total = 0;
  at::ScalarType dtype = bucket.scalar_type();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK(t.defined(), op, ": tensors[", i, "] is undefined");
    if (i == 0) dtype = t.scalar_type();
    TORCH_CHECK(t.scalar_type() == dtype, op, ": tensors[", i, "] has dtype ", t.scalar_type(),
                " but tensors[0] has ", dtype, "; use one bucket per dtype");
    TORCH_CHECK(supported(dtype), op, ": tensors[", i, "] dtype ", dtype,
                " is not supported (float32, float64, float16, bfloat16)");
    TORCH_CHECK(t.device() == bucket.device(), op, ": tensors[", i, "] is on ", t.device(),
                " but the bucket is on ", bucket.device());
    TORCH_CHECK(t.is_contiguous(), op, ": tensors[", i, "] (shape ", t.sizes(),
                ") is not contiguous; pass t.contiguous() and copy back, or make it contiguous");
    TORCH_CHECK(!t.is_sparse(), op, ": tensors[", i, "] is sparse");
    total += t.numel();
  }
  TORCH_CHECK(offset + total <= bucket.numel(), op, ": the tensors hold ", total,
              " elements, which do not fit in the bucket's ", bucket.numel(), " from offset ",
              offset);
  return total;
}

int64_t fused_copy(const std::vector<at::Tensor>& tensors, const at::Tensor& bucket, int64_t offset,
                   double scale, Direction dir) {
  check_copy(tensors, bucket, offset, dir);
  return copy_unchecked(tensors, bucket, offset, scale, dir);
}

int64_t copy_unchecked(const std::vector<at::Tensor>& tensors, const at::Tensor& bucket,
                       int64_t offset, double scale, Direction dir) {
  int64_t total = 0;
  for (const at::Tensor& t : tensors) total += t.numel();
  if (total == 0) return 0;
  const at::ScalarType dtype = tensors.front().scalar_type();

  c10::OptionalDeviceGuard guard(bucket.device());
  char* base = static_cast<char*>(bucket.data_ptr()) + offset * bucket.element_size();

  // Tables of at most kMaxTensors tensors; a bucket built by hvd_hier fits in one.
  size_t i = 0;
  int64_t done = 0;
  while (i < tensors.size()) {
    TensorTable table{};
    int64_t pos = 0;
    table.count = 0;
    table.offsets[0] = 0;
    for (; i < tensors.size() && table.count < kMaxTensors; ++i) {
      table.ptrs[table.count] = tensors[i].data_ptr();
      pos += tensors[i].numel();
      table.offsets[++table.count] = pos;
    }
    if (pos == 0) continue;
    void* ptr = base + done * bucket.element_size();
    if (bucket.device().is_cpu()) {
      copy_table_cpu(table, dtype, ptr, bucket.scalar_type(), scale, dir);
    } else {
#ifdef HVD_HIER_WITH_CUDA
      copy_table_cuda(table, dtype, ptr, bucket.scalar_type(), scale, dir);
#endif
    }
    done += pos;
  }
  return total;
}

}  // namespace hvd_hier
