// The model base class (transformers' PreTrainedModel), its inputs and outputs, and the KV cache.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <functional>

#include <torch/nn/module.h>

#include "plugformer/config.h"
#include "plugformer/layers.h"

namespace plugformer {

class TensorParallelGroup;
struct TensorParallelSlice;

// Keys and values of past positions, per layer, for decoder self-attention (and the
// cross-attention keys/values of encoder-decoder models, computed once). Storage grows
// geometrically so a decode step copies only the new position.
class KVCache {
 public:
  // Appends k, v ([batch, kv_heads, new_len, head_dim]) to `layer`; returns the stored keys/values
  // (all so far, or the window's, see set_window) followed by the new ones.
  std::pair<at::Tensor, at::Tensor> update(size_t layer, const at::Tensor& k, const at::Tensor& v);
  // Storage for this many positions per layer, allocated at each layer's first update (generation
  // knows prompt + new tokens): decode then writes in place instead of regrowing and copying the
  // cache halfway. Untouched storage costs no memory until written. Windowed caches take at most
  // their window.
  void reserve(int64_t positions) { reserved_ = positions; }
  // Positions seen so far (stored or dropped): the next position's index.
  int64_t seq_length(size_t layer = 0) const;
  // For models whose every layer attends to the last `window` slots only (sliding window): each
  // layer keeps only the window - 1 most recent positions between updates, so the cache stops
  // growing. An update then returns stored_length() positions before the new ones, and attention
  // masks cover those latest slots only.
  void set_window(int64_t window) { window_ = window; }
  std::optional<int64_t> window() const { return window_; }
  int64_t stored_length(size_t layer = 0) const;
  size_t num_layers() const { return layers_.size(); }
  // Bytes the cache holds (its storage, grown ahead of use, and cross-attention keys / values).
  int64_t bytes() const;
  // Beam search: keeps row beam_idx[i] of every layer at row i.
  void reorder(const at::Tensor& beam_idx);

  // Cross-attention keys/values, set once per layer.
  bool has_cross(size_t layer) const { return layer < cross_.size() && cross_[layer].first.defined(); }
  const std::pair<at::Tensor, at::Tensor>& cross(size_t layer) const { return cross_.at(layer); }
  void set_cross(size_t layer, at::Tensor k, at::Tensor v);

  // Continuous batching: one step over sequences that each keep their own cache, of any lengths.
  // Row i of the step reads and extends rows[i]; nothing is padded or copied. With one new token
  // per row (a decode step, new_tokens empty) input_ids are [rows, 1]. With new_tokens[i] tokens
  // for row i (prompts prefilled together), input_ids are [1, sum of new_tokens]: the rows' tokens
  // one after another. Either way the logits are [rows, 1, vocab], at each row's last new token.
  // Models that can run such a step say so (PreTrainedModel::decodes_cache_batches).
  static std::shared_ptr<KVCache> batch_of(std::vector<std::shared_ptr<KVCache>> rows,
                                           std::vector<int64_t> new_tokens = {});
  bool is_batch() const { return !batch_rows_.empty(); }
  const std::vector<std::shared_ptr<KVCache>>& batch_rows() const { return batch_rows_; }
  // Row i's new tokens in this step (all 1 for a decode step).
  const std::vector<int64_t>& batch_new_tokens() const { return batch_new_tokens_; }
  // Whether the rows' tokens are packed into one row of input_ids (some row brings more than one).
  bool is_packed_batch() const;

 private:
  struct Layer {
    at::Tensor keys, values;  // [batch, heads, capacity, dim]; positions stored from slot `begin`
    int64_t begin = 0, length = 0, dropped = 0;
  };
  std::vector<Layer> layers_;
  std::optional<int64_t> window_;
  int64_t reserved_ = 0;
  std::vector<std::pair<at::Tensor, at::Tensor>> cross_;
  std::vector<std::shared_ptr<KVCache>> batch_rows_;
  std::vector<int64_t> batch_new_tokens_;
};

// Forward arguments under transformers' names: input_ids, attention_mask, position_ids,
// token_type_ids, decoder_input_ids, labels, ... as tensors.
struct ModelInputs {
  std::map<std::string, at::Tensor> tensors;
  std::shared_ptr<KVCache> past_key_values;
  bool use_cache = false;
  std::optional<bool> output_hidden_states, output_attentions;
  // Compute logits for the last N positions only (0: all), as transformers' logits_to_keep.
  int64_t logits_to_keep = 0;
  // The caller reads per-sequence outputs only (a sequence classification or multiple choice
  // head's logits, pooler_output), not last_hidden_state: a head whose outputs come from the first
  // position alone may then skip the other positions where they are not needed (BERT-style heads
  // compute only the first position in the last layer). CrossEncoder sets it.
  bool pooled_outputs_only = false;

