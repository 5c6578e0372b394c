#include <ATen/ATen.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <regex>
#include <set>
#include <sys/mman.h>
#include <unistd.h>

#include "distributed/tensor_parallel.h"
#include "plugformer/error.h"
#include "plugformer/generation.h"
#include "plugformer/json_text.h"
#include "plugformer/layers.h"
#include "plugformer/log.h"
#include "plugformer/modeling.h"
#include "plugformer/registry.h"
#include "plugformer/safetensors.h"

namespace plugformer {

namespace {

// Parameters and buffers by full dotted name, in registration order.
std::vector<std::pair<std::string, at::Tensor>> named_tensors(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : module.named_parameters(true)) out.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers(true)) out.emplace_back(item.key(), item.value());
  return out;
}

// A weight converted to `dtype` in fresh memory. Large ones are backed by transparent huge
// pages where the kernel offers them (THP "madvise" mode): decode streams every weight once per
// token, and with 4 KB pages the TLB misses cost about a third of the read bandwidth.
at::Tensor converted(const at::Tensor& t, c10::ScalarType dtype) {
  at::Tensor out = at::empty(t.sizes(), t.options().dtype(dtype));
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const auto begin = reinterpret_cast<uintptr_t>(out.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1), last = (begin + out.nbytes()) & ~(kHuge - 1);
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);  // advisory only
  out.copy_(t);
  return out;
}

// Old checkpoints name LayerNorm parameters gamma/beta.
std::string fix_legacy_name(const std::string& key) {
  if (key.ends_with(".gamma")) return key.substr(0, key.size() - 6) + ".weight";
  if (key.ends_with(".beta")) return key.substr(0, key.size() - 5) + ".bias";
  return key;
}

}  // namespace

LoadingInfo PreTrainedModel::load_weights(const std::map<std::string, at::Tensor>& state, const LoadOptions& options,
                                          const std::string& source) {
  torch::NoGradGuard no_grad;
  LoadingInfo info;
  const auto model_tensors = named_tensors(*this);
  std::set<std::string> model_keys;
  for (const auto& [k, t] : model_tensors) model_keys.insert(k);

  // Checkpoint key -> model key: key_mapping, legacy names, then base_model_prefix add/strip.
  std::vector<std::pair<std::regex, std::string>> mapping;
  for (const auto& [pattern, replacement] : options.key_mapping) mapping.emplace_back(std::regex(pattern), replacement);
  std::map<std::string, std::string> renamed;  // model-side name -> checkpoint name
  std::vector<std::pair<std::string, std::string>> keys;
  for (const auto& [key, tensor] : state) {
    std::string name = key;
    for (const auto& [re, replacement] : mapping) name = std::regex_replace(name, re, replacement);
    keys.emplace_back(key, fix_legacy_name(name));
  }
  const std::string prefix = base_model_prefix().empty() ? "" : base_model_prefix() + ".";
  if (!prefix.empty()) {
    const bool checkpoint_has_prefix =
        std::any_of(keys.begin(), keys.end(), [&](const auto& k) { return k.second.starts_with(prefix); });
    const bool model_has_prefix =
        std::any_of(model_keys.begin(), model_keys.end(), [&](const auto& k) { return k.starts_with(prefix); });
    for (auto& [original, name] : keys) {
      if (model_has_prefix && !checkpoint_has_prefix) name = prefix + name;  // head model, base checkpoint
      else if (!model_has_prefix && checkpoint_has_prefix && name.starts_with(prefix))
        name = name.substr(prefix.size());  // base model, head checkpoint
    }
  }
  for (const auto& [original, name] : keys) renamed[name] = original;

  std::set<std::string> tied_targets;
  if (config_->tie_word_embeddings)
    for (const auto& [target, src] : tied_weights()) tied_targets.insert(target);

  for (const auto& [name, param] : model_tensors) {
    auto it = renamed.find(name);
    if (it == renamed.end()) {
      if (!tied_targets.count(name)) info.missing_keys.push_back(name);
      continue;
    }
    at::Tensor value = state.at(it->second);
    if (auto slice = tensor_parallel_slices_.find(name); slice != tensor_parallel_slices_.end())
      value = take_slice(*slice->second, value, source, it->second);
    if (value.sizes() != param.sizes()) {
      if (!options.ignore_mismatched_sizes)
        throw CheckpointError(source + ": weight '" + it->second + "' has shape " + c10::str(value.sizes()) +
                              " but the model built from its config expects " + c10::str(param.sizes()));
      info.mismatched_keys.push_back(name);
      info.missing_keys.push_back(name);
      continue;
    }
    if (param.is_floating_point() && value.is_floating_point()) {
      const auto dtype = options.dtype.value_or(value.scalar_type());
      if (value.scalar_type() != dtype) value = converted(value, dtype);
    } else if (value.scalar_type() != param.scalar_type()) {
      throw CheckpointError(source + ": weight '" + it->second + "' has dtype " + c10::toString(value.scalar_type()) +
                            " but the model expects " + c10::toString(param.scalar_type()));
    }
    param.set_data(value);
  }

  std::vector<std::regex> ignored;
  for (const auto& pattern : ignored_unexpected_keys()) ignored.emplace_back(pattern);
  for (const auto& [original, name] : keys) {
    if (model_keys.count(name)) continue;
    if (std::any_of(ignored.begin(), ignored.end(), [&](const std::regex& re) { return std::regex_search(name, re); }))
      continue;
    info.unexpected_keys.push_back(original);
  }

  // Weights absent from the checkpoint get transformers-style initial values.
  for (auto [name, param] : model_tensors)
    if (std::find(info.missing_keys.begin(), info.missing_keys.end(), name) != info.missing_keys.end())
      init_weight(name, param, options.dtype.value_or(param.scalar_type()));
  if (!info.missing_keys.empty()) {
    std::string list;
    for (const auto& k : info.missing_keys) list += (list.empty() ? "" : ", ") + k;
    logger().warn("Some weights of {} were not initialized from {} and are newly initialized: {}", class_name(),
                  source, list);
  }
  if (!info.unexpected_keys.empty()) {
    std::string list;
    for (const auto& k : info.unexpected_keys) list += (list.empty() ? "" : ", ") + k;
    logger().info("Some weights of {} were not used when initializing {}: {}", source, class_name(), list);
  }
  if (options.dtype)
    for (auto& [name, param] : model_tensors)
      if (param.is_floating_point() && param.scalar_type() != *options.dtype) param.set_data(converted(param, *options.dtype));
  tie_weights();
  return info;
}

