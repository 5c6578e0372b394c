#include "plugformer/registry.h"

#include <algorithm>
#include <map>

#include "plugformer/error.h"
#include "plugformer/log.h"
#include "plugformer/tokenizers.h"

namespace plugformer {

namespace tasks {
const std::vector<std::string>& all() {
  static const std::vector<std::string> names = {
      kAutoModel,         kCausalLM,           kMaskedLM,         kSeq2SeqLM,
      kSequenceClassification, kTokenClassification, kQuestionAnswering, kMultipleChoice,
      kNextSentencePrediction, kPreTraining,  kTextEncoding};
  return names;
}
}  // namespace tasks

namespace {

constexpr const char* kHostSource = "<host>";

// `owner` is declared first so it is destroyed last: the factory's code may live in the
// plugin that `owner` keeps loaded.
template <class Factory>
struct Slot {
  std::shared_ptr<void> owner;
  Factory factory;
  std::string source;
};

struct ModelSlot {
  std::shared_ptr<void> owner;
  ModelFactory factory;
  Registry::ModelEntry entry;
};

struct MappingSlot {
  Registry::TokenizerMapping mapping;
};

// Returns `object` wrapped so that it keeps `owner` (a plugin library) alive.
template <class T>
std::shared_ptr<T> keep_alive(std::shared_ptr<T> object, std::shared_ptr<void> owner) {
  if (!owner || !object) return object;
  T* raw = object.get();
  return std::shared_ptr<T>(raw, [object = std::move(object), owner = std::move(owner)](T*) mutable {
    object.reset();  // destroy with the library still mapped
    owner.reset();
  });
}

struct ActivePlugin {
  std::string name, version, file;
  std::shared_ptr<void> library;
  std::vector<std::string> configs, tokenizers, mappings;
  size_t models_before = 0;
};

thread_local ActivePlugin* active_plugin = nullptr;

}  // namespace

struct Registry::State {
  mutable std::recursive_mutex mutex;
  std::map<std::string, Slot<ConfigFactory>> configs;
  std::vector<ModelSlot> models;
  std::map<std::string, Slot<TokenizerFactory>> tokenizers;
  std::map<std::string, MappingSlot> mappings;
  std::vector<PluginEntry> plugins;
};

Registry::Registry() : state_(std::make_unique<State>()) {
  // transformers' generic class for any tokenizer.json.
  state_->tokenizers["PreTrainedTokenizerFast"] = {nullptr, make_fast_tokenizer, "<builtin>"};
}

Registry& Registry::instance() {
  static Registry registry;
  return registry;
}

namespace {
std::string current_source() { return active_plugin ? active_plugin->file : kHostSource; }
std::shared_ptr<void> current_owner() { return active_plugin ? active_plugin->library : nullptr; }
}  // namespace

void Registry::register_config(const std::string& model_type, ConfigFactory factory, bool exist_ok) {
  std::lock_guard lock(state_->mutex);
  auto it = state_->configs.find(model_type);
  if (it != state_->configs.end() && !exist_ok)
    throw RegistryError("'" + model_type + "' is already used by a config (registered by " + it->second.source +
                        "); pass exist_ok to replace it");
  state_->configs[model_type] = {current_owner(), std::move(factory), current_source()};
  if (active_plugin) active_plugin->configs.push_back(model_type);
}

void Registry::register_model(const std::string& task, const std::string& model_type, const std::string& architecture,
                              ModelFactory factory, bool exist_ok) {
  std::lock_guard lock(state_->mutex);
  const auto& known = tasks::all();
  if (std::find(known.begin(), known.end(), task) == known.end()) throw RegistryError("unknown task '" + task + "'");
  for (auto it = state_->models.begin(); it != state_->models.end(); ++it) {
    if (it->entry.task == task && it->entry.model_type == model_type && it->entry.architecture == architecture) {
      if (!exist_ok)
        throw RegistryError("'" + architecture + "' is already registered for " + task + " / '" + model_type +
                            "' (by " + it->entry.source + "); pass exist_ok to replace it");
      it->owner = current_owner();
      it->factory = std::move(factory);
      it->entry.source = current_source();
      return;
    }
  }
  state_->models.push_back({current_owner(), std::move(factory), {task, model_type, architecture, current_source()}});
}

void Registry::register_tokenizer(const std::string& class_name, TokenizerFactory factory, bool exist_ok) {
  std::lock_guard lock(state_->mutex);
  auto it = state_->tokenizers.find(class_name);
  if (it != state_->tokenizers.end() && !exist_ok)
    throw RegistryError("tokenizer class '" + class_name + "' is already registered (by " + it->second.source +
                        "); pass exist_ok to replace it");
  state_->tokenizers[class_name] = {current_owner(), std::move(factory), current_source()};
  if (active_plugin) active_plugin->tokenizers.push_back(class_name);
}

void Registry::register_tokenizer_for_model_type(const std::string& model_type, const std::string& slow_class,
                                                 const std::string& fast_class, bool exist_ok) {
  std::lock_guard lock(state_->mutex);
  if (state_->mappings.count(model_type) && !exist_ok)
    throw RegistryError("a tokenizer mapping for '" + model_type + "' is already registered; pass exist_ok to replace it");
  state_->mappings[model_type] = {{model_type, slow_class, fast_class, current_source()}};
  if (active_plugin) active_plugin->mappings.push_back(model_type);
}

std::vector<Registry::ConfigEntry> Registry::configs() const {
  std::lock_guard lock(state_->mutex);
  std::vector<ConfigEntry> out;
  for (const auto& [type, slot] : state_->configs) out.push_back({type, slot.source});
  return out;
}

std::vector<Registry::ModelEntry> Registry::models() const {
  std::lock_guard lock(state_->mutex);
  std::vector<ModelEntry> out;
  for (const auto& slot : state_->models) out.push_back(slot.entry);
  return out;
}

std::vector<Registry::TokenizerEntry> Registry::tokenizers() const {
  std::lock_guard lock(state_->mutex);
  std::vector<TokenizerEntry> out;
  for (const auto& [name, slot] : state_->tokenizers) out.push_back({name, slot.source});
  return out;
}

std::vector<Registry::TokenizerMapping> Registry::tokenizer_mappings() const {
  std::lock_guard lock(state_->mutex);
  std::vector<TokenizerMapping> out;
  for (const auto& [type, slot] : state_->mappings) out.push_back(slot.mapping);
  return out;
}

std::vector<Registry::PluginEntry> Registry::plugins() const {
  std::lock_guard lock(state_->mutex);
  return state_->plugins;
}

std::vector<std::string> Registry::model_types() const {
  std::lock_guard lock(state_->mutex);
  std::vector<std::string> out;
  for (const auto& [type, slot] : state_->configs) out.push_back(type);
  return out;
}

bool Registry::has_config(const std::string& model_type) const {
  std::lock_guard lock(state_->mutex);
  return state_->configs.count(model_type) != 0;
}

ConfigPtr Registry::make_config(const std::string& model_type) const {
  std::shared_ptr<void> owner;
  ConfigFactory factory;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->configs.find(model_type);
    if (it == state_->configs.end()) {
      std::string known;
      for (const auto& [type, slot] : state_->configs) known += (known.empty() ? "" : ", ") + type;
      throw UnknownModelTypeError("unrecognized model_type '" + model_type + "'; registered model types: " +
                                  (known.empty() ? "(none: no plugin loaded)" : known));
    }
    owner = it->second.owner;
    factory = it->second.factory;
  }
  return keep_alive(factory(), owner);
}

