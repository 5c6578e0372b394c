#include "plugformer/config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <unistd.h>

#include "plugformer/error.h"

namespace plugformer {

namespace {

// A bound on num_labels, so that a hostile count cannot exhaust memory making up label names (the
// largest real label set, ImageNet-21k's, has 21843).
constexpr int64_t kMaxLabels = 1'000'000;
bool label_count_allowed(int64_t n) { return n >= 1 && n <= kMaxLabels; }
std::string label_count_problem(int64_t n) {
  return "'num_labels' must be from 1 to " + std::to_string(kMaxLabels) + ", got " + std::to_string(n);
}

std::string describe(const json& v) {
  std::string text = v.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return std::string(v.type_name()) + " " + text;
}

// Every attribute name a config answers to: declared fields, in declaration order.
class FieldNames final : public ConfigFieldVisitor {
 public:
  std::vector<std::string> names;
  void add(const char* n) { names.emplace_back(n); }
  void field(const char* n, int64_t&) override { add(n); }
  void field(const char* n, double&) override { add(n); }
  void field(const char* n, bool&) override { add(n); }
  void field(const char* n, std::string&) override { add(n); }
  void field(const char* n, std::optional<int64_t>&) override { add(n); }
  void field(const char* n, std::optional<double>&) override { add(n); }
  void field(const char* n, std::optional<std::string>&) override { add(n); }
  void field(const char* n, std::vector<std::string>&) override { add(n); }
  void field(const char* n, std::vector<int64_t>&) override { add(n); }
  void field(const char* n, json&) override { add(n); }
};

}  // namespace

// Reads declared fields out of a JSON object, checking types; what it consumed is recorded.
class ConfigJsonReader final : public ConfigFieldVisitor {
 public:
  ConfigJsonReader(const json& src, std::string source, const std::map<std::string, std::string>& aliases)
      : src_(src), source_(std::move(source)) {
    for (const auto& [alias, target] : aliases) alias_of_[target].push_back(alias);
  }
  std::set<std::string> consumed;

  void field(const char* n, int64_t& v) override {
    if (const json* j = find(n)) v = as_int(n, *j);
  }
  void field(const char* n, double& v) override {
    if (const json* j = find(n)) v = as_double(n, *j);
  }
  void field(const char* n, bool& v) override {
    if (const json* j = find(n)) {
      if (!j->is_boolean()) fail(n, "a boolean", *j);
      v = j->get<bool>();
    }
  }
  void field(const char* n, std::string& v) override {
    if (const json* j = find(n)) {
      if (!j->is_string()) fail(n, "a string", *j);
      v = j->get<std::string>();
    }
  }
  void field(const char* n, std::optional<int64_t>& v) override {
    if (const json* j = find(n)) v = j->is_null() ? std::nullopt : std::optional<int64_t>(as_int(n, *j));
  }
  void field(const char* n, std::optional<double>& v) override {
    if (const json* j = find(n)) v = j->is_null() ? std::nullopt : std::optional<double>(as_double(n, *j));
  }
  void field(const char* n, std::optional<std::string>& v) override {
    if (const json* j = find(n)) {
      if (j->is_null()) { v.reset(); return; }
      if (!j->is_string()) fail(n, "a string or null", *j);
      v = j->get<std::string>();
    }
  }
  void field(const char* n, std::vector<std::string>& v) override {
    if (const json* j = find(n)) {
      v.clear();
      if (j->is_null()) return;
      if (!j->is_array()) fail(n, "a list of strings", *j);
      for (const auto& e : *j) {
        if (!e.is_string()) fail(n, "a list of strings", *j);
        v.push_back(e.get<std::string>());
      }
    }
  }
  void field(const char* n, std::vector<int64_t>& v) override {
    if (const json* j = find(n)) {
      v.clear();
      list_ = j->is_array();
      if (j->is_null()) return;
      if (j->is_array()) {
        for (const auto& e : *j) v.push_back(as_int(n, e));
      } else {
        v.push_back(as_int(n, *j));
      }
    }
  }
  void field(const char* n, json& v) override {
    if (const json* j = find(n)) v = *j;
  }
  bool last_was_list() const { return list_; }

