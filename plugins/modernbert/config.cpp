#include "config.h"

#include <plugformer/error.h>
#include <plugformer/layers.h>

namespace plugformer::modernbert {

ModernBertConfig::ModernBertConfig() {
  model_type_ = "modernbert";
  pad_token_id = 50283;
  bos_token_id = 50281;
  eos_token_id = {50282};
}

void ModernBertConfig::visit_fields(ConfigFieldVisitor& v) {
  PretrainedConfig::visit_fields(v);
  v.field("vocab_size", vocab_size);
  v.field("hidden_size", hidden_size);
  v.field("intermediate_size", intermediate_size);
  v.field("num_hidden_layers", num_hidden_layers);
  v.field("num_attention_heads", num_attention_heads);
  v.field("hidden_activation", hidden_activation);
  v.field("max_position_embeddings", max_position_embeddings);
  v.field("initializer_range", initializer_range);
  v.field("initializer_cutoff_factor", initializer_cutoff_factor);
  v.field("norm_eps", norm_eps);
  v.field("norm_bias", norm_bias);
  v.field("global_rope_theta", global_rope_theta);
  v.field("local_rope_theta", local_rope_theta);
  v.field("attention_bias", attention_bias);
  v.field("attention_dropout", attention_dropout);
  v.field("global_attn_every_n_layers", global_attn_every_n_layers);
  v.field("local_attention", local_attention);
  v.field("embedding_dropout", embedding_dropout);
  v.field("mlp_bias", mlp_bias);
  v.field("mlp_dropout", mlp_dropout);
  v.field("decoder_bias", decoder_bias);
  v.field("classifier_pooling", classifier_pooling);
  v.field("classifier_dropout", classifier_dropout);
  v.field("classifier_bias", classifier_bias);
  v.field("classifier_activation", classifier_activation);
  v.field("sparse_prediction", sparse_prediction);
  v.field("sparse_pred_ignore_index", sparse_pred_ignore_index);
}

void ModernBertConfig::validate() const {
  require_positive("vocab_size", vocab_size);
  require_positive("hidden_size", hidden_size);
  require_positive("intermediate_size", intermediate_size);
  require_positive("num_hidden_layers", num_hidden_layers);
  require_positive("num_attention_heads", num_attention_heads);
  require_positive("max_position_embeddings", max_position_embeddings);
  require_positive("global_attn_every_n_layers", global_attn_every_n_layers);
  require_positive("local_attention", local_attention);
  if (hidden_size % num_attention_heads != 0)
    throw ConfigError("field 'hidden_size' (" + std::to_string(hidden_size) + ") must be a multiple of " +
                      "'num_attention_heads' (" + std::to_string(num_attention_heads) + ")");
  if (head_dim() % 2 != 0) throw ConfigError("the head dimension (hidden_size / num_attention_heads) must be even for rotary embeddings");
  if (classifier_pooling != "cls" && classifier_pooling != "mean")
    throw ConfigError("field 'classifier_pooling' must be \"cls\" or \"mean\", got \"" + classifier_pooling + "\"");
  get_activation(hidden_activation);  // ConfigError for names transformers does not know
  get_activation(classifier_activation);
}

}  // namespace plugformer::modernbert
