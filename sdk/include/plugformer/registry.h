// The one registry of configs, models and tokenizers (lives in libplugformer, never in a plugin).
// Plugins fill it from their register() entry point; host applications may register too.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "plugformer/config.h"
#include "plugformer/modeling.h"
#include "plugformer/tokenizer.h"

namespace plugformer {

// The task mappings of transformers' Auto classes.
namespace tasks {
inline constexpr char kAutoModel[] = "AutoModel";
inline constexpr char kCausalLM[] = "AutoModelForCausalLM";
inline constexpr char kMaskedLM[] = "AutoModelForMaskedLM";
inline constexpr char kSeq2SeqLM[] = "AutoModelForSeq2SeqLM";
inline constexpr char kSequenceClassification[] = "AutoModelForSequenceClassification";
inline constexpr char kTokenClassification[] = "AutoModelForTokenClassification";
inline constexpr char kQuestionAnswering[] = "AutoModelForQuestionAnswering";
inline constexpr char kMultipleChoice[] = "AutoModelForMultipleChoice";
inline constexpr char kNextSentencePrediction[] = "AutoModelForNextSentencePrediction";
inline constexpr char kPreTraining[] = "AutoModelForPreTraining";
inline constexpr char kTextEncoding[] = "AutoModelForTextEncoding";
// Every task above, in that order.
const std::vector<std::string>& all();
}  // namespace tasks

using ConfigFactory = std::function<ConfigPtr()>;
using ModelFactory = std::function<ModelPtr(ConfigPtr)>;
using TokenizerFactory = std::function<std::shared_ptr<Tokenizer>(const TokenizerFiles&)>;

class Registry {
 public:
  static Registry& instance();

  // AutoConfig.register: RegistryError when model_type exists, unless exist_ok.
  void register_config(const std::string& model_type, ConfigFactory factory, bool exist_ok = false);
  // AutoModelFor<task>.register: class `architecture` serves `task` for configs of `model_type`.
  // The first class registered for (task, model_type) is the one Auto resolves to.
  void register_model(const std::string& task, const std::string& model_type, const std::string& architecture,
                      ModelFactory factory, bool exist_ok = false);
  // AutoTokenizer.register: a tokenizer class by name ("LlamaTokenizer", "BertTokenizerFast").
  void register_tokenizer(const std::string& class_name, TokenizerFactory factory, bool exist_ok = false);
  // TOKENIZER_MAPPING: the classes AutoTokenizer uses for a model_type when
  // tokenizer_config.json names none.
  void register_tokenizer_for_model_type(const std::string& model_type, const std::string& slow_class,
                                         const std::string& fast_class, bool exist_ok = false);

  // --- queries ---
  struct ConfigEntry {
    std::string model_type, source;
  };
  struct ModelEntry {
    std::string task, model_type, architecture, source;
  };
  struct TokenizerEntry {
    std::string class_name, source;
  };
  struct TokenizerMapping {
    std::string model_type, slow_class, fast_class, source;
  };
  struct PluginEntry {
    std::string name, version, file;
  };
  std::vector<ConfigEntry> configs() const;
  std::vector<ModelEntry> models() const;
  std::vector<TokenizerEntry> tokenizers() const;
  std::vector<TokenizerMapping> tokenizer_mappings() const;
  std::vector<PluginEntry> plugins() const;
  std::vector<std::string> model_types() const;  // sorted

  // --- resolution (objects keep the plugin that made them loaded) ---
  bool has_config(const std::string& model_type) const;
  ConfigPtr make_config(const std::string& model_type) const;  // UnknownModelTypeError lists the known ones
  // The class for (task, model_type); with `architecture` non-empty, that class if it serves the task.
  std::optional<ModelEntry> find_model(const std::string& task, const std::string& model_type,
                                       const std::string& architecture = "") const;
  // Any task: the class named `architecture` for model_type.
  std::optional<ModelEntry> find_architecture(const std::string& architecture) const;
  ModelPtr make_model(const ModelEntry& entry, ConfigPtr config) const;
  bool has_tokenizer(const std::string& class_name) const;
  std::shared_ptr<Tokenizer> make_tokenizer(const std::string& class_name, const TokenizerFiles& files) const;
  std::optional<TokenizerMapping> tokenizer_mapping(const std::string& model_type) const;

  // Used by the plugin loader: everything registered inside the scope is attributed to `file`,
  // keeps `library` alive, and is rolled back if the scope ends with commit() not called.
  class PluginScope {
   public:
    PluginScope(Registry& registry, std::string name, std::string version, std::string file,
                std::shared_ptr<void> library);
    ~PluginScope();
    void commit();

   private:
    Registry& registry_;
    bool committed_ = false;
  };

  struct State;  // private storage

 private:
  Registry();
  std::unique_ptr<State> state_;
};

}  // namespace plugformer
