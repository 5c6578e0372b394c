// Engine behaviour beyond the parity fixtures: bad inputs (typed errors), invalid UTF-8, empty
// strings, a 1 MB word, impossible truncation, padding / truncation options, added tokens,
// batch encoding, save_pretrained round trips and the slow vocabulary loaders.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "plugformer/error.h"
#include "tokenizers/fast_tokenizer.h"
#include "tokenizers/slow_vocab.h"

using nlohmann::json;
using namespace plugformer;

namespace {

const std::string kDir = std::string(PLUGFORMER_FIXTURES_DIR) + "/tokenizers";

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json tokenizer_json(const std::string& name) { return json::parse(read(kDir + "/" + name + "/tokenizer.json")); }

std::vector<std::string> corpus() {
  std::vector<std::string> out;
  std::ifstream in(kDir + "/corpus.jsonl");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line).get<std::string>());
  return out;
}

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / ("plugformer_tok_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Expects `fn` to throw TokenizerError whose message contains every needle.
template <typename Fn>
void expect_tokenizer_error(Fn&& fn, std::vector<std::string> needles) {
  try {
    fn();
    FAIL() << "expected TokenizerError";
  } catch (const TokenizerError& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << "message: " << e.what() << "\nmissing: " << n;
  }
}

std::shared_ptr<FastTokenizer> load(const std::string& name) { return FastTokenizer::from_file(kDir + "/" + name + "/tokenizer.json"); }

TEST(TokenizerBadInput, NotJson) {
  expect_tokenizer_error([] { FastTokenizer::from_json("{\"model\": [1, 2", "broken/tokenizer.json"); },
                         {"broken/tokenizer.json", "not valid JSON"});
  expect_tokenizer_error([] { FastTokenizer::from_json("[1, 2, 3]", "array.json"); }, {"array.json", "object"});
  TempDir d;
  std::ofstream(d.path / "tokenizer.json") << "this is not json";
  expect_tokenizer_error([&] { FastTokenizer::from_file(d.path / "tokenizer.json"); }, {(d.path / "tokenizer.json").string(), "not valid JSON"});
  EXPECT_THROW(FastTokenizer::from_file(d.path / "missing.json"), FileNotFoundError);
}

TEST(TokenizerBadInput, NumberBeyondDoubleRangeIsNotValidJson) {
  // fuzz/tokenizer_json's first crash: nlohmann's out_of_range (406) escaped as an untyped exception.
  expect_tokenizer_error([] { FastTokenizer::from_json("2e7777777", "huge.json"); }, {"huge.json", "not valid JSON"});
  expect_tokenizer_error([] { FastTokenizer::from_json(R"({"version": "1.0", "model": {"dropout": 1e999}})", "huge.json"); },
                         {"huge.json", "not valid JSON"});
  TempDir d;
  std::ofstream(d.path / "vocab.json") << R"({"a": 1e999})";
  std::ofstream(d.path / "merges.txt") << "#version: 0.2\n";
  expect_tokenizer_error([&] { load_gpt2_vocab(d.path, json::object()); }, {"vocab.json", "not valid JSON"});
}

TEST(TokenizerBadInput, FieldsOfAnUnexpectedJsonTypeAreTokenizerErrors) {
  // fuzz/tokenizer_json's second crash (a boolean dropout, no model type): nlohmann's type_error escaped.
  expect_tokenizer_error(
      [] {
        FastTokenizer::from_json(R"({"version":"1.0","model":{"null":"BPE","dropout":false,"vocab":{"H":0},"merges":[]}})",
                                 "fuzzed.json");
      },
      {"fuzzed.json"});
}

TEST(TokenizerBadInput, UnknownComponentTypeNamesTypeAndPath) {
  json j = tokenizer_json("bert-base-uncased");
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", json::array({{{"type", "WhitespaceSplit"}}, {{"type", "Bogus"}}})}};
  expect_tokenizer_error([&] { FastTokenizer::from_json(j.dump(), "t.json"); }, {"t.json", "pre_tokenizer.pretokenizers[1]", "'Bogus'"});
  j = tokenizer_json("bert-base-uncased");
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFX"}}})}};
  expect_tokenizer_error([&] { FastTokenizer::from_json(j.dump(), "t.json"); }, {"normalizer.normalizers[0]", "'NFX'"});
  j = tokenizer_json("bert-base-uncased");
  j["decoder"] = {{"type", "Telepathy"}};
  expect_tokenizer_error([&] { FastTokenizer::from_json(j.dump(), "t.json"); }, {"decoder", "'Telepathy'"});
  j = tokenizer_json("bert-base-uncased");
  j["post_processor"] = {{"type", "Nope"}};
  expect_tokenizer_error([&] { FastTokenizer::from_json(j.dump(), "t.json"); }, {"post_processor", "'Nope'"});
  j = tokenizer_json("bert-base-uncased");
  j["model"]["type"] = "Markov";
  expect_tokenizer_error([&] { FastTokenizer::from_json(j.dump(), "t.json"); }, {"model", "'Markov'"});
  j = tokenizer_json("bert-base-uncased");
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}, {"invert", false}};
  expect_tokenizer_error([&] { FastTokenizer::from_json(j.dump(), "t.json"); }, {"pre_tokenizer.pattern", "(unclosed"});
  j = tokenizer_json("bert-base-uncased");
  j["model"]["vocab"]["hello"] = "not a number";
  expect_tokenizer_error([&] { FastTokenizer::from_json(j.dump(), "t.json"); }, {"model.vocab[\"hello\"]", "integer"});
}

