// The compressed-delta ops' argument checks, which build the job (one DeltaTable per call), and
// the dispatch of a checked job to its back end.
#include "codec_ops.h"

#include <c10/core/DeviceGuard.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "checks.h"
#include "topk.h"

namespace hvd_hier {
namespace {

using checks::Checker;
using checks::dtype_name;
using checks::num;

const char* codec_name(Codec c) {
  switch (c) {
    case Codec::kFp16:
      return "fp16";
    case Codec::kBf16:
      return "bf16";
    case Codec::kInt8:
      return "int8";
    case Codec::kInt4:
      return "int4";
    case Codec::kInt2:
      return "int2";
  }
  return "?";
}

// "encoded_bytes('int8', 5) = 2064"
std::string encoded_size(Codec c, int64_t n) {
  return std::string("encoded_bytes('") + codec_name(c) + "', " + num(n) + ") = " +
         num(codec_records(n) * record_bytes(c));
}

// An encoded buffer (out, src or dst): uint8, on a supported device, contiguous, 16-byte aligned.
void check_buffer(const Checker& check, const std::string& what, const at::Tensor& b) {
  check(b.defined(), what + " is undefined");
  check(b.scalar_type() == at::kByte, what + " must be a uint8 tensor, got " + dtype_name(b.scalar_type()));
  check(checks::device_supported(b.device()),
        what + " device " + b.device().str() + " is not supported (cpu, cuda)");
#ifndef HVD_HIER_WITH_CUDA
  check(!b.device().is_cuda(), checks::kNoCuda);
#endif
  check(b.is_contiguous(), what + " must be contiguous");
  if (b.numel() > 0) {
    const uintptr_t misaligned = reinterpret_cast<uintptr_t>(b.data_ptr()) % kRecordAlign;
    check(misaligned == 0, what + " must start at a " + num(kRecordAlign) + "-byte aligned address (it starts " +
                               num(static_cast<int64_t>(misaligned)) + " bytes past one)");
  }
}

// What a list argument's dtypes must be.
enum class ListKind {
  kTensors,    // all that of tensors[0], one the kernels take
  kAnchors,    // index by index that of tensors
  kResiduals,  // float32
};

// One list argument `name` (tensors, anchors or residuals), index by index: defined, dtype (by
// `kind`), numel equal to that of tensors[i], on the buffer's device, contiguous, dense.
void check_list(const Checker& check, const std::string& name, ListKind kind, const std::vector<at::Tensor>& list,
                const std::vector<at::Tensor>& tensors, const at::Tensor& buffer, const std::string& buffer_name) {
  for (size_t i = 0; i < list.size(); ++i) {
    const at::Tensor& t = list[i];
    const std::string index = "[" + num(static_cast<int64_t>(i)) + "]";
    const std::string which = name + index;
    check(t.defined(), which + " is undefined");
    const std::string dtype = dtype_name(t.scalar_type());
    if (kind == ListKind::kTensors) {
      const at::ScalarType first = tensors[0].scalar_type();
      check(t.scalar_type() == first,
            which + " has dtype " + dtype + " but tensors[0] has " + dtype_name(first) + "; use one bucket per dtype");
      check(checks::float_dtype(first), which + " dtype " + dtype_name(first) + checks::kFloatDtypes);
    } else {
      if (kind == ListKind::kAnchors) {
        check(t.scalar_type() == tensors[i].scalar_type(),
              which + " has dtype " + dtype + " but tensors" + index + " has " + dtype_name(tensors[i].scalar_type()));
      } else {
        check(t.scalar_type() == at::kFloat, which + " has dtype " + dtype + "; residuals must be float32");
      }
      check(t.numel() == tensors[i].numel(),
            which + " has " + num(t.numel()) + " elements but tensors" + index + " has " + num(tensors[i].numel()));
    }
    check(t.device() == buffer.device(),
          which + " is on " + t.device().str() + " but " + buffer_name + " is on " + buffer.device().str());
    if (!t.is_contiguous()) check(false, checks::not_contiguous(which, t));
    check(!t.is_sparse(), which + " is sparse");
  }
}

// The table of one call: tensors (with anchors and residuals where given), offsets, the dtype.
// Lengths are checked here, before the lists.
void build_table(const Checker& check, CodecJob& job, const std::vector<at::Tensor>& tensors,
                 const std::vector<at::Tensor>* anchors, const std::vector<at::Tensor>* residuals,
                 const at::Tensor& buffer, const std::string& buffer_name) {
  if (anchors != nullptr) {
    check(anchors->size() == tensors.size(), "anchors has " + num(static_cast<int64_t>(anchors->size())) +
                                                 " tensors but tensors has " +
                                                 num(static_cast<int64_t>(tensors.size())));
  }
  if (residuals != nullptr) {
    check(residuals->empty() || residuals->size() == tensors.size(),
          "residuals must be empty (no error feedback) or hold one tensor per tensor (" +
              num(static_cast<int64_t>(tensors.size())) + "), got " + num(static_cast<int64_t>(residuals->size())));
  }
  check(tensors.size() <= static_cast<size_t>(kMaxDeltaTensors),
        num(static_cast<int64_t>(tensors.size())) + " tensors are more than one call takes (" +
            "MAX_TENSORS_PER_DELTA_LAUNCH = " + num(kMaxDeltaTensors) + "); split the bucket");
  check_list(check, "tensors", ListKind::kTensors, tensors, tensors, buffer, buffer_name);
  if (anchors != nullptr) check_list(check, "anchors", ListKind::kAnchors, *anchors, tensors, buffer, buffer_name);
  const bool with_residuals = residuals != nullptr && !residuals->empty();
  if (with_residuals) check_list(check, "residuals", ListKind::kResiduals, *residuals, tensors, buffer, buffer_name);

  DeltaTable& t = job.table;
  t.count = static_cast<int32_t>(tensors.size());
  t.with_residuals = with_residuals ? 1 : 0;
  t.with_anchors = anchors != nullptr ? 1 : 0;
  t.offsets[0] = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    t.tensors[i] = tensors[i].data_ptr();
    t.anchors[i] = anchors != nullptr ? (*anchors)[i].data_ptr() : nullptr;
    t.residuals[i] = with_residuals ? (*residuals)[i].data_ptr<float>() : nullptr;
    t.offsets[i + 1] = t.offsets[i] + tensors[i].numel();
  }
  job.dtype = tensors.empty() ? at::kFloat : tensors[0].scalar_type();
  job.device = buffer.device();
  job.records = codec_records(t.offsets[t.count]);
}

// apply_delta and decode_into: src holds the encoded buffer of the tensors' concatenation.
CodecJob check_decode_side(const Checker& check, CodecOp op, const at::Tensor& src,
                           const std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>* anchors,
                           const std::string& codec, double scale, int64_t count = 1) {
  CodecJob job;
  job.op = op;
  job.codec = parse_codec(check.op(), codec);
  check(count >= 1, "count must be >= 1, got " + num(count));
  check_buffer(check, "src", src);
  build_table(check, job, tensors, anchors, nullptr, src, "src");
  const int64_t n = job.table.offsets[job.table.count];
  if (count == 1) {
    check(src.numel() == job.records * record_bytes(job.codec),
          "src has " + num(src.numel()) + " bytes, expected " + encoded_size(job.codec, n));
  } else {
    check(src.numel() == count * job.records * record_bytes(job.codec),
          "src has " + num(src.numel()) + " bytes, expected count * " + encoded_size(job.codec, n) + " = " +
              num(count * job.records * record_bytes(job.codec)));
  }
  job.count = count;
  job.src = static_cast<const uint8_t*>(src.data_ptr());
  job.scale = scale;
  return job;
}

}  // namespace

