// Request bodies of the encoder endpoints of text-embeddings-inference (POST /embed, /rerank) and
// llama-server's tokenizer endpoints (POST /tokenize, /detokenize), read into what the server runs,
// and the responses that need no tensors.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "openai_api.h"

namespace plugformer::server {

// /embed: {"inputs": str | [str], "normalize": true, "prompt_name", "truncate": false}.
struct EmbedJob {
  std::vector<std::string> texts;
  bool normalize = true;  // TEI's default
  std::optional<std::string> prompt_name;
  bool truncate = false;
};
EmbedJob parse_embed_request(const json& body);

// /rerank: {"query", "texts": [str], "raw_scores": false, "return_text": false, "truncate": false}.
struct RerankJob {
  std::string query;
  std::vector<std::string> texts;
  bool raw_scores = false, return_text = false, truncate = false;
};
RerankJob parse_rerank_request(const json& body);
// [{"index", "score"(, "text")}] by descending score (ties in input order).
json rerank_response(const RerankJob& job, const std::vector<double>& scores);

// TEI refuses an input longer than the model takes unless the request truncates (413 naming the
// input); `texts` as the model will see them.
void check_input_lengths(const std::vector<std::string>& texts, const Tokenizer& tokenizer, int64_t limit);

// /tokenize: {"content", "add_special": false, "with_pieces": false} -> {"tokens": [id | {"id", "piece"}]}.
struct TokenizeJob {
  std::string content;
  bool add_special = false, with_pieces = false;
};
TokenizeJob parse_tokenize_request(const json& body);
json tokenize_response(const TokenizeJob& job, const Tokenizer& tokenizer);

// /detokenize: {"tokens": [ids]} (each inside the vocabulary) -> the ids.
std::vector<int64_t> parse_detokenize_request(const json& body, const ModelContext& model);

}  // namespace plugformer::server