// Vocabularies whose ids are sparse load and work as the Rust tokenizers' (an id -> token map):
// an id near 2^32 among three tokens once made the id -> token table gigabytes long
// (fuzz_tokenizer_json, out of memory).
TEST(TokenizerBadInput, SparseVocabularyIdsCostTheirEntriesOnly) {
  auto tokenizer_with = [](json model) {
    return json{{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", json::array()},
                {"normalizer", nullptr}, {"pre_tokenizer", {{"type", "WhitespaceSplit"}}}, {"post_processor", nullptr},
                {"decoder", nullptr}, {"model", std::move(model)}};
  };
  const json vocab = {{"[UNK]", 0}, {"hello", 1}, {"world", 4000000000u}};
  const std::vector<json> models = {
      {{"type", "WordLevel"}, {"vocab", vocab}, {"unk_token", "[UNK]"}},
      {{"type", "WordPiece"}, {"vocab", vocab}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"},
       {"max_input_chars_per_word", 100}},
      {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}, {"unk_token", "[UNK]"}, {"ignore_merges", true}}};
  for (const auto& model : models) {
    SCOPED_TRACE(model["type"].get<std::string>());
    auto tokenizer = FastTokenizer::from_json(tokenizer_with(model).dump(), "sparse.json");
    EXPECT_EQ(tokenizer->encode("hello world", false).ids, (std::vector<int64_t>{1, 4000000000}));
    EXPECT_EQ(tokenizer->id_to_token(4000000000), "world");
    EXPECT_EQ(tokenizer->id_to_token(2), std::nullopt);
    EXPECT_EQ(tokenizer->token_to_id("world"), 4000000000);
  }
}

TEST(TokenizerBadInput, MergesWithUnknownTokens) {
  json j = tokenizer_json("gpt2");
  j["model"]["merges"] = json::array({"Ġ t", "zzqq Ġt"});
  expect_tokenizer_error([&] { FastTokenizer::from_json(j.dump(), "gpt2.json"); }, {"model.merges[1]", "`zzqq`", "not in the vocabulary"});
  j = tokenizer_json("llama2");  // merges as pairs
  j["model"]["merges"] = json::array({json::array({"▁", "t"}), json::array({"▁t", "nope-token"})});
  expect_tokenizer_error([&] { FastTokenizer::from_json(j.dump(), "llama2.json"); }, {"model.merges[1]", "`nope-token`"});
  j = tokenizer_json("gpt2");
  j["model"]["merges"] = json::array({"a b c"});
  expect_tokenizer_error([&] { FastTokenizer::from_json(j.dump(), "gpt2.json"); }, {"model.merges[0]", "two tokens"});
}

