// The tokenizer interface every tokenizer implementation (tokenizer.json engine, SentencePiece,
// slow vocab files, third-party plugins) provides. Mirrors transformers' PreTrainedTokenizer(Fast).
#pragma once

#include <cstdint>
#include <filesystem>
#include <climits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

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
};

struct SpecialTokens {
  std::optional<std::string> bos_token, eos_token, unk_token, pad_token, sep_token, cls_token, mask_token;
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
  std::optional<int64_t> id_of(const std::optional<std::string>& t) const {
    return t ? token_to_id(*t) : std::nullopt;
  }
};

}  // namespace plugformer
