// T5: transformers' modeling_t5.py (encoder-decoder, RMS layer norms without bias, relative position
// buckets instead of absolute positions, unscaled attention) composed from the SDK layers, with
// transformers' parameter names (shared, encoder.block.N.layer.0.SelfAttention.q, ...).
#pragma once

#include <plugformer/layers.h>
#include <plugformer/modeling.h>

#include "config.h"

namespace plugformer::t5 {


// transformers' _shift_right: ids moved one step right behind decoder_start_token_id, -100
// (ignored label) replaced by pad_token_id. InvalidInputError when either id is not configured.
at::Tensor shift_right(const T5Config& config, const at::Tensor& ids);

class T5Attention : public torch::nn::Module {
 public:
  T5Attention(const T5Config& config, bool is_decoder, bool has_relative_attention_bias);
  // Position bias [1, heads, q_len, k_len] for queries at past .. past + q_len - 1 and keys
  // 0 .. k_len - 1 (only the first layer of a stack has the table).
  at::Tensor compute_bias(int64_t q_len, int64_t k_len, int64_t past) const;
  // Self-attention when key_value_states is undefined, cross-attention otherwise. bias: position
  // bias plus additive mask (or undefined). The cache gets this layer's keys / values.
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& key_value_states, const at::Tensor& bias,
                     KVCache* cache, size_t layer, at::Tensor* probs);

 private:
  bool is_decoder_;
  int64_t heads_, num_buckets_, max_distance_;
  std::shared_ptr<Linear> q_, k_, v_, o_;
  std::shared_ptr<Embedding> relative_attention_bias_;
};

// The feed-forward block: wi -> act -> wo, or gated act(wi_0 x) * wi_1 x -> wo (T5 v1.1).
class T5DenseActDense : public torch::nn::Module {
 public:
  explicit T5DenseActDense(const T5Config& config);
  at::Tensor forward(const at::Tensor& x) const;

 private:
  std::shared_ptr<Linear> wi_, wi_0_, wi_1_, wo_;
  Activation act_;
};

// One residual sub-layer: x + f(layer_norm(x)), f being self-attention, cross-attention or the
// feed-forward block (transformers' T5LayerSelfAttention / T5LayerCrossAttention / T5LayerFF).
class T5LayerSelfAttention : public torch::nn::Module {
 public:
  T5LayerSelfAttention(const T5Config& config, bool is_decoder, bool has_relative_attention_bias);
  std::shared_ptr<T5Attention> attention;
  std::shared_ptr<RMSNorm> layer_norm;
};

class T5LayerCrossAttention : public torch::nn::Module {
 public:
  explicit T5LayerCrossAttention(const T5Config& config);
  std::shared_ptr<T5Attention> attention;
  std::shared_ptr<RMSNorm> layer_norm;
};

class T5LayerFF : public torch::nn::Module {
 public:
  explicit T5LayerFF(const T5Config& config);
  std::shared_ptr<T5DenseActDense> dense;
  std::shared_ptr<RMSNorm> layer_norm;
};

class T5Block : public torch::nn::Module {
 public:
  T5Block(const T5Config& config, bool is_decoder, bool has_relative_attention_bias);
  // probs[0] gets the self-attention probabilities, probs[1] the cross-attention ones.
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& self_bias, const at::Tensor& encoder_hidden,
                     const at::Tensor& cross_bias, KVCache* cache, size_t layer, at::Tensor* probs);
  const T5Attention& self_attention() const { return *self_->attention; }

 private:
  std::shared_ptr<T5LayerSelfAttention> self_;
  std::shared_ptr<T5LayerCrossAttention> cross_;
  std::shared_ptr<T5LayerFF> ff_;
};

// The encoder or the decoder: blocks over the shared embedding, then final_layer_norm.
class T5Stack : public torch::nn::Module {
 public:
  T5Stack(const T5Config& config, bool is_decoder, std::shared_ptr<Embedding> embed_tokens);
  // Per-layer results a caller may ask for (nullptr: not wanted).
  struct Trace {
    std::vector<at::Tensor>* hidden_states = nullptr;  // embeddings output, each layer's, the normed last
    std::vector<at::Tensor>* attentions = nullptr;
    std::vector<at::Tensor>* cross_attentions = nullptr;
  };
  // ids or embeds [batch, seq]; mask [batch, past + seq] (0/1) or undefined; the decoder also
  // takes the encoder output and its mask.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                     const at::Tensor& encoder_hidden, const at::Tensor& encoder_attention_mask, KVCache* cache,
                     const Trace& trace);

 private:
  const T5Config& cfg_;
  bool is_decoder_;
  std::shared_ptr<Embedding> embed_tokens_;  // the model's `shared` (not registered here)
  std::vector<std::shared_ptr<T5Block>> block_;
  std::shared_ptr<RMSNorm> final_layer_norm_;
};

