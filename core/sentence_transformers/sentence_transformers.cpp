// SentenceTransformer and CrossEncoder with sentence-transformers' (v5) semantics: module pipelines
// from modules.json, prompts, strip / lower-case / truncate to max_seq_length, pooling modes, Dense,
// Normalize; cross-encoders' pair truncation and default activation.
#include "plugformer/sentence_transformers.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "plugformer/error.h"
#include "plugformer/safetensors.h"
#include "tokenizers/unicode.h"

namespace plugformer {

namespace {

using tok::is_whitespace;
using tok::to_lowercase;
using tok::utf8_append;
using tok::utf8_next;

// Python's str.isspace: Unicode White_Space plus the ASCII separators U+001C..U+001F.
bool python_space(char32_t c) { return is_whitespace(c) || (c >= 0x1c && c <= 0x1f); }

// Python's str.strip().
std::string python_strip(const std::string& s) {
  std::vector<std::pair<size_t, char32_t>> chars;
  for (size_t i = 0; i < s.size();) {
    const size_t at = i;
    chars.emplace_back(at, utf8_next(s, i));
  }
  size_t first = 0, last = chars.size();
  while (first < last && python_space(chars[first].second)) ++first;
  while (last > first && python_space(chars[last - 1].second)) --last;
  if (first == last) return "";
  const size_t end = last < chars.size() ? chars[last].first : s.size();
  return s.substr(chars[first].first, end - chars[first].first);
}

// Python's str.lower() as a per-character full lowercase mapping (the context-dependent final
// sigma is not applied).
std::string python_lower(const std::string& s) {
  std::string out;
  std::vector<char32_t> mapped;
  for (size_t i = 0; i < s.size();) {
    mapped.clear();
    to_lowercase(utf8_next(s, i), mapped);
    for (char32_t c : mapped) utf8_append(out, c);
  }
  return out;
}

// A JSON file of the model folder, with errors naming it.
json read_module_json(const std::string& path_or_repo_id, const std::string& file, const PretrainedOptions& options,
                      bool optional = false) {
  auto path = resolve_file(path_or_repo_id, file, options, optional);
  if (!path) return json();
  return read_json_file(*path);
}

// Token ids padded into [batch, longest] tensors (right padding, mask 0 on padding).
struct Batch {
  at::Tensor input_ids, attention_mask, token_type_ids;
};

// The encodings at order[start, end).
Batch pad(const std::vector<Encoding>& encodings, const std::vector<size_t>& order, size_t start, size_t end,
          int64_t pad_id) {
  size_t longest = 0;
  for (size_t i = start; i < end; ++i) longest = std::max(longest, encodings[order[i]].ids.size());
  const int64_t rows = int64_t(end - start), cols = int64_t(longest);
  Batch b{at::full({rows, cols}, pad_id, at::kLong), at::zeros({rows, cols}, at::kLong), at::zeros({rows, cols}, at::kLong)};
  for (int64_t r = 0; r < rows; ++r) {
    const Encoding& e = encodings[order[start + size_t(r)]];
    const int64_t n = int64_t(e.ids.size());
    if (n == 0) continue;
    b.input_ids[r].narrow(0, 0, n).copy_(at::tensor(e.ids, at::kLong));
    b.attention_mask[r].narrow(0, 0, n).fill_(1);
    if (e.type_ids.size() == e.ids.size()) b.token_type_ids[r].narrow(0, 0, n).copy_(at::tensor(e.type_ids, at::kLong));
  }
  return b;
}

// The model's inputs for a batch: token type ids only where the tokenizer made some (BERT pairs);
// a model without token types (RoBERTa) gets none.
ModelInputs model_inputs(const Batch& b, const PreTrainedModel& model) {
  ModelInputs inputs{{"input_ids", b.input_ids}, {"attention_mask", b.attention_mask}};
  const json types = model.config().get("type_vocab_size");
  if (types.is_number_integer() && types.get<int64_t>() > 1) inputs.tensors["token_type_ids"] = b.token_type_ids;
  return inputs;
}

int64_t pad_id_of(const Tokenizer& tokenizer) { return tokenizer.pad_token_id().value_or(0); }

// Encodings in order of decreasing token count (stable).
std::vector<size_t> longest_first(const std::vector<Encoding>& encodings) {
  std::vector<size_t> order(encodings.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return encodings[a].ids.size() > encodings[b].ids.size(); });
  return order;
}

// torch activation classes by the dotted path sentence-transformers writes (util.fullname).
std::string activation_name(const std::string& path, const std::string& where) {
  static const std::map<std::string, std::string> names = {
      {"Tanh", "tanh"}, {"Identity", "identity"}, {"Sigmoid", "sigmoid"}, {"ReLU", "relu"},
      {"GELU", "gelu"}, {"SiLU", "silu"},         {"Softmax", "softmax"}};
  const std::string cls = path.substr(path.rfind('.') + 1);
  if (!path.starts_with("torch.") || !names.count(cls))
    throw ConfigError(where + " names activation '" + path +
                      "' (expected a torch.nn activation: Tanh, Identity, Sigmoid, ReLU, GELU, SiLU, Softmax)");
  return names.at(cls);
}

at::Tensor activate(const std::string& name, const at::Tensor& x) {
  if (name == "tanh") return at::tanh(x);
  if (name == "sigmoid") return at::sigmoid(x);
  if (name == "relu") return at::relu(x);
  if (name == "gelu") return at::gelu(x);
  if (name == "silu") return at::silu(x);
  if (name == "softmax") return at::softmax(x, -1);
  return x;
}

}  // namespace

