#include "modeling.h"

#include <ATen/ATen.h>

#include <plugformer/error.h>
#include <plugformer/heads.h>

namespace plugformer::bert {

// ---------------------------------------------------------------- heads

BertPredictionHeadTransform::BertPredictionHeadTransform(const BertConfig& c) : act_(get_activation(c.hidden_act)) {
  dense_ = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size));
  layer_norm_ = register_module("LayerNorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor BertPredictionHeadTransform::forward(const at::Tensor& hidden) const {
  return layer_norm_->forward(act_(dense_->forward(hidden)));
}

BertLMPredictionHead::BertLMPredictionHead(const BertConfig& c) {
  transform_ = register_module("transform", std::make_shared<BertPredictionHeadTransform>(c));
  decoder_ = register_module("decoder", std::make_shared<Linear>(c.hidden_size, c.vocab_size, /*bias=*/false));
  bias_ = register_parameter("bias", at::zeros({c.vocab_size}));
}

at::Tensor BertLMPredictionHead::forward(const at::Tensor& hidden) const {
  return decoder_->forward(transform_->forward(hidden)) + bias_;
}

void BertLMPredictionHead::resize_bias(int64_t vocab_size) { resize_vocabulary_bias(bias_, vocab_size); }

BertClsHeads::BertClsHeads(const BertConfig& c, bool with_predictions, bool with_seq_relationship) {
  if (with_predictions) predictions = register_module("predictions", std::make_shared<BertLMPredictionHead>(c));
  if (with_seq_relationship)
    seq_relationship = register_module("seq_relationship", std::make_shared<Linear>(c.hidden_size, 2));
}

BertHeadModel::BertHeadModel(std::shared_ptr<BertConfig> config, bool add_pooling_layer)
    : PreTrainedModel(config), cfg_(*config), pooling_(add_pooling_layer) {
  bert_ = register_module("bert", std::make_shared<BertModel>(config, add_pooling_layer));
}

std::vector<std::string> BertHeadModel::ignored_unexpected_keys() const {
  std::vector<std::string> keys = {R"(embeddings\.position_ids)", R"(cls\.predictions\.decoder\.bias$)"};
  if (!pooling_) keys.push_back(R"(^(bert\.)?pooler\.)");
  return keys;
}

void BertHeadModel::finish(ModelOutput& out, ModelOutput& base) {
  move_base_outputs(out, base);
  if (base.has("pooler_output")) out.set("pooler_output", base["pooler_output"]);
}

namespace {
const std::vector<std::pair<std::string, std::string>> kTiedDecoder = {
    {"cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"}};
}  // namespace

BertForMaskedLM::BertForMaskedLM(std::shared_ptr<BertConfig> config) : BertHeadModel(config, false) {
  cls_ = register_module("cls", std::make_shared<BertClsHeads>(*config, true, false));
}

std::vector<std::pair<std::string, std::string>> BertForMaskedLM::tied_weights() const { return kTiedDecoder; }

ModelOutput BertForMaskedLM::forward(const ModelInputs& inputs) {
  ModelOutput base = base_forward(inputs);
  at::Tensor logits = cls_->predictions->forward(base["last_hidden_state"]);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", token_cross_entropy(logits.to(at::kFloat), inputs.get("labels")));
  out.set("logits", logits);
  finish(out, base);
  return out;
}

BertLMHeadModel::BertLMHeadModel(std::shared_ptr<BertConfig> config) : BertHeadModel(config, false) {
  cls_ = register_module("cls", std::make_shared<BertClsHeads>(*config, true, false));
}

std::vector<std::pair<std::string, std::string>> BertLMHeadModel::tied_weights() const { return kTiedDecoder; }

ModelOutput BertLMHeadModel::forward(const ModelInputs& inputs) {
  ModelOutput base = base_forward(inputs);
  at::Tensor hidden = base["last_hidden_state"];
  if (inputs.logits_to_keep > 0 && inputs.logits_to_keep < hidden.size(1))
    hidden = hidden.narrow(1, hidden.size(1) - inputs.logits_to_keep, inputs.logits_to_keep);
  at::Tensor logits = cls_->predictions->forward(hidden);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", causal_lm_loss(logits.to(at::kFloat), inputs.get("labels")));
  out.set("logits", logits);
  finish(out, base);
  return out;
}

