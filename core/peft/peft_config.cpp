// PeftConfig (peft.h): adapter_config.json. Apart from peft_model.cpp so the parser builds
// without the models (fuzz/adapter_config).
#include "plugformer/peft.h"

#include <cmath>
#include <set>

#include "peft/target_regex.h"
#include "plugformer/error.h"

namespace plugformer {

std::regex compile_target_regex(const std::string& pattern, const std::string& field) {
  const std::string expected = field + " must be a list of module names or a valid regular expression (";
  // libstdc++ reads a back-reference or a repeat count into a long unchecked, which overflows
  // (fuzz/adapter_config: \8888888888888888888888): no module index has more than 9 digits.
  size_t digits = 0;
  for (char ch : pattern) {
    digits = ch >= '0' && ch <= '9' ? digits + 1 : 0;
    if (digits > 9) throw ConfigError(expected + "it has a number of more than 9 digits)");
  }
  try {
    return std::regex(pattern);
  } catch (const std::regex_error& e) {
    throw ConfigError(expected + e.what() + ")");
  }
}

PeftConfig PeftConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw ConfigError(source + ": expected a JSON object");
  PeftConfig c;
  std::set<std::string> used;
  auto get = [&](const char* key) -> const json* {
    auto it = j.find(key);
    used.insert(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  };
  auto fail = [&](const std::string& key, const std::string& expected) {
    throw ConfigError(source + ": field '" + key + "' must be " + expected);
  };
  auto string_field = [&](const char* key, std::string& out) {
    if (const json* v = get(key)) {
      if (!v->is_string()) fail(key, "a string");
      out = v->get<std::string>();
    }
  };
  auto bool_field = [&](const char* key, bool& out) {
    if (const json* v = get(key)) {
      if (!v->is_boolean()) fail(key, "true or false");
      out = v->get<bool>();
    }
  };
  auto int_field = [&](const char* key, int64_t& out) {
    if (const json* v = get(key)) {
      if (!v->is_number_integer()) fail(key, "an integer");
      out = v->get<int64_t>();
    }
  };
  auto number_field = [&](const char* key, double& out) {
    if (const json* v = get(key)) {
      if (!v->is_number()) fail(key, "a number");
      out = v->get<double>();
    }
  };
  auto list_field = [&](const char* key, std::vector<std::string>& out) {
    if (const json* v = get(key)) {
      if (!v->is_array()) fail(key, "a list of strings");
      for (const auto& e : *v) {
        if (!e.is_string()) fail(key, "a list of strings");
        out.push_back(e.get<std::string>());
      }
    }
  };

  if (!j.contains("peft_type")) throw ConfigError(source + ": field 'peft_type' is missing");
  string_field("peft_type", c.peft_type);
  if (c.peft_type != "LORA" && !c.is_prompt_learning())
    throw ConfigError(source + ": peft_type '" + c.peft_type + "' is not supported (LORA, PROMPT_TUNING, PREFIX_TUNING)");
  string_field("task_type", c.task_type);
  string_field("base_model_name_or_path", c.base_model_name_or_path);
  bool_field("inference_mode", c.inference_mode);
  if (c.peft_type == "LORA") {
    int_field("r", c.r);
    if (c.r <= 0) fail("r", "a positive integer");
    number_field("lora_alpha", c.lora_alpha);
    number_field("lora_dropout", c.lora_dropout);
    if (c.lora_dropout < 0 || c.lora_dropout >= 1) fail("lora_dropout", "in [0, 1)");
    if (const json* t = get("target_modules")) {
      if (t->is_string()) {
        c.target_modules_regex = t->get<std::string>();
        compile_target_regex(*c.target_modules_regex, source + ": field 'target_modules'");  // fails here, naming the file
      } else {
        list_field("target_modules", c.target_modules);
      }
    }
    bool_field("fan_in_fan_out", c.fan_in_fan_out);
    string_field("bias", c.bias);
    if (c.bias != "none" && c.bias != "all" && c.bias != "lora_only") fail("bias", "none, all or lora_only");
    list_field("modules_to_save", c.modules_to_save);
    bool_field("use_rslora", c.use_rslora);
    bool dora = false;
    bool_field("use_dora", dora);
    if (dora) throw ConfigError(source + ": use_dora (DoRA) is not supported");
    if (const json* init = get("init_lora_weights")) {
      if (init->is_boolean()) c.init_lora_weights = init->get<bool>() ? "true" : "false";
      else if (init->is_string() && init->get<std::string>() == "gaussian") c.init_lora_weights = "gaussian";
      else fail("init_lora_weights", "true, false or \"gaussian\"");
    }
    if (const json* layers = get("layers_to_transform")) {
      if (layers->is_number_integer()) c.layers_to_transform = {layers->get<int64_t>()};
      else if (layers->is_array()) {
        for (const auto& e : *layers) {
          if (!e.is_number_integer()) fail("layers_to_transform", "an integer or a list of integers");
          c.layers_to_transform.push_back(e.get<int64_t>());
        }
      } else {
        fail("layers_to_transform", "an integer or a list of integers");
      }
    }
    for (const char* unsupported : {"rank_pattern", "alpha_pattern"})
      if (const json* v = get(unsupported); v && !v->empty())
        throw ConfigError(source + ": field '" + unsupported + "' (per-module ranks) is not supported");
  } else {
    int_field("num_virtual_tokens", c.num_virtual_tokens);
    if (c.num_virtual_tokens <= 0) fail("num_virtual_tokens", "a positive integer");
    bool_field("prefix_projection", c.prefix_projection);
    int_field("encoder_hidden_size", c.encoder_hidden_size);
    int_field("token_dim", c.token_dim);
    int_field("num_attention_heads", c.num_attention_heads);
    int_field("num_layers", c.num_layers);
    std::string init = "RANDOM";
    string_field("prompt_tuning_init", init);
    if (init != "RANDOM") throw ConfigError(source + ": prompt_tuning_init '" + init + "' is not supported (RANDOM)");
  }
  for (const auto& [key, value] : j.items())
    if (!used.count(key)) c.extra[key] = value;
  return c;
}

json PeftConfig::to_json() const {
  json j = json::object();
  j["peft_type"] = peft_type;
  j["task_type"] = task_type.empty() ? json() : json(task_type);
  j["base_model_name_or_path"] = base_model_name_or_path.empty() ? json() : json(base_model_name_or_path);
  j["inference_mode"] = inference_mode;
  if (peft_type == "LORA") {
    j["r"] = r;
    j["lora_alpha"] = lora_alpha;
    j["lora_dropout"] = lora_dropout;
    j["target_modules"] = target_modules_regex ? json(*target_modules_regex) : json(target_modules);
    j["fan_in_fan_out"] = fan_in_fan_out;
    j["bias"] = bias;
    j["modules_to_save"] = modules_to_save.empty() ? json() : json(modules_to_save);
    j["use_rslora"] = use_rslora;
    j["use_dora"] = false;
    j["init_lora_weights"] = init_lora_weights == "gaussian" ? json("gaussian") : json(init_lora_weights == "true");
    j["layers_to_transform"] = layers_to_transform.empty() ? json() : json(layers_to_transform);
    j["rank_pattern"] = json::object();
    j["alpha_pattern"] = json::object();
  } else {
    j["num_virtual_tokens"] = num_virtual_tokens;
    j["token_dim"] = token_dim;
    j["num_attention_heads"] = num_attention_heads;
    j["num_layers"] = num_layers;
    j["num_transformer_submodules"] = 1;
    if (peft_type == "PROMPT_TUNING") j["prompt_tuning_init"] = "RANDOM";
    if (peft_type == "PREFIX_TUNING") {
      j["prefix_projection"] = prefix_projection;
      j["encoder_hidden_size"] = encoder_hidden_size;
    }
  }
  for (const auto& [key, value] : extra.items()) j[key] = value;
  return j;
}

double PeftConfig::scaling() const { return use_rslora ? lora_alpha / std::sqrt(double(r)) : lora_alpha / double(r); }

}  // namespace plugformer
