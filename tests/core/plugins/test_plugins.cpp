// Deliberately good and bad plugins for the loader tests; one shared library per variant,
// selected by TEST_PLUGIN_VARIANT at compile time.
#include <stdexcept>

#include <plugformer/plugin.h>

namespace {

class KeepAliveConfig : public plugformer::PretrainedConfig {
 public:
  KeepAliveConfig() { model_type_ = "keepalive-model"; }
  std::string model_type() const override { return "keepalive-model"; }
};

[[maybe_unused]] void register_keepalive(plugformer::Registry& r) {
  r.register_config("keepalive-model", plugformer::config_factory<KeepAliveConfig>());
}

[[maybe_unused]] void register_throwing(plugformer::Registry& r) {
  r.register_config("half-registered-model", plugformer::config_factory<KeepAliveConfig>());
  throw std::runtime_error("deliberate failure in register()");
}

[[maybe_unused]] void register_duplicate(plugformer::Registry& r) {
  r.register_config("llama", plugformer::config_factory<KeepAliveConfig>());  // no exist_ok
}

}  // namespace

#if TEST_PLUGIN_VARIANT == 1  // keepalive: a valid plugin
PLUGFORMER_PLUGIN("test-keepalive", "1.0", register_keepalive)
#elif TEST_PLUGIN_VARIANT == 2  // register() throws after registering something
PLUGFORMER_PLUGIN("test-throwing", "1.0", register_throwing)
#elif TEST_PLUGIN_VARIANT == 3  // model_type already registered
PLUGFORMER_PLUGIN("test-duplicate", "1.0", register_duplicate)
#elif TEST_PLUGIN_VARIANT == 4  // SDK major mismatch
namespace {
const plugformer::PluginDescriptor descriptor = {plugformer::kPluginMagic, PLUGFORMER_SDK_VERSION_MAJOR + 1, 0,
                                                 PLUGFORMER_ABI_TAG, PLUGFORMER_COMPILER, PLUGFORMER_TORCH_VERSION,
                                                 "test-sdk-major", "1.0", register_keepalive};
}
BOOST_DLL_ALIAS(descriptor, plugformer_plugin_descriptor)
#elif TEST_PLUGIN_VARIANT == 5  // libtorch version mismatch
namespace {
const plugformer::PluginDescriptor descriptor = {plugformer::kPluginMagic, PLUGFORMER_SDK_VERSION_MAJOR,
                                                 PLUGFORMER_SDK_VERSION_MINOR, PLUGFORMER_ABI_TAG, PLUGFORMER_COMPILER,
                                                 "0.4", "test-torch-version", "1.0", register_keepalive};
}
BOOST_DLL_ALIAS(descriptor, plugformer_plugin_descriptor)
#elif TEST_PLUGIN_VARIANT == 6  // a shared library without a descriptor
extern "C" __attribute__((visibility("default"))) int not_a_plugformer_plugin() { return 42; }
#endif
