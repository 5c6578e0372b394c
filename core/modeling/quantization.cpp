// Weight-only int8 quantization, chosen at load (PretrainedOptions::quantization = "int8"):
// every Linear / Conv1D weight becomes int8 with one fp32 scale per output row (absmax / 127,
// symmetric, as bitsandbytes' row-wise int8 and torchao's int8_weight_only). Decode reads a
// quarter of the fp32 bytes; the products dequantize on the fly (matmul.cpp), activations stay
// in the model's dtype.
#include <ATen/ATen.h>

#include <limits>

#include "matmul.h"
#include "plugformer/error.h"
#include "plugformer/layers.h"
#include "plugformer/modeling.h"

namespace plugformer {

namespace {

constexpr const char* kScaleName = "weight_scale";

// Quantizes `weight` ([out, in], or [in, out] when in_out) in place to int8 [out, in] and
// registers its row scales on `layer`.
void quantize_int8(torch::nn::Module& layer, at::Tensor& weight, bool in_out) {
  at::Tensor w = weight.to(at::kFloat);
  if (in_out) w = w.t();
  w = w.contiguous();
  const at::Tensor scale = w.abs().amax(1).div_(127).clamp_min_(std::numeric_limits<float>::min());
  const at::Tensor q = at::round(w / scale.unsqueeze(1)).clamp_(-127, 127).to(at::kChar);
  weight.requires_grad_(false);
  weight.set_data(q);
  layer.register_buffer(kScaleName, scale);
}

}  // namespace

at::Tensor int8_row_scale(const torch::nn::Module& layer, const at::Tensor& weight) {
  if (weight.scalar_type() != at::kChar) return {};
  const at::Tensor* scale = layer.named_buffers(/*recurse=*/false).find(kScaleName);
  if (!scale) throw Error("int8 weight without its '" + std::string(kScaleName) + "' buffer");
  return scale->to(at::kFloat);
}

void PreTrainedModel::quantize(const std::string& method) {
  if (method != "int8")
    throw InvalidInputError("quantization '" + method + "' is not supported (supported: int8, weight-only)");
  torch::NoGradGuard no_grad;
  int64_t layers = 0;  // already quantized ones are left as they are
  for (const auto& item : named_modules()) {
    torch::nn::Module& module = *item.value();
    if (auto* linear = dynamic_cast<Linear*>(&module)) {
      ++layers;
      if (linear->weight.is_floating_point()) quantize_int8(module, linear->weight, /*in_out=*/false);
    } else if (auto* conv = dynamic_cast<Conv1D*>(&module)) {
      ++layers;
      if (conv->weight.is_floating_point()) quantize_int8(module, conv->weight, /*in_out=*/true);
    }
  }
  if (layers == 0) throw InvalidInputError(class_name() + " has no Linear or Conv1D layer to quantize");
}

bool PreTrainedModel::is_quantized() const {
  for (const auto& item : named_parameters(/*recurse=*/true))
    if (item.value().scalar_type() == at::kChar) return true;
  return false;
}

}  // namespace plugformer