// Invalid UTF-8 is not an error: each maximal invalid sequence becomes U+FFFD (like Rust's
// String::from_utf8_lossy) and the offsets count code points of the repaired text.
TEST(TokenizerBadInput, InvalidUtf8IsReplacedNotFatal) {
  for (const char* name : {"gpt2", "bert-base-uncased", "t5-small", "llama3"}) {
    auto tok = load(name);
    const std::string bad = std::string("ab") + "\xff" + "\xe2\x82" + "cd" + "\xc3";
    const std::string repaired = "ab\xEF\xBF\xBD\xEF\xBF\xBD" "cd\xEF\xBF\xBD";
    Encoding e1, e2;
    ASSERT_NO_THROW(e1 = tok->encode(bad)) << name;
    e2 = tok->encode(repaired);
    EXPECT_EQ(e1.ids, e2.ids) << name;
    EXPECT_EQ(e1.offsets, e2.offsets) << name;
    EXPECT_FALSE(e1.ids.empty()) << name;
  }
}

TEST(TokenizerEdgeCases, EmptyStrings) {
  auto gpt2 = load("gpt2");
  EXPECT_TRUE(gpt2->encode("").ids.empty());
  EXPECT_EQ(gpt2->decode({}), "");
  auto bert = load("bert-base-uncased");
  Encoding e = bert->encode("");
  EXPECT_EQ(e.tokens, (std::vector<std::string>{"[CLS]", "[SEP]"}));
  EXPECT_EQ(e.special_tokens_mask, (std::vector<int64_t>{1, 1}));
  Encoding p = bert->encode_pair("", "");
  EXPECT_EQ(p.tokens, (std::vector<std::string>{"[CLS]", "[SEP]", "[SEP]"}));
  EXPECT_EQ(p.type_ids, (std::vector<int64_t>{0, 0, 1}));
  EXPECT_TRUE(bert->encode("", false).ids.empty());
  EXPECT_EQ(bert->decode({}, true), "");
  auto batch = bert->encode_batch({"", "a", ""});
  ASSERT_EQ(batch.size(), 3u);
  EXPECT_EQ(batch[0].ids.size(), 2u);
}

TEST(TokenizerEdgeCases, OneMegabyteWord) {
  const std::string word(1 << 20, 'a');
  auto bert = load("bert-base-uncased");
  Encoding e = bert->encode(word);
  ASSERT_EQ(e.tokens.size(), 3u);  // longer than max_input_chars_per_word -> [UNK]
  EXPECT_EQ(e.tokens[1], "[UNK]");
  EXPECT_EQ(e.offsets[1], (std::pair<size_t, size_t>{0, word.size()}));
  auto gpt2 = load("gpt2");
  Encoding g = gpt2->encode(word);
  ASSERT_FALSE(g.ids.empty());
  EXPECT_EQ(g.offsets.back().second, word.size());
  EXPECT_EQ(gpt2->decode(g.ids), word);
  std::string mixed;
  for (int i = 0; i < (1 << 18); ++i) mixed += "x\xC3\xA9z";  // 1 MB, two-byte chars inside
  auto t5 = load("t5-small");
  Encoding t = t5->encode(mixed, false);
  ASSERT_FALSE(t.ids.empty());
  EXPECT_EQ(t.offsets.back().second, 3u * (1u << 18));  // code points, not bytes
}

TEST(TokenizerEdgeCases, MaxLengthSmallerThanSpecialTokens) {
  auto bert = load("bert-base-uncased");
  TruncationParams t;
  t.max_length = 1;  // [CLS] + [SEP] need 2
  bert->set_truncation(t);
  expect_tokenizer_error([&] { bert->encode("hello world"); }, {"max_length 1", "2 special tokens"});
  expect_tokenizer_error([&] { bert->encode_pair("hello", "world"); }, {"max_length 1", "3 special tokens"});
  Encoding e = bert->encode("hello world", false);  // no specials: plain truncation works
  EXPECT_EQ(e.ids.size(), 1u);
  ASSERT_EQ(e.overflowing.size(), 1u);
  t.max_length = 4;
  t.stride = 4;
  expect_tokenizer_error([&] { bert->set_truncation(t); }, {"stride"});
}

