// The tokenizer interface every tokenizer implementation (tokenizer.json engine, SentencePiece,
// slow vocab files, third-party plugins) provides. Mirrors transformers' PreTrainedTokenizer(Fast).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <filesystem>
#include <climits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugformer/chat_template.h"
#include "plugformer/error.h"

namespace plugformer {

// One encoded sequence (or pair), like tokenizers' Encoding. Offsets are [start, end) in
// Unicode code points of the input text (of the second text for the second sequence of a pair).
struct Encoding {
  std::vector<int64_t> ids;
  std::vector<std::string> tokens;
  std::vector<std::pair<size_t, size_t>> offsets;
  std::vector<int64_t> type_ids;
  std::vector<int64_t> attention_mask;
  std::vector<int64_t> special_tokens_mask;
  std::vector<Encoding> overflowing;
  // Index of the word (pre-token) each token comes from; nullopt for tokens added by the
  // post-processor and for padding. Filled by the tokenizer.json engine.
  std::vector<std::optional<int64_t>> word_ids;
  // 0 or 1: which input of a pair each token comes from; nullopt for special tokens / padding.
  std::vector<std::optional<int64_t>> sequence_ids;
};

// An added token, as tokenizer.json's "added_tokens" entries and transformers' AddedToken.
struct AddedToken {
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;  // transformers: defaults to !special
  bool special = false;
};

enum class TruncationStrategy { LongestFirst, OnlyFirst, OnlySecond };
enum class Side { Left, Right };

// tokenizers' TruncationParams.
struct TruncationParams {
  size_t max_length = 512;
  TruncationStrategy strategy = TruncationStrategy::LongestFirst;
  size_t stride = 0;
  Side direction = Side::Right;
};

// tokenizers' PaddingParams. `length` set = pad to that fixed length ("max_length"), unset =
// pad to the longest sequence of the batch ("longest").
struct PaddingParams {
  std::optional<size_t> length;
  Side direction = Side::Right;
  std::optional<size_t> pad_to_multiple_of;
  int64_t pad_id = 0;
  int64_t pad_type_id = 0;
  std::string pad_token = "[PAD]";
};

struct SpecialTokens {
  std::optional<std::string> bos_token, eos_token, unk_token, pad_token, sep_token, cls_token, mask_token;
  // Each token with its tokenizer_config.json name ("bos_token", ...), in transformers' order.
  template <typename Self>
  static auto named(Self& self) {
    using Slot = decltype(&self.bos_token);
    return std::array<std::pair<const char*, Slot>, 7>{{{"bos_token", &self.bos_token}, {"eos_token", &self.eos_token},
                                                         {"unk_token", &self.unk_token}, {"sep_token", &self.sep_token},
                                                         {"pad_token", &self.pad_token}, {"cls_token", &self.cls_token},
                                                         {"mask_token", &self.mask_token}}};
  }
  // transformers' special_tokens_map: the tokens that are set, by name.
  nlohmann::ordered_json to_json() const {
    nlohmann::ordered_json map = nlohmann::ordered_json::object();
    for (const auto& [name, token] : named(*this))
      if (*token) map[name] = **token;
    return map;
  }
};

// What tokenizer factories receive: the directory and its parsed tokenizer_config.json and
// special_tokens_map.json (empty objects when absent).
struct TokenizerFiles {
  std::filesystem::path dir;
  nlohmann::ordered_json tokenizer_config = nlohmann::ordered_json::object();
  nlohmann::ordered_json special_tokens_map = nlohmann::ordered_json::object();
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual Encoding encode(std::string_view text, bool add_special_tokens = true) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const = 0;

  virtual std::optional<int64_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int64_t id) const = 0;
  virtual size_t vocab_size() const = 0;

  // ---- Extended API (defaults: generic implementations over encode/decode, or a
  // TokenizerError for what a generic implementation cannot do). ----

