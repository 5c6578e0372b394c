// Real tokenizers (tests/fixtures/tokenizers: BPE, byte-level BPE, WordPiece, Unigram, byte
// fallback) on fuzzed text: the first byte picks the tokenizer, the rest is the text (any bytes,
// invalid UTF-8 included). Encodes it alone and as a pair, decodes the ids, and decodes the input's
// bytes read as ids.
#include <algorithm>
#include <filesystem>
#include <vector>

#include "tokenizers/fast_tokenizer.h"

#include "fuzz_target.h"

namespace {

std::vector<std::shared_ptr<plugformer::FastTokenizer>>& tokenizers() {
  static std::vector<std::shared_ptr<plugformer::FastTokenizer>> all = [] {
    std::vector<std::shared_ptr<plugformer::FastTokenizer>> out;
    for (const char* name : {"gpt2", "llama2", "bert-base-uncased", "t5-small", "llama3", "clip", "falcon", "phi-3-mini"}) {
      const std::filesystem::path file = std::string(PLUGFORMER_FIXTURES_DIR) + "/tokenizers/" + name + "/tokenizer.json";
      if (std::filesystem::exists(file)) out.push_back(plugformer::FastTokenizer::from_file(file));
    }
    return out;
  }();
  return all;
}

}  // namespace

// Loaded before fuzzing starts, so no input is charged for it.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tokenizers();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || tokenizers().empty()) return 0;
  const auto& tokenizer = tokenizers()[data[0] % tokenizers().size()];
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  return run_fuzz_input([&] {
    const auto encoding = tokenizer->encode(text, (data[0] & 0x80) != 0);
    tokenizer->decode(encoding.ids, false);
    tokenizer->decode(encoding.ids, true);
    tokenizer->encode_pair(text.substr(0, text.size() / 2), text.substr(text.size() / 2), true);
    std::vector<int64_t> ids;  // the bytes as ids, some beyond the vocabulary
    for (size_t i = 1; i + 1 < size; i += 2) ids.push_back(int64_t(data[i]) << 8 | data[i + 1]);
    tokenizer->decode(ids, false);
  });
}
