// BERT: transformers' modeling_bert.py; the encoder is core's (encoder.h), the task heads are here,
// with transformers' parameter names, so any bert checkpoint from the Hub loads unchanged.
#pragma once

#include <plugformer/layers.h>
#include <plugformer/modeling.h>

#include "config.h"

namespace plugformer::bert {

// BertModel: core's BERT-style encoder (encoder.h) under BERT's names, positions counted from the
// first slot.
class BertModel : public BertStyleModel {
 public:
  explicit BertModel(std::shared_ptr<BertConfig> config, bool add_pooling_layer = true)
      : BertStyleModel(config, "Bert", EncoderLayout{}, add_pooling_layer) {}
};

// LayerNorm(act(dense(hidden))).
class BertPredictionHeadTransform : public torch::nn::Module {
 public:
  explicit BertPredictionHeadTransform(const BertConfig& config);
  at::Tensor forward(const at::Tensor& hidden) const;

 private:
  std::shared_ptr<Linear> dense_;
  Activation act_;
  std::shared_ptr<LayerNorm> layer_norm_;
};

// cls.predictions: the transform, then the decoder tied to the word embeddings. transformers'
// decoder.bias is the same parameter as cls.predictions.bias: it is kept once, under the name
// cls.predictions.bias (the name save_pretrained keeps), and cls.predictions.decoder.bias in old
// checkpoints is ignored as the alias it is.
class BertLMPredictionHead : public torch::nn::Module {
 public:
  explicit BertLMPredictionHead(const BertConfig& config);
  at::Tensor forward(const at::Tensor& hidden) const;
  // resize_token_embeddings: the bias follows the vocabulary, new tokens starting at zero (as
  // transformers pads the tied decoder bias).
  void resize_bias(int64_t vocab_size);

 private:
  std::shared_ptr<BertPredictionHeadTransform> transform_;
  std::shared_ptr<Linear> decoder_;
  at::Tensor bias_;
};

// "cls": predictions (masked LM) and/or seq_relationship (next sentence), as BertOnlyMLMHead,
// BertOnlyNSPHead and BertPreTrainingHeads.
class BertClsHeads : public torch::nn::Module {
 public:
  BertClsHeads(const BertConfig& config, bool predictions, bool seq_relationship);
  std::shared_ptr<BertLMPredictionHead> predictions;
  std::shared_ptr<Linear> seq_relationship;
};

// The head classes hold a BertModel named "bert" and add their head on top of it. Their outputs
// also carry the base model's last_hidden_state (and pooler_output when it has a pooler).
class BertHeadModel : public PreTrainedModel {
 public:
  BertHeadModel(std::shared_ptr<BertConfig> config, bool add_pooling_layer);
  std::string base_model_prefix() const override { return "bert"; }
  std::vector<std::string> ignored_unexpected_keys() const override;

 protected:
  // The masked-LM head of the classes that have one (its decoder is the output embedding).
  virtual BertLMPredictionHead* lm_prediction_head() const { return nullptr; }
  std::string output_embeddings_name() const override {
    return lm_prediction_head() ? "cls.predictions.decoder" : "";
  }
  void resized_token_embeddings(int64_t vocab_size) override {
    if (auto* head = lm_prediction_head()) head->resize_bias(vocab_size);
  }
  // Runs the base model; `out` gets nothing yet, the caller adds its fields then calls finish().
  ModelOutput base_forward(const ModelInputs& inputs) { return bert_->forward(inputs); }
  // For the heads that read only the pooled first position: that position alone in the last layer
  // when the caller reads pooled outputs only.
  ModelOutput pooled_base_forward(const ModelInputs& inputs) {
    return inputs.pooled_outputs_only ? bert_->forward_first_position(inputs) : bert_->forward(inputs);
  }
  static void finish(ModelOutput& out, ModelOutput& base);
  const BertConfig& cfg_;
  bool pooling_;
  std::shared_ptr<BertModel> bert_;
};

class BertForMaskedLM : public BertHeadModel {
 public:
  explicit BertForMaskedLM(std::shared_ptr<BertConfig> config);
  std::string class_name() const override { return "BertForMaskedLM"; }
  std::vector<std::pair<std::string, std::string>> tied_weights() const override;
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  BertLMPredictionHead* lm_prediction_head() const override { return cls_->predictions.get(); }

 private:
  std::shared_ptr<BertClsHeads> cls_;
};

class BertLMHeadModel : public BertHeadModel {
 public:
  explicit BertLMHeadModel(std::shared_ptr<BertConfig> config);
  std::string class_name() const override { return "BertLMHeadModel"; }
  std::vector<std::pair<std::string, std::string>> tied_weights() const override;
  bool can_generate() const override { return true; }
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  BertLMPredictionHead* lm_prediction_head() const override { return cls_->predictions.get(); }

 private:
  std::shared_ptr<BertClsHeads> cls_;
};

class BertForPreTraining : public BertHeadModel {
 public:
  explicit BertForPreTraining(std::shared_ptr<BertConfig> config);
  std::string class_name() const override { return "BertForPreTraining"; }
  std::vector<std::pair<std::string, std::string>> tied_weights() const override;
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  BertLMPredictionHead* lm_prediction_head() const override { return cls_->predictions.get(); }

 private:
  std::shared_ptr<BertClsHeads> cls_;
};

class BertForNextSentencePrediction : public BertHeadModel {
 public:
  explicit BertForNextSentencePrediction(std::shared_ptr<BertConfig> config);
  std::string class_name() const override { return "BertForNextSentencePrediction"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<BertClsHeads> cls_;
};

class BertForSequenceClassification : public BertHeadModel {
 public:
  explicit BertForSequenceClassification(std::shared_ptr<BertConfig> config);
  std::string class_name() const override { return "BertForSequenceClassification"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<Linear> classifier_;
};

// Inputs are [batch, num_choices, seq]; logits [batch, num_choices].
class BertForMultipleChoice : public BertHeadModel {
 public:
  explicit BertForMultipleChoice(std::shared_ptr<BertConfig> config);
  std::string class_name() const override { return "BertForMultipleChoice"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<Linear> classifier_;
};

class BertForTokenClassification : public BertHeadModel {
 public:
  explicit BertForTokenClassification(std::shared_ptr<BertConfig> config);
  std::string class_name() const override { return "BertForTokenClassification"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<Linear> classifier_;
};

class BertForQuestionAnswering : public BertHeadModel {
 public:
  explicit BertForQuestionAnswering(std::shared_ptr<BertConfig> config);
  std::string class_name() const override { return "BertForQuestionAnswering"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<Linear> qa_outputs_;
};

}  // namespace plugformer::bert
