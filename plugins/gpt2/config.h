// GPT2Config: transformers' configuration_gpt2.py fields and defaults. Fields carry the names
// config.json uses (n_embd, n_layer, ...); the common names are aliases (attribute_map).
#pragma once

#include <plugformer/config.h>

namespace plugformer::gpt2 {

class GPT2Config : public PretrainedConfig {
 public:
  GPT2Config();
  std::string model_type() const override { return "gpt2"; }
  // alias -> field, as transformers' GPT2Config.attribute_map.
  std::map<std::string, std::string> attribute_map() const override {
    return {{"hidden_size", "n_embd"},
            {"max_position_embeddings", "n_positions"},
            {"num_attention_heads", "n_head"},
            {"num_hidden_layers", "n_layer"}};
  }
  void visit_fields(ConfigFieldVisitor& v) override;
  void validate() const override;

  int64_t vocab_size = 50257;
  int64_t n_positions = 1024;
  int64_t n_embd = 768;
  int64_t n_layer = 12;
  int64_t n_head = 12;
  std::optional<int64_t> n_inner;  // null: 4 * n_embd
  std::string activation_function = "gelu_new";
  double resid_pdrop = 0.1;
  double embd_pdrop = 0.1;
  double attn_pdrop = 0.1;
  double layer_norm_epsilon = 1e-5;
  double initializer_range = 0.02;
  std::string summary_type = "cls_index";
  bool summary_use_proj = true;
  std::optional<std::string> summary_activation;
  bool summary_proj_to_labels = true;
  double summary_first_dropout = 0.1;
  bool scale_attn_weights = true;
  bool scale_attn_by_inverse_layer_idx = false;
  bool reorder_and_upcast_attn = false;

  int64_t inner_dim() const { return n_inner.value_or(4 * n_embd); }
  int64_t head_dim() const { return n_embd / n_head; }
};

}  // namespace plugformer::gpt2
