#include "plugformer/generation.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>

#include "plugformer/error.h"
#include "plugformer/log.h"

namespace plugformer {

namespace {

// The GenerationConfig fields, with their JSON names, read and written in one place.
template <class Fn>
void for_each_field(GenerationConfig& c, Fn&& fn) {
  fn("max_length", c.max_length);
  fn("max_new_tokens", c.max_new_tokens);
  fn("min_length", c.min_length);
  fn("do_sample", c.do_sample);
  fn("num_beams", c.num_beams);
  fn("temperature", c.temperature);
  fn("top_k", c.top_k);
  fn("top_p", c.top_p);
  fn("repetition_penalty", c.repetition_penalty);
  fn("use_cache", c.use_cache);
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
  void operator()(const char* n, std::optional<int64_t>& v) {
    if (const json* j = find(n)) {
      if (j->is_null()) v.reset();
      else if (j->is_number_integer()) v = j->get<int64_t>();
      else fail(n, "an integer or null");
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
};

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
  auto self = *this;
  auto dflt = defaults;
  auto to_json_value = [](const auto& v) -> json {
    if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::optional<int64_t>>) return v ? json(*v) : json();
    else return json(v);
  };
  for_each_field(dflt, [&](const char* n, const auto& v) { base[n] = to_json_value(v); });
  for_each_field(self, [&](const char* n, const auto& v) {
    json value = to_json_value(v);
    if (value == base[n]) return;
    if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::vector<int64_t>>)
      if (v.size() == 1) value = v[0];
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
  if (max_new_tokens && *max_new_tokens < 0) throw InvalidInputError("max_new_tokens must be >= 0, got " + std::to_string(*max_new_tokens));
  if (max_length < 0) throw InvalidInputError("max_length must be >= 0, got " + std::to_string(max_length));
  if (num_beams < 1) throw InvalidInputError("num_beams must be >= 1, got " + std::to_string(num_beams));
  if (repetition_penalty <= 0) throw InvalidInputError("repetition_penalty must be > 0");
  if (do_sample && temperature <= 0) throw InvalidInputError("temperature must be > 0 when sampling");
  if (do_sample && (top_p <= 0 || top_p > 1)) throw InvalidInputError("top_p must be in (0, 1]");
  if (top_k < 0) throw InvalidInputError("top_k must be >= 0");
}

namespace {

// repetition_penalty as transformers applies it: divide positive scores, multiply negative ones.
void apply_repetition_penalty(at::Tensor& logits, const at::Tensor& sequences, double penalty) {
  at::Tensor picked = logits.gather(1, sequences);
  picked = at::where(picked < 0, picked * penalty, picked / penalty);
  logits.scatter_(1, sequences, picked);
}

}  // namespace

GenerateOutput generate(PreTrainedModel& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                        const GenerationConfig& config, const TokenCallback& on_token) {
  config.validate();
  if (!model.can_generate()) throw InvalidInputError(model.class_name() + " cannot generate (it has no language-modeling head)");
  if (config.do_sample || config.num_beams > 1)
    throw InvalidInputError("only greedy decoding is available: do_sample=false and num_beams=1");
  if (input_ids.dim() != 2) throw InvalidInputError("input_ids must be [batch, length]");
  if (input_ids.size(1) == 0) throw InvalidInputError("the prompt is empty: generation needs at least one token");
  if (attention_mask.defined() && attention_mask.sizes() != input_ids.sizes())
    throw InvalidInputError("attention_mask shape differs from input_ids shape");
  c10::InferenceMode inference;

  const int64_t batch = input_ids.size(0), prompt_len = input_ids.size(1);
  const int64_t max_new = config.max_new_tokens ? *config.max_new_tokens : config.max_length - prompt_len;
  if (max_new < 0)
    throw InvalidInputError("the prompt has " + std::to_string(prompt_len) + " tokens, more than max_length " +
                            std::to_string(config.max_length) + "; set max_new_tokens");
  const int64_t context = model.config().has("max_position_embeddings")
                              ? model.config().get("max_position_embeddings").get<int64_t>()
                              : INT64_MAX;
  if (prompt_len + max_new > context)
    logger().warn("prompt ({}) + new tokens ({}) exceed the model's max_position_embeddings ({})", prompt_len, max_new,
                  context);

  at::Tensor sequences = input_ids.to(at::kLong);
  at::Tensor mask = attention_mask.defined() ? attention_mask.to(at::kLong) : at::ones_like(sequences);
  std::optional<int64_t> pad = config.pad_token_id;
  if (!pad && !config.eos_token_id.empty()) pad = config.eos_token_id.front();
  at::Tensor eos = at::tensor(config.eos_token_id, at::kLong);
  at::Tensor unfinished = at::ones({batch}, at::kBool);
  auto cache = config.use_cache ? std::make_shared<KVCache>() : nullptr;
  GenerateOutput out;

  for (int64_t step = 0; step < max_new; ++step) {
    // Positions count only real tokens, so left padding does not shift them.
    at::Tensor positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1);
    const int64_t fed = cache && step > 0 ? 1 : sequences.size(1);
    ModelInputs inputs;
    inputs.tensors["input_ids"] = sequences.narrow(1, sequences.size(1) - fed, fed);
    inputs.tensors["attention_mask"] = mask;
    inputs.tensors["position_ids"] = positions.narrow(1, positions.size(1) - fed, fed);
    inputs.past_key_values = cache;
    inputs.use_cache = bool(cache);
    inputs.logits_to_keep = 1;
    ModelOutput result = model.forward(inputs);
    at::Tensor logits = result["logits"].select(1, result["logits"].size(1) - 1).to(at::kFloat).clone();

    if (config.repetition_penalty != 1.0) apply_repetition_penalty(logits, sequences, config.repetition_penalty);
    const int64_t length = sequences.size(1);
    if (eos.numel() && (length < config.min_length)) logits.index_fill_(1, eos, -std::numeric_limits<float>::infinity());
    out.scores.push_back(logits);

    at::Tensor next = logits.argmax(-1);
    if (pad) next = at::where(unfinished, next, at::full_like(next, *pad));
    sequences = at::cat({sequences, next.unsqueeze(1)}, 1);
    mask = at::cat({mask, at::ones({batch, 1}, at::kLong)}, 1);

    bool keep_going = true;
    if (on_token) {
      const auto ids = next.accessor<int64_t, 1>();
      const auto live = unfinished.accessor<bool, 1>();
      for (int64_t b = 0; b < batch; ++b)
        if (live[b] && !on_token(b, ids[b])) keep_going = false;
    }
    if (eos.numel()) unfinished = unfinished.logical_and(at::isin(next, eos).logical_not());
    if (!keep_going || !unfinished.any().item<bool>()) break;
  }
  out.sequences = sequences;
  return out;
}

}  // namespace plugformer
