#include "plugformer/plugin_loader.h"

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include "plugformer/log.h"
#include "plugformer/plugin.h"
#include "plugformer/runtime.h"

namespace plugformer {

namespace {

std::mutex loader_mutex;
std::set<std::string> loaded_files;  // canonical paths
std::set<std::string> loaded_names;

PluginLoadResult refuse(const std::filesystem::path& file, std::string reason) {
  logger().warn("plugin {} refused: {}", file.string(), reason);
  return {file, false, std::move(reason)};
}

std::string major_minor(const std::string& version) {
  const auto first = version.find('.');
  if (first == std::string::npos) return version;
  const auto second = version.find('.', first + 1);
  return version.substr(0, second);
}

}  // namespace

PluginLoadResult PluginLoader::load_file(const std::filesystem::path& file) {
  init_runtime();
  std::lock_guard lock(loader_mutex);
  std::error_code ec;
  const auto canonical = std::filesystem::canonical(file, ec);
  if (ec) return refuse(file, "no such file");
  if (loaded_files.count(canonical.string())) return {file, true, ""};

  {
    std::ifstream in(canonical, std::ios::binary);
    char magic[4] = {};
    if (!in.read(magic, 4) || std::string_view(magic, 4) != "\x7f" "ELF")
      return refuse(file, "not a shared library (no ELF header)");
  }
  auto library = std::make_shared<boost::dll::shared_library>();
  boost::system::error_code load_error;
  // RTLD_LOCAL keeps one plugin's symbols from resolving another's.
  library->load(canonical.string(), boost::dll::load_mode::rtld_lazy | boost::dll::load_mode::rtld_local, load_error);
  if (load_error) return refuse(file, "cannot be loaded as a shared library (" + load_error.message() + ")");
  if (!library->has("plugformer_plugin_descriptor"))
    return refuse(file, "no plugformer_plugin_descriptor symbol (not a plugformer plugin?)");
  const PluginDescriptor* descriptor = nullptr;
  try {
    descriptor = &library->get_alias<const PluginDescriptor>("plugformer_plugin_descriptor");
  } catch (const std::exception& e) {
    return refuse(file, std::string("unreadable descriptor: ") + e.what());
  }
  if (!descriptor || descriptor->magic != kPluginMagic) return refuse(file, "descriptor has a wrong magic number");
  if (descriptor->sdk_major != PLUGFORMER_SDK_VERSION_MAJOR)
    return refuse(file, "built against SDK " + std::to_string(descriptor->sdk_major) + "." +
                            std::to_string(descriptor->sdk_minor) + ", this runtime has SDK " +
                            std::to_string(PLUGFORMER_SDK_VERSION_MAJOR) + "." +
                            std::to_string(PLUGFORMER_SDK_VERSION_MINOR) + " (major versions must match)");
  if (descriptor->sdk_minor > PLUGFORMER_SDK_VERSION_MINOR)
    return refuse(file, "built against the newer SDK " + std::to_string(descriptor->sdk_major) + "." +
                            std::to_string(descriptor->sdk_minor) + " than this runtime's " +
                            std::to_string(PLUGFORMER_SDK_VERSION_MAJOR) + "." +
                            std::to_string(PLUGFORMER_SDK_VERSION_MINOR));
  if (std::string(descriptor->abi_tag) != PLUGFORMER_ABI_TAG)
    return refuse(file, std::string("C++ ABI '") + descriptor->abi_tag + "' differs from the runtime's '" +
                            PLUGFORMER_ABI_TAG + "'");
  if (major_minor(descriptor->torch_version) != PLUGFORMER_TORCH_VERSION)
    return refuse(file, std::string("built against libtorch ") + descriptor->torch_version +
                            ", this runtime uses libtorch " + PLUGFORMER_TORCH_VERSION);
  if (!descriptor->register_fn) return refuse(file, "descriptor has no register function");
  const std::string name = descriptor->name ? descriptor->name : "";
  if (name.empty()) return refuse(file, "descriptor has no plugin name");
  if (loaded_names.count(name)) {
    // The same plugin found again further down the search path: the first one wins.
    logger().debug("plugin {} skipped: a plugin named '{}' is already loaded", file.string(), name);
    return {file, false, "a plugin named '" + name + "' is already loaded", true};
  }

  try {
    Registry::PluginScope scope(Registry::instance(), name, descriptor->version ? descriptor->version : "",
                                canonical.string(), library);
    descriptor->register_fn(Registry::instance());
    scope.commit();
  } catch (const std::exception& e) {
    return refuse(file, std::string("register() failed: ") + e.what());
  } catch (...) {
    return refuse(file, "register() threw a non-standard exception");
  }
  loaded_files.insert(canonical.string());
  loaded_names.insert(name);
  logger().debug("loaded plugin {} ({} {})", canonical.string(), name, descriptor->version);
  return {file, true, ""};
}

std::vector<PluginLoadResult> PluginLoader::load_directory(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const auto name = entry.path().filename().string();
    if (entry.is_regular_file() && name.rfind("lib", 0) == 0 && entry.path().extension() == ".so")
      files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<PluginLoadResult> results;
  for (const auto& f : files) results.push_back(load_file(f));
  return results;
}

std::vector<std::filesystem::path> PluginLoader::search_path() {
  std::vector<std::filesystem::path> dirs;
  if (const char* env = std::getenv("PLUGFORMER_PLUGIN_PATH")) {
    std::stringstream ss(env);
    std::string part;
    while (std::getline(ss, part, ':'))
      if (!part.empty()) dirs.emplace_back(part);
  }
  // <prefix>/lib/plugformer/plugins next to the installed libplugformer.
  boost::system::error_code ec;
  const auto self = std::filesystem::path(boost::dll::this_line_location(ec).string());
  if (!ec) dirs.push_back((self.parent_path() / PLUGFORMER_PLUGIN_INSTALL_SUBDIR).lexically_normal());
  // The build tree only for the library that was built there, not for an installed copy.
  const auto build_root = std::filesystem::path(PLUGFORMER_BUILD_PLUGIN_DIR).parent_path();
  std::error_code fs_ec;
  const auto real_self = std::filesystem::weakly_canonical(self, fs_ec);
  if (!fs_ec && real_self.string().rfind(std::filesystem::weakly_canonical(build_root, fs_ec).string() + "/", 0) == 0)
    dirs.emplace_back(PLUGFORMER_BUILD_PLUGIN_DIR);
  return dirs;
}

const std::vector<PluginLoadResult>& PluginLoader::load_default_plugins() {
  static const std::vector<PluginLoadResult> results = [] {
    std::vector<PluginLoadResult> all;
    for (const auto& dir : search_path()) {
      std::error_code ec;
      if (!std::filesystem::is_directory(dir, ec)) continue;
      for (auto& r : load_directory(dir)) all.push_back(std::move(r));
    }
    return all;
  }();
  return results;
}

}  // namespace plugformer
