// Tokenizer encode throughput of the plugformer tokenizer.json engine: ~1 MB of English text
// (one text per non-empty line), single thread (encode() per line) and batched (encode_batch on
// N threads). Prints MB/s, token count and a hash of all ids (compare with bench_rust.js).
// Usage: tokenizers_bench TOKENIZER_JSON CORPUS [threads=2] [repeats=5]
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <sys/resource.h>

#include "tokenizers/fast_tokenizer.h"

namespace {
struct Result {
  double seconds, cpu_seconds;
  uint64_t tokens, hash;
};
double cpu_now() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}
void mix(uint64_t& h, int64_t id) {
  h ^= static_cast<uint64_t>(id) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " TOKENIZER_JSON CORPUS [threads=2] [repeats=5]\n";
    return 2;
  }
  const std::string tok_path = argv[1], corpus = argv[2];
  const size_t threads = argc > 3 ? std::stoul(argv[3]) : 2;
  const int repeats = argc > 4 ? std::stoi(argv[4]) : 5;
  std::ifstream in(corpus);
  std::vector<std::string> texts;
  size_t bytes = 0;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) {
      bytes += line.size();
      texts.push_back(line);
    }
  auto t0 = std::chrono::steady_clock::now();
  auto tok = plugformer::FastTokenizer::from_file(tok_path);
  double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  tok->num_threads = threads;

  auto run_single = [&]() {
    Result r{0, 0, 0, 1469598103934665603ull};
    double c = cpu_now();
    auto s = std::chrono::steady_clock::now();
    for (const auto& t : texts) {
      auto e = tok->encode(t);
      r.tokens += e.ids.size();
      for (auto id : e.ids) mix(r.hash, id);
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count();
    r.cpu_seconds = cpu_now() - c;
    return r;
  };
  auto run_batch = [&]() {
    Result r{0, 0, 0, 1469598103934665603ull};
    double c = cpu_now();
    auto s = std::chrono::steady_clock::now();
    auto encs = tok->encode_batch(texts);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count();
    r.cpu_seconds = cpu_now() - c;
    for (const auto& e : encs) {
      r.tokens += e.ids.size();
      for (auto id : e.ids) mix(r.hash, id);
    }
    return r;
  };
  run_single();  // warm-up (caches, page faults)
  Result best_s{1e9, 0, 0, 0}, best_b{1e9, 0, 0, 0};
  for (int i = 0; i < repeats; ++i) {
    Result a = run_single();
    if (a.seconds < best_s.seconds) best_s = a;
    Result b = run_batch();
    if (b.seconds < best_b.seconds) best_b = b;
  }
  const double mb = static_cast<double>(bytes) / 1e6;
  std::printf("engine=plugformer tokenizer=%s texts=%zu bytes=%zu load_ms=%.0f\n", tok_path.c_str(), texts.size(), bytes, load_ms);
  std::printf("single_thread: %.2f MB/s (%.1f ms wall, %.1f ms cpu) tokens=%llu hash=%016llx\n", mb / best_s.seconds,
              best_s.seconds * 1e3, best_s.cpu_seconds * 1e3, static_cast<unsigned long long>(best_s.tokens),
              static_cast<unsigned long long>(best_s.hash));
  std::printf("batch_%zu_threads: %.2f MB/s (%.1f ms wall, %.1f ms cpu) tokens=%llu hash=%016llx\n", threads, mb / best_b.seconds,
              best_b.seconds * 1e3, best_b.cpu_seconds * 1e3, static_cast<unsigned long long>(best_b.tokens),
              static_cast<unsigned long long>(best_b.hash));
  return 0;
}
