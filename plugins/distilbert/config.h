// DistilBertConfig: transformers' configuration_distilbert.py fields, defaults and attribute_map.
#pragma once

#include <plugformer/config.h>

namespace plugformer::distilbert {

class DistilBertConfig : public PretrainedConfig {
 public:
  DistilBertConfig();
  std::string model_type() const override { return "distilbert"; }
  std::map<std::string, std::string> attribute_map() const override {
    return {{"hidden_size", "dim"}, {"num_attention_heads", "n_heads"}, {"num_hidden_layers", "n_layers"}};
  }
  void visit_fields(ConfigFieldVisitor& v) override;
  void validate() const override;

  int64_t vocab_size = 30522;
  int64_t max_position_embeddings = 512;
  bool sinusoidal_pos_embds = false;
  int64_t n_layers = 6;
  int64_t n_heads = 12;
  int64_t dim = 768;
  int64_t hidden_dim = 4 * 768;
  double dropout = 0.1;
  double attention_dropout = 0.1;
  std::string activation = "gelu";
  double initializer_range = 0.02;
  double qa_dropout = 0.1;
  double seq_classif_dropout = 0.2;
};

}  // namespace plugformer::distilbert
