// Download of a large LFS file from the loopback mock Hub: plugformer's hf_hub_download (HEAD,
// redirect, download, sha256 check, rename into the cache) side by side with the curl CLI on the
// same URL. Usage: bench_hub_download [size_mb=200] [runs=5]
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "mock_hub.h"
#include "plugformer/hub.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// CPU seconds (user + sys) of this process (mock server + client) and of waited-for children.
static double cpu_seconds() {
  double total = 0;
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    rusage ru{};
    getrusage(who, &ru);
    total += ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  }
  return total;
}

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  const size_t size_mb = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 200;
  const int runs = argc > 2 ? std::atoi(argv[2]) : 5;
  std::string data(size_mb * 1000 * 1000, '\0');
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i + 8 <= data.size(); i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(&data[i], &x, 8);
  }
  plugformer::testing::MockHub hub;
  hub.add_commit("bench/big", {{"model.safetensors", data}});
  data.clear();
  data.shrink_to_fit();
  ::setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1", 1);

  char tmpl[] = "/tmp/plugformer-bench-hub-XXXXXX";
  const fs::path dir = ::mkdtemp(tmpl);
  const std::string url = hub.endpoint() + "/bench/big/resolve/main/model.safetensors";
  std::vector<double> ours, theirs, theirs_hash, ours_cpu, theirs_cpu;
  for (int r = 0; r < runs; ++r) {
    // curl: follows the redirect to the CDN and writes the file (no hashing, no cache).
    const fs::path out = dir / "curl.out";
    const std::string cmd = "curl -sS -L -o '" + out.string() + "' '" + url + "'";
    double c0 = cpu_seconds();
    auto t0 = Clock::now();
    if (std::system(cmd.c_str()) != 0) {
      std::cerr << "curl failed\n";
      return 1;
    }
    theirs.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    theirs_cpu.push_back(cpu_seconds() - c0);
    // The same guarantee as ours (sha256 of the LFS file) done the shell way.
    const std::string hashed = "curl -sS -L '" + url + "' | tee '" + out.string() + "' | sha256sum > /dev/null";
    t0 = Clock::now();
    if (std::system(hashed.c_str()) != 0) {
      std::cerr << "curl | sha256sum failed\n";
      return 1;
    }
    theirs_hash.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    fs::remove(out);

    plugformer::hub::HubOptions o;
    o.endpoint = hub.endpoint();
    o.cache_dir = dir / ("cache" + std::to_string(r));
    c0 = cpu_seconds();
    t0 = Clock::now();
    fs::path p = plugformer::hub::hf_hub_download("bench/big", "model.safetensors", o);
    ours.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    ours_cpu.push_back(cpu_seconds() - c0);
    if (fs::file_size(p) != size_mb * 1000 * 1000) {
      std::cerr << "wrong size\n";
      return 1;
    }
    fs::remove_all(*o.cache_dir);
  }
  fs::remove_all(dir);
  const double mb = static_cast<double>(size_mb);
  const double a = median(ours), b = median(theirs);
  std::printf("file: %zu MB over loopback, %d runs, medians\n", size_mb, runs);
  const double h = median(theirs_hash);
  std::printf("curl -L -o file              : %.3f s  (%.0f MB/s)  cpu %.3f s (incl. server)\n", b, mb / b,
              median(theirs_cpu));
  std::printf("curl -L | tee | sha256sum    : %.3f s  (%.0f MB/s)\n", h, mb / h);
  std::printf("plugformer hf_hub_download   : %.3f s  (%.0f MB/s)  cpu %.3f s (incl. server)"
              "  [HEAD + redirect + download + sha256 + cache rename]\n", a, mb / a, median(ours_cpu));
  std::printf("ratio plugformer / curl            : %.3f\n", a / b);
  std::printf("ratio plugformer / curl+sha256sum  : %.3f\n", a / h);
  return 0;
}
