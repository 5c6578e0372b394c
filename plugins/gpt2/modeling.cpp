#include "modeling.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>

#include <plugformer/decoder.h>
#include <plugformer/distributed.h>
#include <plugformer/error.h>
#include <plugformer/heads.h>

namespace plugformer::gpt2 {

GPT2Attention::GPT2Attention(const GPT2Config& c, int64_t layer_idx)
    : layer_idx_(layer_idx),
      embed_dim_(c.n_embd),
      heads_(c.n_head),
      head_dim_(c.head_dim()),
      split_size_(c.n_embd),
      upcast_(c.reorder_and_upcast_attn) {
  // _attn divides by sqrt(head_dim) (scale_attn_weights), then by layer_idx + 1
  // (scale_attn_by_inverse_layer_idx); _upcast_and_reordered_attn folds both into one factor.
  scale_ = 1.0;
  if (c.scale_attn_weights) scale_ /= std::sqrt(double(head_dim_));
  if (c.scale_attn_by_inverse_layer_idx) scale_ /= double(layer_idx + 1);
  c_attn_ = register_module("c_attn", std::make_shared<Conv1D>(embed_dim_, 3 * embed_dim_));
  c_proj_ = register_module("c_proj", std::make_shared<Conv1D>(embed_dim_, embed_dim_));
}

at::Tensor GPT2Attention::forward(const at::Tensor& hidden, const at::Tensor& mask, KVCache* cache, at::Tensor* probs) {
  auto qkv = c_attn_->forward(hidden).split(split_size_, -1);
  at::Tensor q = split_heads(qkv[0], heads_);
  at::Tensor k = split_heads(qkv[1], heads_);
  at::Tensor v = split_heads(qkv[2], heads_);
  if (cache) std::tie(k, v) = cache->update(size_t(layer_idx_), k, v);
  at::Tensor out;
  const auto dtype = q.scalar_type();
  if (upcast_ && dtype != at::kFloat) {
    // reorder_and_upcast_attn: scores q k^T computed (and softmaxed) in fp32.
    at::Tensor p32;
    out = attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat),
                    mask.defined() ? mask.to(at::kFloat) : mask, scale_, probs ? &p32 : nullptr)
              .to(dtype);
    if (probs) *probs = p32.to(dtype);
  } else {
    out = attention(q, k, v, mask, scale_, probs);
  }
  return c_proj_->forward(merge_heads(out));
}

void GPT2Attention::split_for(int64_t rank, int64_t world) {
  heads_ = tensor_parallel_units(heads_, rank, world, "n_head").second;
  split_size_ = heads_ * head_dim_;
}

void GPT2Attention::prune_heads(const std::vector<int64_t>& heads) {
  auto [removed, index] = find_pruneable_heads_and_indices(heads, heads_, head_dim_, pruned_heads_);
  prune_conv1d_layer(*c_attn_, at::cat({index, index + split_size_, index + 2 * split_size_}), 1);
  prune_conv1d_layer(*c_proj_, index, 0);
  heads_ -= int64_t(removed.size());
  split_size_ = heads_ * head_dim_;
  pruned_heads_.insert(removed.begin(), removed.end());
}

GPT2MLP::GPT2MLP(const GPT2Config& c) : act_(get_activation(c.activation_function)) {
  c_fc_ = register_module("c_fc", std::make_shared<Conv1D>(c.n_embd, c.inner_dim()));
  c_proj_ = register_module("c_proj", std::make_shared<Conv1D>(c.inner_dim(), c.n_embd));
}

at::Tensor GPT2MLP::forward(const at::Tensor& x) const { return c_proj_->forward(act_(c_fc_->forward(x))); }

GPT2Block::GPT2Block(const GPT2Config& c, int64_t layer_idx) {
  ln_1_ = register_module("ln_1", std::make_shared<LayerNorm>(c.n_embd, c.layer_norm_epsilon));
  attn_ = register_module("attn", std::make_shared<GPT2Attention>(c, layer_idx));
  ln_2_ = register_module("ln_2", std::make_shared<LayerNorm>(c.n_embd, c.layer_norm_epsilon));
  mlp_ = register_module("mlp", std::make_shared<GPT2MLP>(c));
}

