// Qwen3Config: transformers' configuration_qwen3.py fields and defaults.
#pragma once

#include <plugformer/decoder.h>

namespace plugformer::qwen3 {

class Qwen3Config : public DecoderConfig {
 public:
  Qwen3Config();
  std::string model_type() const override { return "qwen3"; }
  void visit_fields(ConfigFieldVisitor& v) override;
  // Qwen2's decoder with an explicit head_dim, RMSNorm over each q / k head (q_norm, k_norm) and
  // attention_bias on q / k / v / o.
  DecoderLayout decoder_layout() const override;

  std::optional<int64_t> head_dim = 128;
  std::string hidden_act = "silu";
  json rope_scaling;
  bool attention_bias = false;
  bool use_sliding_window = false;
  std::optional<int64_t> sliding_window = 4096;
  int64_t max_window_layers = 28;
  std::vector<std::string> layer_types;  // empty: derived from the window settings
};

}  // namespace plugformer::qwen3
