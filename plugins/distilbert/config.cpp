#include "config.h"

#include <plugformer/error.h>
#include <plugformer/layers.h>

namespace plugformer::distilbert {

DistilBertConfig::DistilBertConfig() {
  model_type_ = "distilbert";
  pad_token_id = 0;
}

void DistilBertConfig::visit_fields(ConfigFieldVisitor& v) {
  PretrainedConfig::visit_fields(v);
  v.field("vocab_size", vocab_size);
  v.field("max_position_embeddings", max_position_embeddings);
  v.field("sinusoidal_pos_embds", sinusoidal_pos_embds);
  v.field("n_layers", n_layers);
  v.field("n_heads", n_heads);
  v.field("dim", dim);
  v.field("hidden_dim", hidden_dim);
  v.field("dropout", dropout);
  v.field("attention_dropout", attention_dropout);
  v.field("activation", activation);
  v.field("initializer_range", initializer_range);
  v.field("qa_dropout", qa_dropout);
  v.field("seq_classif_dropout", seq_classif_dropout);
}

void DistilBertConfig::validate() const {
  require_positive("vocab_size", vocab_size);
  require_positive("max_position_embeddings", max_position_embeddings);
  require_positive("n_layers", n_layers);
  require_positive("n_heads", n_heads);
  require_positive("dim", dim);
  require_positive("hidden_dim", hidden_dim);
  if (dim % n_heads != 0)
    throw ConfigError("field 'dim' (" + std::to_string(dim) + ") must be a multiple of 'n_heads' (" +
                      std::to_string(n_heads) + ")");
  get_activation(activation);  // ConfigError for names transformers does not know
}

}  // namespace plugformer::distilbert
