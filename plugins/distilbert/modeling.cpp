#include "modeling.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>

#include <plugformer/encoder.h>
#include <plugformer/error.h>
#include <plugformer/heads.h>

namespace plugformer::distilbert {

namespace {

// transformers hard-codes 1e-12 for every DistilBERT LayerNorm.
constexpr double kLayerNormEps = 1e-12;

// create_sinusoidal_embeddings: sin on even features, cos on odd ones, pos / 10000^(2 (j / 2) / dim).
at::Tensor sinusoidal_table(int64_t positions, int64_t dim) {
  at::Tensor table = at::empty({positions, dim}, at::kFloat);
  std::vector<double> row(static_cast<size_t>(dim));
  for (int64_t pos = 0; pos < positions; ++pos) {
    for (int64_t j = 0; j < dim; ++j) {
      const double angle = double(pos) / std::pow(10000.0, 2.0 * double(j / 2) / double(dim));
      row[size_t(j)] = j % 2 == 0 ? std::sin(angle) : std::cos(angle);
    }
    table[pos].copy_(at::tensor(row, at::kDouble).to(at::kFloat));
  }
  return table;
}

}  // namespace

class DistilBertEmbeddings : public torch::nn::Module {
 public:
  explicit DistilBertEmbeddings(const DistilBertConfig& c) {
    word_embeddings = register_module("word_embeddings", std::make_shared<Embedding>(c.vocab_size, c.dim));
    position_embeddings =
        register_module("position_embeddings", std::make_shared<Embedding>(c.max_position_embeddings, c.dim));
    layer_norm = register_module("LayerNorm", std::make_shared<LayerNorm>(c.dim, kLayerNormEps));
  }
  std::shared_ptr<Embedding> word_embeddings, position_embeddings;
  std::shared_ptr<LayerNorm> layer_norm;
};

// attention (q_lin, k_lin, v_lin, out_lin) -> sa_layer_norm(+ x) -> ffn (lin1, act, lin2) -> output_layer_norm(+ h).
class TransformerBlock : public torch::nn::Module {
 public:
  explicit TransformerBlock(const DistilBertConfig& c) : heads_(c.n_heads), act_(get_activation(c.activation)) {
    auto attention = register_module("attention", std::make_shared<torch::nn::Module>());
    const std::pair<const char*, std::shared_ptr<Linear>*> projections[] = {
        {"q_lin", &q_lin_}, {"k_lin", &k_lin_}, {"v_lin", &v_lin_}, {"out_lin", &out_lin_}};
    for (const auto& [name, slot] : projections)
      *slot = attention->register_module(name, std::make_shared<Linear>(c.dim, c.dim));
    sa_layer_norm_ = register_module("sa_layer_norm", std::make_shared<LayerNorm>(c.dim, kLayerNormEps));
    auto ffn = register_module("ffn", std::make_shared<torch::nn::Module>());
    lin1_ = ffn->register_module("lin1", std::make_shared<Linear>(c.dim, c.hidden_dim));
    lin2_ = ffn->register_module("lin2", std::make_shared<Linear>(c.hidden_dim, c.dim));
    output_layer_norm_ = register_module("output_layer_norm", std::make_shared<LayerNorm>(c.dim, kLayerNormEps));
  }

  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask, at::Tensor* probs) const {
    const at::Tensor q = split_heads(q_lin_->forward(x), heads_), k = split_heads(k_lin_->forward(x), heads_),
                     v = split_heads(v_lin_->forward(x), heads_);
    const double scale = 1.0 / std::sqrt(double(q.size(3)));
    const at::Tensor attended = out_lin_->forward(merge_heads(attention(q, k, v, mask, scale, probs)));
    const at::Tensor h = sa_layer_norm_->forward(attended + x);
    return output_layer_norm_->forward(lin2_->forward(act_(lin1_->forward(h))) + h);
  }

 private:
  int64_t heads_;
  Activation act_;
  std::shared_ptr<Linear> q_lin_, k_lin_, v_lin_, out_lin_, lin1_, lin2_;
  std::shared_ptr<LayerNorm> sa_layer_norm_, output_layer_norm_;
};

DistilBertModel::DistilBertModel(std::shared_ptr<DistilBertConfig> config) : PreTrainedModel(config), cfg_(*config) {
  embeddings_ = register_module("embeddings", std::make_shared<DistilBertEmbeddings>(cfg_));
  auto transformer = register_module("transformer", std::make_shared<torch::nn::Module>());
  auto list = transformer->register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg_.n_layers; ++i) {
    layers_.push_back(std::make_shared<TransformerBlock>(cfg_));
    list->push_back(layers_.back());
  }
}

// Sinusoidal tables are stored in checkpoints too; this is what a model initialised from its config has.
void DistilBertModel::initialized_weights() {
  if (!cfg_.sinusoidal_pos_embds) return;
  at::Tensor& table = embeddings_->position_embeddings->weight;
  table.set_data(sinusoidal_table(cfg_.max_position_embeddings, cfg_.dim).to(table.scalar_type()));
}

