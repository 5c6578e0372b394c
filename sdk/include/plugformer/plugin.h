// What a plugin exports. A family plugin writes one registration function and names it with
// PLUGFORMER_PLUGIN; the loader checks the descriptor before calling it.
#pragma once

#include <cstdint>
#include <memory>

#include <boost/dll/alias.hpp>

#include "plugformer/error.h"
#include "plugformer/registry.h"
#include "plugformer/version.h"

namespace plugformer {

inline constexpr uint32_t kPluginMagic = 0x504c4746;  // "PLGF"

// Layout rule: magic and sdk_major come first and never move, so a loader can read them from
// a plugin of any SDK version before trusting the rest.
struct PluginDescriptor {
  uint32_t magic;
  uint32_t sdk_major;
  uint32_t sdk_minor;
  const char* abi_tag;        // PLUGFORMER_ABI_TAG
  const char* compiler;       // PLUGFORMER_COMPILER
  const char* torch_version;  // PLUGFORMER_TORCH_VERSION
  const char* name;
  const char* version;
  void (*register_fn)(Registry&);
};

// A ModelFactory building `Model` from its family's `Config` (RegistryError for another config type).
template <class Model, class Config>
ModelFactory model_factory() {
  return [](ConfigPtr config) -> ModelPtr {
    auto typed = std::dynamic_pointer_cast<Config>(config);
    if (!typed) throw RegistryError("model class needs a " + Config().model_type() + " config, got '" + config->model_type() + "'");
    return std::make_shared<Model>(typed);
  };
}

// A ConfigFactory for `Config`.
template <class Config>
ConfigFactory config_factory() {
  return [] { return std::make_shared<Config>(); };
}

}  // namespace plugformer

// Defines and exports the descriptor of this plugin (one per shared library).
#define PLUGFORMER_PLUGIN(plugin_name, plugin_version, register_function)                                   \
  namespace {                                                                                               \
  const ::plugformer::PluginDescriptor plugformer_plugin_descriptor_value = {                               \
      ::plugformer::kPluginMagic, PLUGFORMER_SDK_VERSION_MAJOR, PLUGFORMER_SDK_VERSION_MINOR,               \
      PLUGFORMER_ABI_TAG,         PLUGFORMER_COMPILER,          PLUGFORMER_TORCH_VERSION,                   \
      plugin_name,                plugin_version,               register_function};                         \
  }                                                                                                         \
  BOOST_DLL_ALIAS(plugformer_plugin_descriptor_value, plugformer_plugin_descriptor)