std::optional<Registry::ModelEntry> Registry::find_model(const std::string& task, const std::string& model_type,
                                                         const std::string& architecture) const {
  std::lock_guard lock(state_->mutex);
  for (const auto& slot : state_->models)
    if (slot.entry.task == task && slot.entry.model_type == model_type &&
        (architecture.empty() || slot.entry.architecture == architecture))
      return slot.entry;
  return std::nullopt;
}

std::optional<Registry::ModelEntry> Registry::find_architecture(const std::string& architecture) const {
  std::lock_guard lock(state_->mutex);
  for (const auto& slot : state_->models)
    if (slot.entry.architecture == architecture) return slot.entry;
  return std::nullopt;
}

ModelPtr Registry::make_model(const ModelEntry& entry, ConfigPtr config) const {
  std::shared_ptr<void> owner;
  ModelFactory factory;
  {
    std::lock_guard lock(state_->mutex);
    for (const auto& slot : state_->models)
      if (slot.entry.task == entry.task && slot.entry.model_type == entry.model_type &&
          slot.entry.architecture == entry.architecture) {
        owner = slot.owner;
        factory = slot.factory;
      }
  }
  if (!factory) throw RegistryError("no model class '" + entry.architecture + "' registered for " + entry.task);
  ModelPtr model = keep_alive(factory(config), owner);
  // A pruned model's files hold the pruned shapes: prune as the config says before loading
  // (transformers does it in post_init).
  const json pruned = config->get("pruned_heads");
  if (pruned.is_object() && !pruned.empty()) {
    std::map<int64_t, std::vector<int64_t>> heads;
    try {
      for (const auto& [layer, list] : pruned.items()) heads[std::stoll(layer)] = list.get<std::vector<int64_t>>();
    } catch (const std::exception&) {
      throw ConfigError("config.json: pruned_heads must map layer numbers to lists of head numbers, got " +
                        pruned.dump());
    }
    model->prune_heads(heads);
  }
  return model;
}

