// Finding and reading a model's weight files the way transformers does.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "plugformer/auto.h"
#include "plugformer/safetensors.h"

namespace plugformer {

struct Checkpoint {
  std::map<std::string, at::Tensor> tensors;
  std::vector<std::shared_ptr<SafetensorsFile>> files;  // keep the mappings of zero-copy tensors
  std::string source;                                    // file name(s) for messages
};

// model[.variant].safetensors, its sharded index, then pytorch_model[.variant].bin and its
// index, as use_safetensors allows.
Checkpoint load_checkpoint(const std::string& path_or_repo_id, const PretrainedOptions& options);

// Drops this process's pages of a tensor read from a safetensors mapping once it was copied
// (a tensor-parallel rank's slices): later reads fault the file in again, and other memory is left
// alone. Whole pages inside the tensor only.
void release_mapped_pages(const at::Tensor& tensor);

// pytorch_model.bin (torch.save zip format) through libtorch's pickle loader.
std::map<std::string, at::Tensor> load_torch_bin(const std::filesystem::path& file);

}  // namespace plugformer