// Parameters every T5 class has: shared, encoder (and decoder) with transformers' names.
class T5PreTrainedModel : public PreTrainedModel {
 public:
  T5PreTrainedModel(std::shared_ptr<T5Config> config, bool with_decoder);
  // Older checkpoints carry the embedding under each stack's name and a cross-attention bias table
  // that T5 never used.
  std::vector<std::string> ignored_unexpected_keys() const override {
    return {R"(^(transformer\.)?(encoder|decoder)\.embed_tokens\.weight$)",
            R"(^(transformer\.)?decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$)"};
  }

 protected:
  std::string input_embeddings_name() const override { return "shared"; }
  // Runs the encoder (or takes encoder_outputs) and the decoder. Outputs: the decoder's
  // last_hidden_state (before any head), encoder_last_hidden_state, caches and per-layer states.
  ModelOutput encode_decode(const ModelInputs& inputs, const at::Tensor& decoder_input_ids);
  const T5Config& cfg_;
  std::shared_ptr<Embedding> shared_;
  std::shared_ptr<T5Stack> encoder_, decoder_;
};

class T5Model : public T5PreTrainedModel {
 public:
  explicit T5Model(std::shared_ptr<T5Config> config) : T5PreTrainedModel(std::move(config), true) {}
  std::string class_name() const override { return "T5Model"; }
  ModelOutput forward(const ModelInputs& inputs) override;
};

class T5EncoderModel : public T5PreTrainedModel {
 public:
  explicit T5EncoderModel(std::shared_ptr<T5Config> config) : T5PreTrainedModel(std::move(config), false) {}
  std::string class_name() const override { return "T5EncoderModel"; }
  ModelOutput forward(const ModelInputs& inputs) override;
};

class T5ForConditionalGeneration : public T5PreTrainedModel {
 public:
  explicit T5ForConditionalGeneration(std::shared_ptr<T5Config> config);
  std::string class_name() const override { return "T5ForConditionalGeneration"; }
  std::vector<std::pair<std::string, std::string>> tied_weights() const override {
    return {{"lm_head.weight", "shared.weight"}};
  }
  bool can_generate() const override { return true; }
  // input_ids / attention_mask (or encoder_outputs), decoder_input_ids (or labels, shifted right),
  // decoder_attention_mask. Outputs loss (with labels, -100 ignored), logits, encoder_last_hidden_state.
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  std::string output_embeddings_name() const override { return "lm_head"; }

 private:
  std::shared_ptr<Linear> lm_head_;
};

// dense -> tanh -> out_proj, on the decoder state at the last eos token.
class T5ClassificationHead : public torch::nn::Module {
 public:
  explicit T5ClassificationHead(const T5Config& config);
  at::Tensor forward(const at::Tensor& x) const;

 private:
  std::shared_ptr<Linear> dense_, out_proj_;
};

// Classifies at the last eos token of each row (every row must have as many eos tokens).
class T5ForSequenceClassification : public PreTrainedModel {
 public:
  explicit T5ForSequenceClassification(std::shared_ptr<T5Config> config);
  std::string class_name() const override { return "T5ForSequenceClassification"; }
  std::string base_model_prefix() const override { return "transformer"; }
  std::vector<std::string> ignored_unexpected_keys() const override { return transformer_->ignored_unexpected_keys(); }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<T5Model> transformer_;
  std::shared_ptr<T5ClassificationHead> classification_head_;
};

class T5ForQuestionAnswering : public T5PreTrainedModel {
 public:
  explicit T5ForQuestionAnswering(std::shared_ptr<T5Config> config);
  std::string class_name() const override { return "T5ForQuestionAnswering"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<Linear> qa_outputs_;
};

}  // namespace plugformer::t5
