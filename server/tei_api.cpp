#include "tei_api.h"

#include <algorithm>
#include <numeric>

namespace plugformer::server {

namespace {

void require_object(const json& body) {
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
}

}  // namespace

EmbedJob parse_embed_request(const json& body) {
  require_object(body);
  EmbedJob job;
  job.texts = text_inputs(body, "inputs");
  job.normalize = bool_field(body, "normalize").value_or(true);
  if (auto p = body.find("prompt_name"); p != body.end() && !p->is_null()) {
    if (!p->is_string()) throw bad_field("prompt_name", "must be a string");
    job.prompt_name = p->get<std::string>();
  }
  job.truncate = bool_field(body, "truncate").value_or(false);
  return job;
}

RerankJob parse_rerank_request(const json& body) {
  require_object(body);
  RerankJob job;
  auto query = body.find("query");
  if (query == body.end() || !query->is_string()) throw bad_field("query", "must be a string");
  job.query = query->get<std::string>();
  job.texts = text_inputs(body, "texts");
  job.raw_scores = bool_field(body, "raw_scores").value_or(false);
  job.return_text = bool_field(body, "return_text").value_or(false);
  job.truncate = bool_field(body, "truncate").value_or(false);
  return job;
}

json rerank_response(const RerankJob& job, const std::vector<double>& scores) {
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  json out = json::array();
  for (size_t index : order) {
    json item = {{"index", index}, {"score", scores[index]}};
    if (job.return_text) item["text"] = job.texts[index];
    out.push_back(std::move(item));
  }
  return out;
}

void check_input_lengths(const std::vector<std::string>& texts, const Tokenizer& tokenizer, int64_t limit) {
  for (size_t i = 0; i < texts.size(); ++i) {
    const size_t n = tokenizer.encode(texts[i]).ids.size();
    if (int64_t(n) > limit)
      throw ApiError(413, "Input validation error: `inputs` must have less than " + std::to_string(limit) +
                              " tokens. Given: " + std::to_string(n) + " (input " + std::to_string(i) +
                              "); set truncate to true to cut it");
  }
}

TokenizeJob parse_tokenize_request(const json& body) {
  auto content = body.is_object() ? body.find("content") : body.end();
  if (!body.is_object() || content == body.end() || !content->is_string()) throw bad_field("content", "must be a string");
  TokenizeJob job;
  job.content = content->get<std::string>();
  job.add_special = bool_field(body, "add_special").value_or(false);
  job.with_pieces = bool_field(body, "with_pieces").value_or(false);
  return job;
}

json tokenize_response(const TokenizeJob& job, const Tokenizer& tokenizer) {
  json tokens = json::array();
  for (int64_t id : tokenizer.encode(job.content, job.add_special).ids)
    tokens.push_back(job.with_pieces ? json{{"id", id}, {"piece", tokenizer.decode({id}, false)}} : json(id));
  return {{"tokens", std::move(tokens)}};
}

std::vector<int64_t> parse_detokenize_request(const json& body, const ModelContext& model) {
  auto tokens = body.is_object() ? body.find("tokens") : body.end();
  if (!body.is_object() || tokens == body.end() || !tokens->is_array() || !(tokens->empty() || is_token_list(*tokens)))
    throw bad_field("tokens", "must be a list of token ids");
  return token_ids(*tokens, "tokens", model);
}

}  // namespace plugformer::server
