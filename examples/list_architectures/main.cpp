// list_architectures: a host application that loads the model-family plugins found on the
// default search path and prints what they provide.
//
//   PLUGFORMER_PLUGIN_PATH=/my/plugins ./list_architectures
//
// For every family (config type) it shows the architectures, the Auto task each one serves and
// the plugin file it came from; then the tokenizer classes, the model_type -> tokenizer mapping,
// and the plugins that were refused, with the reason.
//
// Options (used by its ctest test, handy in scripts too): --expect-family NAME,
// --expect-architecture NAME and --expect-tokenizer NAME, each repeatable, make it exit with
// status 1 when that family / architecture / tokenizer class is not available.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <plugformer/plugin_loader.h>
#include <plugformer/registry.h>

namespace {

// "/build/plugins/libplugformer_llama.so" -> "libplugformer_llama.so"; "<host>" stays as is.
std::string short_source(const std::string& source) {
  if (source.empty() || source.front() == '<') return source;
  return std::filesystem::path(source).filename().string();
}

int usage(const char* argv0) {
  std::cerr << "usage: " << argv0
            << " [--expect-family NAME] [--expect-architecture NAME] [--expect-tokenizer NAME] ...\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> want_families, want_archs, want_tokenizers;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(argv[0]);
      return 0;
    }
    if (i + 1 >= argc) return usage(argv[0]);
    if (arg == "--expect-family") want_families.push_back(argv[++i]);
    else if (arg == "--expect-architecture") want_archs.push_back(argv[++i]);
    else if (arg == "--expect-tokenizer") want_tokenizers.push_back(argv[++i]);
    else return usage(argv[0]);
  }

  const auto& results = plugformer::PluginLoader::load_default_plugins();
  const auto& registry = plugformer::Registry::instance();

  std::cout << "Plugin search path:\n";
  for (const auto& dir : plugformer::PluginLoader::search_path()) {
    std::error_code ec;
    std::cout << "  " << dir.string() << (std::filesystem::is_directory(dir, ec) ? "" : "  (missing)") << "\n";
  }

  const auto plugins = registry.plugins();
  std::cout << "\nLoaded plugins (" << plugins.size() << "):\n";
  for (const auto& p : plugins) std::cout << "  " << p.name << " " << p.version << "  " << p.file << "\n";

  // Families: one per registered config type, with the classes registered for it.
  const auto configs = registry.configs();
  const auto models = registry.models();
  std::cout << "\nFamilies (" << configs.size() << "):\n";
  for (const auto& c : configs) {
    std::cout << "  " << c.model_type << "  [config from " << short_source(c.source) << "]\n";
    // Architecture -> tasks, keeping the task order of tasks::all().
    std::map<std::string, std::vector<const plugformer::Registry::ModelEntry*>> by_arch;
    for (const auto& m : models)
      if (m.model_type == c.model_type) by_arch[m.architecture].push_back(&m);
    if (by_arch.empty()) std::cout << "      (no model classes)\n";
    for (const auto& [arch, entries] : by_arch)
      for (const auto* e : entries)
        std::cout << "      " << std::left << std::setw(36) << arch << std::setw(38) << e->task
                  << short_source(e->source) << "\n";
  }
  // Classes registered for a model_type that has no config (possible when a host registers
  // a model before its config): show them too, so nothing registered is hidden.
  for (const auto& m : models) {
    const bool has_config = std::any_of(configs.begin(), configs.end(),
                                        [&](const auto& c) { return c.model_type == m.model_type; });
    if (!has_config)
      std::cout << "  (no config for '" << m.model_type << "')  " << m.architecture << "  " << m.task << "  "
                << short_source(m.source) << "\n";
  }

  const auto tokenizers = registry.tokenizers();
  std::cout << "\nTokenizers (" << tokenizers.size() << "):\n";
  for (const auto& t : tokenizers)
    std::cout << "  " << std::left << std::setw(36) << t.class_name << short_source(t.source) << "\n";
  const auto mappings = registry.tokenizer_mappings();
  if (!mappings.empty()) {
    std::cout << "\nTokenizer classes per model_type:\n";
    for (const auto& m : mappings)
      std::cout << "  " << std::left << std::setw(20) << m.model_type << "slow: " << (m.slow_class.empty() ? "-" : m.slow_class)
                << ", fast: " << (m.fast_class.empty() ? "-" : m.fast_class) << "  [" << short_source(m.source)
                << "]\n";
  }

  std::vector<const plugformer::PluginLoadResult*> refused;
  for (const auto& r : results)
    if (!r.loaded && !r.reason.empty()) refused.push_back(&r);
  std::cout << "\nRefused plugins (" << refused.size() << "):\n";
  for (const auto* r : refused) std::cout << "  " << r->file.string() << ": " << r->reason << "\n";

  // The expectations of the caller.
  int missing = 0;
  auto check = [&](const std::vector<std::string>& wanted, const char* what, auto&& present) {
    for (const auto& name : wanted)
      if (!present(name)) {
        std::cerr << "list_architectures: expected " << what << " '" << name << "' is not registered\n";
        ++missing;
      }
  };
  check(want_families, "family", [&](const std::string& n) { return registry.has_config(n); });
  check(want_archs, "architecture", [&](const std::string& n) {
    return std::any_of(models.begin(), models.end(), [&](const auto& m) { return m.architecture == n; });
  });
  check(want_tokenizers, "tokenizer", [&](const std::string& n) { return registry.has_tokenizer(n); });
  return missing == 0 ? 0 : 1;
}