  ModelInputs() = default;
  ModelInputs(std::initializer_list<std::pair<const std::string, at::Tensor>> t) : tensors(t) {}
  bool has(const std::string& name) const;
  at::Tensor get(const std::string& name) const;       // undefined tensor when absent
  at::Tensor require(const std::string& name) const;   // InvalidInputError when absent
};

// Named outputs in transformers' order (loss, logits, last_hidden_state, ...), like ModelOutput.
struct ModelOutput {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::shared_ptr<KVCache> past_key_values;
  std::vector<at::Tensor> hidden_states;  // embeddings output, then each layer's
  std::vector<at::Tensor> attentions;     // each layer's attention probabilities

  void set(const std::string& name, at::Tensor value);
  bool has(const std::string& name) const;
  at::Tensor operator[](const std::string& name) const;  // InvalidInputError when absent
};

// transformers' output_loading_info.
struct LoadingInfo {
  std::vector<std::string> missing_keys, unexpected_keys, mismatched_keys;
};

struct LoadOptions {
  std::optional<c10::ScalarType> dtype;  // convert every floating weight; default: as stored
  std::map<std::string, std::string> key_mapping;  // regex -> replacement on checkpoint keys
  bool ignore_mismatched_sizes = false;
};

struct SaveOptions {
  int64_t max_shard_size = 5'000'000'000;  // bytes (parse_file_size("5GB")); transformers' default "5GB"
  bool safe_serialization = true;
  std::string variant;
  bool is_main_process = true;
  // Tensors to save instead of the model's own (transformers' state_dict argument).
  std::optional<std::vector<std::pair<std::string, at::Tensor>>> state_dict;
};

// transformers' convert_file_size_to_int: "5GB" = 5 * 10^9 bytes, "5GiB" = 5 * 2^30, "5Gb" (bits) = 5 * 10^9 / 8;
// also KB/KiB/MB/MiB and plain byte counts. InvalidInputError for anything else.
int64_t parse_file_size(const std::string& size);

// Runs fn(input) without keeping its activations; in backward, fn is run again (with the random
// generator state of the first run, so dropout masks match) and differentiated: activation
// checkpointing as torch.utils.checkpoint (reentrant). fn outlives the call, so it must capture
// by value. When `input` does not require grad (frozen embeddings, see
// enable_input_require_grads) fn simply runs with autograd, without saving memory.
at::Tensor checkpoint(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& input);

class PreTrainedModel : public torch::nn::Module {
 public:
  explicit PreTrainedModel(ConfigPtr config) : config_(std::move(config)) {}
  ~PreTrainedModel() override = default;

  const PretrainedConfig& config() const { return *config_; }
  ConfigPtr config_ptr() const { return config_; }
  template <class C>
  const C& config_as() const { return dynamic_cast<const C&>(*config_); }

  // The transformers class name, e.g. "LlamaForCausalLM".
  virtual std::string class_name() const = 0;
  // Attribute holding the base model in head classes ("model", "bert", "transformer").
  virtual std::string base_model_prefix() const { return ""; }
  // Pairs (tied parameter, parameter it aliases), active when config.tie_word_embeddings.
  virtual std::vector<std::pair<std::string, std::string>> tied_weights() const { return {}; }
  // Checkpoint keys that are expected not to be used (regexes), like _keys_to_ignore_on_load_unexpected.
  virtual std::vector<std::string> ignored_unexpected_keys() const { return {}; }
  virtual bool can_generate() const { return false; }
  // Generation: whether a cache of `cached` positions may be extended for a sequence that will have
  // `total` positions, or the whole sequence must be run again (transformers' Phi-3 does that once
  // when the sequence first outgrows original_max_position_embeddings, switching longrope's factors).
  virtual bool reuses_cache(int64_t /*total*/, int64_t /*cached*/) const { return true; }
  // Whether forward takes a KVCache::batch_of cache (each row its own history and new tokens).
  virtual bool decodes_cache_batches() const { return false; }

