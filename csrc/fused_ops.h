// Host-side entry points of the fused pack/unpack kernels.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "fused.h"

namespace hvd_hier {

// Copies between a list of tensors and the flat `bucket`, starting at bucket element
// `offset`: dir == kPack writes bucket[offset + ...] = tensors * scale, dir == kUnpack
// writes tensors = bucket[offset + ...] * scale. All tensors share one dtype and the
// bucket's device; each side is cast as needed. Returns the number of elements copied.
int64_t fused_copy(const std::vector<at::Tensor>& tensors, const at::Tensor& bucket, int64_t offset,
                   double scale, Direction dir);

// Back ends: one table (at most kMaxTensors tensors) against a bucket pointer that
// already includes the offset.
void copy_table_cpu(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                    at::ScalarType bucket_dtype, double scale, Direction dir);
#ifdef HVD_HIER_WITH_CUDA
void copy_table_cuda(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                     at::ScalarType bucket_dtype, double scale, Direction dir);
#endif

bool built_with_cuda();

// How many threads an at::parallel_for of `tasks` tasks in the CPU back end ran on.
int64_t cpu_parallel_threads(int64_t tasks);

// Which copy of the CPU loop runs on this processor: "avx2" or "baseline".
const char* cpu_kernel_isa();
// "baseline" forces the baseline loop (for tests and comparisons); "auto" picks the best.
void set_cpu_kernel_isa(const std::string& isa);

}  // namespace hvd_hier
