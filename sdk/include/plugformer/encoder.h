// BERT-style encoders (BERT, RoBERTa, XLM-RoBERTa) built once in core: the configuration fields
// they share, the base model (embeddings, post-LayerNorm layers, tanh pooler) under transformers'
// parameter names, and RoBERTa's heads. A family plugin holds its config class and registrations.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "plugformer/config.h"
#include "plugformer/layers.h"
#include "plugformer/modeling.h"
#include "plugformer/registry.h"

namespace plugformer {

// configuration_bert.py's fields (RoBERTa's configuration has the same ones); a family sets its
// defaults in its constructor.
class BertStyleConfig : public PretrainedConfig {
 public:
  void visit_fields(ConfigFieldVisitor& v) override;
  void validate() const override;

  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double initializer_range = 0.02;
  double layer_norm_eps = 1e-12;
  std::string position_embedding_type = "absolute";
  std::optional<double> classifier_dropout;  // null: hidden_dropout_prob

  int64_t head_size() const { return hidden_size / num_attention_heads; }
  // MPNet: the rows of encoder.relative_attention_bias, indexed by T5's bidirectional buckets (32,
  // max distance 128) of the slot offset k - q and added to every layer's scores; 0: no such bias.
  virtual int64_t relative_attention_table_size() const { return 0; }
};

// How absolute position ids are made when none are given: BERT counts slots from the cache length;
// RoBERTa numbers the non-padding tokens from pad_token_id + 1 and gives padding pad_token_id.
enum class PositionIds { from_slots, after_padding_idx };

// Where a family's encoder differs from BERT's.
struct EncoderLayout {
  std::string prefix = "bert";  // base_model_prefix: the base model's name under the heads
  PositionIds positions = PositionIds::from_slots;
  std::optional<int64_t> padding_idx;  // set: the padding rule's index (MPNet: 1), else pad_token_id
  bool token_type_embeddings = true;   // MPNet has none
  // MPNet: attention.attn.{q,k,v,o} and attention.LayerNorm, not BERT's attention.self.{query,key,
  // value} and attention.output.{dense,LayerNorm}.
  bool mpnet_attention_names = false;
};

class BertEmbeddings;
class BertEncoder;
class BertPooler;

// BertModel / RobertaModel: inputs input_ids or inputs_embeds, attention_mask ([batch, seq] or
// [batch, from, to]), token_type_ids, position_ids, head_mask; outputs last_hidden_state and
// pooler_output (with the pooling layer). A decoder (is_decoder) is causal and keeps a KV cache.
class BertStyleModel : public PreTrainedModel {
 public:
  BertStyleModel(std::shared_ptr<BertStyleConfig> config, std::string family, EncoderLayout layout,
                 bool add_pooling_layer = true);
  ~BertStyleModel() override;
  std::string class_name() const override { return family_ + "Model"; }
  std::string base_model_prefix() const override { return layout_.prefix; }
  std::vector<std::string> ignored_unexpected_keys() const override { return {R"(embeddings\.position_ids)"}; }
  ModelOutput forward(const ModelInputs& inputs) override;
  // As forward, but the last layer computes the first position's output alone (its queries,
  // output projection and MLP; keys and values of every position): last_hidden_state is
  // [batch, 1, hidden]. For heads that read only the first position when the caller asks for
  // pooled outputs only (ModelInputs::pooled_outputs_only). Every position is computed where
  // hidden states or attentions are asked for, for a decoder and for relative position embeddings.
  ModelOutput forward_first_position(const ModelInputs& inputs);

 protected:
  std::string input_embeddings_name() const override { return "embeddings.word_embeddings"; }
  void prune_heads_impl(const std::map<int64_t, std::vector<int64_t>>& heads_to_prune) override;

 private:
  ModelOutput forward(const ModelInputs& inputs, bool first_position);
  const BertStyleConfig& cfg_;
  std::string family_;
  EncoderLayout layout_;
  std::shared_ptr<BertEmbeddings> embeddings_;
  std::shared_ptr<BertEncoder> encoder_;
  std::shared_ptr<BertPooler> pooler_;
};

// The input checks an encoder's forward starts with: exactly one of input_ids [batch, seq] and
// inputs_embeds [batch, seq, hidden_size], and attention_mask [batch, seq] when given (InvalidInputError
// naming `model_class` otherwise). Returns {batch, seq}.
std::pair<int64_t, int64_t> check_encoder_inputs(const ModelInputs& inputs, int64_t hidden_size,
                                                 const std::string& model_class);

// Multiple choice: inputs [batch, num_choices, seq(, hidden)] flattened to [batch * num_choices, ...]
// for the base model (labels removed); `batch` and `choices` receive the two sizes.
ModelInputs flatten_choices(const ModelInputs& inputs, const std::string& model_class, int64_t& batch, int64_t& choices);

// RoBERTa's layout: positions after the padding index, the base model under "roberta".
inline EncoderLayout roberta_layout() {
  EncoderLayout layout;
  layout.prefix = "roberta";
  layout.positions = PositionIds::after_padding_idx;
  return layout;
}

// What a RoBERTa-style family registers (model_type, class-name stem such as "Roberta",
// "XLMRoberta" or "MPNet"): <family>Model and the ForMaskedLM, ForSequenceClassification,
// ForTokenClassification, ForQuestionAnswering and ForMultipleChoice heads of modeling_roberta.py
// (ForCausalLM too when `causal_lm`), their base model under layout.prefix, built from `Config`.
void register_roberta_family(Registry& registry, const std::string& model_type, const std::string& family,
                             std::function<std::shared_ptr<BertStyleConfig>(ConfigPtr)> as_config,
                             const EncoderLayout& layout, bool causal_lm);

template <class Config>
void register_roberta_family(Registry& registry, const std::string& model_type, const std::string& family,
                             const EncoderLayout& layout = roberta_layout(), bool causal_lm = true) {
  registry.register_config(model_type, [] { return std::make_shared<Config>(); });
  register_roberta_family(
      registry, model_type, family,
      [model_type](ConfigPtr config) {
        auto typed = std::dynamic_pointer_cast<Config>(config);
        if (!typed)
          throw RegistryError("model class needs a " + model_type + " config, got '" + config->model_type() + "'");
        return std::shared_ptr<BertStyleConfig>(typed);
      },
      layout, causal_lm);
}

}  // namespace plugformer
