// The CPU loop compiled for AVX2 + FMA + F16C (hardware float16 conversion); used only where
// the processor has them (see fused_cpu.cpp).
#define HVD_HIER_CPU_NS avx2
#include "fused_cpu_impl.h"
#include "codec_cpu_impl.h"

namespace hvd_hier {
void copy_table_cpu_avx2(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                         at::ScalarType bucket_dtype, double scale, Direction dir) {
  avx2::copy_table(table, tensor_dtype, bucket, bucket_dtype, scale, dir);
}

void run_codec_cpu_avx2(const CodecJob& job) { avx2::codec::run(job); }
}  // namespace hvd_hier