 private:
  const json* find(const char* name) {
    auto it = src_.find(name);
    if (it != src_.end()) {
      consumed.insert(name);
      return &*it;
    }
    if (auto a = alias_of_.find(name); a != alias_of_.end()) {
      for (const auto& alias : a->second) {
        auto jt = src_.find(alias);
        if (jt != src_.end()) {
          consumed.insert(alias);
          return &*jt;
        }
      }
    }
    return nullptr;
  }
  [[noreturn]] void fail(const char* name, const char* expected, const json& got) const {
    throw ConfigError(source_ + ": field '" + name + "' must be " + expected + ", got " + describe(got));
  }
  int64_t as_int(const char* name, const json& j) const {
    // Whole numbers within int64's range: beyond it (5e25, or an unsigned above 2^63 - 1) there is
    // no int64 to convert to (the float conversion would be undefined).
    if (j.is_number_float()) {
      const double d = j.get<double>();
      if (d == std::trunc(d) && d >= -0x1p63 && d < 0x1p63) return int64_t(d);
      if (d == std::trunc(d)) fail(name, "an integer within int64's range", j);
    } else if (j.is_number_unsigned() && j.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
      fail(name, "an integer within int64's range", j);
    } else if (j.is_number_integer()) {
      return j.get<int64_t>();
    }
    fail(name, "an integer", j);
  }
  double as_double(const char* name, const json& j) const {
    if (!j.is_number()) fail(name, "a number", j);
    return j.get<double>();
  }

  const json& src_;
  std::string source_;
  std::map<std::string, std::vector<std::string>> alias_of_;
  bool list_ = false;
};

// Writes declared fields into a JSON object.
class ConfigJsonWriter final : public ConfigFieldVisitor {
 public:
  explicit ConfigJsonWriter(json& out) : out_(out) {}
  bool eos_is_list = false;
  void field(const char* n, int64_t& v) override { out_[n] = v; }
  void field(const char* n, double& v) override { out_[n] = v; }
  void field(const char* n, bool& v) override { out_[n] = v; }
  void field(const char* n, std::string& v) override { out_[n] = v; }
  void field(const char* n, std::optional<int64_t>& v) override { out_[n] = v ? json(*v) : json(nullptr); }
  void field(const char* n, std::optional<double>& v) override { out_[n] = v ? json(*v) : json(nullptr); }
  void field(const char* n, std::optional<std::string>& v) override { out_[n] = v ? json(*v) : json(nullptr); }
  void field(const char* n, std::vector<std::string>& v) override { out_[n] = v; }
  void field(const char* n, std::vector<int64_t>& v) override {
    if (v.empty()) out_[n] = nullptr;
    else if (v.size() == 1 && !eos_is_list) out_[n] = v[0];
    else out_[n] = v;
  }
  void field(const char* n, json& v) override { out_[n] = v; }