void PreTrainedModel::init_weight(const std::string& name, at::Tensor& tensor, c10::ScalarType dtype) const {
  const double range = config_->has("initializer_range") ? config_->get("initializer_range").get<double>() : 0.02;
  at::Tensor fresh = at::empty(tensor.sizes(), tensor.options().dtype(dtype));
  const bool is_norm = name.find("norm") != std::string::npos || name.find("LayerNorm") != std::string::npos ||
                       name.find("ln_") != std::string::npos;
  // Gemma's norms scale by 1 + weight: their neutral weight is 0.
  const auto owner = std::dynamic_pointer_cast<RMSNorm>(find_module(name.substr(0, name.rfind('.'))));
  if (!fresh.is_floating_point() || name.ends_with("bias") || (owner && owner->unit_offset)) fresh.zero_();
  else if (is_norm) fresh.fill_(1.0);
  else fresh.normal_(0.0, range);
  tensor.set_data(fresh);
}

void PreTrainedModel::init_weights() {
  torch::NoGradGuard no_grad;
  for (auto [name, t] : named_tensors(*this)) init_weight(name, t, t.scalar_type());
  initialized_weights();
  tie_weights();
}

void PreTrainedModel::tie_weights() {
  if (!config_->tie_word_embeddings) return;
  torch::NoGradGuard no_grad;
  const auto tensors = named_tensors(*this);
  auto find = [&](const std::string& name) -> at::Tensor {
    for (const auto& [n, t] : tensors)
      if (n == name) return t;
    throw Error(class_name() + ": tied weight '" + name + "' does not exist");
  };
  for (const auto& [target, source] : tied_weights()) {
    at::Tensor t = find(target);
    at::Tensor s = find(source);
    t.set_data(s);  // shares the storage: one tensor, two names
  }
}

std::vector<std::pair<std::string, at::Tensor>> PreTrainedModel::state_dict() const {
  std::set<std::string> skip;
  if (config_->tie_word_embeddings)
    for (const auto& [target, source] : tied_weights()) skip.insert(target);
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& [name, t] : named_tensors(*this))
    if (!skip.count(name)) out.emplace_back(name, t);
  return out;
}

void PreTrainedModel::to_dtype(c10::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : named_tensors(*this))
    if (t.is_floating_point() && t.scalar_type() != dtype) t.set_data(converted(t, dtype));
  tie_weights();
}

c10::ScalarType PreTrainedModel::dtype() const {
  for (const auto& item : named_parameters(true))
    if (item.value().is_floating_point()) return item.value().scalar_type();
  return c10::kFloat;
}

namespace {

std::string dtype_config_name(c10::ScalarType t) {
  switch (t) {
    case c10::kFloat: return "float32";
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    case c10::kDouble: return "float64";
    default: return c10::toString(t);
  }
}

// transformers' _add_variant: model.safetensors + fp16 -> model.fp16.safetensors.
std::string add_variant(const std::string& name, const std::string& variant) {
  if (variant.empty()) return name;
  const auto dot = name.rfind('.');
  return name.substr(0, dot) + "." + variant + name.substr(dot);
}

}  // namespace

