// BertStyleConfig (encoder.h): configuration_bert.py's fields and their checks. Apart from
// encoder.cpp so config parsing builds without the modules (fuzz/config_json).
#include "plugformer/encoder.h"

#include "plugformer/error.h"

namespace plugformer {

void BertStyleConfig::visit_fields(ConfigFieldVisitor& v) {
  PretrainedConfig::visit_fields(v);
  v.field("vocab_size", vocab_size);
  v.field("hidden_size", hidden_size);
  v.field("num_hidden_layers", num_hidden_layers);
  v.field("num_attention_heads", num_attention_heads);
  v.field("intermediate_size", intermediate_size);
  v.field("hidden_act", hidden_act);
  v.field("hidden_dropout_prob", hidden_dropout_prob);
  v.field("attention_probs_dropout_prob", attention_probs_dropout_prob);
  v.field("max_position_embeddings", max_position_embeddings);
  v.field("type_vocab_size", type_vocab_size);
  v.field("initializer_range", initializer_range);
  v.field("layer_norm_eps", layer_norm_eps);
  v.field("position_embedding_type", position_embedding_type);
  v.field("classifier_dropout", classifier_dropout);
}

void BertStyleConfig::validate() const {
  require_positive("vocab_size", vocab_size);
  require_positive("hidden_size", hidden_size);
  require_positive("num_hidden_layers", num_hidden_layers);
  require_positive("num_attention_heads", num_attention_heads);
  require_positive("intermediate_size", intermediate_size);
  require_positive("max_position_embeddings", max_position_embeddings);
  require_positive("type_vocab_size", type_vocab_size);
  if (hidden_size % num_attention_heads != 0)
    throw ConfigError("hidden_size (" + std::to_string(hidden_size) +
                      ") must be a multiple of num_attention_heads (" + std::to_string(num_attention_heads) + ")");
  if (position_embedding_type != "absolute" && position_embedding_type != "relative_key" &&
      position_embedding_type != "relative_key_query")
    throw ConfigError("field 'position_embedding_type' must be \"absolute\", \"relative_key\" or "
                      "\"relative_key_query\", got \"" + position_embedding_type + "\"");
}

}  // namespace plugformer