struct SentenceTransformer::Module {
  virtual ~Module() = default;
  // features: sentence embedding [batch, dim]; token embeddings and mask for pooling.
  virtual at::Tensor forward(const at::Tensor& embedding, const at::Tensor& tokens, const at::Tensor& mask,
                             int64_t prompt_length) const = 0;
  virtual bool is_normalize() const { return false; }
};

namespace {

class Pooling : public SentenceTransformer::Module {
 public:
  Pooling(const json& c, const std::string& file) {
    auto flag = [&](const char* key) {
      if (!c.contains(key) || c[key].is_null()) return false;
      if (!c[key].is_boolean()) throw ConfigError(file + ": field '" + key + "' must be true or false");
      return c[key].get<bool>();
    };
    // The order in which Pooling.forward concatenates the modes.
    for (const char* mode : {"pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_tokens",
                             "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                             "pooling_mode_lasttoken"})
      if (flag(mode)) modes_.push_back(mode);
    if (modes_.empty())
      throw ConfigError(file + ": no pooling mode is set (one of pooling_mode_cls_token, pooling_mode_mean_tokens, "
                               "pooling_mode_max_tokens, pooling_mode_mean_sqrt_len_tokens, "
                               "pooling_mode_weightedmean_tokens, pooling_mode_lasttoken must be true)");
    include_prompt_ = !c.contains("include_prompt") || c["include_prompt"].is_null() || flag("include_prompt");
  }

  at::Tensor forward(const at::Tensor&, const at::Tensor& tokens, const at::Tensor& mask_in,
                     int64_t prompt_length) const override {
    at::Tensor mask = mask_in;
    if (!include_prompt_ && prompt_length > 0) {
      mask = mask.clone();
      mask.narrow(1, 0, std::min(prompt_length, mask.size(1))).zero_();
    }
    const at::Tensor m = mask.unsqueeze(-1).to(tokens.scalar_type());
    std::vector<at::Tensor> parts;
    for (const std::string& mode : modes_) {
      if (mode == "pooling_mode_cls_token") {
        parts.push_back(tokens.select(1, 0));
      } else if (mode == "pooling_mode_max_tokens") {
        parts.push_back(tokens.masked_fill(m == 0, -1e9).amax(1));
      } else if (mode == "pooling_mode_mean_tokens" || mode == "pooling_mode_mean_sqrt_len_tokens") {
        const at::Tensor sum = (tokens * m).sum(1), count = m.sum(1).clamp_min(1e-9);
        parts.push_back(mode == "pooling_mode_mean_tokens" ? sum / count : sum / count.sqrt());
      } else if (mode == "pooling_mode_weightedmean_tokens") {
        const at::Tensor weights =
            at::arange(1, tokens.size(1) + 1, tokens.options()).view({1, -1, 1}).expand_as(tokens) * m;
        parts.push_back((tokens * weights).sum(1) / weights.sum(1).clamp_min(1e-9));
      } else {  // lasttoken: the last position whose mask is 1
        const at::Tensor positions = at::arange(mask.size(1), at::kLong).view({1, -1}).expand_as(mask);
        const at::Tensor last = (positions * (mask != 0)).amax(1);
        parts.push_back(tokens.index({at::arange(tokens.size(0), at::kLong), last}));
      }
    }
    return at::cat(parts, 1);
  }

 private:
  std::vector<std::string> modes_;
  bool include_prompt_ = true;
};

class Dense : public SentenceTransformer::Module {
 public:
  Dense(const std::string& root, const std::string& path, const PretrainedOptions& options) {
    const std::string file = path + "/config.json";
    const json c = read_module_json(root, file, options);
    auto size = [&](const char* key) {
      if (!c.contains(key) || !c[key].is_number_integer())
        throw ConfigError(file + ": field '" + std::string(key) + "' must be an integer");
      return c[key].get<int64_t>();
    };
    const int64_t in = size("in_features"), out = size("out_features");
    const bool bias = c.value("bias", true);
    activation_ = activation_name(c.value("activation_function", "torch.nn.modules.activation.Tanh"),
                                  file + " field 'activation_function'");
    const auto weights = resolve_file(root, path + "/model.safetensors", options);
    auto tensors = SafetensorsFile::open(*weights);
    auto take = [&](const std::string& name, at::IntArrayRef shape) {
      if (!tensors->contains(name)) throw CheckpointError(weights->string() + ": no tensor '" + name + "'");
      at::Tensor t = tensors->get(name).to(at::kFloat);
      if (t.sizes() != shape)
        throw CheckpointError(weights->string() + ": '" + name + "' has shape " + c10::str(t.sizes()) + " but " + file +
                              " says " + c10::str(shape) + " (in_features " + std::to_string(in) + ", out_features " +
                              std::to_string(out) + ")");
      return t;
    };
    weight_ = take("linear.weight", {out, in});
    if (bias) bias_ = take("linear.bias", {out});
  }

  at::Tensor forward(const at::Tensor& x, const at::Tensor&, const at::Tensor&, int64_t) const override {
    if (x.size(1) != weight_.size(1))
      throw InvalidInputError("Dense: the embedding has " + std::to_string(x.size(1)) + " features but in_features is " +
                              std::to_string(weight_.size(1)));
    return activate(activation_, at::linear(x, weight_, bias_));
  }

 private:
  at::Tensor weight_, bias_;
  std::string activation_;
};

class Normalize : public SentenceTransformer::Module {
 public:
  at::Tensor forward(const at::Tensor& x, const at::Tensor&, const at::Tensor&, int64_t) const override {
    return x / x.norm(2, 1, true).clamp_min(1e-12);
  }
  bool is_normalize() const override { return true; }
};

}  // namespace

std::shared_ptr<SentenceTransformer> SentenceTransformer::from_pretrained(const std::string& path_or_repo_id,
                                                                          const PretrainedOptions& options) {
  std::shared_ptr<SentenceTransformer> st(new SentenceTransformer());
  const json modules = read_module_json(path_or_repo_id, "modules.json", options, true);
  std::string transformer_path;
  bool has_transformer = false;
  if (modules.is_null()) {
    // A plain transformers checkpoint: sentence-transformers adds mean pooling.
    has_transformer = true;
    st->modules_.push_back(std::make_shared<Pooling>(json{{"pooling_mode_mean_tokens", true}}, "mean pooling"));
  } else {
    if (!modules.is_array()) throw ConfigError("modules.json: expected a list of modules");
    for (size_t i = 0; i < modules.size(); ++i) {
      const json& m = modules[i];
      const std::string where = "modules.json[" + std::to_string(i) + "]";
      if (!m.is_object() || !m.contains("type") || !m["type"].is_string())
        throw ConfigError(where + ": expected an object with a 'type'");
      const std::string type = m["type"].get<std::string>();
      const std::string path = m.value("path", "");
      const std::string cls = type.substr(type.rfind('.') + 1);
      if (!type.starts_with("sentence_transformers.")) {
        throw ConfigError(where + ": module type '" + type + "' is not a sentence_transformers module");
      } else if (cls == "Transformer") {
        has_transformer = true;
        transformer_path = path;
      } else if (cls == "Pooling") {
        const std::string file = path + "/config.json";
        st->modules_.push_back(std::make_shared<Pooling>(read_module_json(path_or_repo_id, file, options), file));
      } else if (cls == "Dense") {
        st->modules_.push_back(std::make_shared<Dense>(path_or_repo_id, path, options));
      } else if (cls == "Normalize") {
        st->modules_.push_back(std::make_shared<Normalize>());  // saved without files; the folder may be absent
      } else {
        throw ConfigError(where + ": module type '" + type +
                          "' is not supported (Transformer, Pooling, Dense, Normalize are)");
      }
    }
    if (!has_transformer) throw ConfigError("modules.json: no sentence_transformers.models.Transformer module");
  }
  PretrainedOptions model_options = options;
  if (!transformer_path.empty()) model_options.subfolder = transformer_path;
  st->model_ = AutoModel::from_pretrained(path_or_repo_id, model_options);
  st->tokenizer_ = AutoTokenizer::from_pretrained(path_or_repo_id, model_options);
  // Without sentence_bert_config.json: min(max_position_embeddings, model_max_length), as Transformer does.
  st->max_seq_length_ = st->tokenizer_->model_max_length;
  if (const json positions = st->model_->config().get("max_position_embeddings"); positions.is_number_integer())
    st->max_seq_length_ = std::min(st->max_seq_length_, positions.get<int64_t>());
  const json sbert = read_module_json(path_or_repo_id, (transformer_path.empty() ? "" : transformer_path + "/") +
                                                           "sentence_bert_config.json", options, true);
  if (sbert.is_object()) {
    if (sbert.contains("max_seq_length") && sbert["max_seq_length"].is_number_integer())
      st->max_seq_length_ = sbert["max_seq_length"].get<int64_t>();
    st->do_lower_case_ = sbert.value("do_lower_case", false);
  }
  // Truncation to max_seq_length is applied per call; tokenizer.json's own settings do not apply.
  st->tokenizer_->set_truncation(TruncationParams{size_t(st->max_seq_length_)});
  st->tokenizer_->set_padding(std::nullopt);

  st->prompts_ = {{"query", ""}, {"document", ""}};
  const json config = read_module_json(path_or_repo_id, "config_sentence_transformers.json", options, true);
  if (config.is_object()) {
    if (config.contains("prompts") && config["prompts"].is_object())
      for (const auto& [name, text] : config["prompts"].items())
        if (text.is_string()) st->prompts_[name] = text.get<std::string>();
    if (config.contains("default_prompt_name") && config["default_prompt_name"].is_string()) {
      st->default_prompt_name_ = config["default_prompt_name"].get<std::string>();
      if (!st->prompts_.count(*st->default_prompt_name_))
        throw ConfigError("config_sentence_transformers.json: default_prompt_name '" + *st->default_prompt_name_ +
                          "' is not one of its prompts");
    }
    if (config.contains("similarity_fn_name") && config["similarity_fn_name"].is_string())
      st->similarity_fn_name_ = config["similarity_fn_name"].get<std::string>();
  }
  return st;
}

std::vector<std::string> SentenceTransformer::prepared(const std::vector<std::string>& texts,
                                                       const std::string& prompt) const {
  std::vector<std::string> out;
  out.reserve(texts.size());
  for (const auto& text : texts) {
    std::string s = python_strip(prompt + text);
    out.push_back(do_lower_case_ ? python_lower(s) : s);
  }
  return out;
}

int64_t SentenceTransformer::prompt_length(const std::string& prompt) const {
  const Encoding e = tokenizer_->encode(prepared({""}, prompt).front());
  int64_t n = int64_t(e.ids.size());
  if (n > 0 && e.special_tokens_mask.size() == e.ids.size() && e.special_tokens_mask.back() == 1) --n;
  return n;
}

at::Tensor SentenceTransformer::encode(const std::vector<std::string>& texts, const EncodeOptions& options) const {
  if (texts.empty()) throw InvalidInputError("encode: the list of texts is empty");
  if (options.batch_size < 1) throw InvalidInputError("encode: batch_size must be positive");
  std::string prompt;
  if (options.prompt) {
    prompt = *options.prompt;
  } else if (const auto name = options.prompt_name ? options.prompt_name : default_prompt_name_) {
    auto it = prompts_.find(*name);
    if (it == prompts_.end()) {
      std::string known;
      for (const auto& [k, v] : prompts_) known += (known.empty() ? "" : ", ") + k;
      throw InvalidInputError("encode: prompt_name '" + *name + "' is not one of the model's prompts (" + known + ")");
    }
    prompt = it->second;
  }
  const int64_t prompt_tokens = prompt.empty() ? 0 : prompt_length(prompt);
  // Batches of texts with as many tokens (sentence-transformers sorts by characters, which left a
  // third of a batch's positions padding on license text); the order changes no embedding.
  return embed(tokenizer_->encode_batch(prepared(texts, prompt)), prompt_tokens, options);
}

at::Tensor SentenceTransformer::encode_ids(const std::vector<std::vector<int64_t>>& ids, const EncodeOptions& options) const {
  if (ids.empty()) throw InvalidInputError("encode_ids: the list of inputs is empty");
  if (options.batch_size < 1) throw InvalidInputError("encode_ids: batch_size must be positive");
  const int64_t vocab = model_->config().get("vocab_size").is_number_integer() ? model_->config().get("vocab_size").get<int64_t>() : 0;
  std::vector<Encoding> encodings;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i].empty()) throw InvalidInputError("encode_ids: input " + std::to_string(i) + " has no tokens");
    for (int64_t id : ids[i])
      if (id < 0 || (vocab > 0 && id >= vocab))
        throw InvalidInputError("encode_ids: input " + std::to_string(i) + " holds token id " + std::to_string(id) +
                                ", outside the vocabulary [0, " + std::to_string(vocab) + ")");
    Encoding e;
    e.ids.assign(ids[i].begin(), ids[i].begin() + std::min<int64_t>(int64_t(ids[i].size()), max_seq_length_));
    encodings.push_back(std::move(e));
  }
  return embed(encodings, 0, options);
}

