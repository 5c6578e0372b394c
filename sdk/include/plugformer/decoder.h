// Decoder-only transformers (Llama, Qwen2 / Qwen3, Mistral, Gemma / Gemma 2, Phi-3, ...) built once
// in core. A family declares what its model is in a DecoderLayout (sizes, biases, norms, fused
// projections, windows, soft-caps, rope); core builds the modules with transformers' parameter
// names and runs them: the decoder prologue (ids or embeddings, positions, cache, masks), every
// attention variant, and the task heads. A family plugin then holds its config and registrations.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "plugformer/config.h"
#include "plugformer/layers.h"
#include "plugformer/modeling.h"
#include "plugformer/registry.h"

namespace plugformer {

struct DecoderLayout {
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0;
  int64_t num_attention_heads = 0, num_key_value_heads = 0, head_dim = 0;
  std::string hidden_act = "silu";
  double rms_norm_eps = 1e-6;
  bool qkv_bias = false;     // q_proj / k_proj / v_proj (or qkv_proj) biases
  bool o_proj_bias = false;
  bool mlp_bias = false;     // gate / up / down biases
  bool fused_qkv = false;    // Phi-3: one qkv_proj, rows [q heads | k heads | v heads]
  bool fused_gate_up = false;  // Phi-3: one gate_up_proj, rows [gate | up]
  bool qk_norm = false;      // Qwen3: q_norm / k_norm, RMSNorm over each head before RoPE
  bool norm_unit_offset = false;  // Gemma: norms scale by 1 + weight
  bool scale_embeddings = false;  // Gemma: embeddings times sqrt(hidden_size), rounded to their dtype
  bool sandwich_norms = false;    // Gemma 2: post_attention / pre_ and post_feedforward norms
  double attention_scale = 0;     // multiplies q k^T (head_dim^-0.5 unless the family says otherwise)
  double attn_logit_softcapping = 0;   // > 0: Gemma 2's cap on the scaled scores
  double final_logit_softcapping = 0;  // > 0: cap on the LM head's logits
  // Per layer: the sliding window W (a query sees the W latest slots) or nullopt for full attention.
  std::vector<std::optional<int64_t>> sliding_windows;
  // Rotary embeddings (RotaryEmbedding's arguments).
  double rope_theta = 10000.0;
  json rope_scaling;
  int64_t max_position_embeddings = 2048;
  double partial_rotary_factor = 1.0;
  std::optional<int64_t> original_max_position_embeddings;
};

// The fields every decoder family's configuration has (each family sets its own defaults in its
// constructor and visits its other fields after these); a family's config says what its model is.
class DecoderConfig : public PretrainedConfig {
 public:
  void visit_fields(ConfigFieldVisitor& v) override;
  // Positive sizes, kv heads dividing the heads, and the layout's own checks (head_dim, windows, rope).
  void validate() const override;
  virtual DecoderLayout decoder_layout() const = 0;

  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  std::optional<int64_t> num_key_value_heads;  // null: as many as attention heads
  int64_t max_position_embeddings = 2048;
  double initializer_range = 0.02;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double attention_dropout = 0.0;

  int64_t kv_heads() const { return num_key_value_heads.value_or(num_attention_heads); }

 protected:
  // The common fields' part of a layout, for head size `head_dim` (hidden_size / heads when null).
  DecoderLayout base_layout(std::optional<int64_t> head_dim) const;
  // A head_dim in config.json for families without the field (transformers' modeling reads it
  // with getattr when present).
  std::optional<int64_t> undeclared_head_dim() const;
  // Windows from `layer_types` (one "full_attention" / "sliding_attention" per layer) when given,
  // else from slides(i); a sliding layer with a null window attends fully. ConfigError naming
  // layer_types for a wrong length or an unknown type.
  std::vector<std::optional<int64_t>> windows_by_layer(const std::vector<std::string>& layer_types,
                                                       std::optional<int64_t> sliding_window,
                                                       const std::function<bool(int64_t)>& slides) const;
};

// The steps every decoder-only base model takes before its layers (transformers' forward prologue):
// exactly one of input_ids / inputs_embeds, their shapes, the KV cache (created when use_cache asks
// for one), position_ids from the cache length when absent ([seq] and [1, seq] broadcast to the batch).
struct DecoderInputs {
  at::Tensor input_ids, inputs_embeds, position_ids, attention_mask;
  int64_t batch = 0, length = 0, past = 0;
  std::shared_ptr<KVCache> cache;
};
// `family` names the model in errors; `allow_cache` is false while gradient checkpointing is active.
DecoderInputs prepare_decoder_inputs(const ModelInputs& inputs, int64_t hidden_size, const std::string& family,
                                     bool allow_cache);

class DecoderLayer;

// What a layout declares beyond the sizes, as (label, text) lines for `plugformer info`: head_dim,
// rope (type, theta, factors, attention factor), attention (windows per layer, scale, soft-caps)
// and the layout's switches.
std::vector<std::pair<std::string, std::string>> describe_layout(const DecoderLayout& layout);

// <Family>Model: embeddings, the decoder layers and the final norm.
class DecoderModel : public PreTrainedModel {
 public:
  DecoderModel(std::shared_ptr<DecoderConfig> config, std::string family);
  std::string class_name() const override { return family_ + "Model"; }
  std::string base_model_prefix() const override { return "model"; }
  std::vector<std::string> ignored_unexpected_keys() const override;
  bool supports_gradient_checkpointing() const override { return true; }
  // Megatron's split: attention heads (q / k / v colwise, o_proj rowwise), MLP columns then rows,
  // the token embedding by vocabulary rows; norms replicated.
  std::vector<TensorParallelRule> tensor_parallel_plan() const override;
  ModelOutput forward(const ModelInputs& inputs) override;
  const DecoderLayout& layout() const { return layout_; }

