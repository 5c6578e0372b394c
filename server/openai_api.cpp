#include "openai_api.h"

#include <algorithm>
#include <chrono>
#include <random>

#include <plugformer/chat_template.h>
#include <plugformer/json_text.h>

namespace plugformer::server {

std::string ApiError::type() const {
  if (status == 429) return "requests";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

json ApiError::to_json() const {
  return {{"error",
           {{"message", what()}, {"type", type()}, {"param", param.empty() ? json() : json(param)},
            {"code", code.empty() ? json() : json(code)}}}};
}

namespace {

// Typed reads of optional request fields: a wrong type is a 400 naming the field.
std::optional<double> number_field(const json& body, const std::string& name, double low, double high) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) throw bad_field(name, "must be a number");
  const double v = it->get<double>();
  if (!(v >= low && v <= high))
    throw bad_field(name, "must be between " + json(low).dump() + " and " + json(high).dump() + ", got " + it->dump());
  return v;
}

std::optional<int64_t> integer_field(const json& body, const std::string& name, int64_t low, int64_t high) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer()) throw bad_field(name, "must be an integer");
  // Integers beyond int64 parse as unsigned; either way they are out of range.
  const bool in_range = it->is_number_unsigned()
                            ? it->get<uint64_t>() <= uint64_t(high) && (low <= 0 || it->get<uint64_t>() >= uint64_t(low))
                            : it->get<int64_t>() >= low && it->get<int64_t>() <= high;
  if (!in_range)
    throw bad_field(name, "must be between " + std::to_string(low) + " and " + std::to_string(high) + ", got " + it->dump());
  return it->get<int64_t>();
}


std::vector<int64_t> encode_text(const ModelContext& model, const std::string& text, const std::string& field) {
  if (!model.tokenizer) throw bad_field(field, "must be token ids: this model has no tokenizer");
  return model.tokenizer->encode(text).ids;
}

