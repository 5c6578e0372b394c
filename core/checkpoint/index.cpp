// A sharded checkpoint's index (checkpoint.h). Apart from checkpoint.cpp so the parser builds
// without the Hub and the loaders (fuzz/sharded_index).
#include "checkpoint/checkpoint.h"

#include "plugformer/config.h"
#include "plugformer/error.h"

namespace plugformer {

std::map<std::string, std::string> read_index(const std::filesystem::path& index_file) {
  const json index = read_json_file(index_file);
  auto it = index.find("weight_map");
  if (it == index.end() || !it->is_object())
    throw CheckpointError(index_file.string() + ": missing 'weight_map' object");
  std::map<std::string, std::string> map;
  for (const auto& [name, file] : it->items()) {
    if (!file.is_string()) throw CheckpointError(index_file.string() + ": weight_map." + name + " must be a file name");
    const std::string f = file.get<std::string>();
    if (f.empty() || f.find("..") != std::string::npos || f.front() == '/' || f.find('\\') != std::string::npos)
      throw CheckpointError(index_file.string() + ": weight_map." + name + " names an unsafe path '" + f + "'");
    map[name] = f;
  }
  return map;
}

}  // namespace plugformer
