// LlamaConfig: transformers' configuration_llama.py fields and defaults.
#pragma once

#include <plugformer/decoder.h>

namespace plugformer::llama {

class LlamaConfig : public DecoderConfig {
 public:
  LlamaConfig();
  std::string model_type() const override { return "llama"; }
  void visit_fields(ConfigFieldVisitor& v) override;
  // The plain decoder: separate projections, attention_bias on q/k/v/o, mlp_bias, full attention.
  DecoderLayout decoder_layout() const override;

  std::optional<int64_t> head_dim;  // null: hidden_size / num_attention_heads
  std::string hidden_act = "silu";
  int64_t pretraining_tp = 1;
  json rope_scaling;  // null or {rope_type/type, factor, ...}
  bool attention_bias = false;
  bool mlp_bias = false;
};

}  // namespace plugformer::llama
