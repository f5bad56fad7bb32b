// Python bindings of hvd_hier._C: declarations only; the work is in ops.cpp and the back ends.
#include <torch/extension.h>

#include <exception>

#include "codec_ops.h"
#include "fused_ops.h"

namespace {

// The arguments are checked with the GIL held, and errors reach Python as ValueError with the
// message alone (no C++ backtrace); only the copy itself runs without the GIL.
int64_t copy(const std::vector<at::Tensor>& tensors, const at::Tensor& bucket, double scale,
             int64_t offset, hvd_hier::Direction dir) {
  try {
    hvd_hier::check_copy(tensors, bucket, offset, dir);
  } catch (const std::invalid_argument& e) {
    throw pybind11::value_error(e.what());
  }
  std::exception_ptr failure;
  int64_t copied = 0;
  {
    pybind11::gil_scoped_release release;
    try {
      copied = hvd_hier::copy_unchecked(tensors, bucket, offset, scale, dir);
    } catch (...) {
      failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  return copied;
}

int64_t pack(const std::vector<at::Tensor>& tensors, const at::Tensor& bucket, double scale,
             int64_t offset) {
  return copy(tensors, bucket, scale, offset, hvd_hier::Direction::kPack);
}

int64_t unpack(const at::Tensor& bucket, const std::vector<at::Tensor>& tensors, double scale,
               int64_t offset) {
  return copy(tensors, bucket, scale, offset, hvd_hier::Direction::kUnpack);
}

// The compressed-delta ops the same way: the check builds the job with the GIL held (errors as
// ValueError), the work runs without it.
template <typename F>
auto value_errors(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    throw pybind11::value_error(e.what());
  }
}

void run_released(const hvd_hier::CodecJob& job) {
  std::exception_ptr failure;
  {
    pybind11::gil_scoped_release release;
    try {
      hvd_hier::run_codec(job);
    } catch (...) {
      failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
}

int64_t table_elements(const hvd_hier::CodecJob& job) { return job.table.offsets[job.table.count]; }

int64_t encode_delta(const std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& anchors,
                     const std::vector<at::Tensor>& residuals, const at::Tensor& out, const std::string& codec) {
  const auto job = value_errors([&] { return hvd_hier::check_encode_delta(tensors, anchors, residuals, out, codec); });
  run_released(job);
  return table_elements(job);
}

int64_t reduce_encoded(const at::Tensor& src, const at::Tensor& dst, const std::string& codec, int64_t count,
                       double scale) {
  const auto job = value_errors([&] { return hvd_hier::check_reduce_encoded(src, dst, codec, count, scale); });
  run_released(job);
  return job.records;
}

int64_t apply_delta(const at::Tensor& src, const std::vector<at::Tensor>& tensors,
                    const std::vector<at::Tensor>& anchors, const std::string& codec) {
  const auto job = value_errors([&] { return hvd_hier::check_apply_delta(src, tensors, anchors, codec); });
  run_released(job);
  return table_elements(job);
}

int64_t decode_into(const at::Tensor& src, const std::vector<at::Tensor>& tensors, const std::string& codec,
                    double scale) {
  const auto job = value_errors([&] { return hvd_hier::check_decode_into(src, tensors, codec, scale); });
  run_released(job);
  return table_elements(job);
}

int64_t apply_sum(const at::Tensor& src, int64_t count, const std::vector<at::Tensor>& tensors,
                  const std::vector<at::Tensor>& anchors, const std::string& codec, double scale) {
  const auto job =
      value_errors([&] { return hvd_hier::check_apply_sum(src, count, tensors, anchors, codec, scale); });
  run_released(job);
  return table_elements(job);
}

int64_t encode_topk(const std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& anchors,
                    const std::vector<at::Tensor>& residuals, const at::Tensor& out, int64_t slots,
                    const std::string& values) {
  const auto job = value_errors(
      [&] { return hvd_hier::check_encode_topk(tensors, anchors, residuals, out, slots, values); });
  run_released(job);
  return table_elements(job);
}

int64_t apply_topk(const at::Tensor& src, int64_t count, const std::vector<at::Tensor>& tensors,
                   const std::vector<at::Tensor>& anchors, int64_t slots, const std::string& values, double scale) {
  const auto job = value_errors(
      [&] { return hvd_hier::check_apply_topk(src, count, tensors, anchors, slots, values, scale); });
  run_released(job);
  return table_elements(job);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  namespace py = pybind11;
  m.doc() = "hvd_hier fused kernels: pack many tensors into one flat bucket and back; encode, reduce "
            "and apply compressed model deltas";
  m.def("pack", &pack,
        "Write the tensors back to back into bucket[offset:], multiplied by scale and cast to "
        "the bucket's dtype, in one pass. Returns the number of elements written.",
        py::arg("tensors"), py::arg("bucket"), py::arg("scale") = 1.0, py::arg("offset") = 0);
  m.def("unpack", &unpack,
        "Write bucket[offset:] back into the tensors, multiplied by scale (1/n turns a sum "
        "into an average) and cast to the tensors' dtype, in one pass. Returns the number of "
        "elements read.",
        py::arg("bucket"), py::arg("tensors"), py::arg("scale") = 1.0, py::arg("offset") = 0);
  m.def("built_with_cuda", &hvd_hier::built_with_cuda, "Whether the CUDA kernels were compiled in.");
  m.def("cpu_kernel_isa", &hvd_hier::cpu_kernel_isa,
        "Which code packs and unpacks CPU tensors: 'avx2' or 'baseline' (the compiled copies of "
        "the CPU loop), or 'cuda_emulation' (the CUDA kernel's thread code run serially).");
  m.def("set_cpu_kernel_isa", &hvd_hier::set_cpu_kernel_isa,
        "'baseline' forces the portable CPU loop, 'cuda_emulation' runs the CUDA kernel's own "
        "code block by block and thread by thread on the CPU (both for tests and comparisons); "
        "'auto' picks the best loop.",
        py::arg("isa"));
  m.def("vector_split",
        [](uint64_t src, int src_size, uint64_t dst, int dst_size, int64_t n) {
          auto ok = [](int size) { return size == 2 || size == 4 || size == 8; };
          if (!ok(src_size) || !ok(dst_size)) {
            throw pybind11::value_error("vector_split: element sizes must be 2, 4 or 8 bytes, got " +
                                        std::to_string(src_size) + " and " + std::to_string(dst_size));
          }
          const hvd_hier::VecSplit s = hvd_hier::vector_split(src, src_size, dst, dst_size, n);
          return py::make_tuple(s.head, s.vectors, s.lanes);
        },
        "How the CUDA kernel copies n elements from address src (src_size-byte elements) to "
        "dst: (head, vectors, lanes) = head elements one by one, then `vectors` steps of `lanes` "
        "elements in aligned 16-byte accesses on both sides, then the rest one by one.",
        py::arg("src"), py::arg("src_size"), py::arg("dst"), py::arg("dst_size"), py::arg("n"));
  m.def("cpu_parallel_threads", &hvd_hier::cpu_parallel_threads,
        "How many threads the CPU loop's at::parallel_for ran `tasks` tasks on (at most "
        "torch.get_num_threads()).", py::arg("tasks") = 64,
        py::call_guard<py::gil_scoped_release>());
  m.def("codec_record_bytes",
        [](const std::string& codec) { return value_errors([&] { return hvd_hier::codec_record_bytes(codec); }); },
        "Bytes of one record (CODEC_CHUNK elements) of an encoded buffer: 4096 for 'fp16' and 'bf16' "
        "(2048 16-bit values), 2064 for 'int8' (a 16-byte header holding the float32 scale in its "
        "first 4 bytes, the rest zero, then 2048 int8 values).",
        py::arg("codec"));
  m.def("encoded_bytes",
        [](const std::string& codec, int64_t n) { return value_errors([&] { return hvd_hier::encoded_bytes(codec, n); }); },
        "Bytes of the encoded buffer of n elements: ceil(n / CODEC_CHUNK) records (0 for n = 0).",
        py::arg("codec"), py::arg("n"));
  m.def("encode_delta", &encode_delta,
        "Encode the delta d = x - anchor (+ residual) of the tensors' concatenation into out (a "
        "contiguous uint8 tensor of exactly encoded_bytes(codec, n) bytes on the tensors' device), "
        "chunk by chunk of CODEC_CHUNK elements. codec: 'fp16' or 'bf16' (round to nearest even), "
        "'int8' or 'int4' (per-chunk scale max|d| / L, values round(d / scale) clamped to +-L, L = 127 "
        "or 7; int4 two to a byte) or 'int2' (per-chunk scale 0.625 * mean|d|, levels {-3, -1, 1, 3} * "
        "scale, four to a byte); csrc/codec.h has the exact rules. "
        "Arithmetic in float32 (float64 tensors: the delta in float64, rounded to float32 once). "
        "tensors and anchors: same length, numel, dtype and device index by index, one dtype for the "
        "list, at most MAX_TENSORS_PER_DELTA_LAUNCH tensors. residuals: [] (no error feedback) or "
        "float32 tensors of the same numels, read and overwritten with d - decode(encode(d)). "
        "Returns the number of elements encoded.",
        py::arg("tensors"), py::arg("anchors"), py::arg("residuals"), py::arg("out"), py::arg("codec"));
  m.def("reduce_encoded", &reduce_encoded,
        "src holds `count` encoded buffers of dst's size back to back (one per rank, in rank order); "
        "writes into dst, element by element, the encoding of (sum over k in order of decode(src_k)) "
        "* scale, in float32 (int8: a fresh scale per chunk). Zero padding stays zero; deterministic. "
        "dst must not overlap src. codec: fp16, bf16 or int8 (int4 and int2 sums go through "
        "apply_sum). Returns the number of records.",
        py::arg("src"), py::arg("dst"), py::arg("codec"), py::arg("count"), py::arg("scale") = 1.0);
  m.def("apply_delta", &apply_delta,
        "Decode src (the encoded buffer of the tensors' concatenation) and write x = anchor + d into "
        "each tensor (float32 arithmetic, float64 for float64 tensors, rounded once to the tensors' "
        "dtype), then the same value into the anchor, so both end bit-identical. Returns the number "
        "of elements written.",
        py::arg("src"), py::arg("tensors"), py::arg("anchors"), py::arg("codec"));
  m.def("decode_into", &decode_into,
        "Write decode(src) * scale into the tensors (src: the encoded buffer of their concatenation; "
        "float32 arithmetic, float64 for float64 tensors; scale = -1 turns a mean delta into an outer "
        "optimizer's gradient). Returns the number of elements written.",
        py::arg("src"), py::arg("tensors"), py::arg("codec"), py::arg("scale") = 1.0);
  m.def("apply_sum", &apply_sum,
        "src holds `count` encoded buffers of the tensors' concatenation back to back (one per rank, "
        "in rank order); m = (sum over k in order of decode(src_k)) * scale, in float32. With anchors: "
        "x = anchor + m (as apply_delta), and the anchor takes the same value; with anchors = []: x = m "
        "(scale = -1/n gives an outer optimizer's gradient). Deterministic. Returns the number of "
        "elements written.",
        py::arg("src"), py::arg("count"), py::arg("tensors"), py::arg("anchors"), py::arg("codec"),
        py::arg("scale") = 1.0);
  m.def("topk_slots", [](double f) { return value_errors([&] { return hvd_hier::topk_slots(f); }); },
        "Values kept per chunk of CODEC_CHUNK for a fraction in (0, 1): ceil(fraction * CODEC_CHUNK).",
        py::arg("fraction"));
  m.def("topk_record_bytes",
        [](int64_t slots, const std::string& values) {
          return value_errors([&] { return hvd_hier::topk_record_bytes(slots, values); });
        },
        "Bytes of one top-k record: a 16-byte header, `slots` uint16 offsets, `slots` codes of "
        "`values` (int8, int4 or int2), zero bytes to a multiple of 16.",
        py::arg("slots"), py::arg("values"));
  m.def("topk_encoded_bytes",
        [](int64_t n, int64_t slots, const std::string& values) {
          return value_errors([&] { return hvd_hier::topk_encoded_bytes(n, slots, values); });
        },
        "Bytes of the top-k encoding of n elements: ceil(n / CODEC_CHUNK) records.", py::arg("n"),
        py::arg("slots"), py::arg("values"));
  m.def("encode_topk", &encode_topk,
        "Encode the delta d = x - anchor (+ residual) of the tensors' concatenation, chunk by chunk of "
        "CODEC_CHUNK: the `slots` elements of largest |d| (ties: the first), their offsets and their "
        "codes in `values` (csrc/topk.h); residuals ([] or float32 like encode_delta) become d minus "
        "what was sent. Returns the number of elements encoded.",
        py::arg("tensors"), py::arg("anchors"), py::arg("residuals"), py::arg("out"), py::arg("slots"),
        py::arg("values"));
  m.def("apply_topk", &apply_topk,
        "src holds `count` top-k encodings of the tensors' concatenation back to back (one per rank, in "
        "rank order); m = (0 + the kept values of rank 0, 1, ... added in order) * scale in float32; with "
        "anchors x = anchor = anchor + m, without x = m. Returns the number of elements written.",
        py::arg("src"), py::arg("count"), py::arg("tensors"), py::arg("anchors"), py::arg("slots"),
        py::arg("values"), py::arg("scale") = 1.0);
  m.attr("MAX_TENSORS_PER_LAUNCH") = hvd_hier::kMaxTensors;
  m.attr("MAX_TENSORS_PER_DELTA_LAUNCH") = hvd_hier::kMaxDeltaTensors;
  m.attr("CODEC_CHUNK") = hvd_hier::kCodecChunk;
  m.attr("CHUNK_ELEMS") = hvd_hier::kChunkElems;
  m.attr("CUDA_THREADS") = hvd_hier::kCudaThreads;
  m.attr("CUDA_CHUNK_BYTES") = hvd_hier::kCudaChunkBytes;
  m.attr("VECTOR_BYTES") = hvd_hier::kVecBytes;
  m.attr("VECTOR_UNROLL") = hvd_hier::kVecUnroll;
}
