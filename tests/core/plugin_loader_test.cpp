#include <gtest/gtest.h>

#include <fstream>

#include <plugformer/auto.h>
#include <plugformer/plugin_loader.h>

#include "test_util.h"

using namespace plugformer;

namespace {

std::filesystem::path plugin(const std::string& variant) {
  return std::filesystem::path(TEST_PLUGIN_DIR) / ("libtest_" + variant + ".so");
}

bool mapped(const std::string& needle) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find(needle) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST(PluginLoader, RefusesAFileThatIsNotALibrary) {
  test::TempDir dir("plugin-not-lib");
  test::write_file(dir / "libfake.so", "this is text, not ELF");
  auto r = PluginLoader::load_file(dir / "libfake.so");
  EXPECT_FALSE(r.loaded);
  EXPECT_NE(r.reason.find("not a shared library"), std::string::npos) << r.reason;
  EXPECT_FALSE(PluginLoader::load_file(dir / "libmissing.so").loaded);
}

TEST(PluginLoader, RefusesALibraryWithoutDescriptor) {
  auto r = PluginLoader::load_file(plugin("no_descriptor"));
  EXPECT_FALSE(r.loaded);
  EXPECT_NE(r.reason.find("no plugformer_plugin_descriptor"), std::string::npos) << r.reason;
}

TEST(PluginLoader, RefusesSdkMajorMismatch) {
  auto r = PluginLoader::load_file(plugin("sdk_major"));
  EXPECT_FALSE(r.loaded);
  EXPECT_NE(r.reason.find("major versions must match"), std::string::npos) << r.reason;
}

TEST(PluginLoader, RefusesLibtorchMismatch) {
  auto r = PluginLoader::load_file(plugin("torch_version"));
  EXPECT_FALSE(r.loaded);
  EXPECT_NE(r.reason.find("libtorch 0.4"), std::string::npos) << r.reason;
}

TEST(PluginLoader, RefusesAThrowingRegisterAndRollsItBack) {
  auto r = PluginLoader::load_file(plugin("throwing"));
  EXPECT_FALSE(r.loaded);
  EXPECT_NE(r.reason.find("deliberate failure"), std::string::npos) << r.reason;
  EXPECT_FALSE(Registry::instance().has_config("half-registered-model"));
}

TEST(PluginLoader, RefusesADuplicateModelType) {
  PluginLoader::load_default_plugins();  // llama
  auto r = PluginLoader::load_file(plugin("duplicate"));
  EXPECT_FALSE(r.loaded);
  EXPECT_NE(r.reason.find("'llama' is already used"), std::string::npos) << r.reason;
  // The host keeps running, and llama still resolves to the real plugin.
  EXPECT_EQ(AutoConfig::from_pretrained(test::kStories)->get("hidden_size").get<int64_t>(), 64);
}

TEST(PluginLoader, ObjectsKeepTheirPluginLoaded) {
  auto r = PluginLoader::load_file(plugin("keepalive"));
  ASSERT_TRUE(r.loaded) << r.reason;
  auto config = Registry::instance().make_config("keepalive-model");
  // The host replaces the registration: the registry lets go of the plugin.
  Registry::instance().register_config("keepalive-model", [] { return std::make_shared<PretrainedConfig>(); }, true);
  EXPECT_TRUE(mapped("libtest_keepalive.so"));  // still needed by `config`
  EXPECT_EQ(config->model_type(), "keepalive-model");
  config.reset();
  EXPECT_FALSE(mapped("libtest_keepalive.so"));
}

TEST(PluginLoader, LoadsADirectoryAndHonoursThePluginPath) {
  auto results = PluginLoader::load_directory(TEST_PLUGIN_DIR);
  EXPECT_EQ(results.size(), 6u);
  ::setenv("PLUGFORMER_PLUGIN_PATH", "/first/dir:/second/dir", 1);
  auto path = PluginLoader::search_path();
  ::unsetenv("PLUGFORMER_PLUGIN_PATH");
  ASSERT_GE(path.size(), 4u);
  EXPECT_EQ(path[0], "/first/dir");
  EXPECT_EQ(path[1], "/second/dir");
  EXPECT_EQ(path.back(), std::filesystem::path(PLUGFORMER_BINARY_DIR) / "plugins");
}
