// Gemma2Config: transformers' configuration_gemma2.py fields and defaults.
#pragma once

#include <plugformer/decoder.h>

namespace plugformer::gemma2 {

class Gemma2Config : public DecoderConfig {
 public:
  Gemma2Config();
  std::string model_type() const override { return "gemma2"; }
  void visit_fields(ConfigFieldVisitor& v) override;
  // Gemma's decoder with sandwich norms, scores scaled by query_pre_attn_scalar^-0.5 and soft-capped,
  // soft-capped logits, and windows on alternate layers (0, 2, ...) unless layer_types says otherwise.
  DecoderLayout decoder_layout() const override;

  int64_t head_dim = 256;
  std::string hidden_activation = "gelu_pytorch_tanh";
  bool attention_bias = false;
  double query_pre_attn_scalar = 256;
  std::optional<int64_t> sliding_window = 4096;
  std::vector<std::string> layer_types;  // empty: even layers slide
  std::optional<double> final_logit_softcapping = 30.0;
  std::optional<double> attn_logit_softcapping = 50.0;
};

}  // namespace plugformer::gemma2
