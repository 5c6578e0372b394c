#include "config.h"

#include <plugformer/error.h>

namespace plugformer::llama {

LlamaConfig::LlamaConfig() {
  model_type_ = "llama";
  bos_token_id = 1;
  eos_token_id = {2};
  tie_word_embeddings = false;
}

void LlamaConfig::visit_fields(ConfigFieldVisitor& v) {
  PretrainedConfig::visit_fields(v);
  v.field("vocab_size", vocab_size);
  v.field("hidden_size", hidden_size);
  v.field("intermediate_size", intermediate_size);
  v.field("num_hidden_layers", num_hidden_layers);
  v.field("num_attention_heads", num_attention_heads);
  v.field("num_key_value_heads", num_key_value_heads);
  v.field("head_dim", head_dim);
  v.field("hidden_act", hidden_act);
  v.field("max_position_embeddings", max_position_embeddings);
  v.field("initializer_range", initializer_range);
  v.field("rms_norm_eps", rms_norm_eps);
  v.field("pretraining_tp", pretraining_tp);
  v.field("rope_theta", rope_theta);
  v.field("rope_scaling", rope_scaling);
  v.field("attention_bias", attention_bias);
  v.field("attention_dropout", attention_dropout);
  v.field("mlp_bias", mlp_bias);
}

void LlamaConfig::validate() const {
  require_positive("vocab_size", vocab_size);
  require_positive("hidden_size", hidden_size);
  require_positive("intermediate_size", intermediate_size);
  require_positive("num_hidden_layers", num_hidden_layers);
  require_positive("num_attention_heads", num_attention_heads);
  require_positive("num_key_value_heads", kv_heads());
  require_positive("head_dim", head_size());
  if (num_attention_heads % kv_heads() != 0)
    throw ConfigError("num_attention_heads (" + std::to_string(num_attention_heads) +
                      ") must be a multiple of num_key_value_heads (" + std::to_string(kv_heads()) + ")");
  if (!head_dim && hidden_size % num_attention_heads != 0)
    throw ConfigError("hidden_size (" + std::to_string(hidden_size) +
                      ") must be divisible by num_attention_heads (" + std::to_string(num_attention_heads) + ")");
}

}  // namespace plugformer::llama