bool Registry::has_tokenizer(const std::string& class_name) const {
  std::lock_guard lock(state_->mutex);
  return state_->tokenizers.count(class_name) != 0;
}

std::shared_ptr<Tokenizer> Registry::make_tokenizer(const std::string& class_name, const TokenizerFiles& files) const {
  std::shared_ptr<void> owner;
  TokenizerFactory factory;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->tokenizers.find(class_name);
    if (it == state_->tokenizers.end()) {
      std::string known;
      for (const auto& [name, slot] : state_->tokenizers) known += (known.empty() ? "" : ", ") + name;
      throw TokenizerError("tokenizer class '" + class_name + "' is not registered; registered: " +
                           (known.empty() ? "(none)" : known));
    }
    owner = it->second.owner;
    factory = it->second.factory;
  }
  return keep_alive(factory(files), owner);
}

std::optional<Registry::TokenizerMapping> Registry::tokenizer_mapping(const std::string& model_type) const {
  std::lock_guard lock(state_->mutex);
  auto it = state_->mappings.find(model_type);
  if (it == state_->mappings.end()) return std::nullopt;
  return it->second.mapping;
}

Registry::PluginScope::PluginScope(Registry& registry, std::string name, std::string version, std::string file,
                                   std::shared_ptr<void> library)
    : registry_(registry) {
  registry_.state_->mutex.lock();  // one plugin registers at a time
  auto* active = new ActivePlugin{std::move(name), std::move(version), std::move(file), std::move(library), {}, {}, {}, 0};
  active->models_before = registry_.state_->models.size();
  active_plugin = active;
}

Registry::PluginScope::~PluginScope() {
  std::unique_ptr<ActivePlugin> active(active_plugin);
  active_plugin = nullptr;
  State& s = *registry_.state_;
  if (!committed_) {
    // Roll back everything the failed register() added.
    for (const auto& t : active->configs) s.configs.erase(t);
    for (const auto& t : active->tokenizers) s.tokenizers.erase(t);
    for (const auto& t : active->mappings) s.mappings.erase(t);
    std::erase_if(s.models, [&](const ModelSlot& m) { return m.entry.source == active->file; });
  } else {
    s.plugins.push_back({active->name, active->version, active->file});
  }
  s.mutex.unlock();
}

void Registry::PluginScope::commit() { committed_ = true; }

}  // namespace plugformer
