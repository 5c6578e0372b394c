// BertConfig: transformers' configuration_bert.py fields and defaults.
#pragma once

#include <plugformer/config.h>

namespace plugformer::bert {

class BertConfig : public PretrainedConfig {
 public:
  BertConfig();
  std::string model_type() const override { return "bert"; }
  void visit_fields(ConfigFieldVisitor& v) override;
  void validate() const override;

  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double initializer_range = 0.02;
  double layer_norm_eps = 1e-12;
  std::string position_embedding_type = "absolute";
  std::optional<double> classifier_dropout;  // null: hidden_dropout_prob

  int64_t head_size() const { return hidden_size / num_attention_heads; }
};

}  // namespace plugformer::bert
