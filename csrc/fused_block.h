// The work of one thread of the CUDA pack/unpack kernel, written once for both compilers:
// csrc/cuda/fused_cuda.cu runs it as the kernel body (block = blockIdx.x, lane =
// threadIdx.x), and the CPU back end's "cuda_emulation" mode runs it block by block and lane
// by lane on CPU tensors, so that the tests on machines without a GPU execute the kernel's
// own index, alignment and vector code, not a restatement of it.
#pragma once

#include "fused.h"

namespace hvd_hier {

// `N` elements of T moved as whole 16-byte units (N * sizeof(T) is a multiple of 16).
template <typename T, int N>
struct alignas(kVecBytes) VecOf {
  T v[N];
};

// Aligned vector load and store: one or more 16-byte accesses on the GPU; a memcpy on the
// host, where the same bytes are moved without type punning.
template <typename V>
HVD_HIER_HD V load_vec(const void* p) {
#if defined(__CUDA_ARCH__)
  return *static_cast<const V*>(p);
#else
  V v;
  std::memcpy(static_cast<void*>(&v), p, sizeof(V));
  return v;
#endif
}

template <typename V>
HVD_HIER_HD void store_vec(void* p, const V& v) {
#if defined(__CUDA_ARCH__)
  *static_cast<V*>(p) = v;
#else
  std::memcpy(p, static_cast<const void*>(&v), sizeof(V));
#endif
}

// Lane `lane` of `lanes` threads copies its share of n elements src -> dst through f:
// the scalar head, the aligned vector steps (kVecUnroll of them loaded before any is
// stored, consecutive lanes on consecutive vectors so a warp's accesses coalesce), and the
// scalar tail, as split_for_vectors decides.
template <typename Src, typename Dst>
HVD_HIER_HD void copy_piece_lane(const Src* __restrict__ src, Dst* __restrict__ dst, int64_t n,
                                 const ScaleCast<Src, Dst>& f, int lane, int lanes) {
  constexpr int kLanes = kVecBytes / (sizeof(Src) < sizeof(Dst) ? sizeof(Src) : sizeof(Dst));
  using SrcVec = VecOf<Src, kLanes>;
  using DstVec = VecOf<Dst, kLanes>;
  const VecSplit s =
      split_for_vectors(static_cast<uint64_t>(reinterpret_cast<uintptr_t>(src)), sizeof(Src),
                        static_cast<uint64_t>(reinterpret_cast<uintptr_t>(dst)), sizeof(Dst), n);
  for (int64_t k = lane; k < s.head; k += lanes) dst[k] = f(src[k]);
  const Src* vsrc = src + s.head;
  Dst* vdst = dst + s.head;
  for (int64_t j0 = lane; j0 < s.vectors; j0 += static_cast<int64_t>(lanes) * kVecUnroll) {
    SrcVec in[kVecUnroll] = {};
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int u = 0; u < kVecUnroll; ++u) {
      const int64_t j = j0 + static_cast<int64_t>(u) * lanes;
      if (j < s.vectors) in[u] = load_vec<SrcVec>(vsrc + j * kLanes);
    }
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int u = 0; u < kVecUnroll; ++u) {
      const int64_t j = j0 + static_cast<int64_t>(u) * lanes;
      if (j < s.vectors) {
        DstVec out;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
        for (int e = 0; e < kLanes; ++e) out.v[e] = f(in[u].v[e]);
        store_vec(vdst + j * kLanes, out);
      }
    }
  }
  for (int64_t k = s.head + s.vectors * kLanes + lane; k < n; k += lanes) dst[k] = f(src[k]);
}

// Block `block` of the kernel covers bucket elements [block * chunk, (block + 1) * chunk)
// with chunk = cuda_chunk_elems(T, B); lane `lane` of its kCudaThreads threads does its share
// of every piece of a tensor that range overlaps.
template <typename T, typename B, Direction Dir>
HVD_HIER_HD void copy_block_lane(const TensorTable& table, B* bucket, double scale, bool scaled,
                                 int64_t block, int lane) {
  const int64_t total = table.offsets[table.count];
  const int64_t chunk = cuda_chunk_elems(sizeof(T), sizeof(B));
  const int64_t begin = block * chunk;
  const int64_t end = begin + chunk < total ? begin + chunk : total;
  for_each_piece(table, begin, end, [&](int32_t i, int64_t lo, int64_t hi, int64_t at) {
    if (Dir == Direction::kPack) {
      const ScaleCast<T, B> f{static_cast<typename ScaleCast<T, B>::acc_t>(scale), scaled};
      copy_piece_lane(static_cast<const T*>(table.ptrs[i]) + lo, bucket + at, hi - lo, f, lane,
                      kCudaThreads);
    } else {
      const ScaleCast<B, T> f{static_cast<typename ScaleCast<B, T>::acc_t>(scale), scaled};
      copy_piece_lane(static_cast<const B*>(bucket) + at, static_cast<T*>(table.ptrs[i]) + lo,
                      hi - lo, f, lane, kCudaThreads);
    }
  });
}

}  // namespace hvd_hier
