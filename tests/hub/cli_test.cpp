// `plugformer download` / `cache ls` / `cache rm` (cli/hub_commands.cpp) against the mock Hub.
#include <CLI/CLI.hpp>

#include <iostream>

#include "hub_test_util.h"
#include "plugformer/error.h"

void add_hub_commands(CLI::App& app);

namespace plugformer::testing {
namespace {

class CliTest : public HubTest {
 protected:
  // Runs the CLI in-process; returns stdout.
  std::string run(std::vector<std::string> args) {
    CLI::App app{"plugformer"};
    app.require_subcommand(1);
    add_hub_commands(app);
    std::vector<const char*> argv = {"plugformer"};
    for (auto& a : args) argv.push_back(a.c_str());
    std::ostringstream captured;
    auto* old = std::cout.rdbuf(captured.rdbuf());
    try {
      app.parse(static_cast<int>(argv.size()), const_cast<char**>(argv.data()));
    } catch (...) {
      std::cout.rdbuf(old);
      throw;
    }
    std::cout.rdbuf(old);
    return captured.str();
  }
};

TEST_F(CliTest, DownloadIncludeCacheLsAndRm) {
  std::string c = hub.add_commit("org/tiny", {{"config.json", "{}"}, {"model.safetensors", binary_blob(1000)},
                                              {"README.md", "# hi"}, {"tokenizer.json", "{}"}});
  const std::string cache_s = cache.string();
  std::string out = run({"download", "org/tiny", "--include", "*.json", "--include", "README.md", "--cache-dir", cache_s});
  const fs::path snap = storage("org/tiny") / "snapshots" / c;
  EXPECT_EQ(out, snap.string() + "\n");
  EXPECT_TRUE(fs::exists(snap / "config.json"));
  EXPECT_TRUE(fs::exists(snap / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(snap / "README.md"));
  EXPECT_FALSE(fs::exists(snap / "model.safetensors"));

  out = run({"download", "org/tiny", "model.safetensors", "--revision", c, "--cache-dir", cache_s});
  EXPECT_EQ(out, (snap / "model.safetensors").string() + "\n");

  out = run({"cache", "ls", "--cache-dir", cache_s});
  EXPECT_NE(out.find("org/tiny"), std::string::npos) << out;
  EXPECT_NE(out.find("main"), std::string::npos) << out;
  EXPECT_NE(out.find("1 repo(s)"), std::string::npos) << out;
  out = run({"cache", "ls", "-v", "--cache-dir", cache_s});
  EXPECT_NE(out.find(c), std::string::npos) << out;

  EXPECT_THROW(run({"cache", "rm", "org/other", "--cache-dir", cache_s}), FileNotFoundError);
  out = run({"cache", "rm", "org/tiny", "--revision", "main", "--cache-dir", cache_s});
  EXPECT_NE(out.find("Deleted org/tiny revision main"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(storage("org/tiny")));
  out = run({"cache", "ls", "--cache-dir", cache_s});
  EXPECT_NE(out.find("0 repo(s)"), std::string::npos) << out;
}

TEST_F(CliTest, ErrorsAndUsage) {
  EXPECT_THROW(run({"download", "org/nope", "--cache-dir", cache.string()}), RepositoryNotFoundError);
  EXPECT_THROW(run({"download", "../etc", "--cache-dir", cache.string()}), InvalidInputError);
  EXPECT_THROW(run({"download"}), CLI::RequiredError);
  EXPECT_THROW(run({"cache"}), CLI::RequiredError);
  EXPECT_THROW(run({"download", "org/x", "--repo-type", "nope"}), CLI::ValidationError);
}

}  // namespace
}  // namespace plugformer::testing
