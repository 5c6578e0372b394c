// GenerationConfig (generation.h): generation_config.json. Apart from generation.cpp so the parser
// builds without the models (fuzz/generation_config).
#include "plugformer/generation.h"

#include <algorithm>

#include "plugformer/error.h"

namespace plugformer {

namespace {

// The GenerationConfig fields, with their JSON names, read and written in one place.
template <class Config, class Fn>
void for_each_field(Config& c, Fn&& fn) {
  fn("max_length", c.max_length);
  fn("max_new_tokens", c.max_new_tokens);
  fn("min_length", c.min_length);
  fn("min_new_tokens", c.min_new_tokens);
  fn("max_time", c.max_time);
  fn("stop_strings", c.stop_strings);
  fn("do_sample", c.do_sample);
  fn("num_beams", c.num_beams);
  fn("num_return_sequences", c.num_return_sequences);
  fn("length_penalty", c.length_penalty);
  fn("early_stopping", c.early_stopping);
  fn("use_cache", c.use_cache);
  fn("temperature", c.temperature);
  fn("top_k", c.top_k);
  fn("top_p", c.top_p);
  fn("min_p", c.min_p);
  fn("typical_p", c.typical_p);
  fn("repetition_penalty", c.repetition_penalty);
  fn("no_repeat_ngram_size", c.no_repeat_ngram_size);
  fn("bad_words_ids", c.bad_words_ids);
  fn("forced_bos_token_id", c.forced_bos_token_id);
  fn("forced_eos_token_id", c.forced_eos_token_id);
  fn("bos_token_id", c.bos_token_id);
  fn("pad_token_id", c.pad_token_id);
  fn("decoder_start_token_id", c.decoder_start_token_id);
  fn("eos_token_id", c.eos_token_id);
}

struct FieldReader {
  const json& src;
  const std::string& source;
  std::vector<std::string> used;

