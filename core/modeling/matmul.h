// Matrix products used by the shared layers (core-internal).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <functional>
#include <initializer_list>

namespace plugformer {

// The kernels of this folder run: cpu_isa() (runtime.h) is at least avx2 (AVX2 + FMA + F16C).
bool cpu_has_avx2_fma();
// Whether a linear product of `rows` rows with a weight of this type ([in, out] with
// weight_in_out) is computed in fp32 arithmetic (result rounded back to the type) rather than by
// libtorch in that type.
bool products_in_fp32(c10::ScalarType type, int64_t rows, bool weight_in_out = false);
// Whether a product of these operands is part of a training computation: autograd records it,
// or it runs under TrainingPassGuard. The inference-only kernels below apply only when not.
bool trains_through(std::initializer_list<at::Tensor> operands);
// Whether nothing computed now is part of a training computation: no autograd, no TrainingPassGuard.
bool inference_only();
// f over the rows of x ([..., in] -> [..., out]); for inference on many rows, in chunks of rows whose
// widest fp32 intermediate (`width` values a row) stays within 8 MB: glibc maps every block above
// 32 MB afresh, and each of its pages faults on first touch.
at::Tensor in_row_chunks(const at::Tensor& x, int64_t width, const std::function<at::Tensor(const at::Tensor&)>& f);
// The gradient-free first pass of a checkpointed layer: the kernels are chosen as with autograd,
// so that pass computes bit for bit what its recomputation in backward will.
class TrainingPassGuard {
 public:
  TrainingPassGuard();
  ~TrainingPassGuard();
  TrainingPassGuard(const TrainingPassGuard&) = delete;
  TrainingPassGuard& operator=(const TrainingPassGuard&) = delete;

 private:
  bool previous_;
};

// x W^T + b (x W + b with weight_in_out, GPT-2's Conv1D layout). Without autograd, short inputs
// (decode: up to 8 rows; 32 for 2-byte and int8 weights and for fp32 [out, in] weights of at
// least 128 x 128 values) stream the weight through a kernel of the CPU's level (AVX2, AVX-512:
// fp32 arithmetic; AVX512-BF16: bf16 pairs multiplied exactly, summed in fp32); longer
// fp16 inputs, and bf16 ones off the native route (runtime.h's Bf16Route), are multiplied in
// fp32 (result rounded to x's type, as PyTorch's arithmetic); int8 weights (always [out, in])
// carry per-row scales in row_scale, and longer inputs multiply them in integers where
// int8_products_in_integers says so (else sgemm on the dequantized weight). On AMX, bf16 inputs
// beyond 32 rows, and prompts (more than one position per sequence) beyond 8, go to oneDNN's tiles.
at::Tensor linear_product(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                          const at::Tensor& row_scale = at::Tensor(), bool weight_in_out = false);
// Whether int8-weight products with `in` input features multiply in integers here (AVX512-VNNI
// at level avx512 or above, in <= 65536), and that product: x [rows, in] (fp32, contiguous) times
// the int8 weight [out, in] with its per-row scales, the activations quantized on the fly in two
// int8 parts (int8_products.cpp). Undefined when x holds a NaN or infinity.
bool int8_products_in_integers(int64_t in);
at::Tensor int8_integer_product(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& row_scale);
// The per-row scales of an int8 weight of `layer` (quantization.cpp); undefined for other weights.
at::Tensor int8_row_scale(const torch::nn::Module& layer, const at::Tensor& weight);

// Whether attention's products of this type are libtorch's in that type: bf16 on the native route,
// where libtorch 1.13 hands batched bf16 products of every attention shape to oneDNN.
bool attention_products_in_bf16(c10::ScalarType type);
// at::matmul; for 2-byte inputs computed in fp32 (result rounded back) unless
// attention_products_in_bf16.
at::Tensor matmul_any_precision(const at::Tensor& a, const at::Tensor& b);

// Attention computed one query row at a time in one pass over the keys and one over the values
// (attention_kernel.cpp), without autograd, rows of q / k / v contiguous: one query position
// (decode) in fp32 / bf16 / fp16, or fp32 heads with few scores (short encoder inputs); softcap as
// attention()'s. The result is a view of [batch, q_len, heads, dim].
bool fused_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask);
at::Tensor fused_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                           double scale, double softcap = 0.0);
// One decode query per batch row (q [rows, heads, 1, dim]) against that row's own keys / values
// (k[i], v[i]: [1, kv_heads, len_i, dim]), every (row, head) pair in one parallel region; each
// row's result is the one fused_attention gives it alone.
bool fused_attention_rows_applies(const at::Tensor& q, const std::vector<at::Tensor>& k, const std::vector<at::Tensor>& v);
at::Tensor fused_attention_rows(const at::Tensor& q, const std::vector<at::Tensor>& k, const std::vector<at::Tensor>& v,
                                double scale, double softcap = 0.0);

}  // namespace plugformer