  // A pair of sequences. Default: both encodings concatenated (type id 1 for the second).
  virtual Encoding encode_pair(std::string_view text, std::string_view text_pair, bool add_special_tokens = true) const {
    Encoding a = encode(text, add_special_tokens), b = encode(text_pair, add_special_tokens);
    auto fill_seq = [](Encoding& e, int64_t s) {
      if (e.sequence_ids.size() != e.ids.size()) e.sequence_ids.assign(e.ids.size(), s);
      if (e.word_ids.size() != e.ids.size()) e.word_ids.assign(e.ids.size(), std::nullopt);
      if (e.type_ids.size() != e.ids.size()) e.type_ids.assign(e.ids.size(), 0);
    };
    fill_seq(a, 0);
    fill_seq(b, 1);
    for (auto& t : b.type_ids) t = 1;
    auto append = [](auto& x, const auto& y) { x.insert(x.end(), y.begin(), y.end()); };
    append(a.ids, b.ids);
    append(a.tokens, b.tokens);
    append(a.offsets, b.offsets);
    append(a.type_ids, b.type_ids);
    append(a.attention_mask, b.attention_mask);
    append(a.special_tokens_mask, b.special_tokens_mask);
    append(a.word_ids, b.word_ids);
    append(a.sequence_ids, b.sequence_ids);
    return a;
  }
  // Many texts (the tokenizer.json engine runs them on all cores and applies batch padding).
  virtual std::vector<Encoding> encode_batch(const std::vector<std::string>& texts, bool add_special_tokens = true) const {
    std::vector<Encoding> out;
    out.reserve(texts.size());
    for (const auto& t : texts) out.push_back(encode(t, add_special_tokens));
    return out;
  }
  virtual std::vector<Encoding> encode_batch_pairs(const std::vector<std::pair<std::string, std::string>>& pairs,
                                                   bool add_special_tokens = true) const {
    std::vector<Encoding> out;
    out.reserve(pairs.size());
    for (const auto& [a, b] : pairs) out.push_back(encode_pair(a, b, add_special_tokens));
    return out;
  }
  virtual std::vector<std::string> batch_decode(const std::vector<std::vector<int64_t>>& sequences,
                                                bool skip_special_tokens = false) const {
    std::vector<std::string> out;
    out.reserve(sequences.size());
    for (const auto& ids : sequences) out.push_back(decode(ids, skip_special_tokens));
    return out;
  }
  // Truncation / padding applied by encode*(); nullopt disables. Default: not supported.
  virtual void set_truncation(const std::optional<TruncationParams>& params) {
    if (params) throw_unsupported("truncation");
  }
  virtual void set_padding(const std::optional<PaddingParams>& params) {
    if (params) throw_unsupported("padding");
  }
  virtual std::optional<TruncationParams> truncation() const { return std::nullopt; }
  virtual std::optional<PaddingParams> padding() const { return std::nullopt; }
  // Adds tokens to the vocabulary (existing ones are reused); returns how many were added.
  virtual size_t add_tokens(const std::vector<AddedToken>& tokens) {
    if (!tokens.empty()) throw_unsupported("add_tokens");
    return 0;
  }
  virtual size_t add_special_tokens(const std::vector<AddedToken>& tokens) {
    if (!tokens.empty()) throw_unsupported("add_special_tokens");
    return 0;
  }
  // Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into `dir`.
  virtual void save_pretrained(const std::filesystem::path& dir) const {
    (void)dir;
    throw_unsupported("save_pretrained");
  }

  // ---- Chat templates (transformers' apply_chat_template) ----
  // The model's chat templates by name: "default" is tokenizer_config.json's chat_template string
  // or chat_template.jinja; other names come from tokenizer_config.json's list of {"name",
  // "template"} or additional_chat_templates/<name>.jinja. AutoTokenizer fills them for every
  // tokenizer class; save_pretrained writes them back as transformers does.
  std::map<std::string, std::string> chat_templates;
  // The template text: `name_or_text` names one of chat_templates or is itself a template; empty
  // picks "tool_use" when `with_tools` and it exists, else "default" (a TokenizerError if none).
  std::string chat_template_text(const std::string& name_or_text = "", bool with_tools = false) const;
  // Renders one conversation (a list of {"role", "content", ...} messages). The special tokens
  // (bos_token, eos_token, ...) are template variables; options.variables add to or override them.
  std::string apply_chat_template(const nlohmann::ordered_json& conversation, const ChatTemplateOptions& options = {},
                                  const std::string& chat_template = "") const;
  // One conversation or a batch of them (as transformers tells them apart), rendered and encoded
  // without special tokens (the template wrote them), with this tokenizer's padding / truncation.
  std::vector<Encoding> encode_chat(const nlohmann::ordered_json& conversations, const ChatTemplateOptions& options = {},
                                    const std::string& chat_template = "") const;

  // tokenizer_config.json's clean_up_tokenization_spaces, applied by decode().
  bool clean_up_tokenization_spaces = false;

  // Special tokens as tokenizer_config.json / special_tokens_map.json name them.
  const SpecialTokens& special_tokens() const { return special_; }
  std::optional<int64_t> bos_token_id() const { return id_of(special_.bos_token); }
  std::optional<int64_t> eos_token_id() const { return id_of(special_.eos_token); }
  std::optional<int64_t> pad_token_id() const { return id_of(special_.pad_token); }
  std::optional<int64_t> unk_token_id() const { return id_of(special_.unk_token); }

  // tokenizer_config.json's model_max_length (transformers' "very large" default when absent).
  int64_t model_max_length = INT64_MAX;
  std::string padding_side = "right";

 protected:
  SpecialTokens special_;

 private:
  [[noreturn]] static void throw_unsupported(const char* what) {
    throw TokenizerError(std::string("this tokenizer does not support ") + what);
  }
  std::optional<int64_t> id_of(const std::optional<std::string>& t) const {
    return t ? token_to_id(*t) : std::nullopt;
  }
};

// The text of generated tokens as they come, for streaming (generate, chat, the server's SSE).
// Decoding each new token on its own loses what depends on its neighbours (a SentencePiece /
// Metaspace decoder drops the leading space of a first token, a character's bytes can be split
// across tokens), so each step decodes a short window of the tokens before it too and returns
// what the new token added. Together the pieces equal the decode of the whole sequence minus the
// decode of the prompt. Text that is not final yet is held back: an incomplete UTF-8 character,
// and trailing spaces (the next token may be punctuation that clean_up_tokenization_spaces joins).
class DecodeStream {
 public:
  DecodeStream(std::shared_ptr<const Tokenizer> tokenizer, const std::vector<int64_t>& prompt_ids,
               bool skip_special_tokens = true);
  // Appends one token; returns the text that became final (often empty while text is held back).
  std::string step(int64_t id);
  // What is still held back, once generation has ended.
  std::string finish();

 private:
  std::shared_ptr<const Tokenizer> tokenizer_;
  bool skip_special_tokens_;
  std::vector<int64_t> window_;  // a few tokens of context, then the tokens since
  std::string text_;             // the window's text at the last step
  size_t done_ = 0;              // bytes of text_ already returned or part of the context
};

}  // namespace plugformer
