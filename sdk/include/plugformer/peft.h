// PEFT (Hugging Face's peft library) for every family: LoRA adapters on the Linear / Conv1D layers
// of any model, and prompt tuning / prefix tuning for decoder-only models, with PEFT's files
// (adapter_config.json, adapter_model.safetensors with PEFT's key names) so adapters move freely
// between Python and C++.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "plugformer/auto.h"
#include "plugformer/config.h"
#include "plugformer/modeling.h"

namespace plugformer {

// adapter_config.json. peft_type "LORA" uses the LoRA fields, "PROMPT_TUNING" and
// "PREFIX_TUNING" use num_virtual_tokens (and the prefix projection fields); the model sizes PEFT
// also records for them (token_dim, num_attention_heads, num_layers) are filled from the base
// model's config.
struct PeftConfig {
  std::string peft_type = "LORA";
  std::string task_type;  // CAUSAL_LM, SEQ_CLS, TOKEN_CLS, SEQ_2_SEQ_LM, ... ("" when unset)
  std::string base_model_name_or_path;
  bool inference_mode = false;
  // LoRA.
  int64_t r = 8;
  double lora_alpha = 8;
  double lora_dropout = 0.0;
  // Module names (a module matches when its dotted path is the name or ends with ".name"), or
  // one regex matched against the whole path (target_modules_regex).
  std::vector<std::string> target_modules;
  std::optional<std::string> target_modules_regex;
  bool fan_in_fan_out = false;   // weights stored [in, out] (GPT-2's Conv1D); set for Conv1D anyway
  std::string bias = "none";     // none | all | lora_only
  std::vector<std::string> modules_to_save;
  bool use_rslora = false;       // scaling lora_alpha / sqrt(r) instead of lora_alpha / r
  std::string init_lora_weights = "true";  // "true" (B = 0), "gaussian" (B = 0), "false" (random B)
  std::vector<int64_t> layers_to_transform;  // empty: every layer
  // Prompt learning.
  int64_t num_virtual_tokens = 0;
  bool prefix_projection = false;
  int64_t encoder_hidden_size = 0;  // prefix projection MLP width
  int64_t token_dim = 0, num_attention_heads = 0, num_layers = 0;
  json extra = json::object();      // other keys of adapter_config.json, written back unchanged

  // ConfigError naming `source` and the field for anything PEFT would not accept or that is not
  // implemented here (unknown peft_type, use_dora, bad r, ...).
  static PeftConfig from_json(const json& config, const std::string& source = "adapter_config.json");
  json to_json() const;
  double scaling() const;
  bool is_prompt_learning() const { return peft_type == "PROMPT_TUNING" || peft_type == "PREFIX_TUNING"; }
};

struct PeftLoadOptions {
  std::string adapter_name = "default";
  bool is_trainable = false;
  PretrainedOptions hub;  // revision, token, cache_dir, local_files_only, ... for Hub adapter ids
};

class LoraState;
class PromptEncoder;

// transformers' model with adapters (PEFT's PeftModel). It is itself a PreTrainedModel whose
// forward runs the base model with the active adapter, so generate() and the pipelines take it.
// Parameters are named as in PEFT: base_model.model.<path>.lora_A.<adapter>.weight.
class PeftModel : public PreTrainedModel {
 public:
  // get_peft_model: a fresh adapter on `model`; the base is frozen, only the adapter trains.
  static std::shared_ptr<PeftModel> create(ModelPtr model, const PeftConfig& config,
                                           const std::string& adapter_name = "default");
  // An adapter directory or Hub id (adapter_config.json + adapter_model.safetensors / .bin).
  // task_type: as the config says, unless given.
  static std::shared_ptr<PeftModel> from_pretrained(ModelPtr model, const std::string& adapter,
                                                    const PeftLoadOptions& options = {},
                                                    const std::string& task_type = "");
  ~PeftModel() override;

  std::string class_name() const override;
  bool can_generate() const override { return base_->can_generate(); }
  ModelOutput forward(const ModelInputs& inputs) override;

  // Several adapters: load another, choose the active one, remove one.
  void load_adapter(const std::string& adapter, const std::string& adapter_name, const PeftLoadOptions& options = {});
  void add_adapter(const std::string& adapter_name, const PeftConfig& config);
  void set_adapter(const std::string& adapter_name);
  void delete_adapter(const std::string& adapter_name);
  const std::string& active_adapter() const;
  std::vector<std::string> adapters() const;
  const PeftConfig& peft_config(const std::string& adapter_name = "") const;

