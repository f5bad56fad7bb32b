// CPU back end: the bucket is cut into chunks of kChunkElems elements, run in parallel with
// ATen's thread pool; inside a chunk each piece is a memcpy or one vectorisable loop. The
// loop is compiled twice, for the baseline instruction set and for AVX2 + F16C, and chosen
// at run time like ATen's own CPU kernels.
#define HVD_HIER_CPU_NS baseline
#include "fused_cpu_impl.h"

#include <atomic>

namespace hvd_hier {

static std::atomic<bool> g_force_baseline{false};

#if defined(HVD_HIER_CPU_AVX2)
void copy_table_cpu_avx2(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                         at::ScalarType bucket_dtype, double scale, Direction dir);

static bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return yes;
}
#endif

static bool use_avx2() {
#if defined(HVD_HIER_CPU_AVX2)
  return has_avx2() && !g_force_baseline.load();
#else
  return false;
#endif
}

void copy_table_cpu(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                    at::ScalarType bucket_dtype, double scale, Direction dir) {
#if defined(HVD_HIER_CPU_AVX2)
  if (use_avx2()) {
    copy_table_cpu_avx2(table, tensor_dtype, bucket, bucket_dtype, scale, dir);
    return;
  }
#endif
  baseline::copy_table(table, tensor_dtype, bucket, bucket_dtype, scale, dir);
}

const char* cpu_kernel_isa() { return use_avx2() ? "avx2" : "baseline"; }

void set_cpu_kernel_isa(const std::string& isa) {
  TORCH_CHECK(isa == "auto" || isa == "baseline", "isa must be 'auto' or 'baseline', got '", isa, "'");
  g_force_baseline.store(isa == "baseline");
}

}  // namespace hvd_hier
