// Any bytes as a PEFT adapter_config.json (LoRA, prompt tuning, prefix tuning): parsed and checked,
// then written as save_pretrained writes it, which must parse again to the same JSON.
#include <plugformer/peft.h>

#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace plugformer;
  const std::string file = fuzz_input_file(data, size, "adapter_config.json");
  return run_fuzz_input([&] {
    const PeftConfig config = PeftConfig::from_json(read_json_file(file), file);
    if (config.peft_type == "LORA") config.scaling();
    const json saved = config.to_json();
    try {
      if (PeftConfig::from_json(saved, "saved adapter_config.json").to_json() != saved)
        fuzz_bug("adapter_config.json saves differently once reloaded");
    } catch (const Error& e) {
      fuzz_bug(std::string("adapter_config.json does not load from its own save: ") + e.what());
    }
  });
}
