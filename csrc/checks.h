// Helpers for the ops' argument checks (ops.cpp, codec_ops.cpp). Messages are built from
// std::string alone, no iostreams: the error path then works the same whichever copy of the
// C++ library the module was linked with (a static one beside torch's shared one crashed
// formatting an integer through a stream on one machine).
#pragma once

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace hvd_hier {
namespace checks {

inline std::string num(int64_t v) { return std::to_string(v); }

inline std::string dtype_name(at::ScalarType t) { return std::string(c10::toString(t)); }

// "[4, 2]"
inline std::string shape_of(const at::Tensor& t) {
  std::string shape = "[";
  for (size_t d = 0; d < t.sizes().size(); ++d) shape += (d ? ", " : "") + num(t.sizes()[d]);
  return shape + "]";
}

// The dtypes of the tensors the kernels read and write.
inline bool float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}
constexpr const char* kFloatDtypes = " is not supported (float32, float64, float16, bfloat16)";

inline bool device_supported(const at::Device& d) { return d.is_cpu() || d.is_cuda(); }
constexpr const char* kNoCuda = "hvd_hier._C was built without CUDA; rebuild with HVD_HIER_WITH_CUDA=1";

inline std::string not_contiguous(const std::string& which, const at::Tensor& t) {
  return which + " (shape " + shape_of(t) + ") is not contiguous; pass t.contiguous() and copy "
         "back, or make it contiguous";
}

// check(ok, what) throws std::invalid_argument("<op>: <what>") unless ok.
class Checker {
 public:
  explicit Checker(std::string op) : op_(std::move(op)) {}
  void operator()(bool ok, const std::string& what) const {
    if (!ok) throw std::invalid_argument(op_ + ": " + what);
  }
  const std::string& op() const { return op_; }

 private:
  std::string op_;
};

}  // namespace checks
}  // namespace hvd_hier
