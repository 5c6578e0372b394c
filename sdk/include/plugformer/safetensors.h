// safetensors files: read by mmap with zero copies (tensors are views into the mapping, which
// lives as long as any of them), strict header validation, and an atomic writer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace plugformer {

struct TensorInfo {
  std::string dtype;  // as written: "F32", "BF16", ...
  c10::ScalarType scalar_type;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

class SafetensorsFile {
 public:
  // Maps and validates the file; CheckpointError (naming the file and the fault) otherwise.
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& file);
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  const std::vector<std::string>& keys() const { return keys_; }  // in file order
  bool contains(const std::string& name) const { return infos_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // A view into the mapping (copy-on-write: writing to it never changes the file).
  at::Tensor get(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  std::shared_ptr<void> mapping_;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::vector<std::string> keys_;
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any device / layout; stored contiguous on CPU) to `file` through a temp file
// and a rename. Names must be unique; metadata goes to "__metadata__".
void save_safetensors(const std::filesystem::path& file,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// safetensors dtype name <-> libtorch scalar type.
std::string safetensors_dtype_name(c10::ScalarType type);

}  // namespace plugformer
