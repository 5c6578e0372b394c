// ModernBertConfig: transformers' configuration_modernbert.py fields and defaults.
#pragma once

#include <optional>
#include <string>

#include <plugformer/config.h>

namespace plugformer::modernbert {

class ModernBertConfig : public PretrainedConfig {
 public:
  ModernBertConfig();
  std::string model_type() const override { return "modernbert"; }
  void visit_fields(ConfigFieldVisitor& v) override;
  void validate() const override;

  int64_t vocab_size = 50368;
  int64_t hidden_size = 768;
  int64_t intermediate_size = 1152;
  int64_t num_hidden_layers = 22;
  int64_t num_attention_heads = 12;
  std::string hidden_activation = "gelu";
  int64_t max_position_embeddings = 8192;
  double initializer_range = 0.02;
  double initializer_cutoff_factor = 2.0;
  double norm_eps = 1e-5;
  bool norm_bias = false;
  double global_rope_theta = 160000.0;
  std::optional<double> local_rope_theta = 10000.0;  // null: the global theta
  bool attention_bias = false;
  double attention_dropout = 0.0;
  int64_t global_attn_every_n_layers = 3;
  int64_t local_attention = 128;  // window: a local layer sees keys within local_attention / 2 slots
  double embedding_dropout = 0.0;
  bool mlp_bias = false;
  double mlp_dropout = 0.0;
  bool decoder_bias = true;
  std::string classifier_pooling = "cls";  // "cls" or "mean"
  double classifier_dropout = 0.0;
  bool classifier_bias = false;
  std::string classifier_activation = "gelu";
  bool sparse_prediction = false;
  int64_t sparse_pred_ignore_index = -100;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  bool is_global_layer(int64_t layer) const { return layer % global_attn_every_n_layers == 0; }
};

}  // namespace plugformer::modernbert