void PreTrainedModel::save_pretrained(const std::filesystem::path& dir, const SaveOptions& options) const {
  if (!options.is_main_process) return;
  if (tensor_parallel_)
    throw InvalidInputError(class_name() + " is split for tensor parallelism and holds only rank " +
                            std::to_string(tensor_parallel_->rank()) + "'s slices; save it from one process");
  if (is_quantized())
    throw InvalidInputError(class_name() + ": int8-quantized weights cannot be saved in transformers' format; save the "
                            "model before quantizing it");
  if (std::filesystem::exists(dir) && !std::filesystem::is_directory(dir))
    throw IOError(dir.string() + ": exists and is not a directory");
  std::filesystem::create_directories(dir);

  // Config with the class and dtype that were saved.
  nlohmann::json config_json = nlohmann::json::parse(config_->to_json_string());  // sorted keys
  config_json["architectures"] = {class_name()};
  config_json["torch_dtype"] = dtype_config_name(dtype());
  write_text_file(dir / "config.json", config_json.dump(2) + "\n");
  if (can_generate()) GenerationConfig::from_model_config(*config_).save_pretrained(dir);

  const auto tensors = options.state_dict ? *options.state_dict : state_dict();
  const std::string weights_name = add_variant(options.safe_serialization ? "model.safetensors" : "pytorch_model.bin",
                                               options.variant);
  // Shards: fill each up to max_shard_size in state-dict order (huggingface_hub's rule).
  std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards(1);
  int64_t shard_bytes = 0, total = 0;
  for (const auto& [name, t] : tensors) {
    const int64_t bytes = t.numel() * int64_t(t.element_size());
    if (!shards.back().empty() && shard_bytes + bytes > options.max_shard_size) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace_back(name, t);
    shard_bytes += bytes;
    total += bytes;
  }
  const bool sharded = shards.size() > 1;
  const auto dot = weights_name.rfind('.');
  const std::string stem = weights_name.substr(0, dot), ext = weights_name.substr(dot);

  // Stale weight files of an earlier save would confuse loading: remove them first.
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string f = entry.path().filename().string();
    if (f.starts_with(stem + "-") && f.ends_with(ext) && f.find("-of-") != std::string::npos)
      std::filesystem::remove(entry.path());
  }

  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char suffix[64];
    std::snprintf(suffix, sizeof(suffix), "-%05zu-of-%05zu", i + 1, shards.size());
    const std::string file = sharded ? stem + suffix + ext : weights_name;
    if (options.safe_serialization) {
      save_safetensors(dir / file, shards[i]);
    } else {
      c10::Dict<std::string, at::Tensor> dict;
      for (const auto& [name, t] : shards[i]) dict.insert(name, t.detach().contiguous());
      const std::vector<char> bytes = torch::pickle_save(dict);
      write_text_file(dir / file, std::string(bytes.begin(), bytes.end()));
    }
    for (const auto& [name, t] : shards[i]) weight_map[name] = file;
  }
  const std::string index_name = add_variant(
      options.safe_serialization ? "model.safetensors.index.json" : "pytorch_model.bin.index.json", options.variant);
  if (sharded) {
    nlohmann::ordered_json sorted_map = parse_json_text(nlohmann::json::parse(weight_map.dump()).dump());
    nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", sorted_map}};
    write_text_file(dir / index_name, index.dump(2) + "\n");
    std::filesystem::remove(dir / weights_name);
  } else {
    std::filesystem::remove(dir / index_name);
  }
}

int64_t PreTrainedModel::num_parameters(bool only_trainable, bool exclude_embeddings) const {
  std::set<const void*> seen;
  std::set<const void*> embedding_weights;
  if (exclude_embeddings)
    for (const auto& m : modules(true))
      if (auto* e = dynamic_cast<const Embedding*>(m.get())) embedding_weights.insert(e->weight.data_ptr());
  int64_t count = 0;
  for (const auto& item : named_parameters(true)) {
    const at::Tensor& p = item.value();
    if (only_trainable && !p.requires_grad()) continue;
    if (embedding_weights.count(p.data_ptr())) continue;
    if (!seen.insert(p.data_ptr()).second) continue;  // tied: count once
    count += p.numel();
  }
  return count;
}

int64_t PreTrainedModel::memory_footprint(bool return_buffers) const {
  std::set<const void*> seen;
  int64_t bytes = 0;
  auto add = [&](const at::Tensor& t) {
    if (seen.insert(t.data_ptr()).second) bytes += t.numel() * int64_t(t.element_size());
  };
  for (const auto& item : named_parameters(true)) add(item.value());
  if (return_buffers)
    for (const auto& item : named_buffers(true)) add(item.value());
  return bytes;
}

