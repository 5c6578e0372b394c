// Any bytes as a sharded checkpoint's index (model.safetensors.index.json): weight_map read, every
// shard name checked to stay inside the model folder.
#include "checkpoint/checkpoint.h"

#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string file = fuzz_input_file(data, size, "model.safetensors.index.json");
  return run_fuzz_input([&] { plugformer::read_index(file); });
}
