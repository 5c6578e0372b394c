// The tokenizer.json engine: a plugformer::Tokenizer that behaves like the Rust `tokenizers`
// library (v0.22) on the same tokenizer.json. Offsets are Unicode code points of the input
// (the library's encode_char_offsets). Invalid UTF-8 input is not an error: every maximal invalid
// byte sequence is replaced by U+FFFD first (String::from_utf8_lossy), and offsets refer to the
// code points of that repaired text.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "plugformer/tokenizer.h"

namespace plugformer {

// Thread safety: encode*, decode*, token_to_id and id_to_token may run concurrently; add_tokens,
// set_truncation / set_padding, apply_tokenizer_config and update_post_processor must not run
// while other threads use the tokenizer.
class FastTokenizer : public Tokenizer {
 public:
  // Reads and parses a tokenizer.json; throws FileNotFoundError / IOError / TokenizerError
  // (message names the file, the JSON path and what was expected).
  static std::shared_ptr<FastTokenizer> from_file(const std::filesystem::path& file);
  // Parses tokenizer.json text; `source` names it in error messages.
  static std::shared_ptr<FastTokenizer> from_json(const std::string& text, const std::string& source = "tokenizer.json");

  ~FastTokenizer() override;

  Encoding encode(std::string_view text, bool add_special_tokens = true) const override;
  Encoding encode_pair(std::string_view text, std::string_view text_pair, bool add_special_tokens = true) const override;
  std::vector<Encoding> encode_batch(const std::vector<std::string>& texts, bool add_special_tokens = true) const override;
  std::vector<Encoding> encode_batch_pairs(const std::vector<std::pair<std::string, std::string>>& pairs,
                                           bool add_special_tokens = true) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const override;
  std::vector<std::string> batch_decode(const std::vector<std::vector<int64_t>>& sequences,
                                        bool skip_special_tokens = false) const override;

  std::optional<int64_t> token_to_id(std::string_view token) const override;
  std::optional<std::string> id_to_token(int64_t id) const override;
  // Model vocabulary plus added tokens (tokenizers' get_vocab_size(true), transformers' len()).
  size_t vocab_size() const override;

  void set_truncation(const std::optional<TruncationParams>& params) override;
  void set_padding(const std::optional<PaddingParams>& params) override;
  std::optional<TruncationParams> truncation() const override;
  std::optional<PaddingParams> padding() const override;

  size_t add_tokens(const std::vector<AddedToken>& tokens) override;
  size_t add_special_tokens(const std::vector<AddedToken>& tokens) override;
  std::vector<AddedToken> added_tokens() const;  // sorted by id

  void save_pretrained(const std::filesystem::path& dir) const override;

  // Applies tokenizer_config.json (+ special_tokens_map.json): special tokens, model_max_length,
  // padding_side, clean_up_tokenization_spaces; the config is kept (chat_template, tokenizer_class
  // ...) and written back by save_pretrained.
  void apply_tokenizer_config(const nlohmann::json& tokenizer_config,
                              const nlohmann::json& special_tokens_map = nlohmann::json::object());
  void set_special_tokens(const SpecialTokens& s) { special_ = s; }

  // transformers' LlamaTokenizerFast.update_post_processor: replaces the post-processor by the
  // template "[bos:0] $A:0 [eos:0]" / "... [bos:1] $B:1 [eos:1]" (bos/eos from special_tokens()).
  // apply_tokenizer_config calls it for Llama/CodeLlama/Gemma tokenizer classes, as their
  // __init__ does. Throws TokenizerError when a needed token is unset or not in the vocabulary.
  void update_post_processor(bool add_bos_token, bool add_eos_token);

  // Threads used by encode_batch / batch_decode: 0 = all cores.
  size_t num_threads = 0;

  struct Impl;

 private:
  // from_json's work; a field of an unexpected JSON type it did not check itself reaches from_json
  // as nlohmann's exception, which turns it into a TokenizerError.
  static std::shared_ptr<FastTokenizer> build_from_json(const std::string& text, const std::string& source);
  FastTokenizer();
  std::unique_ptr<Impl> impl_;
};

}  // namespace plugformer
