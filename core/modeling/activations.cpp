// Activation functions by transformers' ACT2FN names (layers.h). Apart from layers.cpp because
// configs check their activation names with it (fuzz/config_json compiles it without the modules).
#include "plugformer/error.h"
#include "plugformer/layers.h"

#include "fp32.h"

namespace plugformer {

Activation get_activation(const std::string& name) {
  // Each activation is one PyTorch op except quick_gelu, which transformers spells as two (its
  // product rounds separately).
  auto in_fp32 = [](at::Tensor (*f)(const at::Tensor&)) -> Activation {
    return [f](const at::Tensor& x) { return computed_in_fp32(x, f); };
  };
  if (name == "gelu") return in_fp32([](const at::Tensor& x) { return at::gelu(x); });
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast")
    return in_fp32([](const at::Tensor& x) { return at::gelu(x, "tanh"); });
  if (name == "quick_gelu")
    return [](const at::Tensor& x) {
      return x * computed_in_fp32(1.702 * x, [](const at::Tensor& h) { return at::sigmoid(h); });
    };
  if (name == "relu") return in_fp32([](const at::Tensor& x) { return at::relu(x); });
  if (name == "relu6") return in_fp32([](const at::Tensor& x) { return at::hardtanh(x, 0, 6); });
  if (name == "silu" || name == "swish") return in_fp32([](const at::Tensor& x) { return at::silu(x); });
  if (name == "tanh") return in_fp32([](const at::Tensor& x) { return at::tanh(x); });
  if (name == "sigmoid") return in_fp32([](const at::Tensor& x) { return at::sigmoid(x); });
  if (name == "mish") return in_fp32([](const at::Tensor& x) { return at::mish(x); });
  if (name == "linear") return [](const at::Tensor& x) { return x; };
  throw ConfigError("unknown activation function '" + name +
                    "' (known: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, relu, relu6, silu, swish, "
                    "tanh, sigmoid, mish, linear)");
}

}  // namespace plugformer