// The sampling and limit fields both endpoints share.
void read_sampling(const json& body, const ModelContext& model, CompletionJob& job, std::optional<int64_t> max_tokens,
                   size_t longest_prompt) {
  GenerationRequest& r = job.request;
  r.config = model.defaults;
  GenerationConfig& c = r.config;
  auto pick = [&](const char* name, double low, double high, double fallback) {
    if (auto v = number_field(body, name, low, high)) return *v;
    const auto& d = model.sampling_defaults;
    return d.contains(name) && d[name].is_number() ? d[name].get<double>() : fallback;
  };
  const double temperature = pick("temperature", 0, 2, 1.0);
  c.do_sample = temperature > 1e-5;  // vLLM's threshold for greedy
  c.temperature = c.do_sample ? temperature : 1.0;
  c.top_p = pick("top_p", 1e-9, 1, 1.0);
  // vLLM extension; -1 or 0: off. generation_config.json's top_k has no upper bound (transformers
  // takes any), so it is capped where requests are: beyond the vocabulary both keep every token.
  const double top_k = std::min(pick("top_k", -1, 1e9, 0), 1e9);
  c.top_k = c.do_sample && top_k > 0 ? int64_t(top_k) : 0;
  if (const double min_p = pick("min_p", 0, 1, 0); min_p > 0) c.min_p = min_p;
  c.repetition_penalty = pick("repetition_penalty", 1e-9, 1e9, 1.0);
  c.typical_p = 1.0;
  c.no_repeat_ngram_size = 0;
  c.num_beams = 1, c.num_return_sequences = 1;
  r.presence_penalty = number_field(body, "presence_penalty", -2, 2).value_or(0);
  r.frequency_penalty = number_field(body, "frequency_penalty", -2, 2).value_or(0);
  if (auto seed = integer_field(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()))
    c.seed = uint64_t(*seed);
  else
    c.seed.reset();
  job.n = integer_field(body, "n", 1, 128).value_or(1);
  if (auto best_of = integer_field(body, "best_of", 1, 128); best_of && *best_of != job.n)
    throw bad_field("best_of", "is not supported (only best_of equal to n)");
  r.ignore_eos = bool_field(body, "ignore_eos").value_or(false);
  r.skip_special_tokens = bool_field(body, "skip_special_tokens").value_or(true);
  if (auto min_tokens = integer_field(body, "min_tokens", 0, std::numeric_limits<int32_t>::max())) c.min_new_tokens = *min_tokens;

  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) r.stop = {it->get<std::string>()};
    else if (it->is_array()) {
      for (const auto& s : *it) {
        if (!s.is_string()) throw bad_field("stop", "must be a string or a list of strings");
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      throw bad_field("stop", "must be a string or a list of strings");
    }
    r.stop.erase(std::remove(r.stop.begin(), r.stop.end(), std::string()), r.stop.end());
    if (!r.stop.empty() && !model.tokenizer) throw bad_field("stop", "needs a tokenizer, which this model lacks");
  }

  if (auto so = body.find("stream_options"); so != body.end() && !so->is_null()) {
    if (!so->is_object()) throw bad_field("stream_options", "must be an object");
    job.include_usage = bool_field(*so, "include_usage").value_or(false);
  }
  job.stream = bool_field(body, "stream").value_or(false);

  // The context: prompt + new tokens must fit, as vLLM checks it.
  const int64_t room = model.max_model_len - int64_t(longest_prompt);
  if (room <= 0)
    throw ApiError(400,
                   "This model's maximum context length is " + std::to_string(model.max_model_len) +
                       " tokens. However, your prompt has " + std::to_string(longest_prompt) +
                       " tokens; please shorten it.",
                   job.chat ? "messages" : "prompt", "context_length_exceeded");
  if (max_tokens && *max_tokens > room)
    throw ApiError(400,
                   "This model's maximum context length is " + std::to_string(model.max_model_len) +
                       " tokens. However, you requested " + std::to_string(*max_tokens + int64_t(longest_prompt)) +
                       " tokens (" + std::to_string(longest_prompt) + " in the prompt, " + std::to_string(*max_tokens) +
                       " in the completion). Please reduce the prompt or max_tokens.",
                   "max_tokens", "context_length_exceeded");
  c.max_new_tokens = max_tokens.value_or(room);
}

json bytes_of(const std::string& s) {
  json out = json::array();
  for (unsigned char ch : s) out.push_back(int(ch));
  return out;
}

// Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
json chat_logprobs(const std::vector<TokenLogprob>& logprobs) {
  json content = json::array();
  for (const auto& lp : logprobs) {
    json top = json::array();
    for (const auto& alt : lp.top) top.push_back({{"token", alt.text}, {"logprob", alt.logprob}, {"bytes", bytes_of(alt.text)}});
    content.push_back({{"token", lp.text}, {"logprob", lp.logprob}, {"bytes", bytes_of(lp.text)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

// Completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}; the echoed prompt's first token has none.
json completion_logprobs(const ModelContext& model, const std::vector<TokenLogprob>& prompt,
                         std::optional<int64_t> first_prompt_token, const std::vector<TokenLogprob>& logprobs,
                         size_t offset) {
  json tokens = json::array(), values = json::array(), tops = json::array(), offsets = json::array();
  auto add = [&](const std::string& text, const TokenLogprob* lp) {
    tokens.push_back(text);
    offsets.push_back(offset);
    offset += text.size();
    values.push_back(lp ? json(lp->logprob) : json());
    if (!lp) return tops.push_back(json());
    json top = json::object();
    for (const auto& alt : lp->top) top[alt.text] = alt.logprob;
    tops.push_back(top);
  };
  if (first_prompt_token) add(model.tokenizer ? model.tokenizer->decode({*first_prompt_token}, false) : "", nullptr);
  for (const auto& lp : prompt) add(lp.text, &lp);
  for (const auto& lp : logprobs) add(lp.text, &lp);
  return {{"tokens", tokens}, {"token_logprobs", values}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

std::string prompt_text(const ModelContext& model, const std::vector<int64_t>& prompt) {
  return model.tokenizer ? model.tokenizer->decode(prompt, true) : std::string();
}

}  // namespace

std::vector<int64_t> token_ids(const json& v, const std::string& field, const ModelContext& model) {
  std::vector<int64_t> ids;
  const int64_t vocab = model.vocab_size;
  for (const auto& x : v) {
    const int64_t id = x.get<int64_t>();
    if (id < 0 || (vocab > 0 && id >= vocab))
      throw bad_field(field, "holds token id " + x.dump() + ", outside the vocabulary [0, " +
                                 std::to_string(vocab) + ")");
    ids.push_back(id);
  }
  return ids;
}

bool is_token_list(const json& v) {
  return v.is_array() && !v.empty() && std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number_integer(); });
}

std::optional<bool> bool_field(const json& body, const std::string& name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) throw bad_field(name, "must be a boolean");
  return it->get<bool>();
}

void check_model_name(const json& body, const ModelContext& model) {
  auto it = body.find("model");
  if (it == body.end() || it->is_null()) return;
  if (!it->is_string()) throw bad_field("model", "must be a string");
  if (it->get<std::string>() != model.name)
    throw ApiError(404, "The model `" + it->get<std::string>() + "` does not exist (this server serves `" + model.name + "`).",
                   "model", "model_not_found");
}

GenerationRequest CompletionJob::choice_request(size_t index) const {
  GenerationRequest r = request;
  r.prompt = prompts.at(index / size_t(n));
  if (r.config.seed) r.config.seed = *r.config.seed + index % size_t(n);
  return r;
}

CompletionJob parse_completion_request(const json& body, const ModelContext& model) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  check_model_name(body, model);
  CompletionJob job;
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) throw bad_field("prompt", "is required");
  const json& prompt = *it;
  if (prompt.is_string()) {
    job.prompts.push_back(encode_text(model, prompt.get<std::string>(), "prompt"));
  } else if (is_token_list(prompt)) {
    job.prompts.push_back(token_ids(prompt, "prompt", model));
  } else if (prompt.is_array() && !prompt.empty()) {
    for (const auto& p : prompt) {
      if (p.is_string()) job.prompts.push_back(encode_text(model, p.get<std::string>(), "prompt"));
      else if (is_token_list(p)) job.prompts.push_back(token_ids(p, "prompt", model));
      else throw bad_field("prompt", "must be a string, a list of strings, a list of token ids or a list of such lists");
    }
  } else {
    throw bad_field("prompt", "must be a non-empty string, list of strings, list of token ids or list of such lists");
  }
  size_t longest = 0;
  for (const auto& p : job.prompts) {
    if (p.empty()) throw bad_field("prompt", "is empty: at least one token is needed");
    longest = std::max(longest, p.size());
  }
  // Completions default to 16 new tokens, as OpenAI's legacy endpoint does.
  const auto max_tokens = integer_field(body, "max_tokens", 1, std::numeric_limits<int32_t>::max()).value_or(16);
  job.echo = bool_field(body, "echo").value_or(false);
  if (auto lp = integer_field(body, "logprobs", 0, 20)) {
    job.logprobs = true;
    job.top_logprobs = *lp;
    job.request.logprobs = *lp;
    job.request.prompt_logprobs = job.echo;
  }
  if (auto suffix = body.find("suffix"); suffix != body.end() && !suffix->is_null())
    throw bad_field("suffix", "is not supported");
  read_sampling(body, model, job, max_tokens, longest);
  return job;
}

CompletionJob parse_chat_request(const json& body, const ModelContext& model) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  check_model_name(body, model);
  CompletionJob job;
  job.chat = true;
  if (!model.tokenizer) throw ApiError(400, "chat completions need a tokenizer, which this model lacks");
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty()) throw bad_field("messages", "must be a non-empty list");
  nlohmann::ordered_json conversation = nlohmann::ordered_json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      throw bad_field(where, "must be an object with a string 'role'");
    nlohmann::ordered_json message = parse_json_text(m.dump());
    // Text parts are joined by newlines into one string, as vLLM gives text-only models their content.
    if (auto content = m.find("content"); content != m.end() && content->is_array()) {
      std::string text;
      for (size_t k = 0; k < content->size(); ++k) {
        const json& part = (*content)[k];
        // value() with a json default: a "type" that is no string compares unequal instead of throwing.
        if (!part.is_object() || part.value("type", json()) != "text" || !part.contains("text") || !part["text"].is_string())
          throw bad_field(where + ".content[" + std::to_string(k) + "]", "must be a text part {\"type\": \"text\", \"text\": ...}");
        text += (k ? "\n" : "") + part["text"].get<std::string>();
      }
      message["content"] = text;
    } else if (content != m.end() && !content->is_string() && !content->is_null()) {
      throw bad_field(where + ".content", "must be a string, a list of text parts or null");
    }
    conversation.push_back(std::move(message));
  }
  ChatTemplateOptions options;
  options.add_generation_prompt = bool_field(body, "add_generation_prompt").value_or(true);
  options.continue_final_message = bool_field(body, "continue_final_message").value_or(false);
  if (options.continue_final_message && options.add_generation_prompt && body.contains("add_generation_prompt"))
    throw bad_field("continue_final_message", "cannot be combined with add_generation_prompt");
  if (options.continue_final_message) options.add_generation_prompt = false;
  if (auto tools = body.find("tools"); tools != body.end() && !tools->is_null()) {
    if (!tools->is_array()) throw bad_field("tools", "must be a list");
    if (body.value("tool_choice", json("auto")) != json("none")) options.tools = parse_json_text(tools->dump());
  }
  if (auto kwargs = body.find("chat_template_kwargs"); kwargs != body.end() && !kwargs->is_null()) {
    if (!kwargs->is_object()) throw bad_field("chat_template_kwargs", "must be an object");
    for (const auto& [k, v] : kwargs->items()) options.variables[k] = parse_json_text(v.dump());
  }
  if (model.chat_template.empty() && model.tokenizer->chat_templates.empty())
    throw ApiError(400, "this model has no chat template; start the server with --chat-template FILE", "messages");
  std::string rendered;
  try {
    rendered = model.tokenizer->apply_chat_template(conversation, options, model.chat_template);
  } catch (const Error& e) {  // the template's own errors (raise_exception) and a missing default
    throw ApiError(400, std::string("the chat template failed on these messages: ") + e.what(), "messages");
  }
  job.prompts.push_back(model.tokenizer->encode(rendered, false).ids);
  if (job.prompts.back().empty()) throw bad_field("messages", "render to an empty prompt");
  auto max_tokens = integer_field(body, "max_completion_tokens", 1, std::numeric_limits<int32_t>::max());
  if (!max_tokens) max_tokens = integer_field(body, "max_tokens", 1, std::numeric_limits<int32_t>::max());
  if (auto lp = bool_field(body, "logprobs"); lp && *lp) {
    job.logprobs = true;
    job.top_logprobs = integer_field(body, "top_logprobs", 0, 20).value_or(0);
    job.request.logprobs = job.top_logprobs;
  } else if (integer_field(body, "top_logprobs", 0, 20).value_or(0) > 0) {
    throw bad_field("top_logprobs", "needs logprobs set to true");
  }
  read_sampling(body, model, job, max_tokens, job.prompts.back().size());
  return job;
}