 private:
  json& out_;
};

void PretrainedConfig::visit_fields(ConfigFieldVisitor& v) {
  v.field("architectures", architectures);
  v.field("problem_type", problem_type);
  v.field("bos_token_id", bos_token_id);
  v.field("pad_token_id", pad_token_id);
  v.field("sep_token_id", sep_token_id);
  v.field("decoder_start_token_id", decoder_start_token_id);
  v.field("eos_token_id", eos_token_id);
  v.field("tie_word_embeddings", tie_word_embeddings);
  v.field("is_encoder_decoder", is_encoder_decoder);
  v.field("is_decoder", is_decoder);
  v.field("add_cross_attention", add_cross_attention);
  v.field("torch_dtype", torch_dtype);
  v.field("output_hidden_states", output_hidden_states);
  v.field("output_attentions", output_attentions);
  v.field("return_dict", return_dict);
  v.field("use_cache", use_cache);
  v.field("_name_or_path", name_or_path);
  v.field("transformers_version", transformers_version);
}

void PretrainedConfig::validate() const {}

void PretrainedConfig::require_positive(const char* name, int64_t value) {
  if (value <= 0) throw ConfigError(std::string("field '") + name + "' must be positive, got " + std::to_string(value));
}

void PretrainedConfig::set_num_labels(int64_t n) {
  if (!label_count_allowed(n)) throw ConfigError("field " + label_count_problem(n));
  id2label.clear();
  label2id.clear();
  for (int64_t i = 0; i < n; ++i) {
    id2label[i] = "LABEL_" + std::to_string(i);
    label2id["LABEL_" + std::to_string(i)] = i;
  }
}

void PretrainedConfig::update_from_json(const json& config, const std::string& source) {
  if (!config.is_object()) throw ConfigError(source + ": expected a JSON object, got " + describe(config));
  if (!class_defaults_) class_defaults_ = to_json();
  ConfigJsonReader reader(config, source, attribute_map());
  // eos_token_id first on its own so its list-ness is remembered for writing back.
  reader.field("eos_token_id", eos_token_id);
  if (reader.consumed.count("eos_token_id")) eos_token_id_is_list_ = reader.last_was_list();
  visit_fields(reader);

  if (auto it = config.find("model_type"); it != config.end()) {
    reader.consumed.insert("model_type");
    if (!it->is_string()) throw ConfigError(source + ": field 'model_type' must be a string, got " + describe(*it));
    if (model_type_.empty()) model_type_ = it->get<std::string>();
  }
  if (auto it = config.find("id2label"); it != config.end() && !it->is_null()) {
    reader.consumed.insert("id2label");
    if (!it->is_object()) throw ConfigError(source + ": field 'id2label' must be an object {\"0\": label}, got " + describe(*it));
    id2label.clear();
    for (const auto& [key, label] : it->items()) {
      int64_t id;
      try {
        size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) throw std::invalid_argument(key);
      } catch (const std::exception&) {
        throw ConfigError(source + ": field 'id2label' must have integer keys, got \"" + key + "\"");
      }
      if (!label.is_string()) throw ConfigError(source + ": field 'id2label." + key + "' must be a string, got " + describe(label));
      id2label[id] = label.get<std::string>();
    }
  }
  if (auto it = config.find("label2id"); it != config.end() && !it->is_null()) {
    reader.consumed.insert("label2id");
    if (!it->is_object()) throw ConfigError(source + ": field 'label2id' must be an object {label: id}, got " + describe(*it));
    label2id.clear();
    for (const auto& [label, id] : it->items()) {
      if (!id.is_number_integer()) throw ConfigError(source + ": field 'label2id." + label + "' must be an integer, got " + describe(id));
      label2id[label] = id.get<int64_t>();
    }
  }
  if (auto it = config.find("num_labels"); it != config.end()) {
    reader.consumed.insert("num_labels");
    if (!it->is_number_integer()) throw ConfigError(source + ": field 'num_labels' must be an integer, got " + describe(*it));
    const int64_t count = it->get<int64_t>();
    if (!label_count_allowed(count)) throw ConfigError(source + ": field " + label_count_problem(count));
    if (id2label.empty() || int64_t(id2label.size()) != count) set_num_labels(count);
  }
  if (label2id.empty())
    for (const auto& [id, label] : id2label) label2id[label] = id;

  for (const auto& [key, value] : config.items())
    if (!reader.consumed.count(key)) extra[key] = value;
  try {
    validate();
  } catch (const ConfigError& e) {
    throw ConfigError(source + ": " + e.what());
  }
}

json PretrainedConfig::to_json() const { return attributes_json(true); }

json PretrainedConfig::attributes_json(bool with_labels) const {
  json out;
  auto* self = const_cast<PretrainedConfig*>(this);  // visitors take references; writing does not modify
  ConfigJsonWriter writer(out);
  writer.eos_is_list = eos_token_id_is_list_;
  self->visit_fields(writer);
  out["model_type"] = model_type();
  if (with_labels && !id2label.empty()) {
    // The maps' keys are unique: append them (json's operator[] would search, quadratic in labels).
    json labels = json::object(), ids = json::object();
    for (const auto& [id, label] : id2label) labels.get_ref<json::object_t&>().emplace_back(std::to_string(id), label);
    for (const auto& [label, id] : label2id) ids.get_ref<json::object_t&>().emplace_back(label, id);
    out["id2label"] = std::move(labels);
    out["label2id"] = std::move(ids);
  }
  for (const auto& [key, value] : extra) out[key] = value;
  return out;
}