TEST(TokenizerOptions, TruncationStridePaddingLeftFixed) {
  auto bert = load("bert-base-uncased");
  TruncationParams t;
  t.max_length = 6;
  t.stride = 1;
  bert->set_truncation(t);
  Encoding e = bert->encode("one two three four five six seven");
  EXPECT_EQ(e.tokens, (std::vector<std::string>{"[CLS]", "one", "two", "three", "four", "[SEP]"}));
  // 7 words, 4 per window (6 - 2 specials), stride 1: windows [0,4) and [3,7).
  ASSERT_EQ(e.overflowing.size(), 1u);
  EXPECT_EQ(e.overflowing[0].tokens, (std::vector<std::string>{"[CLS]", "four", "five", "six", "seven", "[SEP]"}));
  bert->set_truncation(std::nullopt);
  PaddingParams p;
  p.length = 8;
  p.direction = Side::Left;
  bert->set_padding(p);
  Encoding padded = bert->encode("hi there");
  EXPECT_EQ(padded.tokens, (std::vector<std::string>{"[PAD]", "[PAD]", "[PAD]", "[PAD]", "[CLS]", "hi", "there", "[SEP]"}));
  EXPECT_EQ(padded.attention_mask, (std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1}));
  p.length.reset();
  p.direction = Side::Right;
  p.pad_to_multiple_of = 4;
  bert->set_padding(p);
  auto batch = bert->encode_batch({"a", "a b c d e"});
  EXPECT_EQ(batch[0].ids.size(), 8u);  // longest is 7 -> 8
  EXPECT_EQ(batch[1].ids.size(), 8u);
  EXPECT_EQ(batch[0].special_tokens_mask.back(), 1);
}

TEST(TokenizerOptions, AddTokensAndSpecialTokens) {
  auto bert = load("bert-base-uncased");
  const size_t before = bert->vocab_size();
  EXPECT_EQ(bert->add_tokens({AddedToken{"plugformerish"}}), 1u);
  EXPECT_EQ(bert->vocab_size(), before + 1);
  Encoding e = bert->encode("say plugformerish now");
  EXPECT_EQ(e.tokens, (std::vector<std::string>{"[CLS]", "say", "plugformerish", "now", "[SEP]"}));
  EXPECT_EQ(e.ids[2], static_cast<int64_t>(before));
  EXPECT_EQ(bert->add_tokens({AddedToken{"plugformerish"}}), 0u);  // already there
  AddedToken sp{"<|tool|>"};
  EXPECT_EQ(bert->add_special_tokens({sp}), 1u);
  Encoding s = bert->encode("a<|tool|>b");
  EXPECT_EQ(s.tokens, (std::vector<std::string>{"[CLS]", "a", "<|tool|>", "b", "[SEP]"}));
  EXPECT_EQ(bert->decode(s.ids, true), "a b");
  EXPECT_EQ(bert->decode(s.ids, false), "[CLS] a <|tool|> b [SEP]");
  EXPECT_EQ(bert->token_to_id("<|tool|>"), static_cast<int64_t>(before + 1));
  EXPECT_EQ(bert->id_to_token(static_cast<int64_t>(before + 1)), "<|tool|>");
}

TEST(TokenizerBatch, MultiThreadedBatchEqualsSequential) {
  auto texts = corpus();
  for (const char* name : {"gpt2", "t5-small", "llama3"}) {
    auto tok = load(name);
    tok->num_threads = 4;
    auto batch = tok->encode_batch(texts);
    ASSERT_EQ(batch.size(), texts.size());
    std::vector<std::vector<int64_t>> ids;
    for (size_t i = 0; i < texts.size(); ++i) {
      Encoding e = tok->encode(texts[i]);
      ASSERT_EQ(batch[i].ids, e.ids) << name << " text " << i;
      ASSERT_EQ(batch[i].offsets, e.offsets) << name << " text " << i;
      ids.push_back(e.ids);
    }
    auto decoded = tok->batch_decode(ids, true);
    for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ(decoded[i], tok->decode(ids[i], true));
  }
}

