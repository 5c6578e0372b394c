// Any tokenizer.json: loaded, then used to encode (single, pair, with and without special tokens)
// and decode what it produced.
#include "tokenizers/fast_tokenizer.h"

#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return run_fuzz_input([&] {
    auto tokenizer = plugformer::FastTokenizer::from_json(std::string(reinterpret_cast<const char*>(data), size));
    for (const char* text : {"Hello, world! 12 héllo\xF0\x9F\x98\x80 <s>", "", "  a\tb\n"}) {
      const auto encoding = tokenizer->encode(text, true);
      tokenizer->decode(encoding.ids, false);
      tokenizer->decode(encoding.ids, true);
    }
    tokenizer->encode_pair("first part", "second", true);
  });
}