std::vector<std::string> text_inputs(const json& body, const std::string& field) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) throw bad_field(field, "is required");
  std::vector<std::string> texts;
  if (it->is_string()) texts.push_back(it->get<std::string>());
  else if (it->is_array() && !it->empty() && std::all_of(it->begin(), it->end(), [](const json& v) { return v.is_string(); }))
    for (const auto& v : *it) texts.push_back(v.get<std::string>());
  else
    throw bad_field(field, "must be a string or a non-empty list of strings");
  return texts;
}

EmbeddingsJob parse_embeddings_request(const json& body, const ModelContext& model) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
  check_model_name(body, model);
  EmbeddingsJob job;
  // Token ids: one list or a list of lists; otherwise text.
  if (auto input = body.find("input"); input != body.end()) {
    if (is_token_list(*input)) job.ids.push_back(token_ids(*input, "input", model));
    else if (input->is_array() && !input->empty() && std::all_of(input->begin(), input->end(), is_token_list))
      for (const auto& row : *input) job.ids.push_back(token_ids(row, "input", model));
  }
  if (job.ids.empty()) job.texts = text_inputs(body, "input");
  const std::string format = body.value("encoding_format", json("float")).is_string()
                                 ? body.value("encoding_format", std::string("float")) : std::string();
  if (format != "float" && format != "base64") throw bad_field("encoding_format", "must be \"float\" or \"base64\"");
  job.base64 = format == "base64";
  if (auto d = body.find("dimensions"); d != body.end() && !d->is_null())
    throw bad_field("dimensions", "is not supported: the model's embeddings have a fixed size");
  return job;
}

