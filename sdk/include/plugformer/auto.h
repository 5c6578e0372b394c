// transformers' Auto classes: AutoConfig, AutoTokenizer, AutoModel and the task mappings.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "plugformer/config.h"
#include "plugformer/modeling.h"
#include "plugformer/registry.h"
#include "plugformer/tokenizer.h"

namespace plugformer {

// from_pretrained's keyword arguments.
struct PretrainedOptions {
  // Where files come from (a local directory or a Hub repo id).
  std::string revision = "main";
  std::optional<std::filesystem::path> cache_dir;
  bool force_download = false;
  bool local_files_only = false;
  std::optional<std::string> token;
  std::string subfolder;
  std::string variant;                   // model.<variant>.safetensors
  std::optional<bool> use_safetensors;   // nullopt: prefer safetensors, fall back to .bin
  // How the model is built.
  std::string torch_dtype;               // "" (float32, transformers' default), "auto", "float32", "bfloat16", "float16"
  std::string device = "cpu";            // device / device_map "cpu"
  std::string attn_implementation = "eager";
  std::map<std::string, std::string> key_mapping;
  bool ignore_mismatched_sizes = false;
  json config_overrides = json::object();  // config attributes as keyword arguments
  std::string architecture;                // instantiate this class instead of the task's default
  LoadingInfo* loading_info = nullptr;     // output_loading_info
  std::string quantization;                // "" or "int8": PreTrainedModel::quantize after loading
  // This process's rank of a tensor-parallel group (distributed.h): the model is split by its
  // family's plan and only this rank's slices of the weights are read.
  std::shared_ptr<TensorParallelGroup> tensor_parallel;
};

class AutoConfig {
 public:
  // Reads config.json; dispatches on model_type, falling back to the longest registered
  // model_type contained in the path (transformers' name-pattern rule).
  // `unused_kwargs` (return_unused_kwargs) receives overrides that are not config attributes.
  static ConfigPtr from_pretrained(const std::string& path_or_repo_id, const PretrainedOptions& options = {},
                                   json* unused_kwargs = nullptr);
  static ConfigPtr for_model(const std::string& model_type, const json& values = json::object());
  static void register_(const std::string& model_type, ConfigFactory factory, bool exist_ok = false);
};

class AutoTokenizer {
 public:
  // tokenizer_config.json's tokenizer_class (or the model_type's mapping), preferring the fast
  // class when tokenizer.json exists and use_fast, as transformers does.
  static std::shared_ptr<Tokenizer> from_pretrained(const std::string& path_or_repo_id,
                                                    const PretrainedOptions& options = {}, bool use_fast = true);
  static void register_(const std::string& class_name, TokenizerFactory factory, bool exist_ok = false);
};

// Shared implementation of the AutoModelFor* classes.
ModelPtr auto_model_from_pretrained(const std::string& task, const std::string& path_or_repo_id,
                                    const PretrainedOptions& options);
ModelPtr auto_model_from_config(const std::string& task, ConfigPtr config, const std::string& architecture = "");

template <const char* Task>
class AutoModelFor {
 public:
  static constexpr const char* task = Task;
  static ModelPtr from_pretrained(const std::string& path_or_repo_id, const PretrainedOptions& options = {}) {
    return auto_model_from_pretrained(Task, path_or_repo_id, options);
  }
  // A model with freshly initialised weights for `config`.
  static ModelPtr from_config(ConfigPtr config) { return auto_model_from_config(Task, std::move(config)); }
  static void register_(const std::string& model_type, const std::string& architecture, ModelFactory factory,
                        bool exist_ok = false) {
    Registry::instance().register_model(Task, model_type, architecture, std::move(factory), exist_ok);
  }
};

using AutoModel = AutoModelFor<tasks::kAutoModel>;
using AutoModelForCausalLM = AutoModelFor<tasks::kCausalLM>;
using AutoModelForMaskedLM = AutoModelFor<tasks::kMaskedLM>;
using AutoModelForSeq2SeqLM = AutoModelFor<tasks::kSeq2SeqLM>;
using AutoModelForSequenceClassification = AutoModelFor<tasks::kSequenceClassification>;
using AutoModelForTokenClassification = AutoModelFor<tasks::kTokenClassification>;
using AutoModelForQuestionAnswering = AutoModelFor<tasks::kQuestionAnswering>;
using AutoModelForMultipleChoice = AutoModelFor<tasks::kMultipleChoice>;
using AutoModelForNextSentencePrediction = AutoModelFor<tasks::kNextSentencePrediction>;
using AutoModelForPreTraining = AutoModelFor<tasks::kPreTraining>;
using AutoModelForTextEncoding = AutoModelFor<tasks::kTextEncoding>;

// Loads whatever class config.json's `architectures` names (or options.architecture), from any
// task mapping: what `plugformer forward` and pipelines use.
ModelPtr load_model_for_architecture(const std::string& path_or_repo_id, const PretrainedOptions& options = {});

// push_to_hub: save_pretrained into a temporary folder, a model card (README.md) carrying `tags`,
// then one commit through the Hub's commit API (preupload, LFS upload, commit).
struct PushToHubOptions {
  std::string commit_message = "Upload model";
  bool private_repo = false;
  bool create_pr = false;
  std::optional<std::string> token;     // default: HF_TOKEN / token file
  std::string revision = "main";
  std::vector<std::string> tags;        // add_model_tags
  SaveOptions save;                     // max_shard_size, safe_serialization, variant
};
// Returns the commit URL, or the pull request URL with create_pr.
std::string push_to_hub(const PreTrainedModel& model, const std::string& repo_id, const PushToHubOptions& options = {});

// Resolves `filename` in a local directory or a Hub repo (downloading into the cache).
// Returns nullopt for a missing optional file; FileNotFoundError / Hub errors otherwise.
std::optional<std::filesystem::path> resolve_file(const std::string& path_or_repo_id, const std::string& filename,
                                                  const PretrainedOptions& options, bool optional = false);

}  // namespace plugformer
