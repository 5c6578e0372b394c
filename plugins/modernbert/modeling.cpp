#include "modeling.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>

#include <plugformer/encoder.h>
#include <plugformer/error.h>
#include <plugformer/heads.h>

namespace plugformer::modernbert {

// attn_norm (none in layer 0) -> attn (Wqkv, rotary, window or global, Wo) -> + x;
// mlp_norm -> mlp (Wo(act(input) * gate), (input, gate) = Wi(x).chunk(2)) -> + h.
class ModernBertLayer : public torch::nn::Module {
 public:
  ModernBertLayer(const ModernBertConfig& c, int64_t index)
      : heads_(c.num_attention_heads),
        global_(c.is_global_layer(index)),
        act_(get_activation(c.hidden_activation)),
        rope_(c.head_dim(), global_ ? c.global_rope_theta : c.local_rope_theta.value_or(c.global_rope_theta), nullptr,
              global_ ? c.max_position_embeddings : c.local_attention) {
    if (index != 0) attn_norm_ = register_module("attn_norm", std::make_shared<LayerNorm>(c.hidden_size, c.norm_eps, c.norm_bias));
    auto attn = register_module("attn", std::make_shared<torch::nn::Module>());
    wqkv_ = attn->register_module("Wqkv", std::make_shared<Linear>(c.hidden_size, 3 * c.hidden_size, c.attention_bias));
    attn_out_ = attn->register_module("Wo", std::make_shared<Linear>(c.hidden_size, c.hidden_size, c.attention_bias));
    mlp_norm_ = register_module("mlp_norm", std::make_shared<LayerNorm>(c.hidden_size, c.norm_eps, c.norm_bias));
    auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
    wi_ = mlp->register_module("Wi", std::make_shared<Linear>(c.hidden_size, 2 * c.intermediate_size, c.mlp_bias));
    mlp_out_ = mlp->register_module("Wo", std::make_shared<Linear>(c.intermediate_size, c.hidden_size, c.mlp_bias));
  }

  bool global() const { return global_; }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& position_ids, const at::Tensor& mask, at::Tensor* probs) const {
    const at::Tensor normed = attn_norm_ ? attn_norm_->forward(x) : x;
    // Wqkv's rows are [q | k | v], each [heads * head_dim].
    const std::vector<at::Tensor> qkv = wqkv_->forward(normed).chunk(3, -1);
    at::Tensor q = split_heads(qkv[0], heads_), k = split_heads(qkv[1], heads_);
    const at::Tensor v = split_heads(qkv[2], heads_);
    const auto [cos, sin] = rope_.forward(position_ids, q.scalar_type());
    std::tie(q, k) = apply_rotary_pos_emb(q, k, cos, sin);
    const double scale = 1.0 / std::sqrt(double(q.size(3)));
    const at::Tensor h = x + attn_out_->forward(merge_heads(attention(q, k, v, mask, scale, probs)));
    const std::vector<at::Tensor> input_gate = wi_->forward(mlp_norm_->forward(h)).chunk(2, -1);
    return h + mlp_out_->forward(act_(input_gate[0]) * input_gate[1]);
  }

 private:
  int64_t heads_;
  bool global_;
  Activation act_;
  RotaryEmbedding rope_;
  std::shared_ptr<LayerNorm> attn_norm_, mlp_norm_;
  std::shared_ptr<Linear> wqkv_, attn_out_, wi_, mlp_out_;
};

ModernBertModel::ModernBertModel(std::shared_ptr<ModernBertConfig> config) : PreTrainedModel(config), cfg_(*config) {
  auto embeddings = register_module("embeddings", std::make_shared<torch::nn::Module>());
  tok_embeddings_ = embeddings->register_module("tok_embeddings", std::make_shared<Embedding>(cfg_.vocab_size, cfg_.hidden_size));
  embedding_norm_ = embeddings->register_module("norm", std::make_shared<LayerNorm>(cfg_.hidden_size, cfg_.norm_eps, cfg_.norm_bias));
  auto list = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    layers_.push_back(std::make_shared<ModernBertLayer>(cfg_, i));
    list->push_back(layers_.back());
  }
  final_norm_ = register_module("final_norm", std::make_shared<LayerNorm>(cfg_.hidden_size, cfg_.norm_eps, cfg_.norm_bias));
}

