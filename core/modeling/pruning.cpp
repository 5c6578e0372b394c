// Attention head pruning (transformers' prune_heads and pytorch_utils helpers).
#include <ATen/ATen.h>

#include "plugformer/error.h"
#include "plugformer/layers.h"
#include "plugformer/modeling.h"

namespace plugformer {

std::pair<std::set<int64_t>, at::Tensor> find_pruneable_heads_and_indices(const std::vector<int64_t>& heads,
                                                                          int64_t n_heads, int64_t head_size,
                                                                          const std::set<int64_t>& already_pruned) {
  at::Tensor keep = at::ones({n_heads, head_size}, at::kBool);
  std::set<int64_t> remaining;
  for (int64_t head : heads)
    if (!already_pruned.count(head)) remaining.insert(head);
  for (int64_t head : remaining) {
    // Position of this head among those left after the earlier pruning.
    int64_t position = head;
    for (int64_t gone : already_pruned)
      if (gone < head) --position;
    if (position < 0 || position >= n_heads)
      throw InvalidInputError("prune_heads: head " + std::to_string(head) + " does not exist (" +
                              std::to_string(n_heads) + " heads left)");
    keep[position].fill_(false);
  }
  return {remaining, at::arange(n_heads * head_size, at::kLong).masked_select(keep.view(-1))};
}

namespace {
void keep_entries(at::Tensor& tensor, const at::Tensor& index, int64_t dim) {
  at::NoGradGuard no_grad;
  tensor.set_data(tensor.index_select(dim, index).contiguous());
}
}  // namespace

void prune_linear_layer(Linear& layer, const at::Tensor& index, int64_t dim) {
  keep_entries(layer.weight, index, dim);
  if (dim == 0 && layer.bias.defined()) keep_entries(layer.bias, index, 0);
}

void prune_conv1d_layer(Conv1D& layer, const at::Tensor& index, int64_t dim) {
  keep_entries(layer.weight, index, dim);
  if (dim == 1) keep_entries(layer.bias, index, 0);
}

void PreTrainedModel::prune_heads_impl(const std::map<int64_t, std::vector<int64_t>>&) {
  throw Error(class_name() + " does not support prune_heads");
}

void PreTrainedModel::prune_heads(const std::map<int64_t, std::vector<int64_t>>& heads_to_prune) {
  // config.pruned_heads: {"layer": [heads]}, as transformers saves it.
  json pruned = config_->has("pruned_heads") && config_->get("pruned_heads").is_object() ? config_->get("pruned_heads")
                                                                                          : json::object();
  for (const auto& [layer, heads] : heads_to_prune) {
    std::set<int64_t> all(heads.begin(), heads.end());
    const std::string key = std::to_string(layer);
    if (pruned.contains(key))
      for (const auto& h : pruned[key]) all.insert(h.get<int64_t>());
    pruned[key] = std::vector<int64_t>(all.begin(), all.end());
  }
  base_model()->prune_heads_impl(heads_to_prune);
  config_->extra["pruned_heads"] = pruned;
}

}  // namespace plugformer
