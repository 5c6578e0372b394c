#include "modeling.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>

#include <plugformer/error.h>
#include <plugformer/heads.h>

namespace plugformer::llama {

LlamaAttention::LlamaAttention(const LlamaConfig& c, int64_t layer_idx)
    : layer_idx_(layer_idx), heads_(c.num_attention_heads), kv_heads_(c.kv_heads()), head_dim_(c.head_size()) {
  q_proj_ = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, heads_ * head_dim_, c.attention_bias));
  k_proj_ = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.attention_bias));
  v_proj_ = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, kv_heads_ * head_dim_, c.attention_bias));
  o_proj_ = register_module("o_proj", std::make_shared<Linear>(heads_ * head_dim_, c.hidden_size, c.attention_bias));
}

at::Tensor LlamaAttention::forward(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin,
                                   const at::Tensor& mask, KVCache* cache, at::Tensor* probs) {
  at::Tensor q = split_heads(q_proj_->forward(hidden), heads_);
  at::Tensor k = split_heads(k_proj_->forward(hidden), kv_heads_);
  at::Tensor v = split_heads(v_proj_->forward(hidden), kv_heads_);
  std::tie(q, k) = apply_rotary_pos_emb(q, k, cos, sin);
  if (cache) std::tie(k, v) = cache->update(size_t(layer_idx_), k, v);
  at::Tensor out = attention(q, k, v, mask, 1.0 / std::sqrt(double(head_dim_)), probs);
  return o_proj_->forward(merge_heads(out));
}

LlamaMLP::LlamaMLP(const LlamaConfig& c) : act_(get_activation(c.hidden_act)) {
  gate_proj_ = register_module("gate_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, c.mlp_bias));
  up_proj_ = register_module("up_proj", std::make_shared<Linear>(c.hidden_size, c.intermediate_size, c.mlp_bias));
  down_proj_ = register_module("down_proj", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, c.mlp_bias));
}

at::Tensor LlamaMLP::forward(const at::Tensor& x) const {
  return down_proj_->forward(act_(gate_proj_->forward(x)) * up_proj_->forward(x));
}

