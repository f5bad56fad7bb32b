// Argument checks and table building, shared by both back ends.
#include "fused_ops.h"

#include <c10/core/DeviceGuard.h>

#include <stdexcept>
#include <string>

#include "checks.h"

namespace hvd_hier {
namespace {

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
  using checks::dtype_name;
  using checks::num;
  const checks::Checker check(dir_name(dir));
  const std::string kinds = checks::kFloatDtypes;
  auto name = [](at::ScalarType t) { return dtype_name(t); };
  check(bucket.defined(), "bucket is undefined");
  check(bucket.is_contiguous(), "bucket must be contiguous");
  check(checks::float_dtype(bucket.scalar_type()), "bucket dtype " + name(bucket.scalar_type()) + kinds);
  check(checks::device_supported(bucket.device()),
        "bucket device " + bucket.device().str() + " is not supported (cpu, cuda)");
  check(offset >= 0, "offset must be >= 0, got " + num(offset));
#ifndef HVD_HIER_WITH_CUDA
  check(!bucket.device().is_cuda(), checks::kNoCuda);
#endif

  int64_t total = 0;
  at::ScalarType dtype = bucket.scalar_type();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    const std::string which = "tensors[" + num(static_cast<int64_t>(i)) + "]";
    check(t.defined(), which + " is undefined");
    if (i == 0) dtype = t.scalar_type();
    check(t.scalar_type() == dtype, which + " has dtype " + name(t.scalar_type()) +
                                        " but tensors[0] has " + name(dtype) + "; use one bucket per dtype");
    check(checks::float_dtype(dtype), which + " dtype " + name(dtype) + kinds);
    check(t.device() == bucket.device(),
          which + " is on " + t.device().str() + " but the bucket is on " + bucket.device().str());
    if (!t.is_contiguous()) check(false, checks::not_contiguous(which, t));
    check(!t.is_sparse(), which + " is sparse");
    total += t.numel();
  }
  check(offset + total <= bucket.numel(), "the tensors hold " + num(total) +
                                              " elements, which do not fit in the bucket's " +
                                              num(bucket.numel()) + " from offset " + num(offset));
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
