// The tokenize / detokenize CLI subcommands (cli/tokenize_commands.cpp), driven through CLI11
// with the tokenizer loaded from the fixtures.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "plugformer/error.h"
#include "tokenizers/fast_tokenizer.h"

void add_tokenize_commands(CLI::App& app, std::function<std::shared_ptr<plugformer::Tokenizer>(const std::string& dir)> load);

namespace {

const std::string kDir = std::string(PLUGFORMER_FIXTURES_DIR) + "/tokenizers";

std::string run(std::vector<std::string> args) {
  CLI::App app{"test"};
  add_tokenize_commands(app, [](const std::string& dir) { return plugformer::FastTokenizer::from_file(dir + "/tokenizer.json"); });
  std::vector<const char*> argv{"plugformer"};
  for (auto& a : args) argv.push_back(a.c_str());
  std::ostringstream captured;
  auto* old = std::cout.rdbuf(captured.rdbuf());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (...) {
    std::cout.rdbuf(old);
    throw;
  }
  std::cout.rdbuf(old);
  return captured.str();
}

TEST(TokenizeCli, HumanReadable) {
  std::string out = run({"tokenize", kDir + "/bert-base-uncased", "Hello, world!"});
  EXPECT_NE(out.find("101\t\"[CLS]\""), std::string::npos) << out;
  EXPECT_NE(out.find("7592\t\"hello\"\t[0, 5)"), std::string::npos) << out;
}

TEST(TokenizeCli, JsonlFromFile) {
  auto path = std::filesystem::temp_directory_path() / "plugformer_cli_tokenize_input.jsonl";
  {
    std::ofstream f(path);
    f << "\"Hello world\"\n" << "\"caf\\u00e9 \\ud83d\\udc4d\\n\"\n";
  }
  std::string out = run({"tokenize", kDir + "/gpt2", "--input", path.string(), "--jsonl"});
  std::istringstream lines(out);
  std::string l1, l2;
  std::getline(lines, l1);
  std::getline(lines, l2);
  auto j1 = nlohmann::json::parse(l1), j2 = nlohmann::json::parse(l2);
  EXPECT_EQ(j1["ids"], nlohmann::json({15496, 995}));
  EXPECT_EQ(j1["offsets"], nlohmann::json::parse("[[0,5],[5,11]]"));
  for (const char* k : {"tokens", "attention_mask", "special_tokens_mask", "type_ids"}) EXPECT_TRUE(j1.contains(k)) << k;
  // Offsets count code points: "café 👍\n" is 7 code points.
  EXPECT_EQ(j2["offsets"].back()[1], 7);
  std::string nospecial = run({"tokenize", kDir + "/bert-base-uncased", "--input", path.string(), "--jsonl", "--no-special-tokens"});
  EXPECT_EQ(nlohmann::json::parse(nospecial.substr(0, nospecial.find('\n')))["ids"], nlohmann::json({7592, 2088}));
  {
    std::ofstream f(path);
    f << "not a json string\n";
  }
  EXPECT_THROW(run({"tokenize", kDir + "/gpt2", "--input", path.string(), "--jsonl"}), plugformer::InvalidInputError);
  std::filesystem::remove(path);
}

TEST(TokenizeCli, Detokenize) {
  EXPECT_EQ(run({"detokenize", kDir + "/bert-base-uncased", "--ids", "101,7592,2088,102"}), "[CLS] hello world [SEP]\n");
  EXPECT_EQ(run({"detokenize", kDir + "/bert-base-uncased", "--ids", "101,7592,2088,102", "--skip-special-tokens"}), "hello world\n");
  EXPECT_EQ(run({"detokenize", kDir + "/gpt2", "--ids", "15496,995"}), "Hello world\n");
  EXPECT_THROW(run({"detokenize", kDir + "/gpt2", "--ids", "1,x"}), plugformer::InvalidInputError);
}

}  // namespace