at::Tensor GPT2Block::forward(const at::Tensor& hidden, const at::Tensor& mask, KVCache* cache, at::Tensor* probs) {
  at::Tensor h = hidden + attn_->forward(ln_1_->forward(hidden), mask, cache, probs);
  return h + mlp_->forward(ln_2_->forward(h));
}

GPT2Model::GPT2Model(std::shared_ptr<GPT2Config> config) : PreTrainedModel(config), cfg_(*config) {
  if (cfg_.add_cross_attention)
    throw ConfigError("gpt2: add_cross_attention (GPT-2 as the decoder of an encoder-decoder model) is not supported");
  wte_ = register_module("wte", std::make_shared<Embedding>(cfg_.vocab_size, cfg_.n_embd));
  wpe_ = register_module("wpe", std::make_shared<Embedding>(cfg_.n_positions, cfg_.n_embd));
  auto list = register_module("h", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg_.n_layer; ++i) {
    h_.push_back(std::make_shared<GPT2Block>(cfg_, i));
    list->push_back(h_.back());
  }
  ln_f_ = register_module("ln_f", std::make_shared<LayerNorm>(cfg_.n_embd, cfg_.layer_norm_epsilon));
}

void GPT2Model::prune_heads_impl(const std::map<int64_t, std::vector<int64_t>>& heads_to_prune) {
  for (const auto& [layer, heads] : heads_to_prune) {
    auto attention = std::dynamic_pointer_cast<GPT2Attention>(find_module("h." + std::to_string(layer) + ".attn"));
    if (!attention) throw InvalidInputError("prune_heads: layer " + std::to_string(layer) + " does not exist");
    attention->prune_heads(heads);
  }
}

std::vector<TensorParallelRule> GPT2Model::tensor_parallel_plan() const {
  const int64_t d = cfg_.head_dim();
  return {
      {"wte", ParallelStyle::vocab_rows},
      {"h.*.attn.c_attn", ParallelStyle::colwise, d, {cfg_.n_embd, cfg_.n_embd, cfg_.n_embd}},
      {"h.*.attn.c_proj", ParallelStyle::rowwise, d},
      {"h.*.mlp.c_fc", ParallelStyle::colwise},
      {"h.*.mlp.c_proj", ParallelStyle::rowwise},
  };
}

ModelOutput GPT2Model::forward(const ModelInputs& inputs) {
  const DecoderInputs d = prepare_decoder_inputs(inputs, cfg_.n_embd, "gpt2", !checkpointing_active());
  const int64_t batch = d.batch, len = d.length, past = d.past;
  // Learned absolute positions: wpe has n_positions rows, and transformers' causal buffer is
  // n_positions x n_positions, so no sequence (cached part included) may be longer.
  if (past + len > cfg_.n_positions)
    throw InvalidInputError("gpt2: sequence length " + std::to_string(past + len) + " (" + std::to_string(past) +
                            " cached + " + std::to_string(len) + " new tokens) exceeds the context window n_positions = " +
                            std::to_string(cfg_.n_positions));
  if (inputs.has("position_ids")) {
    const int64_t lo = d.position_ids.min().item<int64_t>(), hi = d.position_ids.max().item<int64_t>();
    if (lo < 0 || hi >= cfg_.n_positions)
      throw InvalidInputError("gpt2: position id " + std::to_string(lo < 0 ? lo : hi) +
                              " is outside the context window [0, n_positions = " + std::to_string(cfg_.n_positions) +
                              ")");
  }

  at::Tensor hidden = d.input_ids.defined() ? wte_->forward(d.input_ids) : d.inputs_embeds;
  hidden = hidden + wpe_->forward(d.position_ids).to(hidden.scalar_type());
  const at::Tensor token_type_ids = inputs.get("token_type_ids");
  if (token_type_ids.defined()) {
    if (token_type_ids.sizes() != at::IntArrayRef({batch, len}))
      throw InvalidInputError("token_type_ids must have the shape [batch, seq_len]");
    hidden = hidden + wte_->forward(token_type_ids);
  }
  const auto dtype = hidden.scalar_type();

  // A single new token without padding sees every key: no mask needed.
  at::Tensor mask;
  if (len > 1 || d.attention_mask.defined()) mask = causal_attention_mask(d.attention_mask, batch, len, past, dtype);

  const bool want_hidden = inputs.output_hidden_states.value_or(cfg_.output_hidden_states);
  const bool want_attn = inputs.output_attentions.value_or(cfg_.output_attentions);
  ModelOutput out;
  KVCache* layer_cache = d.cache.get();
  hidden = run_layers(
      int64_t(h_.size()),
      [=, this](int64_t i, const at::Tensor& x, at::Tensor* probs) { return h_[size_t(i)]->forward(x, mask, layer_cache, probs); },
      hidden, want_hidden, want_attn, out);
  hidden = ln_f_->forward(hidden);
  if (want_hidden) out.hidden_states.push_back(hidden);
  out.set("last_hidden_state", hidden);
  out.past_key_values = d.cache;
  return out;
}

