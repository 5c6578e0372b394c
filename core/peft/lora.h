// LoRA inside core: the adapters of one Linear / Conv1D (PEFT's lora.Linear), and the state every
// adapted layer of a PeftModel shares (which adapter is active, whether adapters are disabled).
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>

#include <torch/nn/module.h>

#include "plugformer/layers.h"

namespace plugformer {

class LoraState {
 public:
  std::string active;     // the adapter forward() uses
  bool disabled = false;  // disable_adapter(): the base model alone
};

class LoraLayer {
 public:
  // `owner` is the Linear / Conv1D; lora_A / lora_B are registered on it (PEFT's names).
  // fan_in_fan_out: the owner's weight is stored [in, out] (Conv1D).
  LoraLayer(torch::nn::Module& owner, int64_t in_features, int64_t out_features, bool fan_in_fan_out,
            std::shared_ptr<LoraState> state);

  // A fresh adapter: A [r, in] kaiming-uniform (or normal(0, 1/r) for "gaussian"), B [out, r]
  // zeros (random for init "false", so the adapter is not the identity).
  void add(const std::string& name, int64_t r, double scaling, double dropout, const std::string& init);
  void remove(const std::string& name);
  // Drops every adapter (merged ones stay in the weight): merge_and_unload.
  void clear();
  bool has(const std::string& name) const { return a_.count(name) > 0; }
  bool empty() const { return a_.empty(); }
  Linear& A(const std::string& name) const;
  Linear& B(const std::string& name) const;

  // base_out + B(A(dropout(x))) * scaling for the active adapter (unless merged or disabled).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& base_out);

  // weight += / -= scaling * B A (transposed for [in, out] weights).
  void merge(const std::string& name, at::Tensor& weight);
  void unmerge(at::Tensor& weight);
  const std::set<std::string>& merged() const { return merged_; }

 private:
  at::Tensor delta(const std::string& name) const;
  void rebuild();

  torch::nn::Module& owner_;
  int64_t in_, out_;
  bool fan_in_fan_out_;
  std::shared_ptr<LoraState> state_;
  // Containers registered on the owner as lora_A / lora_B, one child per adapter.
  std::shared_ptr<torch::nn::Module> lora_A_, lora_B_;
  std::map<std::string, std::shared_ptr<Linear>> a_, b_;
  std::map<std::string, double> scaling_, dropout_;
  std::set<std::string> merged_;
};

}  // namespace plugformer
