// CPU back end: the bucket is cut into chunks of kChunkElems elements, run in parallel with
// ATen's thread pool; inside a chunk each piece is a memcpy or one vectorisable loop. The
// loop is compiled twice, for the baseline instruction set and for AVX2 + F16C, and chosen
// at run time like ATen's own CPU kernels. The compressed-delta ops (codec_cpu_impl.h) are
// compiled and chosen the same way.
#define HVD_HIER_CPU_NS baseline
#include "fused_cpu_impl.h"
#include "codec_cpu_impl.h"

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

namespace hvd_hier {

enum class CpuMode : int { kAuto = 0, kBaseline = 1, kCudaEmulation = 2 };
static std::atomic<int> g_mode{static_cast<int>(CpuMode::kAuto)};

static CpuMode mode() { return static_cast<CpuMode>(g_mode.load()); }

#if defined(HVD_HIER_CPU_AVX2)
void copy_table_cpu_avx2(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                         at::ScalarType bucket_dtype, double scale, Direction dir);

void run_codec_cpu_avx2(const CodecJob& job);

static bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return yes;
}
#endif

static bool use_avx2() {
#if defined(HVD_HIER_CPU_AVX2)
  return has_avx2() && mode() == CpuMode::kAuto;
#else
  return false;
#endif
}

void copy_table_cpu(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                    at::ScalarType bucket_dtype, double scale, Direction dir) {
  if (mode() == CpuMode::kCudaEmulation) {
    copy_table_cuda_emulated(table, tensor_dtype, bucket, bucket_dtype, scale, dir);
    return;
  }
#if defined(HVD_HIER_CPU_AVX2)
  if (use_avx2()) {
    copy_table_cpu_avx2(table, tensor_dtype, bucket, bucket_dtype, scale, dir);
    return;
  }
#endif
  baseline::copy_table(table, tensor_dtype, bucket, bucket_dtype, scale, dir);
}

void run_codec_cpu(const CodecJob& job) {
  if (mode() == CpuMode::kCudaEmulation) {
    run_codec_cuda_emulated(job);
    return;
  }
#if defined(HVD_HIER_CPU_AVX2)
  if (use_avx2()) {
    run_codec_cpu_avx2(job);
    return;
  }
#endif
  baseline::codec::run(job);
}

int64_t cpu_parallel_threads(int64_t tasks) {
  // The threads that at::parallel_for hands work to from this translation unit (ATen's
  // OpenMP back end runs on one thread when a unit is compiled without OpenMP).
  std::vector<std::atomic<bool>> seen(static_cast<size_t>(at::get_num_threads()) + 1);
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    const int id = at::get_thread_num();
    volatile double sink = 0;
    for (int k = 0; k < 200000; ++k) sink = sink + k;  // long enough for every thread to join
    if (id >= 0 && static_cast<size_t>(id) < seen.size()) seen[id].store(true);
  });
  int64_t n = 0;
  for (auto& s : seen) n += s.load();
  return n;
}

const char* cpu_kernel_isa() {
  if (mode() == CpuMode::kCudaEmulation) return "cuda_emulation";
  return use_avx2() ? "avx2" : "baseline";
}

void set_cpu_kernel_isa(const std::string& isa) {
  if (isa != "auto" && isa != "baseline" && isa != "cuda_emulation") {
    throw std::invalid_argument("isa must be 'auto', 'baseline' or 'cuda_emulation', got '" + isa + "'");
  }
  const CpuMode m = isa == "baseline"         ? CpuMode::kBaseline
                    : isa == "cuda_emulation" ? CpuMode::kCudaEmulation
                                              : CpuMode::kAuto;
  g_mode.store(static_cast<int>(m));
}

}  // namespace hvd_hier
