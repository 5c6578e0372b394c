// Prompt learning inside core: the virtual-token encoder of a prompt tuning or prefix tuning
// adapter (PEFT's PromptEmbedding / PrefixEncoder), named as PEFT names it.
#pragma once

#include <memory>

#include <torch/nn/module.h>

#include "plugformer/layers.h"

namespace plugformer {

class PromptEncoder : public torch::nn::Module {
 public:
  // `tokens` rows of `out_dim` values: an embedding table, or (prefix projection while training)
  // an embedding of `in_dim` followed by Linear -> tanh -> Linear through `hidden`.
  PromptEncoder(int64_t tokens, int64_t in_dim, int64_t hidden, int64_t out_dim);
  at::Tensor forward() const;  // [tokens, out_dim]

  std::shared_ptr<Embedding> embedding;

 private:
  std::shared_ptr<Linear> first_, second_;
};

}  // namespace plugformer
