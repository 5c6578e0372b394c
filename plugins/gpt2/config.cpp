#include "config.h"

#include <plugformer/error.h>

namespace plugformer::gpt2 {

GPT2Config::GPT2Config() {
  model_type_ = "gpt2";
  bos_token_id = 50256;
  eos_token_id = {50256};
  tie_word_embeddings = true;
}

void GPT2Config::visit_fields(ConfigFieldVisitor& v) {
  PretrainedConfig::visit_fields(v);
  v.field("vocab_size", vocab_size);
  v.field("n_positions", n_positions);
  v.field("n_embd", n_embd);
  v.field("n_layer", n_layer);
  v.field("n_head", n_head);
  v.field("n_inner", n_inner);
  v.field("activation_function", activation_function);
  v.field("resid_pdrop", resid_pdrop);
  v.field("embd_pdrop", embd_pdrop);
  v.field("attn_pdrop", attn_pdrop);
  v.field("layer_norm_epsilon", layer_norm_epsilon);
  v.field("initializer_range", initializer_range);
  v.field("summary_type", summary_type);
  v.field("summary_use_proj", summary_use_proj);
  v.field("summary_activation", summary_activation);
  v.field("summary_proj_to_labels", summary_proj_to_labels);
  v.field("summary_first_dropout", summary_first_dropout);
  v.field("scale_attn_weights", scale_attn_weights);
  v.field("scale_attn_by_inverse_layer_idx", scale_attn_by_inverse_layer_idx);
  v.field("reorder_and_upcast_attn", reorder_and_upcast_attn);
}

void GPT2Config::validate() const {
  require_positive("vocab_size", vocab_size);
  require_positive("n_positions", n_positions);
  require_positive("n_embd", n_embd);
  require_positive("n_layer", n_layer);
  require_positive("n_head", n_head);
  require_positive("n_inner", inner_dim());
  if (n_embd % n_head != 0)
    throw ConfigError("n_embd (" + std::to_string(n_embd) + ") must be divisible by n_head (" + std::to_string(n_head) +
                      ")");
  if (layer_norm_epsilon <= 0)
    throw ConfigError("field 'layer_norm_epsilon' must be positive, got " + std::to_string(layer_norm_epsilon));
}

}  // namespace plugformer::gpt2
