// The CPU loop, included by one translation unit per instruction set (see fused_cpu.cpp);
// HVD_HIER_CPU_NS names the namespace of each copy.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cstring>
#include <type_traits>

#include "../fused_ops.h"

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

namespace hvd_hier {
namespace HVD_HIER_CPU_NS {

#if defined(__F16C__) && defined(__AVX__)
// float16 -> float16 with a scale: 8 lanes at a time through the hardware conversions, which
// round to nearest even exactly as c10::Half does.
inline void scale_half(const at::Half* src, at::Half* dst, int64_t n, float scale) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k));
    const __m256 f = _mm256_mul_ps(_mm256_cvtph_ps(h), s);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k),
                     _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; k < n; ++k) dst[k] = static_cast<at::Half>(static_cast<float>(src[k]) * scale);
}
#endif

// One piece: n elements from src to dst, scaled and cast. A same-type unscaled copy is a
// memcpy; everything else is one loop the compiler vectorises for the target instruction set.
template <typename Src, typename Dst>
inline void copy_piece(const Src* __restrict__ src, Dst* __restrict__ dst, int64_t n,
                       const ScaleCast<Src, Dst>& f) {
  if (std::is_same<Src, Dst>::value && !f.scaled) {
    std::memcpy(static_cast<void*>(dst), static_cast<const void*>(src), n * sizeof(Src));
    return;
  }
#if defined(__F16C__) && defined(__AVX__)
  if constexpr (std::is_same<Src, at::Half>::value && std::is_same<Dst, at::Half>::value) {
    scale_half(src, dst, n, f.scale);
    return;
  }
#endif
  // The shared functor (the CUDA kernel runs the same one); -O3 unswitches its branch.
  for (int64_t k = 0; k < n; ++k) dst[k] = f(src[k]);
}

template <typename T, typename B>
void run(const TensorTable& table, B* bucket, double scale, Direction dir) {
  const int64_t total = table.offsets[table.count];
  const int64_t chunks = (total + kChunkElems - 1) / kChunkElems;
  const bool scaled = scale != 1.0;
  at::parallel_for(0, chunks, 1, [&](int64_t first_chunk, int64_t last_chunk) {
    const int64_t begin = first_chunk * kChunkElems;
    const int64_t end = std::min(total, last_chunk * kChunkElems);
    if (dir == Direction::kPack) {
      const ScaleCast<T, B> f{static_cast<typename ScaleCast<T, B>::acc_t>(scale), scaled};
      for_each_piece(table, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
        copy_piece(static_cast<const T*>(table.ptrs[i]) + lo, bucket + at, hi - lo, f);
      });
    } else {
      const ScaleCast<B, T> f{static_cast<typename ScaleCast<B, T>::acc_t>(scale), scaled};
      for_each_piece(table, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
        copy_piece(static_cast<const B*>(bucket) + at, static_cast<T*>(table.ptrs[i]) + lo, hi - lo, f);
      });
    }
  });
}

inline void copy_table(const TensorTable& table, at::ScalarType tensor_dtype, void* bucket,
                       at::ScalarType bucket_dtype, double scale, Direction dir) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensor_dtype, "hvd_hier_cpu", [&] {
    using T = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, bucket_dtype, "hvd_hier_cpu", [&] {
      run<T, scalar_t>(table, static_cast<scalar_t*>(bucket), scale, dir);
    });
  });
}

}  // namespace HVD_HIER_CPU_NS
}  // namespace hvd_hier
