// transformers' pipelines (fill_mask.py, text_classification.py, token_classification.py,
// question_answering.py, feature_extraction.py): the same pre- and post-processing over our models.
#include "plugformer/pipelines.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <numeric>

#include "plugformer/auto.h"
#include "plugformer/error.h"
#include "modeling/torch_errors.h"

namespace plugformer {

namespace {

// The model inputs of one encoding. token_type_ids only when a pair sets them: single texts use
// the default (zeros), and models without token types (GPT-2 embeds them with wte) stay correct.
ModelInputs model_inputs(const Encoding& enc) {
  auto row = [](const std::vector<int64_t>& v) { return at::tensor(v, at::kLong).unsqueeze(0); };
  ModelInputs inputs{{"input_ids", row(enc.ids)}, {"attention_mask", row(enc.attention_mask)}};
  if (std::any_of(enc.type_ids.begin(), enc.type_ids.end(), [](int64_t t) { return t != 0; }))
    inputs.tensors["token_type_ids"] = row(enc.type_ids);
  return inputs;
}

// pooled_outputs_only: the caller reads per-sequence outputs only (ModelInputs::pooled_outputs_only).
ModelOutput run_model(PreTrainedModel& model, const Encoding& enc, bool pooled_outputs_only = false) {
  if (enc.ids.empty()) throw InvalidInputError("the text gives no tokens");
  c10::InferenceMode guard;
  try {
    ModelInputs inputs = model_inputs(enc);
    inputs.pooled_outputs_only = pooled_outputs_only;
    return model.forward(inputs);
  } catch (const c10::Error& e) {
    throw_computation_error(e, model.class_name(), model.dtype());
  }
}

std::string label_of(const PretrainedConfig& config, int64_t id) {
  auto it = config.id2label.find(id);
  return it != config.id2label.end() ? it->second : "LABEL_" + std::to_string(id);
}

// softmax as the pipelines compute it (shifted by the maximum), in double.
at::Tensor softmax(const at::Tensor& logits) { return logits.to(at::kDouble).softmax(-1); }

// The code points [start, end) of a UTF-8 string.
std::string code_point_substr(const std::string& text, size_t start, size_t end) {
  size_t cp = 0, begin_byte = text.size(), end_byte = text.size();
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) continue;  // continuation byte
    if (cp == start) begin_byte = i;
    if (cp == end) {
      end_byte = i;
      break;
    }
    ++cp;
  }
  return begin_byte >= end_byte ? "" : text.substr(begin_byte, end_byte - begin_byte);
}

// "B-PER" -> (B, PER); "I-PER" -> (I, PER); a label without a prefix counts as I.
std::pair<char, std::string> bio_tag(const std::string& entity) {
  if (entity.rfind("B-", 0) == 0) return {'B', entity.substr(2)};
  if (entity.rfind("I-", 0) == 0) return {'I', entity.substr(2)};
  return {'I', entity};
}

}  // namespace

std::vector<std::vector<MaskCandidate>> fill_mask(PreTrainedModel& model, const Tokenizer& tokenizer,
                                                  const std::string& text, int64_t top_k) {
  const auto& mask_token = tokenizer.special_tokens().mask_token;
  const auto mask_id = mask_token ? tokenizer.token_to_id(*mask_token) : std::nullopt;
  if (!mask_id) throw InvalidInputError("fill-mask: the tokenizer has no mask token");
  if (top_k < 1) throw InvalidInputError("fill-mask: top_k must be >= 1");
  const Encoding enc = tokenizer.encode(text);
  std::vector<int64_t> masked;
  for (size_t i = 0; i < enc.ids.size(); ++i)
    if (enc.ids[i] == *mask_id) masked.push_back(int64_t(i));
  if (masked.empty()) throw InvalidInputError("fill-mask: no mask_token (" + *mask_token + ") found in the input");
  const at::Tensor logits = run_model(model, enc)["logits"][0];
  const bool single_mask = masked.size() == 1;
  std::vector<std::vector<MaskCandidate>> result;
  for (int64_t position : masked) {
    const at::Tensor probs = softmax(logits[position]);
    auto [values, tokens] = probs.topk(std::min<int64_t>(top_k, probs.size(0)));
    std::vector<MaskCandidate> row;
    for (int64_t k = 0; k < values.size(0); ++k) {
      const int64_t token = tokens[k].item<int64_t>();
      std::vector<int64_t> ids = enc.ids;
      ids[size_t(position)] = token;
      if (const auto pad = tokenizer.pad_token_id()) std::erase(ids, *pad);
      // With several masks the others stay visible (special tokens kept), as transformers does.
      row.push_back({values[k].item<double>(), token, tokenizer.decode({token}), tokenizer.decode(ids, single_mask)});
    }
    result.push_back(std::move(row));
  }
  return result;
}

