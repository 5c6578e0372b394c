// BERT: transformers' modeling_bert.py (absolute or relative position embeddings, token type
// embeddings, post-LayerNorm encoder, tanh pooler) and every task head, composed from the SDK
// layers with transformers' parameter names, so any bert checkpoint from the Hub loads unchanged.
#pragma once

#include <plugformer/layers.h>
#include <plugformer/modeling.h>

#include "config.h"

namespace plugformer::bert {

class BertEmbeddings : public torch::nn::Module {
 public:
  explicit BertEmbeddings(const BertConfig& config);
  // input_ids or inputs_embeds [batch, seq(, hidden)]; token_type_ids, position_ids [batch, seq] or undefined.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& token_type_ids, const at::Tensor& position_ids,
                     const at::Tensor& inputs_embeds, int64_t past_length) const;

 private:
  const BertConfig& cfg_;
  std::shared_ptr<Embedding> word_embeddings_, position_embeddings_, token_type_embeddings_;
  std::shared_ptr<LayerNorm> layer_norm_;
};

class BertSelfAttention : public torch::nn::Module {
 public:
  BertSelfAttention(const BertConfig& config, int64_t layer_idx);
  // mask: additive [batch, 1, q_len or 1, kv_len] or undefined; head_mask: [heads] or undefined.
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& head_mask, KVCache* cache,
                     at::Tensor* probs);
  // Removes heads (numbered as in the unpruned layer); returns the kept rows of the
  // [heads * head_dim] projections so the output projection can drop the same inputs.
  at::Tensor prune_heads(const std::vector<int64_t>& heads);

 private:
  int64_t layer_idx_, heads_, head_dim_, max_positions_;
  std::set<int64_t> pruned_heads_;
  std::string position_embedding_type_;
  std::shared_ptr<Linear> query_, key_, value_;
  std::shared_ptr<Embedding> distance_embedding_;  // relative_key / relative_key_query only
};

// Linear, then LayerNorm of (output + residual): BertSelfOutput and BertOutput.
class BertResidualOutput : public torch::nn::Module {
 public:
  BertResidualOutput(const BertConfig& config, int64_t in_features);
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& residual) const;
  Linear& dense() { return *dense_; }

 private:
  std::shared_ptr<Linear> dense_;
  std::shared_ptr<LayerNorm> layer_norm_;
};

class BertAttention : public torch::nn::Module {
 public:
  BertAttention(const BertConfig& config, int64_t layer_idx);
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& head_mask, KVCache* cache,
                     at::Tensor* probs);
  void prune_heads(const std::vector<int64_t>& heads) { prune_linear_layer(output_->dense(), self_->prune_heads(heads), 1); }

 private:
  std::shared_ptr<BertSelfAttention> self_;
  std::shared_ptr<BertResidualOutput> output_;
};

class BertIntermediate : public torch::nn::Module {
 public:
  explicit BertIntermediate(const BertConfig& config);
  at::Tensor forward(const at::Tensor& hidden) const;

 private:
  std::shared_ptr<Linear> dense_;
  Activation act_;
};

class BertLayer : public torch::nn::Module {
 public:
  BertLayer(const BertConfig& config, int64_t layer_idx);
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& head_mask, KVCache* cache,
                     at::Tensor* probs);

 private:
  std::shared_ptr<BertAttention> attention_;
  std::shared_ptr<BertIntermediate> intermediate_;
  std::shared_ptr<BertResidualOutput> output_;
};

class BertEncoder : public torch::nn::Module {
 public:
  explicit BertEncoder(const BertConfig& config);
  std::vector<std::shared_ptr<BertLayer>> layers;
};

// tanh(dense(hidden[:, 0])).
class BertPooler : public torch::nn::Module {
 public:
  explicit BertPooler(const BertConfig& config);
  at::Tensor forward(const at::Tensor& hidden) const;

 private:
  std::shared_ptr<Linear> dense_;
};

class BertModel : public PreTrainedModel {
 public:
  explicit BertModel(std::shared_ptr<BertConfig> config, bool add_pooling_layer = true);
  std::string class_name() const override { return "BertModel"; }
  std::string base_model_prefix() const override { return "bert"; }
  std::vector<std::string> ignored_unexpected_keys() const override { return {R"(embeddings\.position_ids)"}; }
  // Inputs: input_ids or inputs_embeds, attention_mask, token_type_ids, position_ids, head_mask.
  // Outputs: last_hidden_state, pooler_output (with the pooling layer).
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  std::string input_embeddings_name() const override { return "embeddings.word_embeddings"; }
  void prune_heads_impl(const std::map<int64_t, std::vector<int64_t>>& heads_to_prune) override;

 private:
  const BertConfig& cfg_;
  std::shared_ptr<BertEmbeddings> embeddings_;
  std::shared_ptr<BertEncoder> encoder_;
  std::shared_ptr<BertPooler> pooler_;
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
