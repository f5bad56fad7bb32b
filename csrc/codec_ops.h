// Host-side entry points of the compressed-delta ops (csrc/codec.h has the wire format): the
// argument checks, which build the job, and the work, which trusts them (as check_copy and
// copy_unchecked split pack/unpack).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "codec.h"

namespace hvd_hier {

enum class CodecOp : int { kEncodeDelta = 0, kReduceEncoded = 1, kApplyDelta = 2, kDecodeInto = 3, kApplySum = 4,
                            kEncodeTopk = 5, kApplyTopk = 6 };

// One checked call: everything a back end needs.
struct CodecJob {
  CodecOp op = CodecOp::kEncodeDelta;
  Codec codec = Codec::kFp16;
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;  // of the tensors (all but reduce_encoded)
  DeltaTable table{};                 // all but reduce_encoded
  const uint8_t* src = nullptr;       // reduce_encoded, apply_delta, decode_into
  uint8_t* dst = nullptr;             // encode_delta (out), reduce_encoded (dst)
  int64_t records = 0;                // records of one encoded buffer
  int64_t count = 1;                  // reduce_encoded, apply_sum: encoded buffers in src
  double scale = 1.0;                 // reduce_encoded, decode_into, apply_sum, apply_topk
  int64_t slots = 0;                  // the top-k ops: values kept per chunk (codec: their codes)
};

// "fp16", "bf16", "int8", "int4" or "int2"; anything else is std::invalid_argument naming `op` and the value.
Codec parse_codec(const std::string& op, const std::string& name);
// Bytes of one record, and of the encoded buffer for n elements (0 for n = 0).
int64_t codec_record_bytes(const std::string& codec);
int64_t encoded_bytes(const std::string& codec, int64_t n);

// The checks (std::invalid_argument naming the argument; nothing is read or written).
CodecJob check_encode_delta(const std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& anchors,
                            const std::vector<at::Tensor>& residuals, const at::Tensor& out,
                            const std::string& codec);
CodecJob check_reduce_encoded(const at::Tensor& src, const at::Tensor& dst, const std::string& codec,
                              int64_t count, double scale);
CodecJob check_apply_delta(const at::Tensor& src, const std::vector<at::Tensor>& tensors,
                           const std::vector<at::Tensor>& anchors, const std::string& codec);
CodecJob check_decode_into(const at::Tensor& src, const std::vector<at::Tensor>& tensors,
                           const std::string& codec, double scale);
CodecJob check_apply_sum(const at::Tensor& src, int64_t count, const std::vector<at::Tensor>& tensors,
                         const std::vector<at::Tensor>& anchors, const std::string& codec, double scale);

// Top-k (csrc/topk.h): `values` is int8, int4 or int2; slots in [1, CODEC_CHUNK].
int64_t topk_record_bytes(int64_t slots, const std::string& values);
int64_t topk_encoded_bytes(int64_t n, int64_t slots, const std::string& values);
int64_t topk_slots(double fraction);
CodecJob check_encode_topk(const std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& anchors,
                           const std::vector<at::Tensor>& residuals, const at::Tensor& out, int64_t slots,
                           const std::string& values);
CodecJob check_apply_topk(const at::Tensor& src, int64_t count, const std::vector<at::Tensor>& tensors,
                          const std::vector<at::Tensor>& anchors, int64_t slots, const std::string& values,
                          double scale);

// The work of a checked job, on its device (current stream on CUDA).
void run_codec(const CodecJob& job);

// Back ends.
void run_codec_cpu(const CodecJob& job);
// The CUDA kernels' thread code run block by block on the CPU (cpu_kernel_isa "cuda_emulation").
void run_codec_cuda_emulated(const CodecJob& job);
#ifdef HVD_HIER_WITH_CUDA
void run_codec_cuda(const CodecJob& job);
void run_topk_cuda(const CodecJob& job);
#endif

}  // namespace hvd_hier