GPT2HeadModel::GPT2HeadModel(std::shared_ptr<GPT2Config> config) : PreTrainedModel(config) {
  transformer_ = register_module("transformer", std::make_shared<GPT2Model>(config));
}

GPT2LMHeadModel::GPT2LMHeadModel(std::shared_ptr<GPT2Config> config) : GPT2HeadModel(config) {
  lm_head_ = register_module("lm_head", std::make_shared<Linear>(config->n_embd, config->vocab_size, false));
}

std::vector<TensorParallelRule> GPT2LMHeadModel::tensor_parallel_plan() const {
  auto plan = GPT2HeadModel::tensor_parallel_plan();
  plan.push_back({"lm_head", ParallelStyle::colwise_gather});
  return plan;
}

ModelOutput GPT2LMHeadModel::forward(const ModelInputs& inputs) {
  ModelOutput base = transformer_->forward(inputs);
  at::Tensor hidden = base["last_hidden_state"];
  if (inputs.logits_to_keep < 0) throw InvalidInputError("logits_to_keep must be >= 0");
  if (inputs.logits_to_keep > 0 && inputs.logits_to_keep < hidden.size(1))
    hidden = hidden.narrow(1, hidden.size(1) - inputs.logits_to_keep, inputs.logits_to_keep);
  at::Tensor logits = lm_head_->forward(hidden).to(at::kFloat);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", causal_lm_loss(logits, inputs.get("labels")));
  out.set("logits", logits);
  move_base_outputs(out, base);
  return out;
}

GPT2ForSequenceClassification::GPT2ForSequenceClassification(std::shared_ptr<GPT2Config> config)
    : GPT2HeadModel(config) {
  score_ = register_module("score", std::make_shared<Linear>(config->n_embd, config->num_labels(), false));
}

ModelOutput GPT2ForSequenceClassification::forward(const ModelInputs& inputs) {
  if (!inputs.has("input_ids"))
    throw InvalidInputError("GPT2ForSequenceClassification needs input_ids to find the last non-padding token");
  ModelOutput base = transformer_->forward(inputs);
  return last_token_classification_outputs(score_->forward(base["last_hidden_state"]), inputs, *config_, base);
}

GPT2ForTokenClassification::GPT2ForTokenClassification(std::shared_ptr<GPT2Config> config) : GPT2HeadModel(config) {
  classifier_ = register_module("classifier", std::make_shared<Linear>(config->n_embd, config->num_labels(), true));
}

ModelOutput GPT2ForTokenClassification::forward(const ModelInputs& inputs) {
  ModelOutput base = transformer_->forward(inputs);
  at::Tensor logits = classifier_->forward(base["last_hidden_state"]).to(at::kFloat);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", token_cross_entropy(logits, inputs.get("labels")));
  out.set("logits", logits);
  move_base_outputs(out, base);
  return out;
}

GPT2ForQuestionAnswering::GPT2ForQuestionAnswering(std::shared_ptr<GPT2Config> config) : GPT2HeadModel(config) {
  // transformers: nn.Linear(hidden_size, 2) whatever num_labels says.
  qa_outputs_ = register_module("qa_outputs", std::make_shared<Linear>(config->n_embd, 2, true));
}

ModelOutput GPT2ForQuestionAnswering::forward(const ModelInputs& inputs) {
  ModelOutput base = transformer_->forward(inputs);
  ModelOutput out;
  question_answering_outputs(qa_outputs_->forward(base["last_hidden_state"]), inputs, out);
  move_base_outputs(out, base);
  return out;
}

}  // namespace plugformer::gpt2
