// Inference kernels that do in one pass what the shared layers otherwise spell as several
// libtorch ops (core-internal). At decode sizes each op's dispatch and allocation cost more than
// its arithmetic, so these keep a decode step's small operations from outweighing the weight
// streaming. Each computes what the op sequence computes, with the same roundings for 2-byte
// types; they apply without autograd only (trains_through), to fp32 / bf16 / fp16 CPU tensors.
#pragma once

#include <ATen/core/Tensor.h>

namespace plugformer {

// RMSNorm as transformers computes it: weight * (x * rsqrt(mean(x^2) + eps)) in fp32, the
// normalised value rounded to x's type before the weight multiplies it; with unit_offset (Gemma)
// (1 + weight) * normalised value in fp32, rounded once.
bool fused_rms_norm_applies(const at::Tensor& x, const at::Tensor& weight);
at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, bool unit_offset = false);

// x * cos + rotate_half(x) * sin on the first cos.size(-1) features of x [batch, heads, len, dim]
// (cos, sin: [batch or 1, len, rotary_dim]); the remaining features pass through.
bool fused_rotary_applies(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor fused_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace plugformer
