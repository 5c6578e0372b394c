// GemmaConfig: transformers' configuration_gemma.py fields and defaults.
#pragma once

#include <plugformer/decoder.h>

namespace plugformer::gemma {

class GemmaConfig : public DecoderConfig {
 public:
  GemmaConfig();
  std::string model_type() const override { return "gemma"; }
  void visit_fields(ConfigFieldVisitor& v) override;
  // Llama's decoder with (1 + w) norms, embeddings scaled by sqrt(hidden_size) and a tied head.
  DecoderLayout decoder_layout() const override;

  int64_t head_dim = 256;
  std::string hidden_act = "gelu_pytorch_tanh";
  std::optional<std::string> hidden_activation;  // older checkpoints: overrides hidden_act
  bool attention_bias = false;
};

}  // namespace plugformer::gemma
