// Matrix products used by the shared layers (core-internal).
#pragma once

#include <ATen/core/Tensor.h>

namespace plugformer {

// The CPU runs the AVX2 + FMA kernels of this folder.
bool cpu_has_avx2_fma();
// True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX), where libtorch's own bf16
// products are fast.
bool native_reduced_precision_matmul();
// x and weight share a 2-byte floating type that this CPU has no fast products for.
bool use_reduced_precision_fallback(const at::Tensor& x, const at::Tensor& weight);
// x W^T + b (x W + b with weight_in_out, GPT-2's Conv1D layout) for 2-byte x / weight without
// native support: fp32 arithmetic, result rounded to x's type. Few rows stream the 2-byte weight
// through an AVX2 kernel; more rows use sgemm.
at::Tensor reduced_precision_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                    bool weight_in_out = false);
// at::matmul, computed in fp32 (result rounded back) for 2-byte inputs without native support.
at::Tensor matmul_any_precision(const at::Tensor& a, const at::Tensor& b);

// One query position per head (decode) in fp32 without autograd, keys/values with contiguous
// rows: attention computed in one pass over the cache (attention_kernel.cpp).
bool single_query_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& mask);
at::Tensor single_query_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& mask, double scale);

}  // namespace plugformer
