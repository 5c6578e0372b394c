// T5Config: transformers' configuration_t5.py fields and defaults. feed_forward_proj decides the
// feed-forward flavour ("relu" as in the original T5, "gated-gelu" as in T5 v1.1 / flan-t5);
// dense_act_fn and is_gated_act are derived from it, as transformers does.
#pragma once

#include <plugformer/config.h>

namespace plugformer::t5 {

class T5Config : public PretrainedConfig {
 public:
  T5Config();
  std::string model_type() const override { return "t5"; }
  std::map<std::string, std::string> attribute_map() const override {
    return {{"hidden_size", "d_model"},
            {"num_attention_heads", "num_heads"},
            {"num_hidden_layers", "num_layers"},
            {"head_dim", "d_kv"}};
  }
  void visit_fields(ConfigFieldVisitor& v) override;
  // Checks the sizes and derives dense_act_fn / is_gated_act from feed_forward_proj.
  void validate() const override;

  int64_t vocab_size = 32128;
  int64_t d_model = 512;
  int64_t d_kv = 64;
  int64_t d_ff = 2048;
  int64_t num_layers = 6;
  std::optional<int64_t> num_decoder_layers;  // null: num_layers
  int64_t num_heads = 8;
  int64_t relative_attention_num_buckets = 32;
  int64_t relative_attention_max_distance = 128;
  double dropout_rate = 0.1;
  std::optional<double> classifier_dropout = 0.0;
  double layer_norm_epsilon = 1e-6;
  double initializer_factor = 1.0;
  std::string feed_forward_proj = "relu";
  // Derived from feed_forward_proj in validate() (written to config.json like transformers does).
  mutable std::string dense_act_fn = "relu";
  mutable bool is_gated_act = false;

  int64_t decoder_layers() const { return num_decoder_layers.value_or(num_layers); }
  int64_t inner_dim() const { return num_heads * d_kv; }
};

}  // namespace plugformer::t5
