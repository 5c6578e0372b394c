// PretrainedConfig: transformers' configuration base class. Common fields live here; a family
// subclass declares its own fields once in visit_fields(), which gives parsing with type checks,
// defaults (member initialisers), attribute_map aliases and serialisation for free. Keys nobody
// declared are kept in `extra` and written back by to_json(), so configs round-trip.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugformer/json_text.h"

namespace plugformer {

using json = nlohmann::ordered_json;

// Sees every declared field of a config: reading it from JSON, writing it, or listing it.
class ConfigFieldVisitor {
 public:
  virtual ~ConfigFieldVisitor() = default;
  virtual void field(const char* name, int64_t& value) = 0;
  virtual void field(const char* name, double& value) = 0;
  virtual void field(const char* name, bool& value) = 0;
  virtual void field(const char* name, std::string& value) = 0;
  virtual void field(const char* name, std::optional<int64_t>& value) = 0;
  virtual void field(const char* name, std::optional<double>& value) = 0;
  virtual void field(const char* name, std::optional<std::string>& value) = 0;
  virtual void field(const char* name, std::vector<std::string>& value) = 0;
  // A token id that may be one int, a list of ints, or null (eos_token_id in many configs).
  virtual void field(const char* name, std::vector<int64_t>& value) = 0;
  // Anything else (rope_scaling, task_specific_params, ...): kept as JSON.
  virtual void field(const char* name, json& value) = 0;
};

class PretrainedConfig {
 public:
  PretrainedConfig() = default;
  virtual ~PretrainedConfig() = default;

  // The model_type string this config class stands for ("" for the base class).
  virtual std::string model_type() const { return model_type_; }
  // Aliases: name a checkpoint may use -> field name (gpt2: n_embd -> hidden_size).
  virtual std::map<std::string, std::string> attribute_map() const { return {}; }
  // Family fields. Subclasses call the base first.
  virtual void visit_fields(ConfigFieldVisitor& v);
  // Called after parsing and after overrides: check values, derive fields.
  virtual void validate() const;

  // Parses a config.json object. `source` names the file in error messages.
  void update_from_json(const json& config, const std::string& source = "config.json");
  json to_json() const;  // every attribute, like to_dict()
  // What save_pretrained writes: sorted keys, and with use_diff only non-default common fields.
  std::string to_json_string(bool use_diff = true) const;
  void save_pretrained(const std::filesystem::path& dir) const;

  // Sets the fields named in `overrides` (attribute_map aliases allowed). Keys that are not an
  // attribute of this config are returned, as transformers' return_unused_kwargs does.
  json apply_overrides(const json& overrides);
  // The value of any attribute (declared, common or extra) as JSON; null when unknown.
  json get(const std::string& name) const;
  bool has(const std::string& name) const;

  // --- common transformers fields ---
  std::vector<std::string> architectures;
  std::map<int64_t, std::string> id2label;
  std::map<std::string, int64_t> label2id;
  std::optional<std::string> problem_type;
  std::optional<int64_t> bos_token_id, pad_token_id, sep_token_id, decoder_start_token_id;
  std::vector<int64_t> eos_token_id;  // empty when not set
  bool tie_word_embeddings = true;
  bool is_encoder_decoder = false;
  bool is_decoder = false;
  bool add_cross_attention = false;
  std::optional<std::string> torch_dtype;
  bool output_hidden_states = false;
  bool output_attentions = false;
  bool return_dict = true;
  bool use_cache = true;
  std::optional<std::string> name_or_path;
  std::string transformers_version;
  std::map<std::string, json> extra;  // keys no field declared, in file order

  int64_t num_labels() const { return id2label.empty() ? 2 : int64_t(id2label.size()); }
  void set_num_labels(int64_t n);

 protected:
  // For validate(): ConfigError "field 'name' must be positive" unless value > 0.
  static void require_positive(const char* name, int64_t value);

  std::string model_type_;
  bool eos_token_id_is_list_ = false;
  // This class's defaults, taken before the first update (transformers' class_config_dict).
  std::optional<json> class_defaults_;

 private:
  // to_json(), with or without id2label / label2id (get() and has() of other keys skip them).
  json attributes_json(bool with_labels) const;
  friend class ConfigJsonReader;
  friend class ConfigJsonWriter;
};

using ConfigPtr = std::shared_ptr<PretrainedConfig>;

// Reads and parses a JSON file; ConfigError naming the file when it is not JSON.
json read_json_file(const std::filesystem::path& file);
// Writes to a temp file next to `file` and renames it, so no half-written file remains.
void write_text_file(const std::filesystem::path& file, const std::string& text);
// Writes JSON to a temp file next to `file` and renames it, so no half-written file remains.
void write_json_file(const std::filesystem::path& file, const json& value, int indent = 2);

}  // namespace plugformer
