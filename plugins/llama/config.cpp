#include "config.h"

namespace plugformer::llama {

LlamaConfig::LlamaConfig() {
  model_type_ = "llama";
  bos_token_id = 1;
  eos_token_id = {2};
  tie_word_embeddings = false;
}

void LlamaConfig::visit_fields(ConfigFieldVisitor& v) {
  DecoderConfig::visit_fields(v);
  v.field("head_dim", head_dim);
  v.field("hidden_act", hidden_act);
  v.field("pretraining_tp", pretraining_tp);
  v.field("rope_scaling", rope_scaling);
  v.field("attention_bias", attention_bias);
  v.field("mlp_bias", mlp_bias);
}

DecoderLayout LlamaConfig::decoder_layout() const {
  DecoderLayout l = base_layout(head_dim);
  l.hidden_act = hidden_act;
  l.qkv_bias = l.o_proj_bias = attention_bias;
  l.mlp_bias = mlp_bias;
  l.rope_scaling = rope_scaling;
  return l;
}

}  // namespace plugformer::llama