TEST(TokenizerSave, SavePretrainedRoundTrip) {
  auto texts = corpus();
  for (const char* name : {"gpt2", "llama2", "t5-small", "all-minilm-l6-v2"}) {
    auto tok = load(name);
    tok->add_tokens({AddedToken{"zebracorn"}});
    tok->apply_tokenizer_config(json{{"model_max_length", 512}, {"eos_token", "</s>"}, {"chat_template", "{{ x }}"}});
    TempDir d;
    tok->save_pretrained(d.path);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
      ASSERT_TRUE(std::filesystem::exists(d.path / f)) << f;
    auto cfg = json::parse(read((d.path / "tokenizer_config.json").string()));
    EXPECT_EQ(cfg["model_max_length"], 512);
    // The chat template moves to chat_template.jinja, as transformers' save_pretrained does.
    EXPECT_FALSE(cfg.contains("chat_template"));
    EXPECT_EQ(read((d.path / "chat_template.jinja").string()), "{{ x }}");
    EXPECT_EQ(json::parse(read((d.path / "special_tokens_map.json").string()))["eos_token"], "</s>");
    EXPECT_FALSE(std::filesystem::exists(d.path / "tokenizer.json.tmp"));
    auto again = load_tokenizer_json(d.path / "tokenizer.json", cfg);
    EXPECT_EQ(again->model_max_length, 512);
    for (const auto& t : texts) {
      const std::string s = t + " zebracorn";
      ASSERT_EQ(again->encode(s).ids, tok->encode(s).ids) << name << ": " << s;
    }
    EXPECT_EQ(again->padding().has_value(), tok->padding().has_value());
    EXPECT_EQ(again->truncation().has_value(), tok->truncation().has_value());
  }
}

// vocab.txt and vocab.json + merges.txt written from the fixtures' tokenizer.json must give the
// same encodings as the tokenizer.json itself (transformers' slow->fast conversion).
TEST(TokenizerSlowVocab, BertVocabTxtMatchesTokenizerJson) {
  json j = tokenizer_json("bert-base-uncased");
  std::vector<std::string> by_id(j["model"]["vocab"].size());
  for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end(); ++it) by_id[it.value().get<size_t>()] = it.key();
  TempDir d;
  {
    std::ofstream out(d.path / "vocab.txt");
    for (const auto& t : by_id) out << t << "\n";
  }
  auto slow = load_bert_vocab(d.path, json{{"do_lower_case", true}});
  auto fast = load("bert-base-uncased");
  for (const auto& t : corpus()) {
    Encoding a = slow->encode(t), b = fast->encode(t);
    ASSERT_EQ(a.ids, b.ids) << t;
    ASSERT_EQ(a.offsets, b.offsets) << t;
    ASSERT_EQ(slow->decode(a.ids, true), fast->decode(b.ids, true)) << t;
    Encoding pa = slow->encode_pair(t, "second part"), pb = fast->encode_pair(t, "second part");
    ASSERT_EQ(pa.ids, pb.ids) << t;
    ASSERT_EQ(pa.type_ids, pb.type_ids) << t;
  }
  EXPECT_THROW(load_bert_vocab(d.path / "nowhere", json::object()), FileNotFoundError);
}

// MPNet's vocab.txt converts like BERT's except for pairs: <s> A </s></s> B </s> (MPNetConverter).
TEST(TokenizerSlowVocab, MPNetVocabTxtPutsTwoSeparatorsBetweenPairs) {
  TempDir d;
  {
    std::ofstream out(d.path / "vocab.txt");
    for (const char* t : {"<s>", "<pad>", "</s>", "<unk>", "<mask>", "hello", "world"}) out << t << "\n";
  }
  const json config = {{"tokenizer_class", "MPNetTokenizer"}, {"cls_token", "<s>"}, {"sep_token", "</s>"},
                       {"unk_token", "<unk>"}, {"pad_token", "<pad>"}, {"mask_token", "<mask>"}};
  auto tok = load_bert_vocab(d.path, config);
  EXPECT_EQ(tok->encode("hello").ids, (std::vector<int64_t>{0, 5, 2}));
  const Encoding pair = tok->encode_pair("hello", "world");
  EXPECT_EQ(pair.ids, (std::vector<int64_t>{0, 5, 2, 2, 6, 2}));
  EXPECT_EQ(pair.type_ids, (std::vector<int64_t>{0, 0, 0, 0, 1, 1}));
}

