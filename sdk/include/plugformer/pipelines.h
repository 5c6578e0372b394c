// transformers' pipelines for encoder models: fill-mask, text-classification,
// token-classification (NER, with aggregation "none" or "simple"), question-answering and
// feature-extraction. Each takes a loaded model and its tokenizer and reproduces the pipeline's
// pre- and post-processing (softmax / sigmoid choice, entity grouping, span decoding).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "plugformer/config.h"
#include "plugformer/modeling.h"
#include "plugformer/tokenizer.h"

namespace plugformer {

// fill-mask: for each mask token of the text, the top_k candidates (best first).
struct MaskCandidate {
  double score;           // softmax over the vocabulary at the mask position
  int64_t token;
  std::string token_str;  // the token decoded on its own
  std::string sequence;   // the text with this token in place of the mask (special tokens skipped)
};
std::vector<std::vector<MaskCandidate>> fill_mask(PreTrainedModel& model, const Tokenizer& tokenizer,
                                                  const std::string& text, int64_t top_k = 5);

// text-classification: labels with scores, best first (top_k = nullopt: all labels). The score
// function is transformers' default: sigmoid for one label or multi-label problem_type, softmax
// otherwise; or "softmax" / "sigmoid" / "none" explicitly.
struct LabelScore {
  std::string label;
  double score;
};
std::vector<LabelScore> text_classification(PreTrainedModel& model, const Tokenizer& tokenizer,
                                            const std::string& text, std::optional<int64_t> top_k = 1,
                                            const std::string& function_to_apply = "default",
                                            const std::string& text_pair = "");

// token-classification: one entity per token ("none"), or adjacent tokens of the same entity type
// grouped ("simple": B-/I- prefixes, mean score, the words joined as the tokenizer decodes them).
// Labels in ignore_labels ("O") are dropped; special tokens never appear.
struct Entity {
  std::string entity;  // the label ("none") or the group's type without B-/I- ("simple")
  double score;
  std::string word;
  int64_t start, end;  // [start, end) in code points of the text
  std::optional<int64_t> index;  // token position ("none" only)
  std::vector<int64_t> ids;      // the token ids of the entity
};
std::vector<Entity> token_classification(PreTrainedModel& model, const Tokenizer& tokenizer, const std::string& text,
                                         const std::string& aggregation_strategy = "none",
                                         const std::vector<std::string>& ignore_labels = {"O"});
// The "simple" grouping of per-token entities (transformers' group_entities).
std::vector<Entity> group_entities(const std::vector<Entity>& tokens, const Tokenizer& tokenizer);

// question-answering: the best spans of the context (top_k, at most max_answer_len tokens).
struct Answer {
  double score;
  int64_t start, end;  // [start, end) in code points of the context
  std::string answer;
};
std::vector<Answer> question_answering(PreTrainedModel& model, const Tokenizer& tokenizer, const std::string& question,
                                       const std::string& context, int64_t top_k = 1, int64_t max_answer_len = 15,
                                       bool handle_impossible_answer = false);
// transformers' decode_spans: start / end probabilities [seq], `allowed` [seq] (1 where a span may
// start or end) -> (start, end, score) of the top_k spans with start <= end < start + max_answer_len.
struct Span {
  int64_t start, end;
  double score;
};
std::vector<Span> decode_spans(const at::Tensor& start, const at::Tensor& end, int64_t top_k, int64_t max_answer_len,
                               const at::Tensor& allowed);

// feature-extraction: the last hidden state [tokens, hidden] ("none"), or one vector: the first
// token ("cls") or the mean over the tokens ("mean"); `normalize` scales it to unit L2 norm.
at::Tensor feature_extraction(PreTrainedModel& model, const Tokenizer& tokenizer, const std::string& text,
                              const std::string& pooling = "none", bool normalize = false);

// Runs a task by its transformers name (fill-mask, text-classification / sentiment-analysis,
// token-classification / ner, question-answering, feature-extraction) on a model directory or Hub
// id and returns what the Python pipeline returns, as JSON. `inputs` are the texts (for
// question-answering: question, then context). Options: top_k, function_to_apply,
// aggregation_strategy, max_answer_len, handle_impossible_answer, pooling, normalize.
json run_pipeline(const std::string& task, const std::string& model, const std::vector<std::string>& inputs,
                  const json& options = json::object());

}  // namespace plugformer