std::vector<LabelScore> text_classification(PreTrainedModel& model, const Tokenizer& tokenizer,
                                            const std::string& text, std::optional<int64_t> top_k,
                                            const std::string& function_to_apply, const std::string& text_pair) {
  const PretrainedConfig& config = model.config();
  std::string fn = function_to_apply;
  if (fn == "default") {
    const std::string problem = config.problem_type.value_or("");
    fn = problem == "multi_label_classification" || config.num_labels() == 1 ? "sigmoid" : "softmax";
  }
  if (fn != "softmax" && fn != "sigmoid" && fn != "none")
    throw InvalidInputError("text-classification: function_to_apply must be softmax, sigmoid or none, got '" + fn + "'");
  const Encoding enc = text_pair.empty() ? tokenizer.encode(text) : tokenizer.encode_pair(text, text_pair);
  const at::Tensor logits = run_model(model, enc, true)["logits"][0].to(at::kDouble);
  const at::Tensor scores = fn == "softmax" ? softmax(logits) : fn == "sigmoid" ? logits.sigmoid() : logits;
  std::vector<LabelScore> out;
  for (int64_t i = 0; i < scores.size(0); ++i) out.push_back({label_of(config, i), scores[i].item<double>()});
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
  if (top_k) {
    if (*top_k < 1) throw InvalidInputError("text-classification: top_k must be >= 1");
    out.resize(std::min(out.size(), size_t(*top_k)));
  }
  return out;
}

std::vector<Entity> group_entities(const std::vector<Entity>& tokens, const Tokenizer& tokenizer) {
  std::vector<Entity> groups;
  std::vector<const Entity*> current;
  auto close = [&] {
    if (current.empty()) return;
    Entity g;
    g.entity = bio_tag(current.front()->entity).second;
    double sum = 0;
    for (const Entity* e : current) {
      sum += e->score;
      g.ids.insert(g.ids.end(), e->ids.begin(), e->ids.end());
    }
    g.score = sum / double(current.size());
    g.word = tokenizer.decode(g.ids, false);
    g.start = current.front()->start;
    g.end = current.back()->end;
    groups.push_back(std::move(g));
    current.clear();
  };
  for (const Entity& e : tokens) {
    // A token joins the open group when it has the same type and does not begin a new entity.
    if (!current.empty()) {
      const auto [bi, tag] = bio_tag(e.entity);
      if (tag != bio_tag(current.back()->entity).second || bi == 'B') close();
    }
    current.push_back(&e);
  }
  close();
  return groups;
}

std::vector<Entity> token_classification(PreTrainedModel& model, const Tokenizer& tokenizer, const std::string& text,
                                         const std::string& aggregation_strategy,
                                         const std::vector<std::string>& ignore_labels) {
  if (aggregation_strategy != "none" && aggregation_strategy != "simple")
    throw InvalidInputError("token-classification: aggregation_strategy must be none or simple, got '" +
                            aggregation_strategy + "'");
  const Encoding enc = tokenizer.encode(text);
  if (enc.offsets.size() != enc.ids.size())
    throw InvalidInputError("token-classification needs a tokenizer that reports offsets (a fast tokenizer)");
  const at::Tensor scores = softmax(run_model(model, enc)["logits"][0]);
  std::vector<Entity> tokens;
  for (size_t i = 0; i < enc.ids.size(); ++i) {
    if (i < enc.special_tokens_mask.size() && enc.special_tokens_mask[i]) continue;
    const int64_t best = scores[int64_t(i)].argmax().item<int64_t>();
    tokens.push_back({label_of(model.config(), best), scores[int64_t(i)][best].item<double>(),
                      tokenizer.id_to_token(enc.ids[i]).value_or(""), int64_t(enc.offsets[i].first),
                      int64_t(enc.offsets[i].second), int64_t(i), {enc.ids[i]}});
  }
  std::vector<Entity> entities = aggregation_strategy == "simple" ? group_entities(tokens, tokenizer) : tokens;
  std::erase_if(entities, [&](const Entity& e) {
    return std::find(ignore_labels.begin(), ignore_labels.end(), e.entity) != ignore_labels.end();
  });
  return entities;
}

