// Applying a family's tensor-parallel plan: which slice of each planned Linear / Conv1D /
// Embedding a rank holds, the slices it reads from the checkpoint, and the collectives the split
// layers finish with.
#include "distributed/tensor_parallel.h"

#include "checkpoint/checkpoint.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <sstream>

#include "plugformer/modeling.h"

namespace plugformer {

namespace {

std::vector<std::string> components(const std::string& path) {
  std::vector<std::string> parts;
  std::stringstream in(path);
  for (std::string part; std::getline(in, part, '.');) parts.push_back(part);
  return parts;
}

bool matches(const std::string& pattern, const std::string& path) {
  const auto p = components(pattern), m = components(path);
  if (p.size() != m.size()) return false;
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] != "*" && p[i] != m[i]) return false;
  return true;
}

// Blocks of `size` features split in whole `unit`s, section by section (fused projections).
std::vector<std::pair<int64_t, int64_t>> split_blocks(const TensorParallelRule& rule, int64_t size, int64_t rank,
                                                      int64_t world, const std::string& what, bool allow_shared) {
  const std::vector<int64_t> sections = rule.sections.empty() ? std::vector<int64_t>{size} : rule.sections;
  int64_t total = 0;
  for (int64_t s : sections) total += s;
  if (total != size)
    throw ConfigError(what + ": the plan's sections add up to " + std::to_string(total) + " features, the layer has " +
                      std::to_string(size));
  std::vector<std::pair<int64_t, int64_t>> blocks;
  int64_t offset = 0;
  for (int64_t section : sections) {
    if (rule.unit < 1 || section % rule.unit != 0)
      throw ConfigError(what + ": " + std::to_string(section) + " features are not whole units of " + std::to_string(rule.unit));
    const int64_t units = section / rule.unit;
    if (!allow_shared && units % world != 0)
      throw ConfigError(what + ": " + std::to_string(units) + " input units cannot be split over " + std::to_string(world) +
                        " tensor-parallel ranks");
    const auto [first, count] = tensor_parallel_units(units, rank, world, what);
    blocks.emplace_back(offset + first * rule.unit, count * rule.unit);
    offset += section;
  }
  return blocks;
}

int64_t block_total(const TensorParallelSlice& slice) {
  int64_t n = 0;
  for (const auto& [start, length] : slice.blocks) n += length;
  return n;
}

}  // namespace

std::vector<TensorParallelRule> prefixed_plan(const std::string& prefix, std::vector<TensorParallelRule> plan) {
  for (auto& rule : plan) rule.pattern = prefix + "." + rule.pattern;
  return plan;
}

at::Tensor take_slice(const TensorParallelSlice& slice, const at::Tensor& full, const std::string& source,
                      const std::string& key) {
  if (full.dim() <= slice.dim || full.size(slice.dim) != slice.full)
    throw CheckpointError(source + ": weight '" + key + "' has shape " + c10::str(full.sizes()) + " but the model built from its " +
                          "config expects " + std::to_string(slice.full) + " along dimension " + std::to_string(slice.dim));
  const bool padded = block_total(slice) != slice.local;
  if (slice.dim == 0 && slice.blocks.size() == 1 && !padded)
    return full.narrow(0, slice.blocks[0].first, slice.blocks[0].second);  // zero copy
  std::vector<at::Tensor> parts;
  for (const auto& [start, length] : slice.blocks) parts.push_back(full.narrow(slice.dim, start, length));
  if (padded) {
    std::vector<int64_t> shape = full.sizes().vec();
    shape[size_t(slice.dim)] = slice.local - block_total(slice);
    parts.push_back(at::zeros(shape, full.options()));
  }
  at::Tensor out = at::cat(parts, slice.dim).contiguous();
  release_mapped_pages(full);  // each rank's peak memory holds its slices, not what it sliced
  return out;
}

at::Tensor finish_parallel_linear(const TensorParallelShard& shard, at::Tensor out, const at::Tensor& bias) {
  switch (shard.style) {
    case ParallelStyle::rowwise:
      shard.group->all_reduce(out);
      return bias.defined() ? out + bias : out;
    case ParallelStyle::colwise_gather:
      return shard.group->all_gather(out).narrow(-1, 0, shard.full_size);
    default:
      return out;
  }
}

at::Tensor parallel_embedding(const TensorParallelShard& shard, const at::Tensor& weight, const at::Tensor& ids) {
  const at::Tensor local = ids - shard.first_row;
  const at::Tensor held = (local >= 0).logical_and(local < weight.size(0));
  at::Tensor out = at::embedding(weight, local.masked_fill(held.logical_not(), 0));
  out = out * held.unsqueeze(-1).to(out.scalar_type());
  shard.group->all_reduce(out);
  return out;
}

