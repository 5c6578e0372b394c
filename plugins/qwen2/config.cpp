#include "config.h"

namespace plugformer::qwen2 {

Qwen2Config::Qwen2Config() {
  model_type_ = "qwen2";
  vocab_size = 151936;
  intermediate_size = 22016;
  num_key_value_heads = 32;
  max_position_embeddings = 32768;
  tie_word_embeddings = false;
}

void Qwen2Config::visit_fields(ConfigFieldVisitor& v) {
  DecoderConfig::visit_fields(v);
  v.field("hidden_act", hidden_act);
  v.field("rope_scaling", rope_scaling);
  v.field("use_sliding_window", use_sliding_window);
  v.field("sliding_window", sliding_window);
  v.field("max_window_layers", max_window_layers);
  v.field("layer_types", layer_types);
}

DecoderLayout Qwen2Config::decoder_layout() const {
  DecoderLayout l = base_layout(undeclared_head_dim());
  l.hidden_act = hidden_act;
  l.qkv_bias = true;
  l.rope_scaling = rope_scaling;
  // The config keeps sliding_window only when use_sliding_window is set.
  const std::optional<int64_t> window = use_sliding_window ? sliding_window : std::nullopt;
  l.sliding_windows = windows_by_layer(layer_types, window, [&](int64_t i) { return window && i >= max_window_layers; });
  return l;
}

}  // namespace plugformer::qwen2
