// Qwen2Config: transformers' configuration_qwen2.py fields and defaults (Qwen2 / Qwen2.5).
#pragma once

#include <plugformer/decoder.h>

namespace plugformer::qwen2 {

class Qwen2Config : public DecoderConfig {
 public:
  Qwen2Config();
  std::string model_type() const override { return "qwen2"; }
  void visit_fields(ConfigFieldVisitor& v) override;
  // Biases on q / k / v (not o); windows only with use_sliding_window, on layers from
  // max_window_layers on (or as layer_types says).
  DecoderLayout decoder_layout() const override;

  std::string hidden_act = "silu";
  json rope_scaling;
  bool use_sliding_window = false;
  std::optional<int64_t> sliding_window = 4096;
  int64_t max_window_layers = 28;
  std::vector<std::string> layer_types;  // empty: derived from the window settings
};

}  // namespace plugformer::qwen2
