// Loaders producing the tokenizer.json engine (FastTokenizer) from a tokenizer.json or from the
// classic "slow" vocabulary files, converted exactly as transformers' convert_slow_tokenizer does:
// - vocab.txt            -> BertTokenizer(Fast): BertNormalizer + BertPreTokenizer + WordPiece +
//                           [CLS] $A [SEP] ($B [SEP]) template + WordPiece decoder
// - vocab.json+merges.txt -> GPT2Tokenizer(Fast): ByteLevel pre-tokenizer / decoder + BPE
//                           (+ bos template when add_bos_token)
// tokenizer_config.json (and special_tokens_map.json) supply the special tokens and options
// (do_lower_case, tokenize_chinese_chars, strip_accents, add_prefix_space, add_bos_token,
// model_max_length, padding_side, clean_up_tokenization_spaces).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "plugformer/tokenizer.h"

namespace plugformer {

class FastTokenizer;

// A whole file as bytes: FileNotFoundError when it is missing, IOError when it cannot be read.
std::string read_text(const std::filesystem::path& file);

// tokenizer.json (+ optional tokenizer_config.json / special_tokens_map.json contents).
std::shared_ptr<Tokenizer> load_tokenizer_json(const std::filesystem::path& file,
                                               const nlohmann::json& tokenizer_config = nlohmann::json::object(),
                                               const nlohmann::json& special_tokens_map = nlohmann::json::object());
// dir/vocab.txt
std::shared_ptr<Tokenizer> load_bert_vocab(const std::filesystem::path& dir,
                                           const nlohmann::json& tokenizer_config = nlohmann::json::object(),
                                           const nlohmann::json& special_tokens_map = nlohmann::json::object());
// dir/vocab.json + dir/merges.txt
std::shared_ptr<Tokenizer> load_gpt2_vocab(const std::filesystem::path& dir,
                                           const nlohmann::json& tokenizer_config = nlohmann::json::object(),
                                           const nlohmann::json& special_tokens_map = nlohmann::json::object());

// The same, from the files a registry tokenizer factory receives: tokenizer.json when present,
// otherwise vocab.txt, otherwise vocab.json + merges.txt. Throws FileNotFoundError when none.
std::shared_ptr<Tokenizer> make_fast_tokenizer(const TokenizerFiles& files);

}  // namespace plugformer
