#include "config.h"

namespace plugformer::gemma {

GemmaConfig::GemmaConfig() {
  model_type_ = "gemma";
  vocab_size = 256000;
  hidden_size = 3072;
  intermediate_size = 24576;
  num_hidden_layers = 28;
  num_attention_heads = 16;
  num_key_value_heads = 16;
  max_position_embeddings = 8192;
  pad_token_id = 0;
  eos_token_id = {1};
  bos_token_id = 2;
  tie_word_embeddings = true;
}

void GemmaConfig::visit_fields(ConfigFieldVisitor& v) {
  DecoderConfig::visit_fields(v);
  v.field("head_dim", head_dim);
  v.field("hidden_act", hidden_act);
  v.field("hidden_activation", hidden_activation);
  v.field("attention_bias", attention_bias);
}

DecoderLayout GemmaConfig::decoder_layout() const {
  DecoderLayout l = base_layout(head_dim);
  l.hidden_act = hidden_activation.value_or(hidden_act);
  l.qkv_bias = l.o_proj_bias = attention_bias;
  l.norm_unit_offset = true;
  l.scale_embeddings = true;
  l.rope_scaling = get("rope_scaling");
  return l;
}

}  // namespace plugformer::gemma
