// OpenAI's /v1/completions and /v1/chat/completions: requests validated into engine requests, and
// the response / stream-chunk objects built from what the engine produced.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <plugformer/generation.h>
#include <plugformer/tokenizer.h>

#include "api_error.h"
#include "engine.h"

namespace plugformer::server {

using nlohmann::json;

// What requests are checked against and filled from.
struct ModelContext {
  std::string name;                      // the served model name
  std::shared_ptr<Tokenizer> tokenizer;  // null: token-id prompts only, no text
  GenerationConfig defaults;             // eos ids and the rest of generation_config.json
  json sampling_defaults = json::object();  // generation_config.json's own temperature / top_p / top_k / min_p / repetition_penalty
  std::string chat_template;             // --chat-template's text; empty: the tokenizer's
  int64_t max_model_len = 0;
  int64_t vocab_size = 0;  // token ids must be below it
};

// A non-empty list of integers (a prompt or input given as token ids).
bool is_token_list(const json& v);
// The ids of a list of integers, each below model.vocab_size (else a 400 naming `field`).
std::vector<int64_t> token_ids(const json& v, const std::string& field, const ModelContext& model);
// An optional boolean field of a request (nullopt when absent or null; a 400 naming it otherwise).
std::optional<bool> bool_field(const json& body, const std::string& name);

// The served name or nothing: 404 model_not_found otherwise.
void check_model_name(const json& body, const ModelContext& model);

struct CompletionJob {
  bool chat = false, stream = false, include_usage = false, echo = false;
  bool logprobs = false;
  int64_t top_logprobs = 0;
  int64_t n = 1;
  std::vector<std::vector<int64_t>> prompts;  // token ids of each prompt
  GenerationRequest request;                  // everything but the prompt (and the seed of choice i > 0)

  // The engine request of choice `index` (prompt index / n, its seed plus index % n).
  GenerationRequest choice_request(size_t index) const;
  size_t choices() const { return prompts.size() * size_t(n); }
};

CompletionJob parse_completion_request(const json& body, const ModelContext& model);
CompletionJob parse_chat_request(const json& body, const ModelContext& model);

// A list of texts from a string or a non-empty list of strings (`field` names it in errors).
std::vector<std::string> text_inputs(const json& body, const std::string& field);

// /v1/embeddings: input as token ids (one list or a list of lists) or text(s), and the encoding.
struct EmbeddingsJob {
  std::vector<std::vector<int64_t>> ids;  // token-id input (then no texts)
  std::vector<std::string> texts;
  bool base64 = false;  // encoding_format "base64", else "float"
};
EmbeddingsJob parse_embeddings_request(const json& body, const ModelContext& model);

// A served model's generation_config.json (`values`, read from `source`): over model.defaults, and
// the sampling fields requests fall back to (model.sampling_defaults).
void read_generation_config(ModelContext& model, const json& values, const std::string& source);

// One finished choice, accumulated from its events.
struct ChoiceResult {
  std::string text;
  std::vector<int64_t> tokens;
  std::vector<TokenLogprob> logprobs, prompt_logprobs;
  std::string finish_reason;
};

// A response id ("cmpl-..." / "chatcmpl-...") and the Unix time.
std::string new_response_id(bool chat);
int64_t unix_time();

json completion_response(const CompletionJob& job, const ModelContext& model, const std::vector<ChoiceResult>& choices,
                         const std::string& id, int64_t created);
// One SSE chunk for choice `index`: `text` and logprobs added, finish_reason when set; chat's first
// chunk of a choice carries the role.
json completion_chunk(const CompletionJob& job, const ModelContext& model, const std::string& id, int64_t created,
                      size_t index, const std::string& text, const std::vector<TokenLogprob>& logprobs,
                      const std::optional<std::string>& finish_reason, bool first);
json usage_json(const CompletionJob& job, const std::vector<ChoiceResult>& choices);

}  // namespace plugformer::server