  // Tensor parallelism (distributed.h). The family's plan: which modules (paths relative to this
  // model) are split and how; empty when the class cannot be split.
  virtual std::vector<TensorParallelRule> tensor_parallel_plan() const { return {}; }
  // Splits the planned modules for `group`'s rank, before load_weights (which then keeps only
  // this rank's slices). ConfigError for a class without a plan or sizes the ranks do not divide.
  void split_for_tensor_parallel(std::shared_ptr<TensorParallelGroup> group);
  const std::shared_ptr<TensorParallelGroup>& tensor_parallel() const { return tensor_parallel_; }

  virtual ModelOutput forward(const ModelInputs& inputs) = 0;

  // Weights. load_weights takes name -> tensor with transformers' key handling (prefix
  // add/strip, gamma/beta, tied aliases, key_mapping); tensors are used as they are when no
  // dtype conversion is asked (zero copy from a safetensors mapping).
  LoadingInfo load_weights(const std::map<std::string, at::Tensor>& state, const LoadOptions& options = {},
                           const std::string& source = "state dict");
  // Fresh weights as transformers initialises them (normal(0, initializer_range), zero biases,
  // unit norms), for from_config and for keys a checkpoint lacks.
  void init_weights();
  std::vector<std::pair<std::string, at::Tensor>> state_dict() const;  // tied aliases included once each
  void tie_weights();
  void to_dtype(c10::ScalarType dtype);
  c10::ScalarType dtype() const;
  // Weight-only quantization of every Linear / Conv1D ("int8": int8 weights with one fp32 scale
  // per output row), for inference; InvalidInputError for other methods. A quantized model
  // cannot be saved in transformers' format or trained.
  void quantize(const std::string& method);
  bool is_quantized() const;

  // Writes config.json (+ generation_config.json for generative models) and the weights,
  // sharded with an index when larger than max_shard_size.
  void save_pretrained(const std::filesystem::path& dir, const SaveOptions& options = {}) const;

  int64_t num_parameters(bool only_trainable = false, bool exclude_embeddings = false) const;
  int64_t memory_footprint(bool return_buffers = true) const;
  // transformers' estimate_tokens (the number of elements of input_ids) and floating_point_ops:
  // 6 * tokens * parameters, the forward + backward cost of a training step.
  int64_t estimate_tokens(const ModelInputs& inputs) const;
  double floating_point_ops(const ModelInputs& inputs, bool exclude_embeddings = true) const;

  // Token embeddings and LM head (get/set_input/output_embeddings). Head classes reach the
  // embeddings of their base model through base_model_prefix(). get_output_embeddings returns
  // nullptr for classes without an LM head; set_* replace the weight (any number of rows).
  std::shared_ptr<Embedding> get_input_embeddings();
  void set_input_embeddings(const at::Tensor& weight);
  std::shared_ptr<Linear> get_output_embeddings();
  void set_output_embeddings(const at::Tensor& weight);
  // Resizes the token embeddings (and an untied LM head with its bias) to new_num_tokens rounded up
  // to pad_to_multiple_of, updates config vocab_size and re-ties tied heads. New rows are the mean
  // of the old ones plus tiny noise (mean_resizing), or freshly initialised. Returns the embeddings.
  std::shared_ptr<Embedding> resize_token_embeddings(std::optional<int64_t> new_num_tokens,
                                                     std::optional<int64_t> pad_to_multiple_of = std::nullopt,
                                                     bool mean_resizing = true);

  // Removes attention heads: {layer: [heads]}, indices as in the unpruned model. The union with
  // earlier pruning is kept in config.pruned_heads (saved with the config and applied again when
  // the model is built from it, so pruned checkpoints load). Error for families without it.
  void prune_heads(const std::map<int64_t, std::vector<int64_t>>& heads_to_prune);

