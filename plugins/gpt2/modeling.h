// GPT-2: transformers' modeling_gpt2.py (learned absolute positions, pre-LayerNorm blocks, fused
// q/k/v projection stored as Conv1D [in, out]) composed from the SDK layers, with transformers'
// parameter names (transformer.wte, transformer.h.N.attn.c_attn, ...).
#pragma once

#include <plugformer/layers.h>
#include <plugformer/modeling.h>

#include "config.h"

namespace plugformer::gpt2 {

class GPT2Attention : public torch::nn::Module, public TensorParallelModule {
 public:
  GPT2Attention(const GPT2Config& config, int64_t layer_idx);
  void split_for(int64_t rank, int64_t world) override;  // this rank's block of heads
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& mask, KVCache* cache, at::Tensor* probs);
  // Removes heads (numbered as in the unpruned layer) from c_attn's q, k, v parts and c_proj.
  void prune_heads(const std::vector<int64_t>& heads);

 private:
  int64_t layer_idx_, embed_dim_, heads_, head_dim_;
  int64_t split_size_;  // width of each of q, k, v: heads_ * head_dim_
  std::set<int64_t> pruned_heads_;
  double scale_;
  bool upcast_;
  std::shared_ptr<Conv1D> c_attn_, c_proj_;
};

class GPT2MLP : public torch::nn::Module {
 public:
  explicit GPT2MLP(const GPT2Config& config);
  at::Tensor forward(const at::Tensor& x) const;

 private:
  std::shared_ptr<Conv1D> c_fc_, c_proj_;
  Activation act_;
};

class GPT2Block : public torch::nn::Module {
 public:
  GPT2Block(const GPT2Config& config, int64_t layer_idx);
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& mask, KVCache* cache, at::Tensor* probs);

 private:
  std::shared_ptr<LayerNorm> ln_1_, ln_2_;
  std::shared_ptr<GPT2Attention> attn_;
  std::shared_ptr<GPT2MLP> mlp_;
};

// Checkpoints written before transformers 4.31 carry the causal-mask buffers attn.bias and
// attn.masked_bias; they are not weights.
inline std::vector<std::string> gpt2_ignored_unexpected_keys() {
  return {R"((^|\.)attn\.bias$)", R"((^|\.)attn\.masked_bias$)"};
}

class GPT2Model : public PreTrainedModel {
 public:
  explicit GPT2Model(std::shared_ptr<GPT2Config> config);
  std::string class_name() const override { return "GPT2Model"; }
  std::string base_model_prefix() const override { return "transformer"; }
  std::vector<std::string> ignored_unexpected_keys() const override { return gpt2_ignored_unexpected_keys(); }
  // Inputs: input_ids or inputs_embeds [batch, seq]; attention_mask [batch, past + seq];
  // position_ids (default arange(past, past + seq)); token_type_ids (embedded with wte).
  bool supports_gradient_checkpointing() const override { return true; }
  // wte by vocabulary rows; c_attn's q, k, v sections by heads then c_proj by rows; c_fc, c_proj.
  std::vector<TensorParallelRule> tensor_parallel_plan() const override;
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  std::string input_embeddings_name() const override { return "wte"; }
  void prune_heads_impl(const std::map<int64_t, std::vector<int64_t>>& heads_to_prune) override;

 private:
  const GPT2Config& cfg_;
  std::shared_ptr<Embedding> wte_, wpe_;
  std::vector<std::shared_ptr<GPT2Block>> h_;
  std::shared_ptr<LayerNorm> ln_f_;
};

// The head classes hold a GPT2Model named "transformer" and add their head on top of it.
class GPT2HeadModel : public PreTrainedModel {
 public:
  explicit GPT2HeadModel(std::shared_ptr<GPT2Config> config);
  std::string base_model_prefix() const override { return "transformer"; }
  std::vector<std::string> ignored_unexpected_keys() const override { return gpt2_ignored_unexpected_keys(); }
  std::vector<TensorParallelRule> tensor_parallel_plan() const override {
    return prefixed_plan("transformer", transformer_->tensor_parallel_plan());
  }

 protected:
  std::shared_ptr<GPT2Model> transformer_;
};

class GPT2LMHeadModel : public GPT2HeadModel {
 public:
  explicit GPT2LMHeadModel(std::shared_ptr<GPT2Config> config);
  std::string class_name() const override { return "GPT2LMHeadModel"; }
  std::vector<std::pair<std::string, std::string>> tied_weights() const override {
    return {{"lm_head.weight", "transformer.wte.weight"}};
  }
  bool can_generate() const override { return true; }
  std::vector<TensorParallelRule> tensor_parallel_plan() const override;
  ModelOutput forward(const ModelInputs& inputs) override;

 protected:
  std::string output_embeddings_name() const override { return "lm_head"; }

 private:
  std::shared_ptr<Linear> lm_head_;
};

class GPT2ForSequenceClassification : public GPT2HeadModel {
 public:
  explicit GPT2ForSequenceClassification(std::shared_ptr<GPT2Config> config);
  std::string class_name() const override { return "GPT2ForSequenceClassification"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<Linear> score_;
};

class GPT2ForTokenClassification : public GPT2HeadModel {
 public:
  explicit GPT2ForTokenClassification(std::shared_ptr<GPT2Config> config);
  std::string class_name() const override { return "GPT2ForTokenClassification"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<Linear> classifier_;
};

class GPT2ForQuestionAnswering : public GPT2HeadModel {
 public:
  explicit GPT2ForQuestionAnswering(std::shared_ptr<GPT2Config> config);
  std::string class_name() const override { return "GPT2ForQuestionAnswering"; }
  ModelOutput forward(const ModelInputs& inputs) override;

 private:
  std::shared_ptr<Linear> qa_outputs_;
};

}  // namespace plugformer::gpt2
