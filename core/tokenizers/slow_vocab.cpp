#include "tokenizers/slow_vocab.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "plugformer/error.h"
#include "tokenizers/fast_tokenizer.h"

namespace plugformer {

std::string read_text(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) throw FileNotFoundError(file.string() + ": no such file");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw IOError(file.string() + ": cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

using json = nlohmann::json;


// A special token value of tokenizer_config.json / special_tokens_map.json (string or {"content"}).
std::optional<std::string> special(const json& config, const json& smap, const char* name, std::optional<std::string> def) {
  for (const json* src : {&config, &smap}) {
    if (!src->is_object()) continue;
    auto it = src->find(name);
    if (it == src->end()) continue;
    if (it->is_null()) return std::nullopt;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
    throw TokenizerError(std::string("tokenizer_config.json: field '") + name + "' must be a string or an object with 'content'");
  }
  return def;
}

bool cfg_bool(const json& config, const char* name, bool def) {
  auto it = config.find(name);
  if (it == config.end() || it->is_null()) return def;
  if (!it->is_boolean()) throw TokenizerError(std::string("tokenizer_config.json: field '") + name + "' must be a boolean");
  return it->get<bool>();
}

json added_token(const std::string& content, uint32_t id) {
  return json{{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
              {"rstrip", false}, {"normalized", false}, {"special", true}};
}

std::shared_ptr<Tokenizer> finish(const json& tj, const std::string& source, const json& config, const json& smap) {
  auto t = FastTokenizer::from_json(tj.dump(), source);
  t->apply_tokenizer_config(config.is_object() ? config : json::object(), smap.is_object() ? smap : json::object());
  return t;
}

}  // namespace

std::shared_ptr<Tokenizer> load_tokenizer_json(const std::filesystem::path& file, const nlohmann::json& config,
                                               const nlohmann::json& smap) {
  auto t = FastTokenizer::from_file(file);
  t->apply_tokenizer_config(config.is_object() ? config : json::object(), smap.is_object() ? smap : json::object());
  return t;
}

std::shared_ptr<Tokenizer> load_bert_vocab(const std::filesystem::path& dir, const nlohmann::json& config,
                                           const nlohmann::json& smap) {
  const auto file = dir / "vocab.txt";
  std::string text = read_text(file);
  json vocab = json::object();
  uint32_t index = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    vocab[line] = index++;
  }
  if (vocab.empty()) throw TokenizerError(file.string() + ": empty vocabulary");
  auto id_of = [&](const std::string& tok, const char* role) -> uint32_t {
    auto it = vocab.find(tok);
    if (it == vocab.end()) throw TokenizerError(file.string() + ": " + role + " token '" + tok + "' is not in the vocabulary");
    return it->get<uint32_t>();
  };
  const std::string unk = *special(config, smap, "unk_token", "[UNK]");
  const std::string cls = *special(config, smap, "cls_token", "[CLS]");
  const std::string sep = *special(config, smap, "sep_token", "[SEP]");
  const auto pad = special(config, smap, "pad_token", "[PAD]");
  const auto mask = special(config, smap, "mask_token", "[MASK]");
  const bool lower = cfg_bool(config, "do_lower_case", true);
  const bool chinese = cfg_bool(config, "tokenize_chinese_chars", true);
  json strip = nullptr;
  if (auto it = config.find("strip_accents"); it != config.end() && it->is_boolean()) strip = *it;

  json tj;
  tj["version"] = "1.0";
  tj["truncation"] = nullptr;
  tj["padding"] = nullptr;
  json added = json::array();
  std::vector<std::string> specials;
  for (const auto& t : {std::optional<std::string>(pad), std::optional<std::string>(unk), std::optional<std::string>(cls),
                        std::optional<std::string>(sep), mask})
    if (t && vocab.contains(*t)) specials.push_back(*t);
  for (const auto& t : specials) added.push_back(added_token(t, vocab[t].get<uint32_t>()));
  tj["added_tokens"] = added;
  tj["normalizer"] = {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", chinese},
                      {"strip_accents", strip}, {"lowercase", lower}};
  tj["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  const uint32_t cls_id = id_of(cls, "cls"), sep_id = id_of(sep, "sep");
  auto st = [](const std::string& id, uint32_t type) { return json{{"SpecialToken", {{"id", id}, {"type_id", type}}}}; };
  auto sq = [](const char* id, uint32_t type) { return json{{"Sequence", {{"id", id}, {"type_id", type}}}}; };
  // MPNet's converter puts two separators between the texts of a pair.
  const auto cls_name = config.is_object() ? config.find("tokenizer_class") : config.end();
  const bool mpnet = cls_name != config.end() && cls_name->is_string() &&
                     cls_name->get<std::string>().rfind("MPNetTokenizer", 0) == 0;
  json pair = json::array({st(cls, 0), sq("A", 0), st(sep, 0)});
  if (mpnet) pair.push_back(st(sep, 0));
  pair.push_back(sq("B", 1));
  pair.push_back(st(sep, 1));
  tj["post_processor"] = {{"type", "TemplateProcessing"},
                          {"single", json::array({st(cls, 0), sq("A", 0), st(sep, 0)})},
                          {"pair", pair},
                          {"special_tokens",
                           {{cls, {{"id", cls}, {"ids", {cls_id}}, {"tokens", {cls}}}},
                            {sep, {{"id", sep}, {"ids", {sep_id}}, {"tokens", {sep}}}}}}};
  tj["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}};
  id_of(unk, "unk");
  tj["model"] = {{"type", "WordPiece"}, {"unk_token", unk}, {"continuing_subword_prefix", "##"},
                 {"max_input_chars_per_word", 100}, {"vocab", vocab}};
  json cfg = config.is_object() ? config : json::object();
  if (!cfg.contains("tokenizer_class")) cfg["tokenizer_class"] = "BertTokenizer";
  return finish(tj, file.string(), cfg, smap);
}

std::shared_ptr<Tokenizer> load_gpt2_vocab(const std::filesystem::path& dir, const nlohmann::json& config,
                                           const nlohmann::json& smap) {
  const auto vfile = dir / "vocab.json", mfile = dir / "merges.txt";
  json vocab;
  try {
    vocab = json::parse(read_text(vfile));
  } catch (const json::exception& e) {  // syntax, or a number beyond double's range
    throw TokenizerError(vfile.string() + ": not valid JSON: " + e.what());
  }
  if (!vocab.is_object()) throw TokenizerError(vfile.string() + ": expected an object {token: id}");
  std::string mtext = read_text(mfile);
  json merges = json::array();
  size_t pos = 0;
  size_t lineno = 0;
  while (pos < mtext.size()) {
    size_t nl = mtext.find('\n', pos);
    std::string line = mtext.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? mtext.size() : nl + 1;
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    size_t sp = line.find(' ');
    if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
      throw TokenizerError(mfile.string() + ": line " + std::to_string(lineno) + ": expected two tokens separated by one space");
    merges.push_back(line);
  }
  const auto unk = special(config, smap, "unk_token", "<|endoftext|>");
  const auto bos = special(config, smap, "bos_token", "<|endoftext|>");
  const auto eos = special(config, smap, "eos_token", "<|endoftext|>");
  const auto pad = special(config, smap, "pad_token", std::nullopt);
  const bool add_prefix_space = cfg_bool(config, "add_prefix_space", false);
  const bool add_bos = cfg_bool(config, "add_bos_token", false);

  json tj;
  tj["version"] = "1.0";
  tj["truncation"] = nullptr;
  tj["padding"] = nullptr;
  json added = json::array();
  std::vector<std::string> seen;
  for (const auto& t : {unk, bos, eos, pad}) {
    if (!t || !vocab.contains(*t)) continue;
    if (std::find(seen.begin(), seen.end(), *t) != seen.end()) continue;
    seen.push_back(*t);
    added.push_back(added_token(*t, vocab[*t].get<uint32_t>()));
  }
  tj["added_tokens"] = added;
  tj["normalizer"] = nullptr;
  tj["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", true}, {"use_regex", true}};
  if (add_bos && bos && vocab.contains(*bos)) {
    auto st = [](const std::string& id, uint32_t type) { return json{{"SpecialToken", {{"id", id}, {"type_id", type}}}}; };
    auto sq = [](const char* id, uint32_t type) { return json{{"Sequence", {{"id", id}, {"type_id", type}}}}; };
    tj["post_processor"] = {{"type", "TemplateProcessing"},
                            {"single", json::array({st(*bos, 0), sq("A", 0)})},
                            {"pair", json::array({st(*bos, 0), sq("A", 0), sq("B", 1)})},
                            {"special_tokens", {{*bos, {{"id", *bos}, {"ids", {vocab[*bos]}}, {"tokens", {*bos}}}}}}};
  } else {
    tj["post_processor"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  }
  tj["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  tj["model"] = {{"type", "BPE"},       {"dropout", nullptr},  {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab},
                 {"merges", merges}};
  json cfg = config.is_object() ? config : json::object();
  if (!cfg.contains("tokenizer_class")) cfg["tokenizer_class"] = "GPT2Tokenizer";
  return finish(tj, vfile.string() + " + merges.txt", cfg, smap);
}

std::shared_ptr<Tokenizer> make_fast_tokenizer(const TokenizerFiles& files) {
  json config = json::parse(files.tokenizer_config.dump());
  json smap = json::parse(files.special_tokens_map.dump());
  std::error_code ec;
  if (std::filesystem::exists(files.dir / "tokenizer.json", ec)) return load_tokenizer_json(files.dir / "tokenizer.json", config, smap);
  if (std::filesystem::exists(files.dir / "vocab.txt", ec)) return load_bert_vocab(files.dir, config, smap);
  if (std::filesystem::exists(files.dir / "vocab.json", ec) && std::filesystem::exists(files.dir / "merges.txt", ec))
    return load_gpt2_vocab(files.dir, config, smap);
  throw FileNotFoundError(files.dir.string() + ": no tokenizer.json, vocab.txt or vocab.json + merges.txt");
}

}  // namespace plugformer
