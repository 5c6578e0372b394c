// DecodeStream: the streamed text equals the decode of the whole sequence minus the decode of the
// prompt, for every split of a text into prompt and generated tokens, on every tokenizer kind in
// tests/fixtures (SentencePiece with and without legacy behaviour, Metaspace tokenizer.json,
// byte-level BPE, WordPiece, Unigram).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <plugformer/auto.h>
#include <plugformer/tokenizer.h>

using namespace plugformer;

namespace {

const std::string kStoriesDir = std::string(PLUGFORMER_SOURCE_DIR) + "/models/stories260K";
const std::string kTokenizers = std::string(PLUGFORMER_FIXTURES_DIR) + "/tokenizers/";

// Prompts end inside a word, at a word boundary, after punctuation, after a newline and inside
// multi-byte characters split across byte tokens, as the split point walks through these texts.
const std::vector<std::string> kTexts = {
    "Once upon a time, there was a little girl. She said: \"Hello!\"\nThen she went home.",
    "Les élèves ont mangé des crêpes à Noël. 日本語のテキスト 🙂 ok",
    "don't stop , it's fine . end  with   spaces\n\n  indented",
};

bool ends_incomplete(const std::string& text) { return text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0; }

// decode(full) minus decode(prompt), where a prompt ending inside a character leaves that
// character to the continuation: the prompt's text is that of its longest prefix that does not
// end in U+FFFD (a byte-fallback decoder turns the whole run of byte tokens of an incomplete
// character into U+FFFD, complete characters before it included). Where the full decode changes
// the prompt's text (clean_up_tokenization_spaces joins a trailing space to punctuation), the
// continuation starts where the two differ.
std::string expected_continuation(const Tokenizer& tokenizer, std::vector<int64_t> prompt, const std::vector<int64_t>& full) {
  const std::string whole = tokenizer.decode(full, true);
  std::string head = tokenizer.decode(prompt, true);
  while (!prompt.empty() && ends_incomplete(head)) {
    prompt.pop_back();
    head = tokenizer.decode(prompt, true);
  }
  size_t common = 0;
  while (common < head.size() && common < whole.size() && head[common] == whole[common]) ++common;
  if (common < head.size())  // only a trailing space may change
    EXPECT_EQ(head.find_first_not_of(' ', common), std::string::npos) << "'" << head << "' / '" << whole << "'";
  return whole.substr(common);
}

void check_every_split(const std::shared_ptr<const Tokenizer>& tokenizer, const std::string& name) {
  for (const std::string& text : kTexts) {
    const std::vector<int64_t> ids = tokenizer->encode(text).ids;
    ASSERT_GT(ids.size(), 4u) << name;
    for (size_t split = 0; split < ids.size(); ++split) {
      const std::vector<int64_t> prompt(ids.begin(), ids.begin() + std::ptrdiff_t(split));
      DecodeStream stream(tokenizer, prompt);
      std::string streamed;
      for (size_t i = split; i < ids.size(); ++i) {
        const std::string piece = stream.step(ids[i]);
        EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << name << ": a piece with an incomplete character";
        streamed += piece;
      }
      streamed += stream.finish();
      EXPECT_EQ(streamed, expected_continuation(*tokenizer, prompt, ids))
          << name << ", prompt of " << split << " tokens of '" << text << "'";
    }
  }
}

std::filesystem::path copy_with_config(const std::string& from, const std::string& name, const json& overrides) {
  const auto dir = std::filesystem::temp_directory_path() / ("decode-stream-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (const auto& entry : std::filesystem::directory_iterator(from))
    if (entry.is_regular_file()) std::filesystem::copy_file(entry.path(), dir / entry.path().filename(),
                                                             std::filesystem::copy_options::overwrite_existing);
  json config = json::parse(std::ifstream(dir / "tokenizer_config.json"));
  config.update(overrides);
  std::ofstream(dir / "tokenizer_config.json") << config.dump(1);
  return dir;
}

}  // namespace

TEST(DecodeStream, SentencePieceLegacyAndNot) {
  check_every_split(AutoTokenizer::from_pretrained(kStoriesDir, {}, /*use_fast=*/false), "stories260K slow, legacy");
  const auto dir = copy_with_config(kStoriesDir, "non-legacy", {{"legacy", false}});
  check_every_split(AutoTokenizer::from_pretrained(dir.string(), {}, /*use_fast=*/false), "stories260K slow, legacy=false");
  std::filesystem::remove_all(dir);
}

TEST(DecodeStream, TokenizerJsonOfEveryKind) {
  check_every_split(AutoTokenizer::from_pretrained(kStoriesDir), "stories260K tokenizer.json (Metaspace)");
  for (const char* name : {"llama2", "phi-3-mini", "gpt2", "llama3", "roberta-base", "bert-base-uncased", "bert-base-cased",
                           "t5-small"})
    check_every_split(AutoTokenizer::from_pretrained(kTokenizers + name), name);
}

// The CLI streams through it: a prompt ending before a word keeps the space (issue: "Once upon atime").
TEST(DecodeStream, KeepsTheSpaceAfterThePrompt) {
  auto tokenizer = AutoTokenizer::from_pretrained(kStoriesDir);
  DecodeStream stream(tokenizer, {1, 403, 407, 261});  // <s> Once upon a
  EXPECT_EQ(stream.step(378), " time");
}
