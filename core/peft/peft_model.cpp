// PeftModel: PEFT's adapters, files and API over any family's model.
#include "plugformer/peft.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/serialize.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "peft/lora.h"
#include "peft/prompt.h"
#include "peft/target_regex.h"
#include "plugformer/error.h"
#include "plugformer/safetensors.h"

namespace plugformer {

namespace {

// peft's fallback target modules per model_type (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
const std::map<std::string, std::vector<std::string>>& default_targets() {
  static const std::map<std::string, std::vector<std::string>> m = {
      {"llama", {"q_proj", "v_proj"}},   {"gpt2", {"c_attn"}},           {"bert", {"query", "value"}},
      {"t5", {"q", "v"}},                {"mistral", {"q_proj", "v_proj"}}, {"gemma", {"q_proj", "v_proj"}},
      {"gemma2", {"q_proj", "v_proj"}},  {"qwen2", {"q_proj", "v_proj"}},   {"qwen3", {"q_proj", "v_proj"}}};
  return m;
}

const std::string kPrefix = "base_model.model.";

// The LoRA layer state of a Linear / Conv1D module, or nullptr for other modules.
std::shared_ptr<LoraLayer>* lora_slot(torch::nn::Module& m) {
  if (auto* l = dynamic_cast<Linear*>(&m)) return &l->lora;
  if (auto* c = dynamic_cast<Conv1D*>(&m)) return &c->lora;
  return nullptr;
}

at::Tensor& weight_of(torch::nn::Module& m) {
  if (auto* l = dynamic_cast<Linear*>(&m)) return l->weight;
  return dynamic_cast<Conv1D&>(m).weight;
}

// Calls fn(path, module, layer) for every module carrying LoRA adapters.
template <class Fn>
void for_each_lora(torch::nn::Module& model, Fn&& fn) {
  for (const auto& item : model.named_modules("", false))
    if (auto* slot = lora_slot(*item.value()); slot && *slot) fn(item.key(), *item.value(), *slot);
}

// Paths of the modules that carry adapter `name`.
std::set<std::string> adapted_modules(torch::nn::Module& model, const std::string& name) {
  std::set<std::string> paths;
  for_each_lora(model, [&](const std::string& path, torch::nn::Module&, std::shared_ptr<LoraLayer>& layer) {
    if (layer->has(name)) paths.insert(path);
  });
  return paths;
}

// peft's _check_target_module_exists plus layers_to_transform; `regex` is target_modules_regex compiled.
bool targeted(const PeftConfig& c, const std::optional<std::regex>& regex, const std::string& path) {
  bool match;
  if (regex) {
    match = std::regex_match(path, *regex);
  } else {
    match = std::any_of(c.target_modules.begin(), c.target_modules.end(),
                        [&](const std::string& t) { return path == t || path.ends_with("." + t); });
  }
  if (!match || c.layers_to_transform.empty()) return match;
  static const std::regex layer_index(R"(.*\.[^.]*\.(\d+)\..*)");
  std::smatch m;
  if (!std::regex_match(path, m, layer_index)) return false;
  const int64_t index = std::stoll(m[1].str());
  return std::find(c.layers_to_transform.begin(), c.layers_to_transform.end(), index) != c.layers_to_transform.end();
}

std::string thousands(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// PeftModel

PeftModel::PeftModel(ModelPtr model, std::string task_type)
    : PreTrainedModel(model->config_ptr()),
      base_(std::move(model)),
      task_type_(std::move(task_type)),
      state_(std::make_shared<LoraState>()) {
  holder_ = register_module("base_model", std::make_shared<torch::nn::Module>());
  holder_->register_module("model", base_);
}

PeftModel::~PeftModel() = default;

std::string PeftModel::class_name() const {
  static const std::map<std::string, std::string> names = {{"CAUSAL_LM", "PeftModelForCausalLM"},
                                                           {"SEQ_CLS", "PeftModelForSequenceClassification"},
                                                           {"TOKEN_CLS", "PeftModelForTokenClassification"},
                                                           {"SEQ_2_SEQ_LM", "PeftModelForSeq2SeqLM"}};
  auto it = names.find(task_type_);
  return it == names.end() ? "PeftModel" : it->second;
}

std::shared_ptr<PeftModel> PeftModel::create(ModelPtr model, const PeftConfig& config, const std::string& adapter_name) {
  if (!model) throw InvalidInputError("get_peft_model: no model");
  std::shared_ptr<PeftModel> peft(new PeftModel(std::move(model), config.task_type));
  peft->add_adapter(adapter_name, config);
  peft->set_trainable(adapter_name, !config.inference_mode);
  return peft;
}

std::shared_ptr<PeftModel> PeftModel::from_pretrained(ModelPtr model, const std::string& adapter,
                                                      const PeftLoadOptions& options, const std::string& task_type) {
  if (!model) throw InvalidInputError("PeftModel::from_pretrained: no model");
  auto file = resolve_file(adapter, "adapter_config.json", options.hub);
  const PeftConfig config = PeftConfig::from_json(read_json_file(*file), file->string());
  std::shared_ptr<PeftModel> peft(new PeftModel(std::move(model), task_type.empty() ? config.task_type : task_type));
  peft->load_adapter(adapter, options.adapter_name, options);
  return peft;
}

void PeftModel::add_adapter(const std::string& adapter_name, const PeftConfig& config) {
  if (adapter_name.empty() || adapter_name.find('.') != std::string::npos)
    throw InvalidInputError("adapter name '" + adapter_name + "' must be non-empty and contain no '.'");
  if (configs_.count(adapter_name)) throw InvalidInputError("adapter '" + adapter_name + "' exists already");
  if (!configs_.empty() && configs_.begin()->second.is_prompt_learning() != config.is_prompt_learning())
    throw InvalidInputError("LoRA and prompt-learning adapters cannot be mixed in one PeftModel");
  PeftConfig c = config;
  if (c.base_model_name_or_path.empty()) c.base_model_name_or_path = base_->config().name_or_path.value_or("");
  if (c.task_type.empty()) c.task_type = task_type_;
  if (c.peft_type == "LORA" && (task_type_ == "SEQ_CLS" || task_type_ == "TOKEN_CLS"))
    for (const char* head : {"classifier", "score"})
      if (base_->named_modules("", false).contains(head) &&
          std::find(c.modules_to_save.begin(), c.modules_to_save.end(), head) == c.modules_to_save.end())
        c.modules_to_save.push_back(head);
  if (c.is_prompt_learning()) inject_prompt(adapter_name, c);
  else inject(adapter_name, c);
  configs_[adapter_name] = c;
  if (state_->active.empty()) state_->active = adapter_name;
}

void PeftModel::inject_prompt(const std::string& adapter_name, PeftConfig& c) {
  const PretrainedConfig& mc = base_->config();
  if (mc.is_encoder_decoder || !base_->can_generate())
    throw InvalidInputError("prompt tuning and prefix tuning are implemented for decoder-only language models; " +
                            base_->class_name() + " is not one");
  auto size = [&](const char* name) {
    const json v = mc.get(name);
    if (!v.is_number_integer()) throw ConfigError("prompt learning needs the model config's " + std::string(name));
    return v.get<int64_t>();
  };
  const int64_t hidden = size("hidden_size"), heads = size("num_attention_heads");
  const json kv = mc.get("num_key_value_heads");
  // PEFT's _prepare_prompt_learning_config: prefixes carry key/value heads only (grouped-query attention).
  const int64_t kv_heads = c.peft_type == "PREFIX_TUNING" && kv.is_number_integer() ? kv.get<int64_t>() : heads;
  c.token_dim = hidden / heads * kv_heads;
  c.num_attention_heads = kv_heads;
  c.num_layers = size("num_hidden_layers");
  const int64_t out_dim = c.peft_type == "PREFIX_TUNING" ? c.num_layers * 2 * c.token_dim : c.token_dim;
  // A trainable prefix goes through the projection MLP; saved prefixes hold its output.
  const bool project = c.peft_type == "PREFIX_TUNING" && c.prefix_projection && !c.inference_mode;
  if (project && c.encoder_hidden_size <= 0) c.encoder_hidden_size = c.token_dim;
  auto encoder = std::make_shared<PromptEncoder>(c.num_virtual_tokens, c.token_dim, project ? c.encoder_hidden_size : 0,
                                                 out_dim);
  prompts_[adapter_name] = encoder;
  auto container = std::make_shared<torch::nn::Module>();
  for (const auto& [name, e] : prompts_) container->register_module(name, e);
  if (named_children().contains("prompt_encoder")) replace_module("prompt_encoder", container);
  else register_module("prompt_encoder", container);
}

void PeftModel::inject(const std::string& adapter_name, PeftConfig& c) {
  if (c.target_modules.empty() && !c.target_modules_regex) {
    auto it = default_targets().find(base_->config().model_type());
    if (it == default_targets().end())
      throw ConfigError("target_modules is not set and there is no default for model_type '" +
                        base_->config().model_type() + "'");
    c.target_modules = it->second;
  }
  std::optional<std::regex> regex;
  if (c.target_modules_regex) regex = compile_target_regex(*c.target_modules_regex, "target_modules");
  std::set<std::string> candidates;
  int64_t matched = 0;
  for (const auto& item : base_->named_modules("", false)) {
    const std::string& path = item.key();
    torch::nn::Module& module = *item.value();
    auto* slot = lora_slot(module);
    if (slot) candidates.insert(path.substr(path.rfind('.') + 1));
    if (!targeted(c, regex, path)) continue;
    if (!slot)
      throw InvalidInputError("LoRA target module '" + path + "' is not supported: only Linear and Conv1D layers "
                              "can carry LoRA adapters");
    const bool conv = dynamic_cast<Conv1D*>(&module) != nullptr;
    const at::Tensor& w = weight_of(module);
    const int64_t in = conv ? w.size(0) : w.size(1), out = conv ? w.size(1) : w.size(0);
    if (!*slot) *slot = std::make_shared<LoraLayer>(module, in, out, conv || c.fan_in_fan_out, state_);
    // Adapter weights are fp32 whatever the base dtype, as PEFT's autocast_adapter_dtype keeps them.
    (*slot)->add(adapter_name, c.r, c.scaling(), c.lora_dropout, c.init_lora_weights);
    ++matched;
  }
  if (matched == 0) {
    std::string names, targets = c.target_modules_regex ? *c.target_modules_regex : "";
    for (const auto& t : c.target_modules) targets += (targets.empty() ? "" : ", ") + t;
    for (const auto& n : candidates) names += (names.empty() ? "" : ", ") + n;
    throw InvalidInputError("LoRA target_modules [" + targets + "] matched no module of " + base_->class_name() +
                            (c.layers_to_transform.empty() ? "" : " in layers_to_transform") +
                            "; its Linear / Conv1D modules are: " + names);
  }
}

std::vector<std::string> PeftModel::adapters() const {
  std::vector<std::string> names;
  for (const auto& [name, c] : configs_) names.push_back(name);
  return names;
}

const std::string& PeftModel::active_adapter() const { return state_->active; }

const PeftConfig& PeftModel::peft_config(const std::string& adapter_name) const {
  const std::string& name = adapter_name.empty() ? state_->active : adapter_name;
  auto it = configs_.find(name);
  if (it == configs_.end()) throw InvalidInputError("no adapter named '" + name + "'");
  return it->second;
}

void PeftModel::set_adapter(const std::string& adapter_name) {
  if (!configs_.count(adapter_name)) throw InvalidInputError("no adapter named '" + adapter_name + "'");
  state_->active = adapter_name;
}

void PeftModel::delete_adapter(const std::string& adapter_name) {
  if (!configs_.count(adapter_name)) throw InvalidInputError("no adapter named '" + adapter_name + "'");
  for_each_lora(*base_, [&](const std::string&, torch::nn::Module&, std::shared_ptr<LoraLayer>& layer) {
    layer->remove(adapter_name);
    if (layer->empty()) layer.reset();
  });
  if (prompts_.erase(adapter_name)) {
    auto container = std::make_shared<torch::nn::Module>();
    for (const auto& [name, e] : prompts_) container->register_module(name, e);
    replace_module("prompt_encoder", container);
  }
  configs_.erase(adapter_name);
  if (state_->active == adapter_name) state_->active = configs_.empty() ? "" : configs_.begin()->first;
}

void PeftModel::set_trainable(const std::string& adapter_name, bool trainable) {
  const PeftConfig& c = configs_.at(adapter_name);
  const std::set<std::string> adapted = adapted_modules(*base_, adapter_name);
  const std::string a = ".lora_A." + adapter_name + ".", b = ".lora_B." + adapter_name + ".";
  for (auto& p : base_->named_parameters(true)) {
    const std::string& name = p.key();
    bool train = name.find(a) != std::string::npos || name.find(b) != std::string::npos;
    const bool is_lora = name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos;
    if (!is_lora && name.ends_with("bias")) {
      const std::string module = name.substr(0, name.rfind('.'));
      train = c.bias == "all" || (c.bias == "lora_only" && adapted.count(module));
    }
    for (const auto& m : c.modules_to_save)
      if (!is_lora && (name.starts_with(m + ".") || name.find("." + m + ".") != std::string::npos)) train = true;
    p.value().set_requires_grad(trainable && train);
  }
  for (const auto& [name, encoder] : prompts_)
    for (auto& p : encoder->parameters()) p.set_requires_grad(trainable && name == adapter_name);
}

void PeftModel::load_adapter(const std::string& adapter, const std::string& adapter_name, const PeftLoadOptions& options) {
  auto config_file = resolve_file(adapter, "adapter_config.json", options.hub);
  PeftConfig config = PeftConfig::from_json(read_json_file(*config_file), config_file->string());
  std::map<std::string, at::Tensor> tensors;
  std::shared_ptr<SafetensorsFile> mapping;  // keeps zero-copy tensors valid while copying
  std::string source;
  if (auto st = resolve_file(adapter, "adapter_model.safetensors", options.hub, true)) {
    mapping = SafetensorsFile::open(*st);
    for (const auto& key : mapping->keys()) tensors[key] = mapping->get(key);
    source = st->string();
  } else if (auto bin = resolve_file(adapter, "adapter_model.bin", options.hub, true)) {
    tensors = load_torch_bin(*bin);
    source = bin->string();
  } else {
    throw FileNotFoundError(adapter + ": no adapter weights (adapter_model.safetensors or adapter_model.bin)");
  }
  add_adapter(adapter_name, config);
  try {
    load_adapter_weights(adapter_name, tensors, source);
  } catch (...) {
    delete_adapter(adapter_name);
    throw;
  }
  set_trainable(adapter_name, options.is_trainable);
}

void PeftModel::load_adapter_weights(const std::string& adapter_name, const std::map<std::string, at::Tensor>& tensors,
                                     const std::string& source) {
  torch::NoGradGuard no_grad;
  const PeftConfig& c = configs_.at(adapter_name);
  std::map<std::string, at::Tensor> params;
  for (auto& p : base_->named_parameters(true)) params[p.key()] = p.value();
  std::set<std::string> loaded;
  if (c.is_prompt_learning()) {
    auto it = tensors.find("prompt_embeddings");
    if (it == tensors.end()) throw CheckpointError(source + ": no 'prompt_embeddings' tensor for a " + c.peft_type + " adapter");
    at::Tensor& table = prompts_.at(adapter_name)->embedding->weight;
    if (it->second.sizes() != table.sizes())
      throw CheckpointError(source + ": 'prompt_embeddings' has shape " + c10::str(it->second.sizes()) + " but " +
                            std::to_string(c.num_virtual_tokens) + " virtual tokens of this model need " +
                            c10::str(table.sizes()));
    table.copy_(it->second);
    return;
  }
  for (const auto& [key, value] : tensors) {
    if (!key.starts_with(kPrefix))
      throw CheckpointError(source + ": key '" + key + "' does not start with '" + kPrefix + "' as PEFT writes them");
    std::string name = key.substr(kPrefix.size());
    for (const char* part : {".lora_A.", ".lora_B."})
      if (auto at = name.find(part); at != std::string::npos && name.substr(at + 8) == "weight")
        name = name.substr(0, at + 8) + adapter_name + ".weight";
    auto it = params.find(name);
    if (it == params.end())
      throw CheckpointError(source + ": key '" + key + "' names a parameter " + base_->class_name() +
                            " does not have (an adapter for another model or another set of target_modules?)");
    if (it->second.sizes() != value.sizes())
      throw CheckpointError(source + ": '" + key + "' has shape " + c10::str(value.sizes()) + " but r = " +
                            std::to_string(c.r) + " in adapter_config.json and the layer give " +
                            c10::str(it->second.sizes()));
    it->second.copy_(value);
    loaded.insert(name);
  }
  for (const auto& [name, p] : params)
    if ((name.find(".lora_A." + adapter_name + ".") != std::string::npos ||
         name.find(".lora_B." + adapter_name + ".") != std::string::npos) &&
        !loaded.count(name))
      throw CheckpointError(source + ": no weight for '" + name + "' (the adapter's files disagree with its config)");
}

ModelOutput PeftModel::forward(const ModelInputs& inputs) { return base_->forward(with_prompt(inputs)); }

ModelInputs PeftModel::with_prompt(const ModelInputs& inputs) const {
  if (state_->disabled || state_->active.empty() || !configs_.at(state_->active).is_prompt_learning()) return inputs;
  const PeftConfig& c = configs_.at(state_->active);
  const PromptEncoder& encoder = *prompts_.at(state_->active);
  const int64_t n = c.num_virtual_tokens;
  const at::Tensor ids = inputs.get("input_ids"), embeds = inputs.get("inputs_embeds");
  if (!ids.defined() && !embeds.defined()) throw InvalidInputError("prompt learning needs input_ids or inputs_embeds");
  const int64_t batch = ids.defined() ? ids.size(0) : embeds.size(0);
  ModelInputs out = inputs;
  // The virtual tokens come first: every mask gets them, positions are left to the model (PEFT
  // drops position_ids too), labels skip them.
  if (inputs.has("attention_mask")) {
    const at::Tensor mask = inputs.get("attention_mask");
    out.tensors["attention_mask"] = at::cat({at::ones({batch, n}, mask.options()), mask}, 1);
  }
  out.tensors.erase("position_ids");
  const bool first_step = !inputs.past_key_values || inputs.past_key_values->seq_length(0) == 0;
  if (!first_step) return out;
  at::Tensor virtual_tokens = encoder.forward();
  if (c.peft_type == "PROMPT_TUNING") {
    const at::Tensor tokens = embeds.defined() ? embeds : base_->get_input_embeddings()->forward(ids);
    const at::Tensor prompts = virtual_tokens.to(tokens.scalar_type()).unsqueeze(0).expand({batch, n, tokens.size(2)});
    out.tensors.erase("input_ids");
    out.tensors["inputs_embeds"] = at::cat({prompts, tokens}, 1);
    if (inputs.has("labels")) {
      const at::Tensor labels = inputs.get("labels");
      out.tensors["labels"] = at::cat({at::full({batch, n}, -100, labels.options()), labels}, 1);
    }
    return out;
  }
  // Prefix tuning: per layer keys and values of the virtual tokens, put in the cache first.
  auto cache = inputs.past_key_values ? inputs.past_key_values : std::make_shared<KVCache>();
  const int64_t head_dim = c.token_dim / c.num_attention_heads;
  const at::Tensor kv = virtual_tokens.to(base_->dtype()).view({n, c.num_layers * 2, c.num_attention_heads, head_dim})
                            .permute({1, 2, 0, 3});  // [layers * 2, heads, n, head_dim]
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    auto rows = [&](int64_t i) { return kv[i].unsqueeze(0).expand({batch, c.num_attention_heads, n, head_dim}).contiguous(); };
    cache->update(size_t(layer), rows(2 * layer), rows(2 * layer + 1));
  }
  out.past_key_values = cache;
  out.use_cache = true;
  return out;
}

PeftModel::DisabledAdapters::DisabledAdapters(std::shared_ptr<LoraState> state)
    : state_(std::move(state)), was_disabled_(state_->disabled) {
  state_->disabled = true;
}

PeftModel::DisabledAdapters::~DisabledAdapters() { state_->disabled = was_disabled_; }

PeftModel::DisabledAdapters PeftModel::disable_adapter() {
  unmerge_adapter();  // merged weights would keep the adapter in the base
  return DisabledAdapters(state_);
}

void PeftModel::merge_adapter(const std::vector<std::string>& adapter_names) {
  const std::vector<std::string> names = adapter_names.empty() ? std::vector<std::string>{state_->active} : adapter_names;
  for (const auto& n : names) {
    if (!configs_.count(n)) throw InvalidInputError("no adapter named '" + n + "'");
    if (configs_.at(n).is_prompt_learning())
      throw InvalidInputError("adapter '" + n + "' is " + configs_.at(n).peft_type + ": only LoRA adapters merge");
  }
  for_each_lora(*base_, [&](const std::string&, torch::nn::Module& m, std::shared_ptr<LoraLayer>& layer) {
    for (const auto& n : names) layer->merge(n, weight_of(m));
  });
}

void PeftModel::unmerge_adapter() {
  for_each_lora(*base_, [](const std::string&, torch::nn::Module& m, std::shared_ptr<LoraLayer>& layer) {
    layer->unmerge(weight_of(m));
  });
}

ModelPtr PeftModel::merge_and_unload() {
  if (!prompts_.empty()) throw InvalidInputError("merge_and_unload: prompt-learning adapters cannot be merged");
  if (!state_->active.empty()) merge_adapter();
  for_each_lora(*base_, [](const std::string&, torch::nn::Module&, std::shared_ptr<LoraLayer>& layer) {
    layer->clear();  // merged weights stay; the adapter matrices go
    layer.reset();
  });
  for (auto& p : base_->named_parameters(true)) p.value().set_requires_grad(false);
  configs_.clear();
  state_->active.clear();
  return base_;
}

std::pair<int64_t, int64_t> PeftModel::get_nb_trainable_parameters() const {
  int64_t trainable = 0, all = 0;
  std::set<const void*> seen;  // tied weights count once, as torch's named_parameters() does
  for (const auto& p : parameters(true)) {
    if (!seen.insert(p.data_ptr()).second) continue;
    all += p.numel();
    if (p.requires_grad()) trainable += p.numel();
  }
  return {trainable, all};
}

std::string PeftModel::trainable_parameters_summary() const {
  const auto [trainable, all] = get_nb_trainable_parameters();
  char percent[32];
  std::snprintf(percent, sizeof percent, "%.4f", all ? 100.0 * double(trainable) / double(all) : 0.0);
  return "trainable params: " + thousands(trainable) + " || all params: " + thousands(all) + " || trainable%: " + percent;
}

void PeftModel::print_trainable_parameters() const { std::cout << trainable_parameters_summary() << std::endl; }

std::vector<std::pair<std::string, at::Tensor>> PeftModel::adapter_state_dict(const std::string& adapter_name) const {
  const std::string& name = adapter_name.empty() ? state_->active : adapter_name;
  const PeftConfig& c = peft_config(name);
  std::vector<std::pair<std::string, at::Tensor>> out;
  if (c.is_prompt_learning()) {
    torch::NoGradGuard no_grad;
    out.emplace_back("prompt_embeddings", prompts_.at(name)->forward().detach());
    return out;
  }
  const std::set<std::string> adapted = adapted_modules(*base_, name);
  for (const auto& p : base_->named_parameters(true)) {
    const std::string& key = p.key();
    const bool is_lora = key.find(".lora_A.") != std::string::npos || key.find(".lora_B.") != std::string::npos;
    if (is_lora) {
      // path.lora_A.<name>.weight -> path.lora_A.weight
      const std::string tag = "." + name + ".weight";
      if (key.ends_with(tag)) out.emplace_back(kPrefix + key.substr(0, key.size() - tag.size()) + ".weight", p.value());
      continue;
    }
    bool keep = false;
    if (key.ends_with("bias"))
      keep = c.bias == "all" || (c.bias == "lora_only" && adapted.count(key.substr(0, key.rfind('.'))));
    for (const auto& m : c.modules_to_save)
      keep = keep || key.starts_with(m + ".") || key.find("." + m + ".") != std::string::npos;
    if (keep) out.emplace_back(kPrefix + key, p.value());
  }
  return out;
}

void PeftModel::save_pretrained(const std::filesystem::path& dir, const std::vector<std::string>& selected_adapters,
                                bool safe_serialization) const {
  const std::vector<std::string> names = selected_adapters.empty() ? adapters() : selected_adapters;
  for (const auto& name : names) {
    PeftConfig c = peft_config(name);
    c.inference_mode = true;
    // PEFT's layout: the default adapter at the top, the others in a folder of their name.
    const auto out = name == "default" ? dir : dir / name;
    std::filesystem::create_directories(out);
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (auto& [key, t] : adapter_state_dict(name)) tensors.emplace_back(key, t.detach().contiguous());
    if (safe_serialization) {
      save_safetensors(out / "adapter_model.safetensors", tensors, {{"format", "pt"}});
    } else {
      c10::Dict<std::string, at::Tensor> dict;
      for (auto& [key, t] : tensors) dict.insert(key, t);
      const std::vector<char> bytes = torch::pickle_save(dict);
      const auto tmp = out / "adapter_model.bin.tmp";
      std::ofstream(tmp, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
      std::filesystem::rename(tmp, out / "adapter_model.bin");
    }
    write_json_file(out / "adapter_config.json", c.to_json());
  }
  create_or_update_model_card(dir);
}

void PeftModel::create_or_update_model_card(const std::filesystem::path& dir) const {
  // The YAML header PEFT writes (library_name, base_model); an existing card keeps its body.
  const auto file = dir / "README.md";
  std::string body = "# Model Card\n\nAdapters: ";
  for (const auto& name : adapters()) body += name + " (" + configs_.at(name).peft_type + ") ";
  body += "\n";
  if (std::filesystem::exists(file)) {
    std::ifstream in(file);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    if (text.starts_with("---\n")) {
      auto end = text.find("\n---\n", 4);
      if (end != std::string::npos) text = text.substr(end + 5);
    }
    body = text;
  }
  std::string header = "---\nlibrary_name: peft\n";
  const std::string base = base_->config().name_or_path.value_or("");
  if (!base.empty()) header += "base_model: " + base + "\n";
  if (!base_->model_tags().empty()) header += "tags:\n";
  for (const auto& tag : base_->model_tags()) header += "- " + tag + "\n";
  write_text_file(file, header + "---\n" + body);
}

}  // namespace plugformer
