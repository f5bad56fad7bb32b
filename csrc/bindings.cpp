// Python bindings of hvd_hier._C: declarations only; the work is in ops.cpp and the back ends.
#include <torch/extension.h>

#include <exception>

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

}  // namespace

PYBIND11_MODULE(_C, m) {
  namespace py = pybind11;
  m.doc() = "hvd_hier fused kernels: pack many tensors into one flat bucket and back";
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
  m.attr("MAX_TENSORS_PER_LAUNCH") = hvd_hier::kMaxTensors;
  m.attr("CHUNK_ELEMS") = hvd_hier::kChunkElems;
  m.attr("CUDA_THREADS") = hvd_hier::kCudaThreads;
  m.attr("CUDA_CHUNK_BYTES") = hvd_hier::kCudaChunkBytes;
  m.attr("VECTOR_BYTES") = hvd_hier::kVecBytes;
  m.attr("VECTOR_UNROLL") = hvd_hier::kVecUnroll;
}