int64_t PreTrainedModel::estimate_tokens(const ModelInputs& inputs) const {
  if (inputs.has("input_ids")) return inputs.get("input_ids").numel();
  if (inputs.has("inputs_embeds")) return inputs.get("inputs_embeds").numel() / inputs.get("inputs_embeds").size(-1);
  logger().warn("Could not estimate the number of tokens of the input, floating-point operations will not be computed");
  return 0;
}

double PreTrainedModel::floating_point_ops(const ModelInputs& inputs, bool exclude_embeddings) const {
  return 6.0 * double(estimate_tokens(inputs)) * double(num_parameters(false, exclude_embeddings));
}

at::Tensor PreTrainedModel::get_extended_attention_mask(const at::Tensor& attention_mask, at::IntArrayRef input_shape,
                                                        std::optional<c10::ScalarType> dtype) const {
  const auto type = dtype.value_or(this->dtype());
  at::Tensor extended;
  if (attention_mask.dim() == 3) {
    extended = attention_mask.unsqueeze(1);
  } else if (attention_mask.dim() == 2) {
    if (config_->is_decoder) {
      // Causal over the input, with any past positions (a longer mask) visible to every query.
      const int64_t batch = input_shape.at(0), seq = input_shape.at(1);
      at::Tensor ids = at::arange(seq, at::kLong);
      at::Tensor causal = (ids.view({1, 1, seq}) <= ids.view({1, seq, 1})).expand({batch, seq, seq}).to(attention_mask.dtype());
      const int64_t prefix = attention_mask.size(1) - seq;
      if (prefix > 0)
        causal = at::cat({at::ones({batch, seq, prefix}, causal.options()), causal}, -1);
      extended = causal.unsqueeze(1) * attention_mask.unsqueeze(1).unsqueeze(1);
    } else {
      extended = attention_mask.unsqueeze(1).unsqueeze(1);
    }
  } else {
    throw InvalidInputError("attention_mask has " + std::to_string(attention_mask.dim()) +
                            " dimensions; expected [batch, seq] or [batch, q_len, k_len]");
  }
  return (1.0 - extended.to(type)) * finfo_min(type);
}

at::Tensor PreTrainedModel::invert_attention_mask(const at::Tensor& encoder_attention_mask) const {
  at::Tensor extended;
  if (encoder_attention_mask.dim() == 3) extended = encoder_attention_mask.unsqueeze(1);
  else if (encoder_attention_mask.dim() == 2) extended = encoder_attention_mask.unsqueeze(1).unsqueeze(1);
  else
    throw InvalidInputError("encoder_attention_mask has " + std::to_string(encoder_attention_mask.dim()) +
                            " dimensions; expected [batch, seq] or [batch, q_len, k_len]");
  const auto type = dtype();
  return (1.0 - extended.to(type)) * finfo_min(type);
}

void PreTrainedModel::add_model_tags(const std::vector<std::string>& tags) {
  for (const auto& tag : tags)
    if (std::find(model_tags_.begin(), model_tags_.end(), tag) == model_tags_.end()) model_tags_.push_back(tag);
}

void PreTrainedModel::register_for_auto_class(const std::string& auto_class) {
  const auto& known = tasks::all();
  if (std::find(known.begin(), known.end(), auto_class) == known.end()) {
    std::string list;
    for (const auto& t : known) list += (list.empty() ? "" : ", ") + t;
    throw ConfigError("register_for_auto_class: '" + auto_class + "' is not a valid auto class (one of: " + list + ")");
  }
  json map = config_->has("auto_map") && config_->get("auto_map").is_object() ? config_->get("auto_map") : json::object();
  map[auto_class] = class_name();
  config_->extra["auto_map"] = map;
}

int64_t parse_file_size(const std::string& size) {
  static const std::regex pattern(R"(^\s*([0-9]+)\s*([KMGT]i?[Bb]|[Bb])?\s*$)", std::regex::icase);
  std::smatch m;
  if (!std::regex_match(size, m, pattern))
    throw InvalidInputError("'" + size + "' is not a size: expected an integer, or a number with a unit like \"5GB\", " +
                            "\"200MiB\" or \"10KB\"");
  const int64_t value = std::stoll(m[1].str());
  std::string unit = m[2].str();
  if (unit.empty() || unit == "B" || unit == "b") return value;
  const bool binary = unit.size() == 3;
  const bool bits = !binary && unit.back() == 'b';
  const int power = std::string("KMGT").find(char(std::toupper(unit[0]))) + 1;
  int64_t bytes = value;
  for (int i = 0; i < power; ++i) bytes *= binary ? 1024 : 1000;
  return bits ? bytes / 8 : bytes;
}

}  // namespace plugformer