  const json* find(const char* name) {
    auto it = src.find(name);
    if (it == src.end()) return nullptr;
    used.emplace_back(name);
    return &*it;
  }
  [[noreturn]] void fail(const char* name, const char* expected) const {
    throw ConfigError(source + ": field '" + name + "' must be " + expected);
  }
  void operator()(const char* n, int64_t& v) {
    if (const json* j = find(n)) {
      if (!j->is_number_integer()) fail(n, "an integer");
      v = j->get<int64_t>();
    }
  }
  void operator()(const char* n, double& v) {
    if (const json* j = find(n)) {
      if (!j->is_number()) fail(n, "a number");
      v = j->get<double>();
    }
  }
  void operator()(const char* n, bool& v) {
    if (const json* j = find(n)) {
      if (!j->is_boolean()) fail(n, "a boolean");
      v = j->get<bool>();
    }
  }
  void operator()(const char* n, std::string& v) {  // early_stopping: true, false or "never"
    if (const json* j = find(n)) {
      if (j->is_boolean()) v = j->get<bool>() ? "true" : "false";
      else if (j->is_string() && j->get<std::string>() == "never") v = "never";
      else fail(n, "true, false or \"never\"");
    }
  }
  void operator()(const char* n, std::optional<int64_t>& v) {
    if (const json* j = find(n)) {
      if (j->is_null()) v.reset();
      else if (j->is_number_integer()) v = j->get<int64_t>();
      else fail(n, "an integer or null");
    }
  }
  void operator()(const char* n, std::optional<double>& v) {
    if (const json* j = find(n)) {
      if (j->is_null()) v.reset();
      else if (j->is_number()) v = j->get<double>();
      else fail(n, "a number or null");
    }
  }
  void operator()(const char* n, std::vector<std::string>& v) {
    if (const json* j = find(n)) {
      v.clear();
      if (j->is_string()) v.push_back(j->get<std::string>());
      else if (j->is_array())
        for (const auto& e : *j) {
          if (!e.is_string()) fail(n, "a string or a list of strings");
          v.push_back(e.get<std::string>());
        }
      else if (!j->is_null()) fail(n, "a string or a list of strings");
    }
  }
  void operator()(const char* n, std::vector<int64_t>& v) {
    if (const json* j = find(n)) {
      v.clear();
      if (j->is_number_integer()) v.push_back(j->get<int64_t>());
      else if (j->is_array())
        for (const auto& e : *j) {
          if (!e.is_number_integer()) fail(n, "an integer or a list of integers");
          v.push_back(e.get<int64_t>());
        }
      else if (!j->is_null()) fail(n, "an integer or a list of integers");
    }
  }
  void operator()(const char* n, std::vector<std::vector<int64_t>>& v) {
    if (const json* j = find(n)) {
      v.clear();
      if (j->is_null()) return;
      if (!j->is_array()) fail(n, "a list of lists of integers");
      for (const auto& seq : *j) {
        if (!seq.is_array() || seq.empty()) fail(n, "a list of non-empty lists of integers");
        std::vector<int64_t> ids;
        for (const auto& e : seq) {
          if (!e.is_number_integer()) fail(n, "a list of lists of integers");
          ids.push_back(e.get<int64_t>());
        }
        v.push_back(std::move(ids));
      }
    }
  }
};

json field_json(const std::string& v) { return v == "never" ? json("never") : json(v == "true"); }
template <class T>
json field_json(const std::optional<T>& v) { return v ? json(*v) : json(); }
template <class T>
json field_json(const T& v) { return json(v); }

}  // namespace

GenerationConfig GenerationConfig::from_model_config(const PretrainedConfig& config) {
  GenerationConfig g;
  g.bos_token_id = config.bos_token_id;
  g.pad_token_id = config.pad_token_id;
  g.decoder_start_token_id = config.decoder_start_token_id;
  g.eos_token_id = config.eos_token_id;
  g.extra["_from_model_config"] = true;
  return g;
}

void GenerationConfig::update_from_json(const json& values, const std::string& source) {
  if (!values.is_object()) throw ConfigError(source + ": expected a JSON object");
  FieldReader reader{values, source, {}};
  for_each_field(*this, reader);
  for (const auto& [key, value] : values.items())
    if (std::find(reader.used.begin(), reader.used.end(), key) == reader.used.end()) extra[key] = value;
  validate();
}

json GenerationConfig::to_json() const {
  // As transformers' to_diff_dict: only what differs from the defaults, plus the extra keys.
  const GenerationConfig defaults;
  json base, out;
  for_each_field(defaults, [&](const char* n, const auto& v) { base[n] = field_json(v); });
  for_each_field(*this, [&](const char* n, const auto& v) {
    json value = field_json(v);
    if (value == base[n]) return;
    if (value.is_array() && value.size() == 1 && std::string(n) == "eos_token_id") value = value[0];
    out[n] = value;
  });
  for (const auto& [key, value] : extra.items()) out[key] = value;
  return out;
}

void GenerationConfig::save_pretrained(const std::filesystem::path& dir) const {
  json out = to_json();
  if (!out.contains("transformers_version")) out["transformers_version"] = "4.46.3";
  write_text_file(dir / "generation_config.json", nlohmann::json::parse(out.dump()).dump(2) + "\n");
}


void GenerationConfig::validate() const {
  auto fail = [](const std::string& m) { throw InvalidInputError("generation config: " + m); };
  if (max_new_tokens && *max_new_tokens < 0) fail("max_new_tokens must be >= 0, got " + std::to_string(*max_new_tokens));
  if (max_length < 0) fail("max_length must be >= 0");
  if (num_beams < 1) fail("num_beams must be >= 1, got " + std::to_string(num_beams));
  if (num_return_sequences < 1) fail("num_return_sequences must be >= 1");
  if (num_beams > 1 && num_return_sequences > num_beams) fail("num_return_sequences must be <= num_beams");
  if (num_beams == 1 && !do_sample && num_return_sequences > 1)
    fail("greedy search returns one sequence per prompt: num_return_sequences must be 1");
  if (repetition_penalty <= 0) fail("repetition_penalty must be > 0");
  if (do_sample && temperature <= 0) fail("temperature must be > 0 when sampling, got " + std::to_string(temperature));
  if (top_p <= 0 || top_p > 1) fail("top_p must be in (0, 1], got " + std::to_string(top_p));
  if (typical_p <= 0 || typical_p > 1) fail("typical_p must be in (0, 1]");
  if (min_p && (*min_p < 0 || *min_p > 1)) fail("min_p must be in [0, 1]");
  if (top_k < 0) fail("top_k must be >= 0");
  if (no_repeat_ngram_size < 0) fail("no_repeat_ngram_size must be >= 0");
  if (max_time && *max_time <= 0) fail("max_time must be > 0");
}

}  // namespace plugformer