ModelOutput ModernBertModel::forward(const ModelInputs& inputs) {
  const auto [batch, len] = check_encoder_inputs(inputs, cfg_.hidden_size, class_name());
  const at::Tensor input_ids = inputs.get("input_ids");
  at::Tensor hidden = input_ids.defined() ? tok_embeddings_->forward(input_ids) : inputs.get("inputs_embeds");
  hidden = embedding_norm_->forward(hidden);
  const auto dtype = hidden.scalar_type();

  at::Tensor position_ids = inputs.get("position_ids");
  if (position_ids.defined()) {
    if (position_ids.dim() != 2 || position_ids.size(1) != len)
      throw InvalidInputError("position_ids must be [batch, seq_len] like the input");
  } else {
    position_ids = at::arange(len, at::kLong).unsqueeze(0);
  }
  // Global layers see every unpadded key; local ones only keys within local_attention / 2 slots,
  // the window filled with the dtype's minimum over the padding mask (as transformers' masked_fill).
  at::Tensor attention_mask = inputs.get("attention_mask");
  if (!attention_mask.defined()) attention_mask = at::ones({batch, len}, at::kLong);
  const at::Tensor global_mask = padding_attention_mask(attention_mask, dtype).expand({batch, 1, len, len});
  const at::Tensor rows = at::arange(len, at::kLong);
  const at::Tensor outside = (rows.unsqueeze(0) - rows.unsqueeze(1)).abs() > cfg_.local_attention / 2;
  const at::Tensor local_mask =
      global_mask.masked_fill(outside.view({1, 1, len, len}), finfo_min(dtype));

  const bool want_hidden = inputs.output_hidden_states.value_or(cfg_.output_hidden_states);
  const bool want_attn = inputs.output_attentions.value_or(cfg_.output_attentions);
  ModelOutput out;
  hidden = run_layers(
      int64_t(layers_.size()),
      [&, this](int64_t i, const at::Tensor& h, at::Tensor* probs) {
        const auto& layer = layers_[size_t(i)];
        return layer->forward(h, position_ids, layer->global() ? global_mask : local_mask, probs);
      },
      hidden, want_hidden, want_attn, out);
  hidden = final_norm_->forward(hidden);
  if (want_hidden) out.hidden_states.push_back(hidden);
  out.set("last_hidden_state", hidden);
  return out;
}

ModernBertHeadModel::ModernBertHeadModel(std::shared_ptr<ModernBertConfig> config, ModernBertHead head)
    : PreTrainedModel(config), cfg_(*config), head_(head), act_(get_activation(config->classifier_activation)) {
  const ModernBertConfig& c = *config;
  model_ = register_module("model", std::make_shared<ModernBertModel>(config));
  auto head_module = register_module("head", std::make_shared<torch::nn::Module>());
  dense_ = head_module->register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size, c.classifier_bias));
  head_norm_ = head_module->register_module("norm", std::make_shared<LayerNorm>(c.hidden_size, c.norm_eps, c.norm_bias));
  if (head == ModernBertHead::masked_lm) {
    decoder_ = register_module("decoder", std::make_shared<Linear>(c.hidden_size, c.vocab_size, c.decoder_bias));
    return;
  }
  if (head == ModernBertHead::question_answering && c.num_labels() != 2)
    throw ConfigError("ModernBertForQuestionAnswering needs num_labels == 2 (start and end), got " +
                      std::to_string(c.num_labels()));
  classifier_ = register_module("classifier", std::make_shared<Linear>(c.hidden_size, c.num_labels()));
}

std::string ModernBertHeadModel::class_name() const {
  static const char* const names[] = {"ModernBertForMaskedLM", "ModernBertForSequenceClassification",
                                      "ModernBertForTokenClassification", "ModernBertForQuestionAnswering"};
  return names[int(head_)];
}

std::vector<std::pair<std::string, std::string>> ModernBertHeadModel::tied_weights() const {
  if (head_ != ModernBertHead::masked_lm) return {};
  return {{"decoder.weight", "model.embeddings.tok_embeddings.weight"}};
}

ModelOutput ModernBertHeadModel::forward(const ModelInputs& inputs) {
  ModelOutput base = model_->forward(inputs);
  at::Tensor hidden = base["last_hidden_state"];
  const at::Tensor labels = inputs.get("labels");
  auto head = [&](const at::Tensor& h) { return head_norm_->forward(act_(dense_->forward(h))); };
  ModelOutput out;
  switch (head_) {
    case ModernBertHead::masked_lm: {
      at::Tensor targets = labels;
      if (cfg_.sparse_prediction && labels.defined()) {
        // sparse_prediction: only the labelled tokens are predicted (logits [labelled, vocab]).
        const at::Tensor flat = labels.reshape({-1});
        const at::Tensor keep = flat.ne(cfg_.sparse_pred_ignore_index);
        hidden = hidden.reshape({flat.size(0), -1}).index({keep});
        targets = flat.index({keep});
      }
      const at::Tensor logits = decoder_->forward(head(hidden));
      if (targets.defined()) out.set("loss", token_cross_entropy(logits.to(at::kFloat), targets));
      out.set("logits", logits);
      break;
    }
    case ModernBertHead::sequence_classification: {
      at::Tensor pooled;
      if (cfg_.classifier_pooling == "cls") {
        pooled = hidden.select(1, 0);
      } else {  // the mean over the tokens the attention mask keeps
        at::Tensor mask = inputs.get("attention_mask");
        if (!mask.defined()) mask = at::ones({hidden.size(0), hidden.size(1)}, at::kLong);
        const at::Tensor m = mask.to(hidden.scalar_type()).unsqueeze(-1);
        pooled = (hidden * m).sum(1) / m.sum(1);
      }
      const at::Tensor logits = classifier_->forward(head(pooled));
      if (labels.defined()) out.set("loss", sequence_classification_loss(*config_, logits.to(at::kFloat), labels));
      out.set("logits", logits);
      break;
    }
    case ModernBertHead::token_classification: {
      const at::Tensor logits = classifier_->forward(head(hidden));
      if (labels.defined()) out.set("loss", token_cross_entropy(logits.to(at::kFloat), labels));
      out.set("logits", logits);
      break;
    }
    case ModernBertHead::question_answering:
      question_answering_outputs(classifier_->forward(head(hidden)), inputs, out);
      break;
  }
  move_base_outputs(out, base);
  return out;
}

}  // namespace plugformer::modernbert
