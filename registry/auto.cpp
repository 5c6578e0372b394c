#include "plugformer/auto.h"
#include "plugformer/distributed.h"

#include <c10/core/Device.h>

#include <algorithm>

#include "checkpoint/checkpoint.h"
#include "tokenizers/chat_template.h"
#include "plugformer/error.h"
#include "plugformer/hub.h"
#include "plugformer/log.h"
#include "plugformer/plugin_loader.h"
#include "plugformer/runtime.h"

namespace plugformer {

namespace {

void ensure_plugins() {
  init_runtime();
  PluginLoader::load_default_plugins();
}

// transformers' fallback when config.json lacks model_type: the longest registered
// model_type that occurs in the path or repo id.
std::optional<std::string> model_type_from_name(const std::string& path_or_repo_id) {
  auto types = Registry::instance().model_types();
  std::sort(types.begin(), types.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  for (const auto& t : types)
    if (path_or_repo_id.find(t) != std::string::npos) return t;
  return std::nullopt;
}

c10::ScalarType parse_dtype(const std::string& name, const std::string& field) {
  if (name == "float32" || name == "float") return c10::kFloat;
  if (name == "bfloat16") return c10::kBFloat16;
  if (name == "float16" || name == "half") return c10::kHalf;
  if (name == "float64" || name == "double") return c10::kDouble;
  throw ConfigError(field + ": unsupported dtype '" + name + "' (expected float32, bfloat16, float16 or auto)");
}

}  // namespace

std::optional<std::filesystem::path> resolve_file(const std::string& path_or_repo_id, const std::string& filename,
                                                  const PretrainedOptions& options, bool optional) {
  std::filesystem::path dir(path_or_repo_id);
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) {
    if (!options.subfolder.empty()) dir /= options.subfolder;
    const auto file = dir / filename;
    if (std::filesystem::is_regular_file(file, ec)) return file;
    if (optional) return std::nullopt;
    throw FileNotFoundError(file.string() + ": no such file");
  }
  if (std::filesystem::exists(dir, ec)) throw FileNotFoundError(path_or_repo_id + ": is a file, expected a model directory");
  // Something written as a path (absolute or relative) that does not exist is not a repo id.
  if (path_or_repo_id.empty() || path_or_repo_id.front() == '/' || path_or_repo_id.front() == '.' ||
      path_or_repo_id.front() == '~')
    throw FileNotFoundError(path_or_repo_id + ": no such directory");
  hub::HubOptions hub_options;
  hub_options.revision = options.revision;
  hub_options.cache_dir = options.cache_dir;
  hub_options.force_download = options.force_download;
  hub_options.local_files_only = options.local_files_only;
  hub_options.token = options.token;
  hub_options.subfolder = options.subfolder;
  return hub::cached_file(path_or_repo_id, filename, hub_options, optional);
}

ConfigPtr AutoConfig::from_pretrained(const std::string& path_or_repo_id, const PretrainedOptions& options,
                                      json* unused_kwargs) {
  ensure_plugins();
  const auto file = *resolve_file(path_or_repo_id, "config.json", options);
  const json values = read_json_file(file);
  if (!values.is_object()) throw ConfigError(file.string() + ": expected a JSON object");
  std::string model_type;
  if (auto it = values.find("model_type"); it != values.end()) {
    if (!it->is_string()) throw ConfigError(file.string() + ": field 'model_type' must be a string");
    model_type = it->get<std::string>();
  } else if (auto guessed = model_type_from_name(path_or_repo_id)) {
    model_type = *guessed;
  } else {
    throw ConfigError(file.string() + ": no 'model_type' field, and the name '" + path_or_repo_id +
                      "' contains no registered model type");
  }
  ConfigPtr config;
  try {
    config = Registry::instance().make_config(model_type);
  } catch (const UnknownModelTypeError& e) {
    throw UnknownModelTypeError(file.string() + ": " + e.what());
  }
  config->update_from_json(values, file.string());
  config->name_or_path = path_or_repo_id;
  json unused = config->apply_overrides(options.config_overrides);
  if (unused_kwargs) *unused_kwargs = unused;
  else if (!unused.empty())
    throw ConfigError("config overrides name attributes that " + model_type + " configs do not have: " + unused.dump());
  return config;
}

ConfigPtr AutoConfig::for_model(const std::string& model_type, const json& values) {
  ensure_plugins();
  ConfigPtr config = Registry::instance().make_config(model_type);
  config->update_from_json(values, "config for " + model_type);
  return config;
}

void AutoConfig::register_(const std::string& model_type, ConfigFactory factory, bool exist_ok) {
  Registry::instance().register_config(model_type, std::move(factory), exist_ok);
}

namespace {

Registry::ModelEntry pick_model_class(const std::string& task, const PretrainedConfig& config,
                                      const std::string& architecture) {
  const auto& registry = Registry::instance();
  const std::string type = config.model_type();
  if (!architecture.empty()) {
    if (auto e = registry.find_model(task, type, architecture)) return *e;
    if (task == tasks::kAutoModel)
      if (auto e = registry.find_architecture(architecture); e && e->model_type == type) return *e;
    throw RegistryError("model class '" + architecture + "' is not registered for " + task + " and model_type '" +
                        type + "'");
  }
  // register_for_auto_class: config.json's auto_map names the class for this Auto class
  // ("module.Class" in transformers' remote-code form; the class part is looked up).
  const json auto_map = config.get("auto_map");
  if (auto_map.is_object() && auto_map.contains(task) && auto_map[task].is_string()) {
    std::string name = auto_map[task].get<std::string>();
    name = name.substr(name.rfind('.') == std::string::npos ? 0 : name.rfind('.') + 1);
    auto e = registry.find_architecture(name);
    if (!e || e->model_type != type)
      throw RegistryError("config.json auto_map names '" + auto_map[task].get<std::string>() + "' for " + task +
                          ", which no plugin registers for model_type '" + type + "'");
    return *e;
  }
  // Several classes for this task and type: the one config.json's `architectures` names.
  for (const auto& arch : config.architectures)
    if (auto e = registry.find_model(task, type, arch)) return *e;
  if (auto e = registry.find_model(task, type)) return *e;
  std::string served;
  for (const auto& m : registry.models())
    if (m.task == task) served += (served.empty() ? "" : ", ") + m.model_type;
  throw RegistryError("unrecognized configuration class for " + task + ": model_type '" + type +
                      "' has no class for this task (model types with one: " + (served.empty() ? "none" : served) + ")");
}

ModelPtr build_and_load(const Registry::ModelEntry& entry, ConfigPtr config, const std::string& path_or_repo_id,
                        const PretrainedOptions& options) {
  if (options.attn_implementation != "eager" && options.attn_implementation != "sdpa")
    throw ConfigError("attn_implementation '" + options.attn_implementation + "' is not available (eager)");
  std::optional<c10::ScalarType> dtype;
  if (options.torch_dtype.empty()) dtype = c10::kFloat;  // transformers loads in float32 unless told
  else if (options.torch_dtype != "auto") dtype = parse_dtype(options.torch_dtype, "torch_dtype");
  else if (config->torch_dtype) dtype = parse_dtype(*config->torch_dtype, "config.json torch_dtype");

  ModelPtr model = Registry::instance().make_model(entry, config);
  if (options.tensor_parallel) {
    // Before any split layer talks to the others: every rank must build the same model.
    options.tensor_parallel->require_same(
        "the model (class, config.json, dtype, quantization)", model->class_name() + " " + config->to_json().dump() + " dtype " + options.torch_dtype +
                         " quantization " + options.quantization);
    model->split_for_tensor_parallel(options.tensor_parallel);
  }
  Checkpoint ckpt = load_checkpoint(path_or_repo_id, options);
  if (!dtype)  // "auto" without torch_dtype in the config: the first floating weight decides
    for (const auto& [name, t] : ckpt.tensors)
      if (t.is_floating_point()) {
        dtype = t.scalar_type();
        break;
      }
  LoadOptions load;
  load.dtype = dtype;
  load.key_mapping = options.key_mapping;
  load.ignore_mismatched_sizes = options.ignore_mismatched_sizes;
  LoadingInfo info = model->load_weights(ckpt.tensors, load, ckpt.source);
  if (options.loading_info) *options.loading_info = info;
  if (!options.quantization.empty()) model->quantize(options.quantization);
  if (options.device != "cpu") {
    try {
      model->to(c10::Device(options.device));
    } catch (const std::exception& e) {
      throw ConfigError("device '" + options.device + "' is not usable: " + e.what());
    }
  }
  model->eval();
  return model;
}

}  // namespace

ModelPtr auto_model_from_pretrained(const std::string& task, const std::string& path_or_repo_id,
                                    const PretrainedOptions& options) {
  ConfigPtr config = AutoConfig::from_pretrained(path_or_repo_id, options);
  return build_and_load(pick_model_class(task, *config, options.architecture), config, path_or_repo_id, options);
}

ModelPtr load_model_for_architecture(const std::string& path_or_repo_id, const PretrainedOptions& options) {
  ConfigPtr config = AutoConfig::from_pretrained(path_or_repo_id, options);
  std::string arch = options.architecture;
  if (arch.empty()) {
    if (config->architectures.empty())
      throw ConfigError(path_or_repo_id + "/config.json: no 'architectures' field to choose a model class");
    arch = config->architectures.front();
  }
  if (auto auto_task = std::find(tasks::all().begin(), tasks::all().end(), arch); auto_task != tasks::all().end())
    return build_and_load(pick_model_class(arch, *config, ""), config, path_or_repo_id, options);
  auto entry = Registry::instance().find_architecture(arch);
  if (!entry || entry->model_type != config->model_type())
    throw RegistryError("model class '" + arch + "' is not registered for model_type '" + config->model_type() + "'");
  return build_and_load(*entry, config, path_or_repo_id, options);
}

ModelPtr auto_model_from_config(const std::string& task, ConfigPtr config, const std::string& architecture) {
  ensure_plugins();
  ModelPtr model = Registry::instance().make_model(pick_model_class(task, *config, architecture), config);
  model->init_weights();
  model->eval();
  return model;
}

std::shared_ptr<Tokenizer> AutoTokenizer::from_pretrained(const std::string& path_or_repo_id,
                                                          const PretrainedOptions& options, bool use_fast) {
  ensure_plugins();
  TokenizerFiles files;
  std::optional<std::filesystem::path> any;
  if (auto f = resolve_file(path_or_repo_id, "tokenizer_config.json", options, true)) {
    files.tokenizer_config = read_json_file(*f);
    any = f;
  }
  if (auto f = resolve_file(path_or_repo_id, "special_tokens_map.json", options, true)) {
    files.special_tokens_map = read_json_file(*f);
    any = f;
  }
  // Fetch the vocabulary files that exist so they sit in one directory.
  bool has_fast_file = false;
  for (const char* name : {"tokenizer.json", "tokenizer.model", "spiece.model", "vocab.txt", "vocab.json",
                           "merges.txt", "added_tokens.json"})
    if (auto f = resolve_file(path_or_repo_id, name, options, true)) {
      any = f;
      if (std::string(name) == "tokenizer.json") has_fast_file = true;
    }
  if (!any) throw FileNotFoundError(path_or_repo_id + ": no tokenizer files (tokenizer.json, tokenizer_config.json, ...)");
  files.dir = any->parent_path();
  resolve_file(path_or_repo_id, "chat_template.jinja", options, true);  // fetched next to the others

  std::string class_name;
  if (auto it = files.tokenizer_config.find("tokenizer_class"); it != files.tokenizer_config.end() && it->is_string())
    class_name = it->get<std::string>();
  if (class_name.empty()) {
    if (auto cfg = resolve_file(path_or_repo_id, "config.json", options, true)) {
      const json values = read_json_file(*cfg);
      if (auto t = values.find("model_type"); t != values.end() && t->is_string())
        if (auto m = Registry::instance().tokenizer_mapping(t->get<std::string>()))
          class_name = use_fast && !m->fast_class.empty() ? m->fast_class : m->slow_class;
    }
  }
  if (class_name.empty()) {
    if (!has_fast_file)
      throw TokenizerError(path_or_repo_id + ": tokenizer_config.json names no tokenizer_class and there is no tokenizer.json");
    class_name = "PreTrainedTokenizerFast";
  }
  const auto& registry = Registry::instance();
  const bool named_fast = class_name.size() > 4 && class_name.compare(class_name.size() - 4, 4, "Fast") == 0;
  const std::string slow = named_fast ? class_name.substr(0, class_name.size() - 4) : class_name;
  const std::string fast = named_fast ? class_name : class_name + "Fast";
  std::string chosen;
  if (use_fast && has_fast_file && registry.has_tokenizer(fast)) chosen = fast;
  else if (registry.has_tokenizer(slow)) chosen = slow;
  else if (registry.has_tokenizer(fast)) chosen = fast;
  else chosen = class_name;  // make_tokenizer reports it as unregistered
  auto tokenizer = registry.make_tokenizer(chosen, files);
  tokenizer->chat_templates = read_chat_templates(files.dir, files.tokenizer_config);
  return tokenizer;
}

void AutoTokenizer::register_(const std::string& class_name, TokenizerFactory factory, bool exist_ok) {
  Registry::instance().register_tokenizer(class_name, std::move(factory), exist_ok);
}

}  // namespace plugformer
