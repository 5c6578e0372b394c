#include "peft/prompt.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/init.h>

#include <cmath>

namespace plugformer {

PromptEncoder::PromptEncoder(int64_t tokens, int64_t in_dim, int64_t hidden, int64_t out_dim) {
  torch::NoGradGuard no_grad;
  embedding = register_module("embedding", std::make_shared<Embedding>(tokens, hidden > 0 ? in_dim : out_dim));
  embedding->weight.normal_();  // torch.nn.Embedding's initialisation, as PEFT's random init
  if (hidden > 0) {
    // PEFT's transform = Sequential(Linear, Tanh, Linear): children "0" and "2".
    auto transform = register_module("transform", std::make_shared<torch::nn::Module>());
    first_ = transform->register_module("0", std::make_shared<Linear>(in_dim, hidden));
    second_ = transform->register_module("2", std::make_shared<Linear>(hidden, out_dim));
    for (const auto& layer : {first_, second_}) {
      // torch.nn.Linear's initialisation.
      torch::nn::init::kaiming_uniform_(layer->weight, std::sqrt(5.0));
      const double bound = 1.0 / std::sqrt(double(layer->weight.size(1)));
      layer->bias.uniform_(-bound, bound);
    }
  }
}

at::Tensor PromptEncoder::forward() const {
  at::Tensor rows = embedding->weight;
  static const Activation tanh = get_activation("tanh");
  if (first_) rows = second_->forward(tanh(first_->forward(rows)));
  return rows;
}

}  // namespace plugformer
