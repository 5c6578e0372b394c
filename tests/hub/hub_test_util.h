// Shared fixture of the hub tests: a mock Hub, a private cache dir and a clean environment.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>

#include "mock_hub.h"
#include "plugformer/hub.h"

namespace plugformer::testing {

namespace fs = std::filesystem;

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_text(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << s;
}

// Sets (or unsets) environment variables for the scope, restoring them afterwards.
class EnvGuard {
 public:
  void set(const std::string& name, const std::optional<std::string>& value) {
    if (!saved_.count(name)) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
    }
    if (value) ::setenv(name.c_str(), value->c_str(), 1);
    else ::unsetenv(name.c_str());
  }
  ~EnvGuard() {
    for (const auto& [name, value] : saved_) {
      if (value) ::setenv(name.c_str(), value->c_str(), 1);
      else ::unsetenv(name.c_str());
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

inline fs::path make_temp_dir(const std::string& tag) {
  std::string tmpl = (fs::temp_directory_path() / ("plugformer-hub-" + tag + "-XXXXXX")).string();
  char* p = ::mkdtemp(tmpl.data());
  if (!p) throw std::runtime_error("mkdtemp failed");
  return fs::path(p);
}

// Random-ish binary content of `n` bytes (deterministic).
inline std::string binary_blob(size_t n, unsigned seed = 1) {
  std::string s(n, '\0');
  uint32_t x = 2463534242u ^ seed;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x & 0xff);
  }
  return s;
}

class HubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = make_temp_dir("test");
    cache = dir / "cache";
    env.set("HF_HOME", (dir / "hf_home").string());
    env.set("HF_HUB_CACHE", std::nullopt);
    env.set("HUGGINGFACE_HUB_CACHE", std::nullopt);
    env.set("HF_TOKEN", std::nullopt);
    env.set("HUGGING_FACE_HUB_TOKEN", std::nullopt);
    env.set("HF_TOKEN_PATH", std::nullopt);
    env.set("HF_HUB_OFFLINE", std::nullopt);
    env.set("HF_ENDPOINT", hub.endpoint());
    env.set("HF_HUB_DOWNLOAD_TIMEOUT", "20");
    env.set("HF_HUB_ETAG_TIMEOUT", "20");
    env.set("PLUGFORMER_HUB_RETRY_BASE_MS", "5");
    opts.cache_dir = cache;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  fs::path storage(const std::string& repo_id, const std::string& type = "model") const {
    return cache / hub::repo_folder_name(repo_id, type);
  }

  MockHub hub;
  EnvGuard env;
  fs::path dir, cache;
  hub::HubOptions opts;
};

}  // namespace plugformer::testing
