// computed_in_fp32, shared by the norms (layers.cpp) and the activations (activations.cpp).
#pragma once

#include <ATen/ATen.h>

namespace plugformer {

// f(x) for fp32 / fp64 x; for bf16 / fp16 x, f computed in fp32 and rounded once to x's type, as
// PyTorch 2 computes norms and activations of 2-byte types. libtorch 1.13's own bf16 kernels round
// intermediate values (about 40% of its bf16 layer_norm / gelu / silu outputs are not the nearest
// bf16 of the exact result), and it has none of these for fp16 on CPU.
template <class F>
at::Tensor computed_in_fp32(const at::Tensor& x, F&& f) {
  if (x.scalar_type() != at::kBFloat16 && x.scalar_type() != at::kHalf) return f(x);
  return f(x.to(at::kFloat)).to(x.scalar_type());
}

}  // namespace plugformer
