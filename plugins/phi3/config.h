// Phi3Config: transformers' configuration_phi3.py fields and defaults (Phi-3 / Phi-3.5 mini, medium).
#pragma once

#include <plugformer/decoder.h>

namespace plugformer::phi3 {

class Phi3Config : public DecoderConfig {
 public:
  Phi3Config();
  std::string model_type() const override { return "phi3"; }
  void visit_fields(ConfigFieldVisitor& v) override;
  // Fused qkv_proj and gate_up_proj, partial rotary, longrope (rope_scaling "longrope", or the
  // older "su" / "yarn" names of the same), every layer windowed when sliding_window is set.
  DecoderLayout decoder_layout() const override;

  double resid_pdrop = 0.0;
  double embd_pdrop = 0.0;
  std::string hidden_act = "silu";
  int64_t original_max_position_embeddings = 4096;
  json rope_scaling;
  double partial_rotary_factor = 1.0;
  std::optional<int64_t> sliding_window;
};

}  // namespace plugformer::phi3