at::Tensor SentenceTransformer::embed(const std::vector<Encoding>& encodings, int64_t prompt_tokens,
                                      const EncodeOptions& options) const {
  c10::InferenceMode guard;
  std::vector<at::Tensor> rows(encodings.size());
  const std::vector<size_t> order = longest_first(encodings);
  for (size_t start = 0; start < order.size(); start += size_t(options.batch_size)) {
    const size_t end = std::min(order.size(), start + size_t(options.batch_size));
    const Batch b = pad(encodings, order, start, end, pad_id_of(*tokenizer_));
    const at::Tensor tokens = model_->forward(model_inputs(b, *model_))["last_hidden_state"].to(at::kFloat);
    at::Tensor embedding;
    for (const auto& module : modules_) {
      if (module->is_normalize() && !options.normalize_modules) continue;
      embedding = module->forward(embedding, tokens, b.attention_mask, prompt_tokens);
    }
    if (options.normalize_embeddings) embedding = embedding / embedding.norm(2, 1, true).clamp_min(1e-12);
    for (size_t i = start; i < end; ++i) rows[order[i]] = embedding[int64_t(i - start)];
  }
  return at::stack(rows);
}

at::Tensor SentenceTransformer::similarity(const at::Tensor& a, const at::Tensor& b) const {
  if (similarity_fn_name_ == "cosine") {
    auto unit = [](const at::Tensor& x) { return x / x.norm(2, 1, true).clamp_min(1e-12); };
    return at::matmul(unit(a), unit(b).t());
  }
  if (similarity_fn_name_ == "dot") return at::matmul(a, b.t());
  if (similarity_fn_name_ == "euclidean") return -at::cdist(a, b, 2.0);
  if (similarity_fn_name_ == "manhattan") return -at::cdist(a, b, 1.0);
  throw ConfigError("config_sentence_transformers.json: similarity_fn_name '" + similarity_fn_name_ +
                    "' (expected cosine, dot, euclidean or manhattan)");
}

