// MistralConfig: transformers' configuration_mistral.py fields and defaults.
#pragma once

#include <plugformer/decoder.h>

namespace plugformer::mistral {

class MistralConfig : public DecoderConfig {
 public:
  MistralConfig();
  std::string model_type() const override { return "mistral"; }
  void visit_fields(ConfigFieldVisitor& v) override;
  // Llama's decoder without biases; every layer windowed when sliding_window is set.
  DecoderLayout decoder_layout() const override;

  std::optional<int64_t> head_dim;  // null: hidden_size / num_attention_heads
  std::string hidden_act = "silu";
  std::optional<int64_t> sliding_window = 4096;
};

}  // namespace plugformer::mistral
