// computed_in_fp32, shared by the norms (layers.cpp) and the activations (activations.cpp).
#pragma once

#include <ATen/ATen.h>

#include <functional>

namespace plugformer {

// Whether rows_in_fp32 takes x: bf16, contiguous, large (a prompt's activations), no autograd.
bool rows_in_fp32_apply(const at::Tensor& x);
// f(x in fp32) rounded to bf16, over blocks of x's rows (its last dimension), each widened, f'd and
// rounded while it sits in L2, in parallel: one pass over memory instead of three (GELU of 682 x 3072
// bf16 values: libtorch's conversions took 0.63 ms to fp32 and 0.35 back around the op's 0.87). f must treat the rows
// independently (elementwise, or over the last dimension) and return fp32 of its input's size.
at::Tensor rows_in_fp32(const at::Tensor& x, const std::function<at::Tensor(const at::Tensor&)>& f);

// Attention's softmax(scores * scale + mask) of bf16 scores [batch, heads, q_len, kv_len] (mask
// bf16, expanded to their shape, or undefined): each op rounded to bf16 as the libtorch ops on
// bf16 tensors round it, the softmax in fp32 with at::softmax's bits, rounded once, a row at a time
// (a 512-token prompt's scores: 0.70 -> 0.55 ms per 4 heads on the Intel AMX Xeon, its exps
// skipped where they are exactly 0).
bool scaled_masked_softmax_applies(const at::Tensor& scores, const at::Tensor& mask);
at::Tensor scaled_masked_softmax(const at::Tensor& scores, double scale, const at::Tensor& mask);

// Decode-sized conversions (at most 64 K values, contiguous, no autograd, AVX2): x (bf16 / fp16 /
// fp32) widened to fp32, and fp32 y [..., width] plus a [width] bias (when defined; bf16 / fp16 /
// fp32) rounded once to bf16 / fp16, each one loop on the calling thread, with libtorch's results.
// Its conversion op's dispatch and allocations cost more than the copy at these sizes, and a bf16
// decode step converts ~150 such tensors.
bool small_conversion_applies(const at::Tensor& t);
at::Tensor widened_to_fp32(const at::Tensor& x);
at::Tensor rounded_from_fp32(const at::Tensor& y, const at::Tensor& bias, c10::ScalarType type);

// f(x) for fp32 / fp64 x; for bf16 / fp16 x, f computed in fp32 and rounded once to x's type, as
// PyTorch 2 computes norms and activations of 2-byte types. libtorch 1.13's own bf16 kernels round
// intermediate values (about 40% of its bf16 layer_norm / gelu / silu outputs are not the nearest
// bf16 of the exact result), and it has none of these for fp16 on CPU.
template <class F>
at::Tensor computed_in_fp32(const at::Tensor& x, F&& f) {
  if (x.scalar_type() != at::kBFloat16 && x.scalar_type() != at::kHalf) return f(x);
  if (rows_in_fp32_apply(x)) return rows_in_fp32(x, f);
  if (small_conversion_applies(x)) {
    const at::Tensor y = f(widened_to_fp32(x));
    if (small_conversion_applies(y) && y.scalar_type() == at::kFloat) return rounded_from_fp32(y, {}, x.scalar_type());
    return y.to(x.scalar_type());
  }
  return f(x.to(at::kFloat)).to(x.scalar_type());
}

}  // namespace plugformer
