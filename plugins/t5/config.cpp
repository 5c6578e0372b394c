#include "config.h"

#include <plugformer/error.h>

namespace plugformer::t5 {

T5Config::T5Config() {
  model_type_ = "t5";
  pad_token_id = 0;
  eos_token_id = {1};
  decoder_start_token_id = 0;
  is_encoder_decoder = true;
  tie_word_embeddings = true;
}

void T5Config::visit_fields(ConfigFieldVisitor& v) {
  PretrainedConfig::visit_fields(v);
  v.field("vocab_size", vocab_size);
  v.field("d_model", d_model);
  v.field("d_kv", d_kv);
  v.field("d_ff", d_ff);
  v.field("num_layers", num_layers);
  v.field("num_decoder_layers", num_decoder_layers);
  v.field("num_heads", num_heads);
  v.field("relative_attention_num_buckets", relative_attention_num_buckets);
  v.field("relative_attention_max_distance", relative_attention_max_distance);
  v.field("dropout_rate", dropout_rate);
  v.field("classifier_dropout", classifier_dropout);
  v.field("layer_norm_epsilon", layer_norm_epsilon);
  v.field("initializer_factor", initializer_factor);
  v.field("feed_forward_proj", feed_forward_proj);
  v.field("dense_act_fn", dense_act_fn);
  v.field("is_gated_act", is_gated_act);
}

void T5Config::validate() const {
  require_positive("vocab_size", vocab_size);
  require_positive("d_model", d_model);
  require_positive("d_kv", d_kv);
  require_positive("d_ff", d_ff);
  require_positive("num_layers", num_layers);
  require_positive("num_decoder_layers", decoder_layers());
  require_positive("num_heads", num_heads);
  require_positive("relative_attention_num_buckets", relative_attention_num_buckets);
  require_positive("relative_attention_max_distance", relative_attention_max_distance);
  if (layer_norm_epsilon <= 0)
    throw ConfigError("field 'layer_norm_epsilon' must be positive, got " + std::to_string(layer_norm_epsilon));
  // "ACT" or "gated-ACT", as T5Config.__init__ accepts.
  const auto dash = feed_forward_proj.find('-');
  const bool gated = dash != std::string::npos && feed_forward_proj.substr(0, dash) == "gated";
  const std::string act = gated ? feed_forward_proj.substr(dash + 1) : feed_forward_proj;
  if ((dash != std::string::npos && !gated) || act.empty() || act.find('-') != std::string::npos)
    throw ConfigError("field 'feed_forward_proj': '" + feed_forward_proj +
                      "' is not a valid activation; expected 'ACT' or 'gated-ACT', e.g. 'relu' or 'gated-gelu'");
  is_gated_act = gated;
  // transformers keeps "gated-gelu" on the tanh approximation for backwards compatibility.
  dense_act_fn = feed_forward_proj == "gated-gelu" ? "gelu_new" : act;
}

}  // namespace plugformer::t5
