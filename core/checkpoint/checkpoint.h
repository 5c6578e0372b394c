// Finding and reading a model's weight files the way transformers does.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
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

// A sharded checkpoint's index (model.safetensors.index.json, pytorch_model.bin.index.json):
// weight name -> shard file. CheckpointError naming the file when weight_map is missing, an entry
// is not a string or names a path outside the model folder.
std::map<std::string, std::string> read_index(const std::filesystem::path& index_file);

// pytorch_model.bin (torch.save zip format): checked by check_torch_bin, then read by libtorch's
// pickle loader.
std::map<std::string, at::Tensor> load_torch_bin(const std::filesystem::path& file);
// The same from the file's bytes; `name` names the file in errors.
std::map<std::string, at::Tensor> read_torch_bin(const std::vector<char>& bytes, const std::string& name);

// libtorch 1.13's loader trusts its input (a hostile file can crash it), so a file reaches it only
// as torch.save writes state dicts: a ZIP archive of stored entries in one folder (data.pkl,
// version, data/<key>), and a protocol-2 pickle of {name: tensor} using only torch.save's opcodes
// and globals, whose tensors lie inside their storages and whose storages inside their entries.
// CheckpointError naming `name` and the problem otherwise.
void check_torch_bin(std::string_view bytes, const std::string& name);

}  // namespace plugformer
