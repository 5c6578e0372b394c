// Internal helpers shared by the hub sources.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "plugformer/hub.h"

namespace plugformer::hub::detail {

std::string endpoint_of(const std::optional<std::string>& endpoint);
std::filesystem::path cache_dir_of(const std::optional<std::filesystem::path>& cache_dir);
// "" for models, "datasets/" and "spaces/" otherwise (URL prefix); validates the type.
std::string repo_type_url_prefix(const std::string& repo_type);
// "models", "datasets", "spaces" for /api/{...}/ (validates the type).
std::string repo_type_api_plural(const std::string& repo_type);
// Reads refs/<revision> of a cached repo: the commit hash, if the file exists and is valid.
std::optional<std::string> read_ref(const std::filesystem::path& storage, const std::string& revision);
// True if `p` (after resolving symlinks) stays inside `root`.
bool stays_inside(const std::filesystem::path& p, const std::filesystem::path& root);
std::string to_lower(std::string s);

}  // namespace plugformer::hub::detail