std::vector<Span> decode_spans(const at::Tensor& start, const at::Tensor& end, int64_t top_k, int64_t max_answer_len,
                               const at::Tensor& allowed) {
  if (max_answer_len < 1) throw InvalidInputError("question-answering: max_answer_len must be >= 1");
  if (top_k < 1) throw InvalidInputError("question-answering: top_k must be >= 1");
  const at::Tensor s = start.to(at::kDouble), e = end.to(at::kDouble);
  // Scores of (start, end) pairs with start <= end < start + max_answer_len.
  const at::Tensor candidates = at::outer(s, e).triu().tril(max_answer_len - 1);
  const at::Tensor flat = candidates.flatten();
  // Stable, so that ties go to the first pair as numpy's argmax does.
  const at::Tensor order = std::get<1>(flat.sort(/*stable=*/true, -1, /*descending=*/true))
                               .narrow(0, 0, std::min<int64_t>(top_k, flat.size(0)));
  const int64_t n = s.size(0);
  std::vector<Span> spans;
  for (int64_t k = 0; k < order.size(0); ++k) {
    const int64_t index = order[k].item<int64_t>(), a = index / n, b = index % n;
    // Spans that start or end on a token outside the context are dropped (not replaced).
    if (!allowed[a].item<bool>() || !allowed[b].item<bool>()) continue;
    spans.push_back({a, b, candidates[a][b].item<double>()});
  }
  return spans;
}