ModelOutput DistilBertModel::forward(const ModelInputs& inputs) {
  const auto [batch, len] = check_encoder_inputs(inputs, cfg_.dim, class_name());
  const at::Tensor input_ids = inputs.get("input_ids");
  at::Tensor hidden = input_ids.defined() ? embeddings_->word_embeddings->forward(input_ids) : inputs.get("inputs_embeds");
  if (len > cfg_.max_position_embeddings)
    throw InvalidInputError("sequence of " + std::to_string(len) + " tokens is longer than max_position_embeddings (" +
                            std::to_string(cfg_.max_position_embeddings) + ") of this DistilBertModel");
  hidden = embeddings_->layer_norm->forward(
      hidden + embeddings_->position_embeddings->forward(at::arange(len, at::kLong).unsqueeze(0)).to(hidden.scalar_type()));
  const at::Tensor attention_mask = inputs.get("attention_mask");
  at::Tensor mask;
  if (attention_mask.defined()) {
    if (attention_mask.dim() != 2) throw InvalidInputError("attention_mask must be [batch, seq_len] like the input");
    mask = padding_attention_mask(attention_mask, hidden.scalar_type());
  }
  const bool want_hidden = inputs.output_hidden_states.value_or(cfg_.output_hidden_states);
  const bool want_attn = inputs.output_attentions.value_or(cfg_.output_attentions);
  ModelOutput out;
  hidden = run_layers(
      int64_t(layers_.size()),
      [=, this](int64_t i, const at::Tensor& h, at::Tensor* probs) { return layers_[size_t(i)]->forward(h, mask, probs); },
      hidden, want_hidden, want_attn, out);
  if (want_hidden) out.hidden_states.push_back(hidden);
  out.set("last_hidden_state", hidden);
  return out;
}

DistilBertHeadModel::DistilBertHeadModel(std::shared_ptr<DistilBertConfig> config, DistilBertHead head)
    : PreTrainedModel(config), head_(head), act_(get_activation(config->activation)) {
  const DistilBertConfig& c = *config;
  distilbert_ = register_module("distilbert", std::make_shared<DistilBertModel>(config));
  switch (head) {
    case DistilBertHead::masked_lm:
      vocab_transform_ = register_module("vocab_transform", std::make_shared<Linear>(c.dim, c.dim));
      vocab_layer_norm_ = register_module("vocab_layer_norm", std::make_shared<LayerNorm>(c.dim, kLayerNormEps));
      vocab_projector_ = register_module("vocab_projector", std::make_shared<Linear>(c.dim, c.vocab_size));
      break;
    case DistilBertHead::sequence_classification:
      pre_classifier_ = register_module("pre_classifier", std::make_shared<Linear>(c.dim, c.dim));
      classifier_ = register_module("classifier", std::make_shared<Linear>(c.dim, c.num_labels()));
      break;
    case DistilBertHead::token_classification:
      classifier_ = register_module("classifier", std::make_shared<Linear>(c.dim, c.num_labels()));
      break;
    case DistilBertHead::question_answering:
      if (c.num_labels() != 2)
        throw ConfigError("DistilBertForQuestionAnswering needs num_labels == 2 (start and end), got " +
                          std::to_string(c.num_labels()));
      qa_outputs_ = register_module("qa_outputs", std::make_shared<Linear>(c.dim, 2));
      break;
    case DistilBertHead::multiple_choice:
      pre_classifier_ = register_module("pre_classifier", std::make_shared<Linear>(c.dim, c.dim));
      classifier_ = register_module("classifier", std::make_shared<Linear>(c.dim, 1));
      break;
  }
}

std::string DistilBertHeadModel::class_name() const {
  static const char* const names[] = {"DistilBertForMaskedLM", "DistilBertForSequenceClassification",
                                      "DistilBertForTokenClassification", "DistilBertForQuestionAnswering",
                                      "DistilBertForMultipleChoice"};
  return names[int(head_)];
}

std::vector<std::pair<std::string, std::string>> DistilBertHeadModel::tied_weights() const {
  if (head_ != DistilBertHead::masked_lm) return {};
  return {{"vocab_projector.weight", "distilbert.embeddings.word_embeddings.weight"}};
}

ModelOutput DistilBertHeadModel::forward(const ModelInputs& inputs) {
  static const Activation relu = get_activation("relu");
  ModelOutput out;
  const at::Tensor labels = inputs.get("labels");
  if (head_ == DistilBertHead::multiple_choice) {
    int64_t batch = 0, choices = 0;
    ModelOutput base = distilbert_->forward(flatten_choices(inputs, class_name(), batch, choices));
    const at::Tensor pooled = relu(pre_classifier_->forward(base["last_hidden_state"].select(1, 0)));
    const at::Tensor logits = classifier_->forward(pooled).view({batch, choices});
    if (labels.defined()) out.set("loss", token_cross_entropy(logits, labels));
    out.set("logits", logits);
    move_base_outputs(out, base);
    return out;
  }
  ModelOutput base = distilbert_->forward(inputs);
  const at::Tensor hidden = base["last_hidden_state"];
  switch (head_) {
    case DistilBertHead::masked_lm: {
      const at::Tensor logits = vocab_projector_->forward(vocab_layer_norm_->forward(act_(vocab_transform_->forward(hidden))));
      if (labels.defined()) out.set("loss", token_cross_entropy(logits.to(at::kFloat), labels));
      out.set("logits", logits);
      break;
    }
    case DistilBertHead::sequence_classification: {
      const at::Tensor logits = classifier_->forward(relu(pre_classifier_->forward(hidden.select(1, 0))));
      if (labels.defined()) out.set("loss", sequence_classification_loss(*config_, logits.to(at::kFloat), labels));
      out.set("logits", logits);
      break;
    }
    case DistilBertHead::token_classification: {
      const at::Tensor logits = classifier_->forward(hidden);
      if (labels.defined()) out.set("loss", token_cross_entropy(logits.to(at::kFloat), labels));
      out.set("logits", logits);
      break;
    }
    case DistilBertHead::question_answering:
      question_answering_outputs(qa_outputs_->forward(hidden), inputs, out);
      break;
    case DistilBertHead::multiple_choice: break;
  }
  move_base_outputs(out, base);
  return out;
}

}  // namespace plugformer::distilbert
