// Llama: transformers' modeling_llama.py (RMSNorm, rotate_half RoPE, grouped-query attention,
// SiLU-gated MLP) composed from the SDK layers, with transformers' parameter names.
#pragma once

#include <plugformer/layers.h>
#include <plugformer/modeling.h>

#include "config.h"

namespace plugformer::llama {

class LlamaAttention : public torch::nn::Module {
 public:
  LlamaAttention(const LlamaConfig& config, int64_t layer_idx);
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask,
                     KVCache* cache, at::Tensor* probs);

 private:
  int64_t layer_idx_, heads_, kv_heads_, head_dim_;
  std::shared_ptr<Linear> q_proj_, k_proj_, v_proj_, o_proj_;
};

class LlamaMLP : public torch::nn::Module {
 public:
  explicit LlamaMLP(const LlamaConfig& config);
  at::Tensor forward(const at::Tensor& x) const;

 private:
  std::shared_ptr<Linear> gate_proj_, up_proj_, down_proj_;
  Activation act_;
};

class LlamaDecoderLayer : public torch::nn::Module {
 public:
  LlamaDecoderLayer(const LlamaConfig& config, int64_t layer_idx);
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask,
                     KVCache* cache, at::Tensor* probs);

 private:
  std::shared_ptr<LlamaAttention> self_attn_;
  std::shared_ptr<LlamaMLP> mlp_;
  std::shared_ptr<RMSNorm> input_layernorm_, post_attention_layernorm_;
};

class LlamaModel : public PreTrainedModel {
 public:
  explicit LlamaModel(std::shared_ptr<LlamaConfig> config);
  std::string class_name() const override { return "LlamaModel"; }
  std::string base_model_prefix() const override { return "model"; }
  std::vector<std::string> ignored_unexpected_keys() const override { return {R"(rotary_emb\.inv_freq)"}; }
  bool supports_gradient_checkpointing() const override { return true; }
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  std::string input_embeddings_name() const override { return "embed_tokens"; }

 private:
  const LlamaConfig& cfg_;
  std::shared_ptr<Embedding> embed_tokens_;
  std::vector<std::shared_ptr<LlamaDecoderLayer>> layers_;
  std::shared_ptr<RMSNorm> norm_;
  RotaryEmbedding rotary_;
};

// The head classes hold a LlamaModel named "model" and add their head on top of it.
class LlamaHeadModel : public PreTrainedModel {
 public:
  explicit LlamaHeadModel(std::shared_ptr<LlamaConfig> config);
  std::string base_model_prefix() const override { return "model"; }
  std::vector<std::string> ignored_unexpected_keys() const override { return {R"(rotary_emb\.inv_freq)"}; }

 protected:
  std::shared_ptr<LlamaModel> model_;
};

class LlamaForCausalLM : public LlamaHeadModel {
 public:
  explicit LlamaForCausalLM(std::shared_ptr<LlamaConfig> config);
  std::string class_name() const override { return "LlamaForCausalLM"; }
  std::vector<std::pair<std::string, std::string>> tied_weights() const override {
    return {{"lm_head.weight", "model.embed_tokens.weight"}};
  }
  bool can_generate() const override { return true; }
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  std::string output_embeddings_name() const override { return "lm_head"; }

 private:
  std::shared_ptr<Linear> lm_head_;
};

class LlamaForSequenceClassification : public LlamaHeadModel {
 public:
  explicit LlamaForSequenceClassification(std::shared_ptr<LlamaConfig> config);
  std::string class_name() const override { return "LlamaForSequenceClassification"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<Linear> score_;
};

}  // namespace plugformer::llama