  // Additive masks (0 where attended, the dtype's lowest value where masked) from 0/1 masks:
  // [batch, seq] -> [batch, 1, 1, seq] (causal [batch, 1, seq, seq] when config.is_decoder),
  // [batch, q, k] -> [batch, 1, q, k]. dtype defaults to the model's.
  at::Tensor get_extended_attention_mask(const at::Tensor& attention_mask, at::IntArrayRef input_shape,
                                         std::optional<c10::ScalarType> dtype = std::nullopt) const;
  at::Tensor invert_attention_mask(const at::Tensor& encoder_attention_mask) const;

  // Activation checkpointing of the layer stack while training (checkpoint() per layer). Families
  // that support it say so; the cache is not used while it is active.
  virtual bool supports_gradient_checkpointing() const { return false; }
  void gradient_checkpointing_enable();
  void gradient_checkpointing_disable();
  bool is_gradient_checkpointing() const { return gradient_checkpointing_; }
  // Makes the embedding output require grad, so checkpointed layers and adapters get gradients
  // while the embeddings are frozen.
  void enable_input_require_grads();
  void disable_input_require_grads();

  // Tags for the model card that push_to_hub writes (add_model_tags), without duplicates.
  void add_model_tags(const std::vector<std::string>& tags);
  const std::vector<std::string>& model_tags() const { return model_tags_; }
  // register_for_auto_class: records this class under `auto_class` ("AutoModel",
  // "AutoModelForCausalLM", ...) in the config's auto_map, so save_pretrained writes it and the
  // Auto class picks this class when loading the files back (the class must be registered,
  // e.g. by a plugin). ConfigError for an unknown Auto class.
  void register_for_auto_class(const std::string& auto_class = "AutoModel");

 protected:
  // Module paths, relative to this model, of the token embedding and the LM head ("" when the
  // class has none). A base model names its embedding; head classes name their head.
  virtual std::string input_embeddings_name() const { return ""; }
  virtual std::string output_embeddings_name() const { return ""; }
  // The family's pruning of its base model's layers (only heads not pruned before are passed).
  virtual void prune_heads_impl(const std::map<int64_t, std::vector<int64_t>>& heads_to_prune);
  // A submodule by dotted path ("encoder.layer.3.attention"), or nullptr.
  std::shared_ptr<torch::nn::Module> find_module(const std::string& path) const;
  // Called at the end of init_weights, for weights a family initialises by rule rather than at
  // random (DistilBERT's sinusoidal position table).
  virtual void initialized_weights() {}
  // Called by resize_token_embeddings for vocabulary-sized state beyond the embedding and head
  // weights (BERT's separate MLM bias).
  virtual void resized_token_embeddings(int64_t /*new_num_tokens*/) {}
  // One layer of a stack: (layer index, hidden states, where to store attention probabilities or
  // nullptr) -> new hidden states. Checkpointed layers run again in backward: capture by value.
  using LayerStep = std::function<at::Tensor(int64_t index, const at::Tensor& hidden, at::Tensor* probs)>;
  // Runs `count` layers on `hidden`. Each layer's input goes to out.hidden_states when
  // want_hidden, its attention probabilities to out.attentions when want_attn. With gradient
  // checkpointing active (and no attentions asked), every layer goes through checkpoint().
  at::Tensor run_layers(int64_t count, const LayerStep& layer, at::Tensor hidden, bool want_hidden, bool want_attn,
                        ModelOutput& out) const;
  // Gradient checkpointing is on, the model is training and autograd is recording.
  bool checkpointing_active() const;

  ConfigPtr config_;

 private:
  void init_weight(const std::string& name, at::Tensor& tensor, c10::ScalarType dtype) const;
  PreTrainedModel* base_model();

  bool gradient_checkpointing_ = false;
  std::vector<std::string> model_tags_;
  std::shared_ptr<TensorParallelGroup> tensor_parallel_;
  std::map<std::string, std::shared_ptr<const TensorParallelSlice>> tensor_parallel_slices_;  // by parameter name
};

using ModelPtr = std::shared_ptr<PreTrainedModel>;

}  // namespace plugformer