void PreTrainedModel::split_for_tensor_parallel(std::shared_ptr<TensorParallelGroup> group) {
  if (!group) throw InvalidInputError("split_for_tensor_parallel needs a group");
  if (tensor_parallel_) throw InvalidInputError(class_name() + " is already split for tensor parallelism");
  const std::vector<TensorParallelRule> plan = tensor_parallel_plan();
  if (plan.empty())
    throw ConfigError(class_name() + " has no tensor-parallel plan (its family does not declare how to split it)");
  const int64_t rank = group->rank(), world = group->size();
  torch::NoGradGuard no_grad;

  // Replaces `param` by an uninitialised tensor of this rank's shape and records the slice to load.
  auto split = [&](const std::string& name, at::Tensor& param, TensorParallelSlice slice) {
    if (!param.defined()) return;
    std::vector<int64_t> shape = param.sizes().vec();
    shape[size_t(slice.dim)] = slice.local;
    param.set_data(at::empty(shape, param.options()));
    tensor_parallel_slices_[name] = std::make_shared<const TensorParallelSlice>(std::move(slice));
  };
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    const std::string& path = item.key();
    const auto rule = std::find_if(plan.begin(), plan.end(), [&](const TensorParallelRule& r) { return matches(r.pattern, path); });
    if (rule == plan.end()) continue;
    auto shard = std::make_shared<TensorParallelShard>();
    shard->group = group;
    shard->style = rule->style;
    at::Tensor *weight = nullptr, *bias = nullptr;
    int64_t out_dim = 0;  // where the output features are in the stored weight
    if (auto* linear = dynamic_cast<Linear*>(item.value().get())) {
      if (linear->lora) throw ConfigError(path + ": LoRA adapters cannot be combined with tensor parallelism");
      weight = &linear->weight, bias = &linear->bias, linear->parallel = shard;
    } else if (auto* conv = dynamic_cast<Conv1D*>(item.value().get())) {
      if (conv->lora) throw ConfigError(path + ": LoRA adapters cannot be combined with tensor parallelism");
      weight = &conv->weight, bias = &conv->bias, out_dim = 1, conv->parallel = shard;
    } else if (auto* embedding = dynamic_cast<Embedding*>(item.value().get())) {
      if (rule->style != ParallelStyle::vocab_rows)
        throw ConfigError(path + ": an Embedding can only be split by rows (vocab_rows)");
      weight = &embedding->weight, embedding->parallel = shard;
    } else {
      throw ConfigError(class_name() + "'s tensor-parallel plan names " + path + ", a " + item.value()->name() +
                        ", not a Linear, Conv1D or Embedding");
    }
    const std::string what = class_name() + "." + path;
    const int64_t in_dim = 1 - out_dim, out_features = weight->size(out_dim);
    switch (rule->style) {
      case ParallelStyle::colwise: {
        const auto blocks = split_blocks(*rule, out_features, rank, world, what, /*allow_shared=*/true);
        TensorParallelSlice slice{out_dim, out_features, 0, blocks};
        slice.local = block_total(slice);
        split(path + ".weight", *weight, slice);
        if (bias) split(path + ".bias", *bias, {0, out_features, slice.local, blocks});
        break;
      }
      case ParallelStyle::rowwise: {
        const int64_t in_features = weight->size(in_dim);
        const auto blocks = split_blocks(*rule, in_features, rank, world, what, /*allow_shared=*/false);
        TensorParallelSlice slice{in_dim, in_features, 0, blocks};
        slice.local = block_total(slice);
        split(path + ".weight", *weight, slice);  // the bias is added once, after the sum
        break;
      }
      case ParallelStyle::colwise_gather:
      case ParallelStyle::vocab_rows: {
        // Equal shares (the last padded with zero rows) so the gathered outputs line up.
        const int64_t rows = rule->style == ParallelStyle::vocab_rows ? weight->size(0) : out_features;
        const int64_t share = (rows + world - 1) / world, first = std::min(rows, rank * share);
        const TensorParallelSlice slice{rule->style == ParallelStyle::vocab_rows ? 0 : out_dim, rows, share,
                                        {{first, std::min(rows, first + share) - first}}};
        shard->full_size = rows, shard->first_row = first;
        split(path + ".weight", *weight, slice);
        if (bias) split(path + ".bias", *bias, {0, rows, share, slice.blocks});
        break;
      }
    }
  }
  for (const auto& module : modules(/*include_self=*/false))
    if (auto* sized = dynamic_cast<TensorParallelModule*>(module.get())) sized->split_for(rank, world);
  tensor_parallel_ = std::move(group);
}

}  // namespace plugformer
