// DecoderConfig (decoder.h): the fields every decoder family shares and their checks. Apart from
// decoder.cpp so config parsing builds without the modules (fuzz/config_json).
#include "plugformer/decoder.h"

#include <cmath>

#include "plugformer/error.h"

namespace plugformer {

void DecoderConfig::visit_fields(ConfigFieldVisitor& v) {
  PretrainedConfig::visit_fields(v);
  v.field("vocab_size", vocab_size);
  v.field("hidden_size", hidden_size);
  v.field("intermediate_size", intermediate_size);
  v.field("num_hidden_layers", num_hidden_layers);
  v.field("num_attention_heads", num_attention_heads);
  v.field("num_key_value_heads", num_key_value_heads);
  v.field("max_position_embeddings", max_position_embeddings);
  v.field("initializer_range", initializer_range);
  v.field("rms_norm_eps", rms_norm_eps);
  v.field("rope_theta", rope_theta);
  v.field("attention_dropout", attention_dropout);
}

void DecoderConfig::validate() const {
  require_positive("vocab_size", vocab_size);
  require_positive("hidden_size", hidden_size);
  require_positive("intermediate_size", intermediate_size);
  require_positive("num_hidden_layers", num_hidden_layers);
  require_positive("num_attention_heads", num_attention_heads);
  require_positive("num_key_value_heads", kv_heads());
  require_positive("max_position_embeddings", max_position_embeddings);
  // Layouts hold a table per layer: a count no model has (fuzz/config_json: 22222220) took seconds
  // and memory to build, and far larger ones ran out of memory untyped.
  constexpr int64_t kMaxLayers = 4096;
  if (num_hidden_layers > kMaxLayers)
    throw ConfigError("field 'num_hidden_layers' is " + std::to_string(num_hidden_layers) + "; at most " +
                      std::to_string(kMaxLayers) + " layers are supported");
  if (num_attention_heads % kv_heads() != 0)
    throw ConfigError("field 'num_attention_heads' (" + std::to_string(num_attention_heads) +
                      ") must be a multiple of 'num_key_value_heads' (" + std::to_string(kv_heads()) + ")");
  // Gemma's embedding variants (transformers 4.56+) attend both ways; this decoder is causal only.
  if (get("use_bidirectional_attention") == json(true))
    throw ConfigError("field 'use_bidirectional_attention' is true: bidirectional decoders are not supported");
  const DecoderLayout l = decoder_layout();
  require_positive("head_dim", l.head_dim);
  for (const auto& window : l.sliding_windows)
    if (window) require_positive("sliding_window", *window);
  // Builds the rotary table once, so a bad rope_scaling fails when the config loads.
  RotaryEmbedding(l.head_dim, l.rope_theta, l.rope_scaling, l.max_position_embeddings, l.partial_rotary_factor,
                  l.original_max_position_embeddings);
}

DecoderLayout DecoderConfig::base_layout(std::optional<int64_t> head_dim) const {
  if (!head_dim && hidden_size % num_attention_heads != 0)
    throw ConfigError("field 'hidden_size' (" + std::to_string(hidden_size) + ") must be divisible by " +
                      "'num_attention_heads' (" + std::to_string(num_attention_heads) + ") when head_dim is not given");
  DecoderLayout l;
  l.vocab_size = vocab_size, l.hidden_size = hidden_size, l.intermediate_size = intermediate_size;
  l.num_hidden_layers = num_hidden_layers, l.num_attention_heads = num_attention_heads;
  l.num_key_value_heads = kv_heads();
  l.head_dim = head_dim.value_or(hidden_size / num_attention_heads);
  l.rms_norm_eps = rms_norm_eps;
  l.attention_scale = l.head_dim > 0 ? 1.0 / std::sqrt(double(l.head_dim)) : 0.0;
  l.sliding_windows.assign(size_t(num_hidden_layers), std::nullopt);
  l.rope_theta = rope_theta;
  l.max_position_embeddings = max_position_embeddings;
  return l;
}

std::optional<int64_t> DecoderConfig::undeclared_head_dim() const {
  const json head_dim = get("head_dim");
  if (head_dim.is_null()) return std::nullopt;
  if (!head_dim.is_number_integer()) throw ConfigError("field 'head_dim' must be an integer or null");
  return head_dim.get<int64_t>();
}

std::vector<std::optional<int64_t>> DecoderConfig::windows_by_layer(const std::vector<std::string>& layer_types,
                                                                    std::optional<int64_t> sliding_window,
                                                                    const std::function<bool(int64_t)>& slides) const {
  if (!layer_types.empty() && int64_t(layer_types.size()) != num_hidden_layers)
    throw ConfigError("field 'layer_types' has " + std::to_string(layer_types.size()) + " entries but " +
                      "num_hidden_layers is " + std::to_string(num_hidden_layers) + " (one type per layer expected)");
  std::vector<std::optional<int64_t>> windows(static_cast<size_t>(num_hidden_layers));
  for (int64_t i = 0; i < num_hidden_layers; ++i) {
    bool sliding = false;
    if (layer_types.empty()) {
      sliding = slides(i);
    } else if (layer_types[size_t(i)] == "sliding_attention") {
      sliding = true;
    } else if (layer_types[size_t(i)] != "full_attention") {
      throw ConfigError("field 'layer_types[" + std::to_string(i) + "]' is '" + layer_types[size_t(i)] +
                        "' (expected 'full_attention' or 'sliding_attention')");
    }
    if (sliding) windows[size_t(i)] = sliding_window;
  }
  return windows;
}

}  // namespace plugformer
