// The pipeline components of a tokenizer.json (normalizers, pre-tokenizers, models,
// post-processors, decoders) and the internal Encoding they work on. Every factory takes the
// JSON node and its JSON path (e.g. "tokenizer.json: pre_tokenizer.pretokenizers[1]") so errors
// name where the problem is.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizers/normalized_string.h"

namespace plugformer::tok {

using json = nlohmann::json;

enum class Direction { Left, Right };

// The internal encoding (tokenizers' Encoding), with byte or char offsets as the stage requires.
struct Enc {
  // Same element types as plugformer::Encoding so the final conversion moves the vectors.
  std::vector<int64_t> ids;
  std::vector<int64_t> type_ids;
  std::vector<std::string> tokens;
  std::vector<std::optional<int64_t>> words;
  std::vector<Offsets> offsets;
  std::vector<int64_t> special_tokens_mask;
  std::vector<int64_t> attention_mask;
  std::vector<Enc> overflowing;
  std::map<size_t, std::pair<size_t, size_t>> sequence_ranges;

  size_t size() const { return ids.size(); }
  void reserve(size_t n);
  void push(int64_t id, std::string token, Offsets off, std::optional<int64_t> word, int64_t type_id,
            int64_t special = 0, int64_t attention = 1);
  void set_sequence_id(size_t seq) { sequence_ranges[seq] = {0, size()}; }
  void set_type_ids(int64_t t) { type_ids.assign(size(), t); }
  std::vector<std::optional<size_t>> sequence_ids() const;
  void truncate(size_t max_len, size_t stride, Direction direction);
  void merge_with(Enc pair, bool growing_offsets);
  void pad(size_t target, int64_t pad_id, int64_t pad_type_id, const std::string& pad_token, Direction direction);
  static Enc merge(std::vector<Enc> encodings, bool growing_offsets);
};

// ---- JSON helpers (typed errors naming the JSON path) ----
[[noreturn]] void json_error(const std::string& path, const std::string& what);
const json& jfield(const json& j, const char* key, const std::string& path);  // required
bool jbool(const json& j, const char* key, const std::string& path, bool def);
std::string jstring(const json& j, const char* key, const std::string& path, const std::string& def);
std::optional<std::string> jopt_string(const json& j, const char* key, const std::string& path);
uint64_t juint(const json& j, const char* key, const std::string& path, uint64_t def);
char32_t jchar(const json& j, const char* key, const std::string& path, char32_t def);

// ---- Normalizers ----
class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(NormalizedString& n) const = 0;
};
std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& path);

// ---- Pre-tokenizers ----
class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(PreTokenizedString& p) const = 0;
};
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& path);

// ---- Models ----
class Model {
 public:
  virtual ~Model() = default;
  // Tokenizes one pre-token; offsets are bytes within `s`.
  virtual void tokenize(std::string_view s, std::vector<Token>& out) const = 0;
  virtual std::optional<uint32_t> token_to_id(std::string_view token) const = 0;
  virtual const std::string* id_to_token(uint32_t id) const = 0;
  virtual size_t vocab_size() const = 0;
};
std::unique_ptr<Model> make_model(const json& j, const std::string& path);

// ---- Post-processors ----
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual size_t added_tokens(bool is_pair) const = 0;
  virtual void process_encodings(std::vector<Enc>& encodings, bool add_special_tokens) const = 0;
  // PostProcessor::process of the Rust trait.
  Enc process(Enc encoding, std::optional<Enc> pair, bool add_special_tokens) const;
};
std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& path);
// Used when there is no post-processor.
Enc default_process(Enc encoding, std::optional<Enc> pair);

// ---- Decoders ----
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& path);

// ByteLevel byte <-> char tables (GPT-2's bytes_to_unicode).
const std::string& byte_to_char_utf8(unsigned char b);
int char_to_byte(char32_t c);  // -1 if not in the table
void process_byte_level_offsets(Enc& e, bool add_prefix_space);

}  // namespace plugformer::tok