std::shared_ptr<CrossEncoder> CrossEncoder::from_pretrained(const std::string& path_or_repo_id,
                                                            const PretrainedOptions& options) {
  std::shared_ptr<CrossEncoder> ce(new CrossEncoder());
  ce->model_ = AutoModelForSequenceClassification::from_pretrained(path_or_repo_id, options);
  ce->tokenizer_ = AutoTokenizer::from_pretrained(path_or_repo_id, options);
  const PretrainedConfig& config = ce->model_->config();
  int64_t limit = ce->tokenizer_->model_max_length;
  if (const json positions = config.get("max_position_embeddings"); positions.is_number_integer())
    limit = std::min(limit, positions.get<int64_t>());
  ce->max_length_ = limit;
  ce->tokenizer_->set_truncation(TruncationParams{size_t(limit)});
  ce->tokenizer_->set_padding(std::nullopt);
  ce->default_activation_ = config.num_labels() == 1 ? "sigmoid" : "identity";
  const json st = config.get("sentence_transformers");
  if (st.is_object() && st.contains("activation_fn") && st["activation_fn"].is_string()) {
    const std::string path = st["activation_fn"].get<std::string>();
    if (path.starts_with("torch."))  // sentence-transformers trusts only torch classes here
      ce->default_activation_ = activation_name(path, "config.json field 'sentence_transformers.activation_fn'");
  }
  return ce;
}

