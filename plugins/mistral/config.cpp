#include "config.h"

namespace plugformer::mistral {

MistralConfig::MistralConfig() {
  model_type_ = "mistral";
  intermediate_size = 14336;
  num_key_value_heads = 8;
  max_position_embeddings = 4096 * 32;
  bos_token_id = 1;
  eos_token_id = {2};
  tie_word_embeddings = false;
}

void MistralConfig::visit_fields(ConfigFieldVisitor& v) {
  DecoderConfig::visit_fields(v);
  v.field("head_dim", head_dim);
  v.field("hidden_act", hidden_act);
  v.field("sliding_window", sliding_window);
}

DecoderLayout MistralConfig::decoder_layout() const {
  DecoderLayout l = base_layout(head_dim);
  l.hidden_act = hidden_act;
  // rope_scaling is not a Mistral field, but fine-tunes that extend the context carry one.
  l.rope_scaling = get("rope_scaling");
  l.sliding_windows.assign(size_t(num_hidden_layers), sliding_window);
  return l;
}

}  // namespace plugformer::mistral
