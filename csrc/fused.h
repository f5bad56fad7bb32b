// Shared by the CPU and CUDA back ends: the tensor table, the index arithmetic that
// maps a range of bucket elements onto the tensors packed in it, and the per-element
// scale-and-cast functor. Everything here is __host__ __device__ so the CPU tests
// exercise exactly the arithmetic the GPU runs.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define HVD_HIER_HD __host__ __device__ __forceinline__
#else
#define HVD_HIER_HD inline
#endif

namespace hvd_hier {

// Tensors per table. The table is passed to a CUDA kernel by value, so it must stay well
// under the 4 KiB kernel-parameter limit: 8 * (160 + 161) + 8 = 2576 bytes.
constexpr int kMaxTensors = 160;

// Elements of the bucket handled by one CPU task or one CUDA block.
constexpr int64_t kChunkElems = 1 << 15;

// A list of tensors laid out back to back in one flat bucket. Tensor i occupies bucket
// elements [offsets[i], offsets[i + 1]); empty tensors have offsets[i] == offsets[i + 1].
struct TensorTable {
  void* ptrs[kMaxTensors];
  int64_t offsets[kMaxTensors + 1];
  int32_t count;
  int32_t pad_;
};

// The tensor that holds bucket element `idx` (offsets[0] <= idx < offsets[count]):
// the largest i with offsets[i] <= idx < offsets[i + 1]. Binary search, so that empty
// tensors (equal consecutive offsets) are skipped.
HVD_HIER_HD int32_t find_tensor(const TensorTable& t, int64_t idx) {
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
template <typename F>
HVD_HIER_HD void for_each_piece(const TensorTable& t, int64_t begin, int64_t end, F&& f) {
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

// Which way a kernel copies: tensors -> bucket (pack) or bucket -> tensors (unpack).
enum class Direction : int { kPack = 0, kUnpack = 1 };

}  // namespace hvd_hier