TEST(TokenizerSlowVocab, Gpt2VocabJsonMergesTxtMatchesTokenizerJson) {
  json j = tokenizer_json("gpt2");
  TempDir d;
  std::ofstream(d.path / "vocab.json") << j["model"]["vocab"].dump();
  {
    std::ofstream out(d.path / "merges.txt");
    out << "#version: 0.2\n";
    for (const auto& m : j["model"]["merges"]) out << (m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>()) << "\n";
  }
  auto slow = load_gpt2_vocab(d.path, json::object());
  auto fast = load("gpt2");
  for (const auto& t : corpus()) {
    Encoding a = slow->encode(t), b = fast->encode(t);
    ASSERT_EQ(a.ids, b.ids) << t;
    ASSERT_EQ(a.offsets, b.offsets) << t;
    ASSERT_EQ(slow->decode(a.ids), fast->decode(b.ids)) << t;
  }
  TokenizerFiles files;
  files.dir = d.path;
  auto viaFiles = make_fast_tokenizer(files);
  EXPECT_EQ(viaFiles->encode("Hello world").ids, fast->encode("Hello world").ids);
  std::ofstream(d.path / "merges.txt", std::ios::app) << "Ġ t extra\n";
  expect_tokenizer_error([&] { load_gpt2_vocab(d.path, json::object()); }, {"merges.txt", "two tokens"});
}

TEST(TokenizerConfig, SpecialTokensFromConfig) {
  auto tok = std::dynamic_pointer_cast<FastTokenizer>(load_tokenizer_json(
      kDir + "/llama2/tokenizer.json", json::parse(read(kDir + "/llama2/tokenizer_config.json"))));
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->bos_token_id(), 1);
  EXPECT_EQ(tok->eos_token_id(), 2);
  EXPECT_EQ(tok->unk_token_id(), 0);
  EXPECT_EQ(tok->padding_side, json::parse(read(kDir + "/llama2/tokenizer_config.json")).value("padding_side", "right"));
}

// LlamaTokenizerFast rebuilds its post-processor from add_bos_token / add_eos_token.
TEST(TokenizerConfig, LlamaAddBosEosTokens) {
  const json cfg = json::parse(read(kDir + "/llama2/tokenizer_config.json"));
  auto plain = load("llama2");
  auto same = load_tokenizer_json(kDir + "/llama2/tokenizer.json", cfg);  // add_bos true, add_eos false
  for (const auto& t : corpus()) {
    ASSERT_EQ(same->encode(t).ids, plain->encode(t).ids) << t;
    ASSERT_EQ(same->encode_pair(t, "x y").ids, plain->encode_pair(t, "x y").ids) << t;
  }
  json eos_cfg = cfg;
  eos_cfg["add_eos_token"] = true;
  eos_cfg["add_bos_token"] = false;
  auto eos = std::dynamic_pointer_cast<FastTokenizer>(load_tokenizer_json(kDir + "/llama2/tokenizer.json", eos_cfg));
  Encoding e = eos->encode("Hello");
  ASSERT_GE(e.ids.size(), 2u);
  EXPECT_NE(e.ids.front(), 1);
  EXPECT_EQ(e.ids.back(), 2);
  EXPECT_EQ(e.special_tokens_mask.back(), 1);
  Encoding p = eos->encode_pair("Hello", "there");
  EXPECT_EQ(p.ids.back(), 2);
  EXPECT_EQ(p.type_ids.back(), 1);
  TempDir d;
  eos->save_pretrained(d.path);
  auto reloaded = FastTokenizer::from_file(d.path / "tokenizer.json");
  EXPECT_EQ(reloaded->encode("Hello").ids, e.ids);
  json no_eos = cfg;
  no_eos["add_eos_token"] = true;
  no_eos.erase("eos_token");
  EXPECT_THROW(load_tokenizer_json(kDir + "/llama2/tokenizer.json", no_eos), TokenizerError);
}

}  // namespace