  // While the returned guard lives, the model runs without adapters (PEFT's disable_adapter()).
  class DisabledAdapters {
   public:
    explicit DisabledAdapters(std::shared_ptr<LoraState> state);
    ~DisabledAdapters();
    DisabledAdapters(const DisabledAdapters&) = delete;
    DisabledAdapters& operator=(const DisabledAdapters&) = delete;

   private:
    std::shared_ptr<LoraState> state_;
    bool was_disabled_;
  };
  [[nodiscard]] DisabledAdapters disable_adapter();

  // LoRA weights folded into the base weights (W += scaling * B A) and back.
  void merge_adapter(const std::vector<std::string>& adapter_names = {});
  void unmerge_adapter();
  // Merges the active adapter, removes every adapter and returns the plain base model.
  ModelPtr merge_and_unload();
  // The base model with its adapters still in place (they act while enabled).
  ModelPtr get_base_model() const { return base_; }

  // (trainable, all) parameter counts, and PEFT's one-line summary of them.
  std::pair<int64_t, int64_t> get_nb_trainable_parameters() const;
  std::string trainable_parameters_summary() const;
  void print_trainable_parameters() const;

  // adapter_config.json + adapter_model.safetensors (or adapter_model.bin) per adapter: the default
  // adapter in `dir`, others in dir/<name>, as PEFT lays them out; a README.md model card.
  void save_pretrained(const std::filesystem::path& dir, const std::vector<std::string>& selected_adapters = {},
                       bool safe_serialization = true) const;
  // The adapter's tensors under PEFT's file key names (get_peft_model_state_dict).
  std::vector<std::pair<std::string, at::Tensor>> adapter_state_dict(const std::string& adapter_name = "") const;
  void create_or_update_model_card(const std::filesystem::path& dir) const;

 private:
  PeftModel(ModelPtr model, std::string task_type);
  // Adds LoRA to the targeted modules; an unset target_modules becomes PEFT's default for the
  // model type, recorded in `config` (and so in the saved adapter_config.json) as PEFT does.
  void inject(const std::string& adapter_name, PeftConfig& config);
  void load_adapter_weights(const std::string& adapter_name, const std::map<std::string, at::Tensor>& tensors,
                            const std::string& source);
  void set_trainable(const std::string& adapter_name, bool trainable);
  ModelInputs with_prompt(const ModelInputs& inputs) const;

  void inject_prompt(const std::string& adapter_name, PeftConfig& config);

  ModelPtr base_;
  std::string task_type_;
  std::map<std::string, PeftConfig> configs_;
  std::shared_ptr<LoraState> state_;
  std::shared_ptr<torch::nn::Module> holder_;  // "base_model", holding "model"
  std::map<std::string, std::shared_ptr<PromptEncoder>> prompts_;  // "prompt_encoder.<adapter>"
};

using PeftModelPtr = std::shared_ptr<PeftModel>;

// PEFT's task classes: PeftModel with task_type set (class_name() "PeftModelForCausalLM", ...).
// The classification ones also train and save the model's `classifier` / `score` head
// (added to modules_to_save), as PEFT does.
namespace peft_tasks {
inline constexpr char kCausalLM[] = "CAUSAL_LM";
inline constexpr char kSeqCls[] = "SEQ_CLS";
inline constexpr char kTokenCls[] = "TOKEN_CLS";
inline constexpr char kSeq2SeqLM[] = "SEQ_2_SEQ_LM";
}  // namespace peft_tasks

template <const char* Task>
struct PeftModelFor {
  static PeftModelPtr create(ModelPtr model, PeftConfig config, const std::string& adapter_name = "default") {
    config.task_type = Task;
    return PeftModel::create(std::move(model), config, adapter_name);
  }
  static PeftModelPtr from_pretrained(ModelPtr model, const std::string& adapter, const PeftLoadOptions& options = {}) {
    return PeftModel::from_pretrained(std::move(model), adapter, options, Task);
  }
};
using PeftModelForCausalLM = PeftModelFor<peft_tasks::kCausalLM>;
using PeftModelForSequenceClassification = PeftModelFor<peft_tasks::kSeqCls>;
using PeftModelForTokenClassification = PeftModelFor<peft_tasks::kTokenCls>;
using PeftModelForSeq2SeqLM = PeftModelFor<peft_tasks::kSeq2SeqLM>;

// peft's get_peft_model.
inline PeftModelPtr get_peft_model(ModelPtr model, const PeftConfig& config, const std::string& adapter_name = "default") {
  return PeftModel::create(std::move(model), config, adapter_name);
}

}  // namespace plugformer
