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
// fused_copy in two halves: the argument checks (std::invalid_argument naming the problem;
// returns the number of elements), and the copy itself, which trusts that check_copy passed.
int64_t check_copy(const std::vector<at::Tensor>& tensors, const at::Tensor& bucket, int64_t offset,
                   Direction dir);
int64_t copy_unchecked(const std::vector<at::Tensor>& tensors, const at::Tensor& bucket,
                       int64_t offset, double scale, Direction dir);

// Back ends: one table (at most kMaxTensors tensors) against a bucket pointer that
// already includes the offset.
void copy_table_cpu(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                    at::ScalarType bucket_dtype, double scale, Direction dir);
// The CUDA kernel's thread code run block by block on the CPU (cpu_kernel_isa
// "cuda_emulation"; csrc/cpu/cuda_emulation.cpp).
void copy_table_cuda_emulated(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                              at::ScalarType bucket_dtype, double scale, Direction dir);
// split_for_vectors, compiled once for the bindings (tests of the alignment decision).
VecSplit vector_split(uint64_t src, int src_size, uint64_t dst, int dst_size, int64_t n);
#ifdef HVD_HIER_WITH_CUDA
void copy_table_cuda(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                     at::ScalarType bucket_dtype, double scale, Direction dir);
#endif

bool built_with_cuda();

// How many threads an at::parallel_for of `tasks` tasks in the CPU back end ran on.
int64_t cpu_parallel_threads(int64_t tasks);

// Which code runs pack/unpack of CPU tensors: "avx2" or "baseline" (copies of the CPU loop),
// or "cuda_emulation" (the CUDA kernel's thread code, run serially; tests only).
const char* cpu_kernel_isa();
// "baseline" forces the baseline loop and "cuda_emulation" the CUDA kernel's code (for tests
// and comparisons); "auto" picks the best loop for this processor.
void set_cpu_kernel_isa(const std::string& isa);

}  // namespace hvd_hier
