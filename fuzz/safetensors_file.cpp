// Any bytes as a .safetensors file: opened (header length, JSON header, dtypes, shapes, offsets,
// metadata validated), then every tensor read in full, so a header that passed validation but
// points outside the file shows up under AddressSanitizer.
#include <ATen/ATen.h>

#include <plugformer/safetensors.h>

#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz_input_file(data, size, "model.safetensors");
  return run_fuzz_input([&] {
    auto file = plugformer::SafetensorsFile::open(path);
    for (const auto& key : file->keys()) {
      const at::Tensor t = file->get(key);
      if (t.numel() > 0) t.to(at::kDouble).sum();
    }
  });
}
