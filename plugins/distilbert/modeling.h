// DistilBERT: transformers' modeling_distilbert.py (word + learned or sinusoidal position embeddings,
// post-LayerNorm blocks with q_lin / k_lin / v_lin / out_lin and ffn.lin1 / lin2) and its heads,
// with transformers' parameter names.
#pragma once

#include <plugformer/layers.h>
#include <plugformer/modeling.h>

#include "config.h"

namespace plugformer::distilbert {

class DistilBertEmbeddings;
class TransformerBlock;

class DistilBertModel : public PreTrainedModel {
 public:
  explicit DistilBertModel(std::shared_ptr<DistilBertConfig> config);
  std::string class_name() const override { return "DistilBertModel"; }
  std::string base_model_prefix() const override { return "distilbert"; }
  std::vector<std::string> ignored_unexpected_keys() const override { return {R"(embeddings\.position_ids)"}; }
  // Inputs: input_ids or inputs_embeds, attention_mask; output: last_hidden_state.
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  std::string input_embeddings_name() const override { return "embeddings.word_embeddings"; }
  void initialized_weights() override;

 private:
  friend class DistilBertHeadModel;
  const DistilBertConfig& cfg_;
  std::shared_ptr<DistilBertEmbeddings> embeddings_;
  std::vector<std::shared_ptr<TransformerBlock>> layers_;
};

enum class DistilBertHead { masked_lm, sequence_classification, token_classification, question_answering,
                            multiple_choice };

// DistilBertForMaskedLM, ForSequenceClassification, ForTokenClassification, ForQuestionAnswering
// and ForMultipleChoice: the base model under "distilbert" and the head chosen at construction.
class DistilBertHeadModel : public PreTrainedModel {
 public:
  DistilBertHeadModel(std::shared_ptr<DistilBertConfig> config, DistilBertHead head);
  std::string class_name() const override;
  std::string base_model_prefix() const override { return "distilbert"; }
  std::vector<std::string> ignored_unexpected_keys() const override { return {R"(embeddings\.position_ids)"}; }
  std::vector<std::pair<std::string, std::string>> tied_weights() const override;
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  std::string output_embeddings_name() const override {
    return head_ == DistilBertHead::masked_lm ? "vocab_projector" : "";
  }
  void initialized_weights() override { distilbert_->initialized_weights(); }

 private:
  DistilBertHead head_;
  std::shared_ptr<DistilBertModel> distilbert_;
  std::shared_ptr<Linear> vocab_transform_, vocab_projector_, pre_classifier_, classifier_, qa_outputs_;
  std::shared_ptr<LayerNorm> vocab_layer_norm_;
  Activation act_;
};

// A factory for one head class, for the registry.
template <DistilBertHead kHead>
struct DistilBertHeadClass : DistilBertHeadModel {
  explicit DistilBertHeadClass(std::shared_ptr<DistilBertConfig> config) : DistilBertHeadModel(config, kHead) {}
};

}  // namespace plugformer::distilbert
