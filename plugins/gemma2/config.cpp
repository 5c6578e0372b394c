#include "config.h"

#include <cmath>

namespace plugformer::gemma2 {

Gemma2Config::Gemma2Config() {
  model_type_ = "gemma2";
  vocab_size = 256000;
  hidden_size = 2304;
  intermediate_size = 9216;
  num_hidden_layers = 26;
  num_attention_heads = 8;
  num_key_value_heads = 4;
  max_position_embeddings = 8192;
  pad_token_id = 0;
  eos_token_id = {1};
  bos_token_id = 2;
  tie_word_embeddings = true;
}

void Gemma2Config::visit_fields(ConfigFieldVisitor& v) {
  DecoderConfig::visit_fields(v);
  v.field("head_dim", head_dim);
  v.field("hidden_activation", hidden_activation);
  v.field("attention_bias", attention_bias);
  v.field("query_pre_attn_scalar", query_pre_attn_scalar);
  v.field("sliding_window", sliding_window);
  v.field("layer_types", layer_types);
  v.field("final_logit_softcapping", final_logit_softcapping);
  v.field("attn_logit_softcapping", attn_logit_softcapping);
}

DecoderLayout Gemma2Config::decoder_layout() const {
  if (!(query_pre_attn_scalar > 0))
    throw ConfigError("field 'query_pre_attn_scalar' must be positive, got " + std::to_string(query_pre_attn_scalar));
  DecoderLayout l = base_layout(head_dim);
  l.hidden_act = hidden_activation;
  l.qkv_bias = l.o_proj_bias = attention_bias;
  l.norm_unit_offset = true;
  l.scale_embeddings = true;
  l.sandwich_norms = true;
  l.attention_scale = 1.0 / std::sqrt(query_pre_attn_scalar);
  l.attn_logit_softcapping = attn_logit_softcapping.value_or(0.0);
  l.final_logit_softcapping = final_logit_softcapping.value_or(0.0);
  l.rope_scaling = get("rope_scaling");
  l.sliding_windows = windows_by_layer(layer_types, sliding_window, [](int64_t i) { return i % 2 == 0; });
  return l;
}

}  // namespace plugformer::gemma2
