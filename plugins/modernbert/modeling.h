// ModernBERT: transformers' modeling_modernbert.py (eager attention), with its parameter names:
// tok_embeddings -> LayerNorm; pre-norm layers (layer 0 without attn_norm) with fused Wqkv, rotary
// positions and GeGLU MLP; global layers every global_attn_every_n_layers (the others attend within
// a window and use their own rope theta); final_norm; and the MaskedLM, SequenceClassification
// (cls or mean pooling), TokenClassification and QuestionAnswering heads.
#pragma once

#include <plugformer/layers.h>
#include <plugformer/modeling.h>

#include "config.h"

namespace plugformer::modernbert {

class ModernBertLayer;

class ModernBertModel : public PreTrainedModel {
 public:
  explicit ModernBertModel(std::shared_ptr<ModernBertConfig> config);
  std::string class_name() const override { return "ModernBertModel"; }
  std::string base_model_prefix() const override { return "model"; }
  // Inputs: input_ids or inputs_embeds, attention_mask, position_ids; output: last_hidden_state.
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  std::string input_embeddings_name() const override { return "embeddings.tok_embeddings"; }

 private:
  const ModernBertConfig& cfg_;
  std::shared_ptr<Embedding> tok_embeddings_;
  std::shared_ptr<LayerNorm> embedding_norm_, final_norm_;
  std::vector<std::shared_ptr<ModernBertLayer>> layers_;
};

enum class ModernBertHead { masked_lm, sequence_classification, token_classification, question_answering };

// ModernBertForMaskedLM, ForSequenceClassification, ForTokenClassification, ForQuestionAnswering:
// the base model under "model", `head` (dense -> activation -> norm) and the task's output layer.
class ModernBertHeadModel : public PreTrainedModel {
 public:
  ModernBertHeadModel(std::shared_ptr<ModernBertConfig> config, ModernBertHead head);
  std::string class_name() const override;
  std::string base_model_prefix() const override { return "model"; }
  std::vector<std::pair<std::string, std::string>> tied_weights() const override;
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  std::string output_embeddings_name() const override { return head_ == ModernBertHead::masked_lm ? "decoder" : ""; }

 private:
  const ModernBertConfig& cfg_;
  ModernBertHead head_;
  std::shared_ptr<ModernBertModel> model_;
  std::shared_ptr<Linear> dense_, decoder_, classifier_;
  std::shared_ptr<LayerNorm> head_norm_;
  Activation act_;
};

template <ModernBertHead kHead>
struct ModernBertHeadClass : ModernBertHeadModel {
  explicit ModernBertHeadClass(std::shared_ptr<ModernBertConfig> config) : ModernBertHeadModel(config, kHead) {}
};

}  // namespace plugformer::modernbert