 protected:
  std::string input_embeddings_name() const override { return "embed_tokens"; }

 private:
  std::string family_;
  DecoderLayout layout_;
  std::shared_ptr<Embedding> embed_tokens_;
  std::vector<std::shared_ptr<DecoderLayer>> layers_;
  std::shared_ptr<RMSNorm> norm_;
  RotaryEmbedding rotary_;
  std::optional<int64_t> widest_window_;  // set when every layer is windowed
};

// The head classes hold a DecoderModel named "model" (QA: as the family says) and add their head.
class DecoderHeadModel : public PreTrainedModel {
 public:
  DecoderHeadModel(std::shared_ptr<DecoderConfig> config, std::string family, std::string base_prefix = "model");
  std::string base_model_prefix() const override { return base_prefix_; }
  std::vector<std::string> ignored_unexpected_keys() const override { return model_->ignored_unexpected_keys(); }
  bool supports_gradient_checkpointing() const override { return true; }
  std::vector<TensorParallelRule> tensor_parallel_plan() const override {
    return prefixed_plan(base_prefix_, model_->tensor_parallel_plan());
  }

 protected:
  std::string family_, base_prefix_;
  std::shared_ptr<DecoderModel> model_;
};

// <Family>ForCausalLM: lm_head (tied to embed_tokens when tie_word_embeddings), logits in fp32,
// soft-capped when the layout says so; loss from labels.
class DecoderForCausalLM : public DecoderHeadModel {
 public:
  DecoderForCausalLM(std::shared_ptr<DecoderConfig> config, std::string family);
  std::string class_name() const override { return family_ + "ForCausalLM"; }
  std::vector<std::pair<std::string, std::string>> tied_weights() const override {
    return {{"lm_head.weight", "model.embed_tokens.weight"}};
  }
  bool can_generate() const override { return true; }
  // longrope with an original context: the cache is dropped once, when the sequence first exceeds it.
  bool reuses_cache(int64_t total, int64_t cached) const override;
  bool decodes_cache_batches() const override { return true; }
  // The base model's plan, and lm_head split by vocabulary with the logits gathered on every rank.
  std::vector<TensorParallelRule> tensor_parallel_plan() const override;
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  std::string output_embeddings_name() const override { return "lm_head"; }

 private:
  std::shared_ptr<Linear> lm_head_;
};

// <Family>ForSequenceClassification: score (no bias) pooled at each row's rightmost non-pad token.
class DecoderForSequenceClassification : public DecoderHeadModel {
 public:
  DecoderForSequenceClassification(std::shared_ptr<DecoderConfig> config, std::string family);
  std::string class_name() const override { return family_ + "ForSequenceClassification"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<Linear> score_;
};

// <Family>ForTokenClassification: score (with bias) on every token.
class DecoderForTokenClassification : public DecoderHeadModel {
 public:
  DecoderForTokenClassification(std::shared_ptr<DecoderConfig> config, std::string family);
  std::string class_name() const override { return family_ + "ForTokenClassification"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<Linear> score_;
};

// <Family>ForQuestionAnswering: qa_outputs -> start / end logits. Some families keep their base
// model under "transformer" here (transformers' names), hence base_prefix.
class DecoderForQuestionAnswering : public DecoderHeadModel {
 public:
  DecoderForQuestionAnswering(std::shared_ptr<DecoderConfig> config, std::string family, std::string base_prefix);
  std::string class_name() const override { return family_ + "ForQuestionAnswering"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<Linear> qa_outputs_;
};

// What a family registers: <family>Model under AutoModel and each head it has under its Auto task,
// all built from `Config` (a DecoderConfig). qa_base_prefix: the QA head's base model attribute.
struct DecoderFamily {
  std::string model_type, family;
  bool sequence_classification = true, token_classification = true, question_answering = true;
  std::string qa_base_prefix = "model";
};
void register_decoder_family(Registry& registry, const DecoderFamily& family,
                             std::function<std::shared_ptr<DecoderConfig>(ConfigPtr)> as_config);

// The registration for a DecoderConfig subclass: its config factory, and the model classes.
template <class Config>
void register_decoder_family(Registry& registry, const DecoderFamily& family) {
  registry.register_config(family.model_type, [] { return std::make_shared<Config>(); });
  register_decoder_family(registry, family, [model_type = family.model_type](ConfigPtr config) {
    auto typed = std::dynamic_pointer_cast<Config>(config);
    if (!typed)
      throw RegistryError("model class needs a " + model_type + " config, got '" + config->model_type() + "'");
    return std::shared_ptr<DecoderConfig>(typed);
  });
}

}  // namespace plugformer
