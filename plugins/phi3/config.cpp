#include "config.h"

namespace plugformer::phi3 {

Phi3Config::Phi3Config() {
  model_type_ = "phi3";
  vocab_size = 32064;
  hidden_size = 3072;
  intermediate_size = 8192;
  max_position_embeddings = 4096;
  rms_norm_eps = 1e-5;
  bos_token_id = 1;
  eos_token_id = {32000};
  pad_token_id = 32000;
  tie_word_embeddings = false;
}

void Phi3Config::visit_fields(ConfigFieldVisitor& v) {
  DecoderConfig::visit_fields(v);
  v.field("resid_pdrop", resid_pdrop);
  v.field("embd_pdrop", embd_pdrop);
  v.field("hidden_act", hidden_act);
  v.field("original_max_position_embeddings", original_max_position_embeddings);
  v.field("rope_scaling", rope_scaling);
  v.field("partial_rotary_factor", partial_rotary_factor);
  v.field("sliding_window", sliding_window);
}

DecoderLayout Phi3Config::decoder_layout() const {
  DecoderLayout l = base_layout(undeclared_head_dim());
  l.hidden_act = hidden_act;
  l.fused_qkv = l.fused_gate_up = true;
  l.partial_rotary_factor = partial_rotary_factor;
  l.original_max_position_embeddings = original_max_position_embeddings;
  l.rope_scaling = rope_scaling;
  // transformers renames the older names of longrope ("su", "yarn") when the config loads, and
  // accepts no other rope type for Phi-3.
  if (rope_scaling.is_object()) {
    for (const char* key : {"type", "rope_type"}) {
      if (!rope_scaling.contains(key) || !rope_scaling[key].is_string()) continue;
      const std::string type = rope_scaling[key].get<std::string>();
      if (type == "su" || type == "yarn") l.rope_scaling[key] = "longrope";
      else if (type != "longrope")
        throw ConfigError("field 'rope_scaling." + std::string(key) + "' is '" + type +
                          "'; Phi-3 takes only 'longrope' (or its older names 'su', 'yarn')");
    }
  }
  l.sliding_windows.assign(size_t(num_hidden_layers), sliding_window);
  return l;
}

}  // namespace plugformer::phi3