void read_generation_config(ModelContext& model, const json& values, const std::string& source) {
  model.defaults.update_from_json(values, source);
  for (const char* key : {"temperature", "top_p", "top_k", "min_p", "repetition_penalty"})
    if (values.contains(key)) model.sampling_defaults[key] = values[key];
}

std::string new_response_id(bool chat) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* digits = "0123456789abcdef";
  std::string id = chat ? "chatcmpl-" : "cmpl-";
  for (int i = 0; i < 24; ++i) id += digits[rng() % 16];
  return id;
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

json usage_json(const CompletionJob& job, const std::vector<ChoiceResult>& choices) {
  int64_t prompt = 0, completion = 0;
  for (const auto& p : job.prompts) prompt += int64_t(p.size());
  for (const auto& c : choices) completion += int64_t(c.tokens.size());
  return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

json completion_response(const CompletionJob& job, const ModelContext& model, const std::vector<ChoiceResult>& results,
                         const std::string& id, int64_t created) {
  json choices = json::array();
  for (size_t i = 0; i < results.size(); ++i) {
    const ChoiceResult& r = results[i];
    json choice = {{"index", i}};
    if (job.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", r.text}, {"refusal", nullptr}, {"tool_calls", json::array()}};
      choice["logprobs"] = job.logprobs ? chat_logprobs(r.logprobs) : json();
    } else {
      const std::vector<int64_t>& prompt = job.prompts[i / size_t(job.n)];
      choice["text"] = job.echo ? prompt_text(model, prompt) + r.text : r.text;
      choice["logprobs"] = job.logprobs ? completion_logprobs(model, job.echo ? r.prompt_logprobs : std::vector<TokenLogprob>{},
                                                              job.echo ? std::optional<int64_t>(prompt.front()) : std::nullopt,
                                                              r.logprobs, 0)
                                        : json();
    }
    choice["finish_reason"] = r.finish_reason;
    choices.push_back(std::move(choice));
  }
  return {{"id", id},
          {"object", job.chat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model.name},
          {"choices", choices},
          {"usage", usage_json(job, results)}};
}

json completion_chunk(const CompletionJob& job, const ModelContext& model, const std::string& id, int64_t created,
                      size_t index, const std::string& text, const std::vector<TokenLogprob>& logprobs,
                      const std::optional<std::string>& finish_reason, bool first) {
  json choice = {{"index", index}};
  if (job.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (first || !text.empty()) delta["content"] = text;
    choice["delta"] = delta;
    choice["logprobs"] = job.logprobs && !logprobs.empty() ? chat_logprobs(logprobs) : json();
  } else {
    choice["text"] = text;
    choice["logprobs"] = job.logprobs && !logprobs.empty() ? completion_logprobs(model, {}, std::nullopt, logprobs, 0) : json();
  }
  choice["finish_reason"] = finish_reason ? json(*finish_reason) : json();
  json chunk = {{"id", id},
                {"object", job.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model.name},
                {"choices", json::array({choice})}};
  if (job.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

}  // namespace plugformer::server
