// Any bytes as pytorch_model.bin: checked (ZIP structure, pickle opcodes and globals, storages and
// tensors within bounds) and, only when the check passes, read by libtorch's pickle loader. Every
// tensor's reach is compared with its storage and the storage's bytes read by instrumented code,
// so a file the check let through that libtorch reads out of bounds shows up.
#include <ATen/ATen.h>

#include "checkpoint/checkpoint.h"

#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<char> bytes(data, data + size);
  return run_fuzz_input([&] {
    for (const auto& [name, t] : plugformer::read_torch_bin(bytes, "pytorch_model.bin")) {
      int64_t last = t.storage_offset();
      for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
      const int64_t nbytes = int64_t(t.storage().nbytes());
      if (t.numel() > 0 && (last + 1) * int64_t(t.element_size()) > nbytes)
        fuzz_bug("tensor '" + name + "' reaches past its storage of " + std::to_string(nbytes) + " bytes");
      const auto* storage = static_cast<const volatile uint8_t*>(t.storage().data());
      unsigned sum = 0;
      for (int64_t i = 0; i < nbytes; ++i) sum += storage[i];
      if (t.numel() > 0) t.to(at::kDouble).sum();
    }
  });
}
