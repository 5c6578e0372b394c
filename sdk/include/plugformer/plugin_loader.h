// Finds and loads plugin shared libraries (Boost.DLL). A plugin that cannot be used is refused
// with one log line naming the file and the reason; the host keeps running.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace plugformer {

struct PluginLoadResult {
  std::filesystem::path file;
  bool loaded = false;
  std::string reason;      // why it was refused or skipped
  bool duplicate = false;  // the same plugin name was already loaded from earlier on the path
};

class PluginLoader {
 public:
  // Loads one plugin file. Never throws for a bad plugin: see the result.
  static PluginLoadResult load_file(const std::filesystem::path& file);
  // Loads every lib*.so in a directory (not recursive), in name order.
  static std::vector<PluginLoadResult> load_directory(const std::filesystem::path& dir);
  // The search path: PLUGFORMER_PLUGIN_PATH (colon separated), then <libdir>/plugformer/plugins
  // next to libplugformer, then (for a libplugformer that is still in its build tree) the build
  // tree's plugin directory.
  static std::vector<std::filesystem::path> search_path();
  // Loads the plugins found on the search path; a plugin name already loaded from an earlier
  // directory is skipped. Runs once; later calls return the first result.
  static const std::vector<PluginLoadResult>& load_default_plugins();
};

}  // namespace plugformer