Codec parse_codec(const std::string& op, const std::string& name) {
  if (name == "fp16") return Codec::kFp16;
  if (name == "bf16") return Codec::kBf16;
  if (name == "int8") return Codec::kInt8;
  if (name == "int4") return Codec::kInt4;
  if (name == "int2") return Codec::kInt2;
  throw std::invalid_argument(op + ": codec must be one of fp16, bf16, int8, int4, int2, got '" + name + "'");
}

int64_t codec_record_bytes(const std::string& codec) {
  return record_bytes(parse_codec("codec_record_bytes", codec));
}

int64_t encoded_bytes(const std::string& codec, int64_t n) {
  const Codec c = parse_codec("encoded_bytes", codec);
  Checker("encoded_bytes")(n >= 0, "n must be >= 0, got " + num(n));
  return codec_records(n) * record_bytes(c);
}

CodecJob check_encode_delta(const std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& anchors,
                            const std::vector<at::Tensor>& residuals, const at::Tensor& out,
                            const std::string& codec) {
  const Checker check("encode_delta");
  CodecJob job;
  job.op = CodecOp::kEncodeDelta;
  job.codec = parse_codec(check.op(), codec);
  check_buffer(check, "out", out);
  build_table(check, job, tensors, &anchors, &residuals, out, "out");
  const int64_t n = job.table.offsets[job.table.count];
  check(out.numel() == job.records * record_bytes(job.codec),
        "out has " + num(out.numel()) + " bytes, expected " + encoded_size(job.codec, n));
  job.dst = static_cast<uint8_t*>(out.data_ptr());
  return job;
}