BertForPreTraining::BertForPreTraining(std::shared_ptr<BertConfig> config) : BertHeadModel(config, true) {
  cls_ = register_module("cls", std::make_shared<BertClsHeads>(*config, true, true));
}

std::vector<std::pair<std::string, std::string>> BertForPreTraining::tied_weights() const { return kTiedDecoder; }

ModelOutput BertForPreTraining::forward(const ModelInputs& inputs) {
  ModelOutput base = base_forward(inputs);
  at::Tensor prediction = cls_->predictions->forward(base["last_hidden_state"]);
  at::Tensor relationship = cls_->seq_relationship->forward(base["pooler_output"]);
  ModelOutput out;
  if (inputs.has("labels") && inputs.has("next_sentence_label"))
    out.set("loss", token_cross_entropy(prediction.to(at::kFloat), inputs.get("labels")) +
                        token_cross_entropy(relationship, inputs.get("next_sentence_label")));
  out.set("prediction_logits", prediction);
  out.set("seq_relationship_logits", relationship);
  finish(out, base);
  return out;
}

BertForNextSentencePrediction::BertForNextSentencePrediction(std::shared_ptr<BertConfig> config)
    : BertHeadModel(config, true) {
  cls_ = register_module("cls", std::make_shared<BertClsHeads>(*config, false, true));
}

ModelOutput BertForNextSentencePrediction::forward(const ModelInputs& inputs) {
  ModelOutput base = pooled_base_forward(inputs);
  at::Tensor logits = cls_->seq_relationship->forward(base["pooler_output"]);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", token_cross_entropy(logits, inputs.get("labels")));
  out.set("logits", logits);
  finish(out, base);
  return out;
}

BertForSequenceClassification::BertForSequenceClassification(std::shared_ptr<BertConfig> config)
    : BertHeadModel(config, true) {
  classifier_ = register_module("classifier", std::make_shared<Linear>(config->hidden_size, config->num_labels()));
}

ModelOutput BertForSequenceClassification::forward(const ModelInputs& inputs) {
  ModelOutput base = pooled_base_forward(inputs);
  at::Tensor logits = classifier_->forward(base["pooler_output"]);
  ModelOutput out;
  if (inputs.has("labels"))
    out.set("loss", sequence_classification_loss(*config_, logits.to(at::kFloat), inputs.get("labels")));
  out.set("logits", logits);
  finish(out, base);
  return out;
}

BertForMultipleChoice::BertForMultipleChoice(std::shared_ptr<BertConfig> config) : BertHeadModel(config, true) {
  classifier_ = register_module("classifier", std::make_shared<Linear>(config->hidden_size, 1));
}

ModelOutput BertForMultipleChoice::forward(const ModelInputs& inputs) {
  int64_t batch = 0, choices = 0;
  ModelOutput base = pooled_base_forward(flatten_choices(inputs, class_name(), batch, choices));
  at::Tensor logits = classifier_->forward(base["pooler_output"]).view({batch, choices});
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", token_cross_entropy(logits, inputs.get("labels")));
  out.set("logits", logits);
  finish(out, base);
  return out;
}

BertForTokenClassification::BertForTokenClassification(std::shared_ptr<BertConfig> config)
    : BertHeadModel(config, false) {
  classifier_ = register_module("classifier", std::make_shared<Linear>(config->hidden_size, config->num_labels()));
}

ModelOutput BertForTokenClassification::forward(const ModelInputs& inputs) {
  ModelOutput base = base_forward(inputs);
  at::Tensor logits = classifier_->forward(base["last_hidden_state"]);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", token_cross_entropy(logits.to(at::kFloat), inputs.get("labels")));
  out.set("logits", logits);
  finish(out, base);
  return out;
}

BertForQuestionAnswering::BertForQuestionAnswering(std::shared_ptr<BertConfig> config)
    : BertHeadModel(config, false) {
  qa_outputs_ = register_module("qa_outputs", std::make_shared<Linear>(config->hidden_size, config->num_labels()));
}

ModelOutput BertForQuestionAnswering::forward(const ModelInputs& inputs) {
  if (cfg_.num_labels() != 2)
    throw ConfigError("BertForQuestionAnswering needs num_labels == 2 (start and end), got " +
                      std::to_string(cfg_.num_labels()));
  ModelOutput base = base_forward(inputs);
  ModelOutput out;
  question_answering_outputs(qa_outputs_->forward(base["last_hidden_state"]), inputs, out);
  finish(out, base);
  return out;
}

}  // namespace plugformer::bert