at::Tensor CrossEncoder::predict(const std::vector<std::pair<std::string, std::string>>& pairs,
                                 const PredictOptions& options) const {
  if (pairs.empty()) throw InvalidInputError("predict: the list of pairs is empty");
  if (options.batch_size < 1) throw InvalidInputError("predict: batch_size must be positive");
  if (options.activation && *options.activation != "sigmoid" && *options.activation != "identity")
    throw InvalidInputError("predict: activation '" + *options.activation + "' (expected sigmoid or identity)");
  const std::string activation = options.activation.value_or(default_activation_);
  // Batched by token count, as SentenceTransformer::encode does.
  const std::vector<Encoding> encodings = tokenizer_->encode_batch_pairs(pairs);
  const std::vector<size_t> order = longest_first(encodings);
  c10::InferenceMode guard;
  std::vector<at::Tensor> rows(pairs.size());
  for (size_t start = 0; start < order.size(); start += size_t(options.batch_size)) {
    const size_t end = std::min(order.size(), start + size_t(options.batch_size));
    const Batch b = pad(encodings, order, start, end, pad_id_of(*tokenizer_));
    ModelInputs inputs = model_inputs(b, *model_);
    inputs.pooled_outputs_only = true;
    const at::Tensor logits = activate(activation, model_->forward(inputs)["logits"].to(at::kFloat));
    for (size_t i = start; i < end; ++i) rows[order[i]] = logits[int64_t(i - start)];
  }
  at::Tensor scores = at::stack(rows);
  return scores.size(1) == 1 ? scores.squeeze(1) : scores;
}

std::vector<CrossEncoder::Ranked> CrossEncoder::rank(const std::string& query, const std::vector<std::string>& documents,
                                                     std::optional<int64_t> top_k, const PredictOptions& options) const {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const auto& d : documents) pairs.emplace_back(query, d);
  const at::Tensor scores = predict(pairs, options);
  if (scores.dim() != 1) throw InvalidInputError("rank: the model has several labels; rank needs one score per pair");
  std::vector<Ranked> ranked;
  for (size_t i = 0; i < documents.size(); ++i)
    ranked.push_back({int64_t(i), scores[int64_t(i)].item<double>(), documents[i]});
  std::stable_sort(ranked.begin(), ranked.end(), [](const Ranked& a, const Ranked& b) { return a.score > b.score; });
  if (top_k && *top_k >= 0 && size_t(*top_k) < ranked.size()) ranked.resize(size_t(*top_k));
  return ranked;
}

}  // namespace plugformer