std::string PretrainedConfig::to_json_string(bool use_diff) const {
  json all = to_json();
  if (use_diff) {
    // As transformers' to_diff_dict: common fields only when they differ from the base
    // defaults or from this class's own defaults; family fields and extra keys always.
    const json defaults = PretrainedConfig().to_json();
    for (const auto& [key, value] : defaults.items()) {
      if (key == "transformers_version" || key == "model_type" || !all.contains(key) || all[key] != value) continue;
      if (class_defaults_ && class_defaults_->contains(key) && (*class_defaults_)[key] != value) continue;
      all.erase(key);
    }
  }
  // transformers writes sort_keys=True, indent=2.
  return nlohmann::json::parse(all.dump()).dump(2) + "\n";
}

void PretrainedConfig::save_pretrained(const std::filesystem::path& dir) const {
  std::filesystem::create_directories(dir);
  write_text_file(dir / "config.json", to_json_string());
}

json PretrainedConfig::apply_overrides(const json& overrides) {
  if (!overrides.is_object()) throw ConfigError("config overrides must be a JSON object, got " + describe(overrides));
  FieldNames names;
  visit_fields(names);
  std::set<std::string> known(names.names.begin(), names.names.end());
  for (const auto& [alias, target] : attribute_map()) known.insert(alias);
  known.insert({"id2label", "label2id", "num_labels"});

  json merged = to_json();
  json unused = json::object();
  for (const auto& [key, value] : overrides.items()) {
    if (known.count(key) || extra.count(key)) merged[key] = value;
    else unused[key] = value;
  }
  // An alias in the overrides wins over the canonical key already in `merged`.
  for (const auto& [alias, target] : attribute_map())
    if (overrides.contains(alias)) merged.erase(target);
  if (overrides.contains("num_labels")) { merged.erase("id2label"); merged.erase("label2id"); }
  update_from_json(merged, "config overrides");
  return unused;
}

namespace {
bool is_label_map(const std::string& key) { return key == "id2label" || key == "label2id"; }
}  // namespace

json PretrainedConfig::get(const std::string& name) const {
  auto aliases = attribute_map();
  const std::string key = aliases.count(name) ? aliases.at(name) : name;
  if (key == "num_labels") return num_labels();
  json all = attributes_json(is_label_map(key));
  auto it = all.find(key);
  return it == all.end() ? json() : *it;
}

bool PretrainedConfig::has(const std::string& name) const {
  auto aliases = attribute_map();
  const std::string key = aliases.count(name) ? aliases.at(name) : name;
  return key == "num_labels" || attributes_json(is_label_map(key)).contains(key);
}

json read_json_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(file)) throw FileNotFoundError(file.string() + ": no such file");
    throw IOError(file.string() + ": cannot open for reading");
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return parse_json_text(buffer.str());
  } catch (const nlohmann::json::exception& e) {  // syntax, or a number beyond double's range
    throw ConfigError(file.string() + ": not valid JSON (" + e.what() + ")");
  }
}

void write_text_file(const std::filesystem::path& file, const std::string& text) {
  const auto tmp = std::filesystem::path(file.string() + ".tmp." + std::to_string(::getpid()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IOError(file.string() + ": cannot open for writing");
    out << text;
    if (!out.flush()) {
      out.close();
      std::filesystem::remove(tmp);
      throw IOError(file.string() + ": write failed");
    }
  }
  std::filesystem::rename(tmp, file);
}

void write_json_file(const std::filesystem::path& file, const json& value, int indent) {
  write_text_file(file, value.dump(indent) + "\n");
}

}  // namespace plugformer
