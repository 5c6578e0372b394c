// Any bytes as generation_config.json over a model config's defaults, as from_pretrained reads it:
// types and values checked, then what save_pretrained writes must read again to the same JSON.
#include <plugformer/generation.h>

#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace plugformer;
  const std::string file = fuzz_input_file(data, size, "generation_config.json");
  return run_fuzz_input([&] {
    GenerationConfig config = GenerationConfig::from_model_config(PretrainedConfig());
    config.update_from_json(read_json_file(file), file);
    const json saved = config.to_json();
    GenerationConfig again;
    try {
      again.update_from_json(saved, "saved generation_config.json");
    } catch (const Error& e) {
      fuzz_bug(std::string("generation_config.json does not load from its own save: ") + e.what());
    }
    if (again.to_json() != saved) fuzz_bug("generation_config.json saves differently once reloaded");
  });
}