std::vector<Answer> question_answering(PreTrainedModel& model, const Tokenizer& tokenizer, const std::string& question,
                                       const std::string& context, int64_t top_k, int64_t max_answer_len,
                                       bool handle_impossible_answer) {
  if (question.empty() || context.empty()) throw InvalidInputError("question-answering needs a question and a context");
  const Encoding enc = tokenizer.encode_pair(question, context);
  if (enc.offsets.size() != enc.ids.size() || enc.sequence_ids.size() != enc.ids.size())
    throw InvalidInputError("question-answering needs a tokenizer that reports offsets (a fast tokenizer)");
  ModelOutput out = run_model(model, enc);
  const int64_t n = int64_t(enc.ids.size());
  // Only context tokens (and the CLS token, for "no answer") may be part of an answer.
  const auto cls = tokenizer.special_tokens().cls_token ? tokenizer.token_to_id(*tokenizer.special_tokens().cls_token)
                                                        : std::nullopt;
  at::Tensor allowed = at::zeros({n}, at::kBool);
  for (int64_t i = 0; i < n; ++i)
    allowed[i] = (enc.sequence_ids[size_t(i)] == 1 || (cls && enc.ids[size_t(i)] == *cls)) &&
                 enc.attention_mask[size_t(i)] != 0;
  auto probabilities = [&](const at::Tensor& logits) {
    return softmax(at::where(allowed, logits[0].to(at::kDouble), at::full({n}, -10000.0, at::kDouble)));
  };
  at::Tensor start = probabilities(out["start_logits"]), end = probabilities(out["end_logits"]);
  const double null_score = (start[0] * end[0]).item<double>();
  start[0] = 0.0;  // the first (CLS) position is never an answer span
  end[0] = 0.0;

  // Spans grow to whole words of the context (align_to_words).
  auto word_bounds = [&](int64_t token) -> std::pair<size_t, size_t> {
    auto bounds = enc.offsets[size_t(token)];
    const auto word = enc.word_ids.size() == enc.ids.size() ? enc.word_ids[size_t(token)] : std::nullopt;
    if (!word) return bounds;
    for (int64_t i = 0; i < n; ++i)
      if (enc.sequence_ids[size_t(i)] == 1 && enc.word_ids[size_t(i)] == word) {
        bounds.first = std::min(bounds.first, enc.offsets[size_t(i)].first);
        bounds.second = std::max(bounds.second, enc.offsets[size_t(i)].second);
      }
    return bounds;
  };
  std::vector<Answer> answers;
  for (const Span& span : decode_spans(start, end, top_k, max_answer_len, allowed)) {
    const size_t begin = word_bounds(span.start).first, finish = word_bounds(span.end).second;
    answers.push_back({span.score, int64_t(begin), int64_t(finish), code_point_substr(context, begin, finish)});
  }
  if (handle_impossible_answer) answers.push_back({null_score, 0, 0, ""});
  std::stable_sort(answers.begin(), answers.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
  if (int64_t(answers.size()) > top_k) answers.resize(size_t(top_k));
  return answers;
}

at::Tensor feature_extraction(PreTrainedModel& model, const Tokenizer& tokenizer, const std::string& text,
                              const std::string& pooling, bool normalize) {
  if (pooling != "none" && pooling != "cls" && pooling != "mean")
    throw InvalidInputError("feature-extraction: pooling must be none, cls or mean, got '" + pooling + "'");
  at::Tensor hidden = run_model(model, tokenizer.encode(text))["last_hidden_state"][0].to(at::kFloat);
  if (pooling == "cls") hidden = hidden[0];
  if (pooling == "mean") hidden = hidden.mean(0);
  if (normalize) hidden = hidden / hidden.norm(2, -1, true).clamp_min(1e-12);
  return hidden;
}

json run_pipeline(const std::string& task, const std::string& model_path, const std::vector<std::string>& inputs,
                  const json& options) {
  static const std::map<std::string, std::pair<std::string, const char*>> kTasks = {
      {"fill-mask", {"fill-mask", tasks::kMaskedLM}},
      {"text-classification", {"text-classification", tasks::kSequenceClassification}},
      {"sentiment-analysis", {"text-classification", tasks::kSequenceClassification}},
      {"token-classification", {"token-classification", tasks::kTokenClassification}},
      {"ner", {"token-classification", tasks::kTokenClassification}},
      {"question-answering", {"question-answering", tasks::kQuestionAnswering}},
      {"feature-extraction", {"feature-extraction", tasks::kAutoModel}}};
  auto it = kTasks.find(task);
  if (it == kTasks.end())
    throw InvalidInputError("unknown pipeline task '" + task + "' (known: fill-mask, text-classification, "
                            "sentiment-analysis, token-classification, ner, question-answering, feature-extraction)");
  const std::string& kind = it->second.first;
  if (inputs.empty()) throw InvalidInputError(task + ": no input text");
  if (kind == "question-answering" && inputs.size() != 2)
    throw InvalidInputError("question-answering takes two texts: the question, then the context");
  auto model = auto_model_from_pretrained(it->second.second, model_path, {});
  auto tokenizer = AutoTokenizer::from_pretrained(model_path);

  if (kind == "question-answering") {
    const int64_t top_k = options.value("top_k", int64_t(1));
    json answers = json::array();
    for (const Answer& a : question_answering(*model, *tokenizer, inputs[0], inputs[1], top_k,
                                              options.value("max_answer_len", int64_t(15)),
                                              options.value("handle_impossible_answer", false)))
      answers.push_back({{"score", a.score}, {"start", a.start}, {"end", a.end}, {"answer", a.answer}});
    return top_k == 1 && answers.size() == 1 ? answers[0] : answers;
  }
  json results = json::array();
  for (const std::string& text : inputs) {
    json r = json::array();
    if (kind == "fill-mask") {
      const auto masks = fill_mask(*model, *tokenizer, text, options.value("top_k", int64_t(5)));
      for (const auto& candidates : masks) {
        json row = json::array();
        for (const auto& c : candidates)
          row.push_back({{"score", c.score}, {"token", c.token}, {"token_str", c.token_str}, {"sequence", c.sequence}});
        r.push_back(row);
      }
      if (masks.size() == 1) r = r[0];
    } else if (kind == "text-classification") {
      std::optional<int64_t> top_k = 1;
      if (options.contains("top_k")) top_k = options["top_k"].is_null() ? std::nullopt : std::optional(options["top_k"].get<int64_t>());
      for (const auto& l : text_classification(*model, *tokenizer, text, top_k, options.value("function_to_apply", "default")))
        r.push_back({{"label", l.label}, {"score", l.score}});
    } else if (kind == "token-classification") {
      const std::string strategy = options.value("aggregation_strategy", "none");
      for (const auto& e : token_classification(*model, *tokenizer, text, strategy)) {
        json item = {{strategy == "none" ? "entity" : "entity_group", e.entity}, {"score", e.score}};
        if (e.index) item["index"] = *e.index;
        item["word"] = e.word;
        item["start"] = e.start;
        item["end"] = e.end;
        r.push_back(item);
      }
    } else {
      const at::Tensor features = feature_extraction(*model, *tokenizer, text, options.value("pooling", "none"),
                                                     options.value("normalize", false))
                                      .contiguous();
      const float* data = features.data_ptr<float>();
      if (features.dim() == 1) {
        r = std::vector<float>(data, data + features.numel());
      } else {
        json rows = json::array();
        for (int64_t t = 0; t < features.size(0); ++t)
          rows.push_back(std::vector<float>(data + t * features.size(1), data + (t + 1) * features.size(1)));
        r = json::array({rows});  // [1, tokens, hidden], as the Python pipeline returns
      }
    }
    results.push_back(r);
  }
  return inputs.size() == 1 ? results[0] : results;
}

}  // namespace plugformer
