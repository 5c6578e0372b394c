#include "checkpoint/checkpoint.h"

#include <set>

#include "plugformer/error.h"

namespace plugformer {

namespace {

std::string add_variant(const std::string& name, const std::string& variant) {
  if (variant.empty()) return name;
  const auto dot = name.rfind('.');
  return name.substr(0, dot) + "." + variant + name.substr(dot);
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path_or_repo_id, const PretrainedOptions& options) {
  const bool try_safetensors = options.use_safetensors.value_or(true);
  const bool try_bin = !options.use_safetensors.value_or(false);
  Checkpoint ckpt;

  auto load_safetensors_file = [&](const std::filesystem::path& file, const std::set<std::string>* only) {
    auto st = SafetensorsFile::open(file);
    for (const auto& key : st->keys())
      if (!only || only->count(key)) ckpt.tensors[key] = st->get(key);
    ckpt.files.push_back(st);
  };
  auto load_sharded = [&](const std::filesystem::path& index_file, bool safetensors) {
    const auto map = read_index(index_file);
    std::map<std::string, std::set<std::string>> by_shard;
    for (const auto& [name, shard] : map) by_shard[shard].insert(name);
    for (const auto& [shard, names] : by_shard) {
      auto path = resolve_file(path_or_repo_id, shard, options);
      if (safetensors) {
        load_safetensors_file(*path, &names);
      } else {
        for (auto& [k, t] : load_torch_bin(*path))
          if (names.count(k)) ckpt.tensors[k] = t;
      }
    }
    ckpt.source = index_file.string();
  };

  if (try_safetensors) {
    if (auto file = resolve_file(path_or_repo_id, add_variant("model.safetensors", options.variant), options, true)) {
      load_safetensors_file(*file, nullptr);
      ckpt.source = file->string();
      return ckpt;
    }
    if (auto index = resolve_file(path_or_repo_id, add_variant("model.safetensors.index.json", options.variant), options, true)) {
      load_sharded(*index, true);
      return ckpt;
    }
  }
  if (try_bin) {
    if (auto file = resolve_file(path_or_repo_id, add_variant("pytorch_model.bin", options.variant), options, true)) {
      ckpt.tensors = load_torch_bin(*file);
      ckpt.source = file->string();
      return ckpt;
    }
    if (auto index = resolve_file(path_or_repo_id, add_variant("pytorch_model.bin.index.json", options.variant), options, true)) {
      load_sharded(*index, false);
      return ckpt;
    }
  }
  const std::string wanted = try_safetensors && try_bin ? "model.safetensors or pytorch_model.bin"
                             : try_safetensors          ? "model.safetensors (use_safetensors=true)"
                                                        : "pytorch_model.bin (use_safetensors=false)";
  throw FileNotFoundError(path_or_repo_id + (options.subfolder.empty() ? "" : "/" + options.subfolder) +
                          ": no weights file found (looked for " + wanted +
                          (options.variant.empty() ? "" : " with variant '" + options.variant + "'") +
                          ", plain or sharded with an index)");
}

}  // namespace plugformer