CodecJob check_reduce_encoded(const at::Tensor& src, const at::Tensor& dst, const std::string& codec,
                              int64_t count, double scale) {
  const Checker check("reduce_encoded");
  CodecJob job;
  job.op = CodecOp::kReduceEncoded;
  job.codec = parse_codec(check.op(), codec);
  check(job.codec != Codec::kInt4 && job.codec != Codec::kInt2,
        std::string("codec must be one of fp16, bf16, int8 (") + codec_name(job.codec) +
            " contributions are summed by apply_sum), got '" + codec + "'");
  check_buffer(check, "src", src);
  check_buffer(check, "dst", dst);
  check(dst.device() == src.device(), "dst is on " + dst.device().str() + " but src is on " + src.device().str());
  check(count >= 1, "count must be >= 1, got " + num(count));
  const int64_t rb = record_bytes(job.codec);
  check(dst.numel() % rb == 0, "dst has " + num(dst.numel()) + " bytes, not a whole number of " + num(rb) +
                                   "-byte " + codec_name(job.codec) + " records");
  const bool fits = dst.numel() == 0 ? src.numel() == 0
                                     : src.numel() % dst.numel() == 0 && src.numel() / dst.numel() == count;
  check(fits, "src has " + num(src.numel()) + " bytes, expected count * dst = " + num(count) + " * " +
                  num(dst.numel()) + " = " + num(count * dst.numel()));
  if (dst.numel() > 0) {
    const auto* s = static_cast<const uint8_t*>(src.data_ptr());
    const auto* d = static_cast<const uint8_t*>(dst.data_ptr());
    check(d + dst.numel() <= s || s + src.numel() <= d, "dst overlaps src; pass a separate buffer");
  }
  job.device = dst.device();
  job.src = static_cast<const uint8_t*>(src.data_ptr());
  job.dst = static_cast<uint8_t*>(dst.data_ptr());
  job.records = dst.numel() / rb;
  job.count = count;
  job.scale = scale;
  return job;
}

CodecJob check_apply_delta(const at::Tensor& src, const std::vector<at::Tensor>& tensors,
                           const std::vector<at::Tensor>& anchors, const std::string& codec) {
  return check_decode_side(Checker("apply_delta"), CodecOp::kApplyDelta, src, tensors, &anchors, codec, 1.0);
}

CodecJob check_decode_into(const at::Tensor& src, const std::vector<at::Tensor>& tensors,
                           const std::string& codec, double scale) {
  return check_decode_side(Checker("decode_into"), CodecOp::kDecodeInto, src, tensors, nullptr, codec, scale);
}

