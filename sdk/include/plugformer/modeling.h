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

#include <torch/nn/module.h>

#include "plugformer/config.h"

namespace plugformer {

// Keys and values of past positions, per layer, for decoder self-attention (and the
// cross-attention keys/values of encoder-decoder models, computed once). Storage grows
// geometrically so a decode step copies only the new position.
class KVCache {
 public:
  // Appends k, v ([batch, kv_heads, new_len, head_dim]) to `layer`; returns all keys/values so far.
  std::pair<at::Tensor, at::Tensor> update(size_t layer, const at::Tensor& k, const at::Tensor& v);
  int64_t seq_length(size_t layer = 0) const;
  size_t num_layers() const { return layers_.size(); }
  // Beam search: keeps row beam_idx[i] of every layer at row i.
  void reorder(const at::Tensor& beam_idx);

  // Cross-attention keys/values, set once per layer.
  bool has_cross(size_t layer) const { return layer < cross_.size() && cross_[layer].first.defined(); }
  const std::pair<at::Tensor, at::Tensor>& cross(size_t layer) const { return cross_.at(layer); }
  void set_cross(size_t layer, at::Tensor k, at::Tensor v);

 private:
  struct Layer {
    at::Tensor keys, values;  // [batch, heads, capacity, dim]
    int64_t length = 0;
  };
  std::vector<Layer> layers_;
  std::vector<std::pair<at::Tensor, at::Tensor>> cross_;
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
  int64_t max_shard_size = 5'000'000'000;  // bytes; transformers' default "5GB"
  bool safe_serialization = true;
  std::string variant;
  bool is_main_process = true;
};

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

  // Writes config.json (+ generation_config.json for generative models) and the weights,
  // sharded with an index when larger than max_shard_size.
  void save_pretrained(const std::filesystem::path& dir, const SaveOptions& options = {}) const;

  int64_t num_parameters(bool only_trainable = false, bool exclude_embeddings = false) const;
  int64_t memory_footprint(bool return_buffers = true) const;

 protected:
  ConfigPtr config_;

 private:
  void init_weight(const std::string& name, at::Tensor& tensor, c10::ScalarType dtype) const;
};

using ModelPtr = std::shared_ptr<PreTrainedModel>;

}  // namespace plugformer
