// sentence-transformers' SentenceTransformer and CrossEncoder over the model folders that library
// saves (modules.json pipelines of Transformer, Pooling, Dense and Normalize modules; cross-encoders
// as plain *ForSequenceClassification checkpoints), with its prompts, tokenization and pooling.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "plugformer/auto.h"
#include "plugformer/modeling.h"
#include "plugformer/tokenizer.h"

namespace plugformer {

struct EncodeOptions {
  int64_t batch_size = 32;
  std::optional<std::string> prompt_name;  // a key of the model's prompts
  std::optional<std::string> prompt;       // raw prompt text; wins over prompt_name
  bool normalize_embeddings = false;       // L2-normalise the pipeline's output
  bool normalize_modules = true;           // false: skip the pipeline's Normalize modules
};

class SentenceTransformer {
 public:
  // A local folder or a Hub repo id with modules.json (a folder without one is a plain transformers
  // checkpoint: Transformer then mean pooling, as sentence-transformers builds it).
  static std::shared_ptr<SentenceTransformer> from_pretrained(const std::string& path_or_repo_id,
                                                              const PretrainedOptions& options = {});
  // Embeddings [texts, dim] in float32, rows in input order. InvalidInputError for an empty list
  // or an unknown prompt_name.
  at::Tensor encode(const std::vector<std::string>& texts, const EncodeOptions& options = {}) const;
  // Embeddings of token ids as the tokenizer gives them (special tokens included), cut to
  // max_seq_length; prompts do not apply. InvalidInputError for an empty input or an id outside
  // the vocabulary.
  at::Tensor encode_ids(const std::vector<std::vector<int64_t>>& ids, const EncodeOptions& options = {}) const;
  // Pairwise scores [a rows, b rows] by the model's similarity_fn_name: cosine (default), dot,
  // euclidean or manhattan (the negative distances).
  at::Tensor similarity(const at::Tensor& a, const at::Tensor& b) const;

  const std::map<std::string, std::string>& prompts() const { return prompts_; }
  const std::optional<std::string>& default_prompt_name() const { return default_prompt_name_; }
  const std::string& similarity_fn_name() const { return similarity_fn_name_; }
  int64_t max_seq_length() const { return max_seq_length_; }
  const PreTrainedModel& model() const { return *model_; }

  struct Module;  // Pooling, Dense or Normalize (defined in core)

 private:
  SentenceTransformer() = default;
  int64_t prompt_length(const std::string& prompt) const;
  // The pipeline on tokenized inputs, batched longest first; rows come back in input order.
  at::Tensor embed(const std::vector<Encoding>& encodings, int64_t prompt_tokens, const EncodeOptions& options) const;
  std::vector<std::string> prepared(const std::vector<std::string>& texts, const std::string& prompt) const;

  ModelPtr model_;
  std::shared_ptr<Tokenizer> tokenizer_;
  int64_t max_seq_length_ = 512;
  bool do_lower_case_ = false;
  std::vector<std::shared_ptr<Module>> modules_;  // after the Transformer, in modules.json order
  std::map<std::string, std::string> prompts_;
  std::optional<std::string> default_prompt_name_;
  std::string similarity_fn_name_ = "cosine";
};

struct PredictOptions {
  int64_t batch_size = 32;
  std::optional<std::string> activation;  // "sigmoid" or "identity"; default: the model's
};

class CrossEncoder {
 public:
  static std::shared_ptr<CrossEncoder> from_pretrained(const std::string& path_or_repo_id,
                                                       const PretrainedOptions& options = {});
  // Scores [pairs] for one label, [pairs, labels] otherwise. InvalidInputError for an empty list.
  at::Tensor predict(const std::vector<std::pair<std::string, std::string>>& pairs,
                     const PredictOptions& options = {}) const;
  struct Ranked {
    int64_t corpus_id;
    double score;
    std::string text;
  };
  // The documents by decreasing score against the query (top_k of them when given).
  std::vector<Ranked> rank(const std::string& query, const std::vector<std::string>& documents,
                           std::optional<int64_t> top_k = std::nullopt, const PredictOptions& options = {}) const;
  int64_t max_length() const { return max_length_; }
  // The activation predict applies by default: config.json's sentence_transformers.activation_fn
  // (torch classes only), else sigmoid for one label and identity for several.
  const std::string& default_activation() const { return default_activation_; }

 private:
  CrossEncoder() = default;
  ModelPtr model_;
  std::shared_ptr<Tokenizer> tokenizer_;
  int64_t max_length_ = 512;
  std::string default_activation_ = "sigmoid";
};

}  // namespace plugformer
