// LlamaConfig: transformers' configuration_llama.py fields and defaults.
#pragma once

#include <plugformer/config.h>

namespace plugformer::llama {

class LlamaConfig : public PretrainedConfig {
 public:
  LlamaConfig();
  std::string model_type() const override { return "llama"; }
  void visit_fields(ConfigFieldVisitor& v) override;
  void validate() const override;

  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  std::optional<int64_t> num_key_value_heads;  // null: as many as attention heads
  std::optional<int64_t> head_dim;             // null: hidden_size / num_attention_heads
  std::string hidden_act = "silu";
  int64_t max_position_embeddings = 2048;
  double initializer_range = 0.02;
  double rms_norm_eps = 1e-6;
  int64_t pretraining_tp = 1;
  double rope_theta = 10000.0;
  json rope_scaling;  // null or {rope_type/type, factor, ...}
  bool attention_bias = false;
  double attention_dropout = 0.0;
  bool mlp_bias = false;

  int64_t kv_heads() const { return num_key_value_heads.value_or(num_attention_heads); }
  int64_t head_size() const { return head_dim.value_or(hidden_size / num_attention_heads); }
};

}  // namespace plugformer::llama
