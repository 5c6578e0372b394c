// Helpers shared by the core tests.
#pragma once

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

namespace plugformer::test {

inline const std::string kStories = std::string(PLUGFORMER_SOURCE_DIR) + "/models/stories260K";

// A fresh empty directory under the build tree, removed by the destructor.
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_(std::filesystem::path(PLUGFORMER_BINARY_DIR) / "test_tmp" / (name + "-" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::filesystem::path& file, const std::string& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// A copy of a model directory that a test may change.
inline void copy_model(const std::string& from, const std::filesystem::path& to) {
  std::filesystem::create_directories(to);
  for (const auto& e : std::filesystem::directory_iterator(from))
    std::filesystem::copy_file(e.path(), to / e.path().filename(), std::filesystem::copy_options::overwrite_existing);
}

// Runs the built `plugformer` command with `args` (stderr folded into the output); `env` is put in
// front of the command line (VAR=value ...).
// A small WordPiece tokenizer for the tiny encoder fixtures (special tokens, letters with ##
// continuations and a few words: fewer rows than the smallest fixture's embedding): vocab.txt and a
// BertTokenizer tokenizer_config.json in `dir`.
inline void write_wordpiece_tokenizer(const std::filesystem::path& dir) {
  std::ofstream vocab(dir / "vocab.txt");
  for (const char* t : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ","}) vocab << t << "\n";
  for (char c = 'a'; c <= 'z'; ++c) vocab << c << "\n";
  for (char c = 'a'; c <= 'z'; ++c) vocab << "##" << c << "\n";
  for (const char* w : {"the", "cat", "sat", "on", "mat", "john", "lives", "in", "berlin", "where", "does", "live",
                        "paris", "is", "capital", "of", "france", "what"})
    vocab << w << "\n";
  write_file(dir / "tokenizer_config.json",
             R"({"tokenizer_class": "BertTokenizer", "do_lower_case": true, "unk_token": "[UNK]", "sep_token": "[SEP]",)"
             R"( "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"})");
}

struct CliResult {
  int status;
  std::string out;
};
inline CliResult run_cli(const std::string& args, const std::string& env = "") {
  const std::string cmd = env + std::string(PLUGFORMER_BINARY_DIR) + "/bin/plugformer " + args + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  const int status = ::pclose(pipe);
  return {WEXITSTATUS(status), out};
}

}  // namespace plugformer::test