LlamaDecoderLayer::LlamaDecoderLayer(const LlamaConfig& c, int64_t layer_idx) {
  self_attn_ = register_module("self_attn", std::make_shared<LlamaAttention>(c, layer_idx));
  mlp_ = register_module("mlp", std::make_shared<LlamaMLP>(c));
  input_layernorm_ = register_module("input_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm_ =
      register_module("post_attention_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps));
}

at::Tensor LlamaDecoderLayer::forward(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin,
                                      const at::Tensor& mask, KVCache* cache, at::Tensor* probs) {
  at::Tensor h = hidden + self_attn_->forward(input_layernorm_->forward(hidden), cos, sin, mask, cache, probs);
  return h + mlp_->forward(post_attention_layernorm_->forward(h));
}

LlamaModel::LlamaModel(std::shared_ptr<LlamaConfig> config)
    : PreTrainedModel(config),
      cfg_(*config),
      rotary_(config->head_size(), config->rope_theta, config->rope_scaling, config->max_position_embeddings) {
  embed_tokens_ = register_module("embed_tokens", std::make_shared<Embedding>(cfg_.vocab_size, cfg_.hidden_size));
  auto list = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    layers_.push_back(std::make_shared<LlamaDecoderLayer>(cfg_, i));
    list->push_back(layers_.back());
  }
  norm_ = register_module("norm", std::make_shared<RMSNorm>(cfg_.hidden_size, cfg_.rms_norm_eps));
}

ModelOutput LlamaModel::forward(const ModelInputs& inputs) {
  const at::Tensor input_ids = inputs.get("input_ids");
  const at::Tensor inputs_embeds = inputs.get("inputs_embeds");
  if (input_ids.defined() == inputs_embeds.defined())
    throw InvalidInputError("llama: give exactly one of input_ids and inputs_embeds");
  if (input_ids.defined() && input_ids.dim() != 2) throw InvalidInputError("input_ids must be [batch, seq_len]");
  if (inputs_embeds.defined() && (inputs_embeds.dim() != 3 || inputs_embeds.size(2) != cfg_.hidden_size))
    throw InvalidInputError("inputs_embeds must be [batch, seq_len, " + std::to_string(cfg_.hidden_size) + "]");
  const at::Tensor& ref = input_ids.defined() ? input_ids : inputs_embeds;
  const int64_t batch = ref.size(0), len = ref.size(1);
  std::shared_ptr<KVCache> cache = inputs.past_key_values;
  if (!cache && inputs.use_cache && !checkpointing_active()) cache = std::make_shared<KVCache>();
  const int64_t past = cache ? cache->seq_length(0) : 0;

  at::Tensor position_ids = inputs.get("position_ids");
  if (!position_ids.defined()) position_ids = at::arange(past, past + len, at::kLong).unsqueeze(0).expand({batch, len});
  else if (position_ids.sizes() != at::IntArrayRef({batch, len}))
    throw InvalidInputError("position_ids must have the shape of input_ids");

  at::Tensor hidden = input_ids.defined() ? embed_tokens_->forward(input_ids) : inputs_embeds;
  const auto dtype = hidden.scalar_type();
  const at::Tensor attention_mask = inputs.get("attention_mask");
  // A single new token without padding sees every key: no mask needed.
  at::Tensor mask;
  if (len > 1 || attention_mask.defined()) mask = causal_attention_mask(attention_mask, batch, len, past, dtype);
  auto [cos, sin] = rotary_.forward(position_ids, dtype);

  const bool want_hidden = inputs.output_hidden_states.value_or(cfg_.output_hidden_states);
  const bool want_attn = inputs.output_attentions.value_or(cfg_.output_attentions);
  ModelOutput out;
  KVCache* layer_cache = cache.get();
  hidden = run_layers(
      int64_t(layers_.size()),
      [=, this](int64_t i, const at::Tensor& h, at::Tensor* probs) {
        return layers_[size_t(i)]->forward(h, cos, sin, mask, layer_cache, probs);
      },
      hidden, want_hidden, want_attn, out);
  hidden = norm_->forward(hidden);
  if (want_hidden) out.hidden_states.push_back(hidden);
  out.set("last_hidden_state", hidden);
  out.past_key_values = cache;
  return out;
}

LlamaHeadModel::LlamaHeadModel(std::shared_ptr<LlamaConfig> config) : PreTrainedModel(config) {
  model_ = register_module("model", std::make_shared<LlamaModel>(config));
}

LlamaForCausalLM::LlamaForCausalLM(std::shared_ptr<LlamaConfig> config) : LlamaHeadModel(config) {
  lm_head_ = register_module("lm_head", std::make_shared<Linear>(config->hidden_size, config->vocab_size, false));
}

ModelOutput LlamaForCausalLM::forward(const ModelInputs& inputs) {
  ModelOutput base = model_->forward(inputs);
  at::Tensor hidden = base["last_hidden_state"];
  if (inputs.logits_to_keep > 0 && inputs.logits_to_keep < hidden.size(1))
    hidden = hidden.narrow(1, hidden.size(1) - inputs.logits_to_keep, inputs.logits_to_keep);
  at::Tensor logits = lm_head_->forward(hidden).to(at::kFloat);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", causal_lm_loss(logits, inputs.get("labels")));
  out.set("logits", logits);
  out.set("last_hidden_state", base["last_hidden_state"]);
  out.past_key_values = base.past_key_values;
  out.hidden_states = std::move(base.hidden_states);
  out.attentions = std::move(base.attentions);
  return out;
}

LlamaForSequenceClassification::LlamaForSequenceClassification(std::shared_ptr<LlamaConfig> config)
    : LlamaHeadModel(config) {
  score_ = register_module("score", std::make_shared<Linear>(config->hidden_size, config->num_labels(), false));
}

ModelOutput LlamaForSequenceClassification::forward(const ModelInputs& inputs) {
  ModelOutput base = model_->forward(inputs);
  at::Tensor logits = score_->forward(base["last_hidden_state"]);
  at::Tensor pooled = pool_last_non_pad_token(logits, inputs.require("input_ids"), config_->pad_token_id).to(at::kFloat);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", sequence_classification_loss(*config_, pooled, inputs.get("labels")));
  out.set("logits", pooled);
  out.set("last_hidden_state", base["last_hidden_state"]);
  out.past_key_values = base.past_key_values;
  out.hidden_states = std::move(base.hidden_states);
  out.attentions = std::move(base.attentions);
  return out;
}

}  // namespace plugformer::llama