CodecJob check_apply_sum(const at::Tensor& src, int64_t count, const std::vector<at::Tensor>& tensors,
                         const std::vector<at::Tensor>& anchors, const std::string& codec, double scale) {
  const Checker check("apply_sum");
  return check_decode_side(check, CodecOp::kApplySum, src, tensors, anchors.empty() ? nullptr : &anchors, codec,
                           scale, count);
}

namespace {

// The value codec and slots of a top-k call (std::invalid_argument naming them).
Codec check_topk_spec(const Checker& check, int64_t slots, const std::string& values) {
  const Codec v = parse_codec(check.op(), values);
  check(v == Codec::kInt8 || v == Codec::kInt4 || v == Codec::kInt2,
        "values must be one of int8, int4, int2, got '" + values + "'");
  check(slots >= 1 && slots <= kCodecChunk,
        "slots must be in [1, " + num(kCodecChunk) + "], got " + num(slots));
  return v;
}

std::string topk_size(Codec v, int64_t slots, int64_t n) {
  return "topk_encoded_bytes(" + num(n) + ", " + num(slots) + ", '" + codec_name(v) + "') = " +
         num(codec_records(n) * topk_record_bytes(v, slots));
}

}  // namespace

int64_t topk_record_bytes(int64_t slots, const std::string& values) {
  return topk_record_bytes(check_topk_spec(Checker("topk_record_bytes"), slots, values), slots);
}

int64_t topk_encoded_bytes(int64_t n, int64_t slots, const std::string& values) {
  const Checker check("topk_encoded_bytes");
  const Codec v = check_topk_spec(check, slots, values);
  check(n >= 0, "n must be >= 0, got " + num(n));
  return codec_records(n) * topk_record_bytes(v, slots);
}

int64_t topk_slots(double fraction) {
  Checker("topk_slots")(fraction > 0.0 && fraction < 1.0,
                        "fraction must be in (0, 1), got " + std::to_string(fraction));
  return topk_slots_for(fraction);
}

CodecJob check_encode_topk(const std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& anchors,
                           const std::vector<at::Tensor>& residuals, const at::Tensor& out, int64_t slots,
                           const std::string& values) {
  const Checker check("encode_topk");
  CodecJob job;
  job.op = CodecOp::kEncodeTopk;
  job.codec = check_topk_spec(check, slots, values);
  job.slots = slots;
  check_buffer(check, "out", out);
  build_table(check, job, tensors, &anchors, &residuals, out, "out");
  const int64_t n = job.table.offsets[job.table.count];
  check(out.numel() == job.records * topk_record_bytes(job.codec, slots),
        "out has " + num(out.numel()) + " bytes, expected " + topk_size(job.codec, slots, n));
  job.dst = static_cast<uint8_t*>(out.data_ptr());
  return job;
}

CodecJob check_apply_topk(const at::Tensor& src, int64_t count, const std::vector<at::Tensor>& tensors,
                          const std::vector<at::Tensor>& anchors, int64_t slots, const std::string& values,
                          double scale) {
  const Checker check("apply_topk");
  CodecJob job;
  job.op = CodecOp::kApplyTopk;
  job.codec = check_topk_spec(check, slots, values);
  job.slots = slots;
  check(count >= 1, "count must be >= 1, got " + num(count));
  check_buffer(check, "src", src);
  build_table(check, job, tensors, anchors.empty() ? nullptr : &anchors, nullptr, src, "src");
  const int64_t n = job.table.offsets[job.table.count];
  const int64_t one = job.records * topk_record_bytes(job.codec, slots);
  check(src.numel() == count * one, "src has " + num(src.numel()) + " bytes, expected count * " +
                                        topk_size(job.codec, slots, n) + " = " + num(count * one));
  job.src = static_cast<const uint8_t*>(src.data_ptr());
  job.count = count;
  job.scale = scale;
  return job;
}

void run_codec(const CodecJob& job) {
  if (job.records == 0) return;
  c10::OptionalDeviceGuard guard(job.device);
  if (job.device.is_cpu()) {
    run_codec_cpu(job);
  } else {
#ifdef HVD_HIER_WITH_CUDA
    run_codec_cuda(job);
#endif
  }
}

}  // namespace hvd_hier
