// Shared by the CPU and CUDA back ends: the tensor table, the index arithmetic that
// maps a range of bucket elements onto the tensors packed in it, and the per-element
// scale-and-cast functor. Everything here is __host__ __device__ so the CPU tests
// exercise exactly the arithmetic the GPU runs.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define HVD_HIER_HD __host__ __device__ __forceinline__
#else
#define HVD_HIER_HD inline
#endif

namespace hvd_hier {

// Tensors per table. The table is passed to a CUDA kernel by value, so it must stay well
// under the 4 KiB kernel-parameter limit: 8 * (160 + 161) + 8 = 2576 bytes.
constexpr int kMaxTensors = 160;

// Elements of the bucket handled by one CPU task.
constexpr int64_t kChunkElems = 1 << 15;

// The CUDA kernel: threads per block.
constexpr int kCudaThreads = 256;
// Width of one vector load or store of the CUDA kernel.
constexpr int kVecBytes = 16;
// Vector steps a CUDA thread has in flight at once (loads issued before the first store).
constexpr int kVecUnroll = 4;
// Bytes of the narrower side (bucket or tensors) that one CUDA block covers: one unrolled
// round of vector steps for every thread, whatever the dtypes.
constexpr int64_t kCudaChunkBytes = static_cast<int64_t>(kCudaThreads) * kVecUnroll * kVecBytes;

// A list of tensors laid out back to back in one flat bucket. Tensor i occupies bucket
// elements [offsets[i], offsets[i + 1]); empty tensors have offsets[i] == offsets[i + 1].
struct TensorTable {
  void* ptrs[kMaxTensors];
  int64_t offsets[kMaxTensors + 1];
  int32_t count;
  int32_t pad_;
};

// Tensors per delta table (the compressed-delta ops, csrc/codec.h). Three pointer arrays share
// one offsets array, and the table travels by value as a CUDA kernel argument, which must stay
// under 4 KiB with the kernel's other arguments: 3 * 96 * 8 + 97 * 8 + 8 = 3088 bytes.
constexpr int kMaxDeltaTensors = 96;

// The tensors of one compressed-delta call, laid out like TensorTable: tensors[i], anchors[i]
// (same dtype and numel) and residuals[i] (float32) all cover bucket elements
// [offsets[i], offsets[i + 1]). anchors are null where an op has none (decode_into); residuals
// are read and written only when with_residuals is 1.
struct DeltaTable {
  void* tensors[kMaxDeltaTensors];
  void* anchors[kMaxDeltaTensors];
  float* residuals[kMaxDeltaTensors];
  int64_t offsets[kMaxDeltaTensors + 1];
  int32_t count;
  int16_t with_residuals;
  int16_t with_anchors;  // apply_sum: x = a + m (1) or x = m (0)
};
static_assert(sizeof(DeltaTable) == 3 * kMaxDeltaTensors * 8 + (kMaxDeltaTensors + 1) * 8 + 8,
              "DeltaTable layout");
static_assert(sizeof(DeltaTable) + 64 <= 4096, "a DeltaTable must fit in a CUDA kernel argument");

// The tensor that holds bucket element `idx` (offsets[0] <= idx < offsets[count]):
// the largest i with offsets[i] <= idx < offsets[i + 1]. Binary search, so that empty
// tensors (equal consecutive offsets) are skipped. Table: TensorTable or DeltaTable (anything
// with `offsets` and `count`).
template <typename Table>
HVD_HIER_HD int32_t find_tensor(const Table& t, int64_t idx) {
  int32_t lo = 0, hi = t.count - 1;
  while (lo < hi) {
    const int32_t mid = (lo + hi + 1) / 2;
    if (t.offsets[mid] <= idx) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  // Several tensors can start at idx when some are empty; the one that holds idx is the
  // last of them, which the search above returns.
  return lo;
}

// Calls f(tensor, first, last, bucket_first) for every piece of the bucket range
// [begin, end) that falls inside one tensor: elements [first, last) of `tensor`, which sit
// at bucket elements [bucket_first, bucket_first + last - first).
template <typename Table, typename F>
HVD_HIER_HD void for_each_piece(const Table& t, int64_t begin, int64_t end, F&& f) {
  if (begin >= end) return;
  int32_t i = find_tensor(t, begin);
  int64_t pos = begin;
  while (pos < end && i < t.count) {
    const int64_t stop = t.offsets[i + 1] < end ? t.offsets[i + 1] : end;
    if (stop > pos) {
      f(i, pos - t.offsets[i], stop - t.offsets[i], pos);
      pos = stop;
    }
    ++i;
  }
}

// The type arithmetic is done in: double when either side is double, float otherwise
// (float16 and bfloat16 are widened, scaled once and rounded once).
template <typename A, typename B>
struct AccType {
  using type = float;
};
template <typename B>
struct AccType<double, B> {
  using type = double;
};
template <typename A>
struct AccType<A, double> {
  using type = double;
};
template <>
struct AccType<double, double> {
  using type = double;
};

// dst = cast<Dst>(src * scale). With scale == 1 the multiplication is skipped, so a plain
// pack or unpack is an exact copy (or a single rounding when it casts).
template <typename Src, typename Dst>
struct ScaleCast {
  using acc_t = typename AccType<Src, Dst>::type;
  acc_t scale;
  bool scaled;

  HVD_HIER_HD Dst operator()(Src x) const {
    const acc_t v = static_cast<acc_t>(x);
    return static_cast<Dst>(scaled ? v * scale : v);
  }
};

// How a piece of n elements copied from address `src` (elements of src_size bytes) to
// address `dst` (dst_size bytes) splits for 16-byte vector access: `head` elements one at a
// time, then `vectors` steps of `lanes` elements each, whose loads and stores are all whole,
// aligned 16-byte units on both sides, then the rest one at a time. `lanes` is 16 over the
// smaller element size, so that a step moves whole 16-byte units on both sides (float ->
// bfloat16: 8 elements, two 16-byte loads and one 16-byte store); a step therefore keeps both
// sides aligned once they are, and the head is the first element, below `lanes`, at which
// both are. When there is none (the two addresses are misaligned relative to each other, or
// an element is off its natural boundary), the whole piece is scalar: head = n, vectors = 0.
struct VecSplit {
  int64_t head;
  int64_t vectors;
  int32_t lanes;
};

HVD_HIER_HD int32_t vec_lanes(int src_size, int dst_size) {
  return kVecBytes / (src_size < dst_size ? src_size : dst_size);
}

// Bucket elements per CUDA block, and blocks for `total` elements, for a copy between elements
// of src_size and dst_size bytes (float32: 4096 elements, 16-bit types: 8192).
HVD_HIER_HD int64_t cuda_chunk_elems(int src_size, int dst_size) {
  return kCudaChunkBytes / (src_size < dst_size ? src_size : dst_size);
}

HVD_HIER_HD int64_t cuda_blocks(int64_t total, int src_size, int dst_size) {
  const int64_t chunk = cuda_chunk_elems(src_size, dst_size);
  return (total + chunk - 1) / chunk;
}

HVD_HIER_HD VecSplit split_for_vectors(uint64_t src, int src_size, uint64_t dst, int dst_size,
                                       int64_t n) {
  const int32_t lanes = vec_lanes(src_size, dst_size);
  if (n <= 0) return {0, 0, lanes};
  for (int32_t head = 0; head < lanes && head < n; ++head) {
    if ((src + static_cast<uint64_t>(head) * src_size) % kVecBytes == 0 &&
        (dst + static_cast<uint64_t>(head) * dst_size) % kVecBytes == 0) {
      return {head, (n - head) / lanes, lanes};
    }
  }
  return {n, 0, lanes};
}

// Which way a kernel copies: tensors -> bucket (pack) or bucket -> tensors (unpack).
enum class Direction : int { kPack = 0, kUnpack = 1 };

}  // namespace hvd_hier
