// Loading speed (issue 3): plugin discovery, and loading a ~536 MB safetensors Llama
// (hidden 768, 12 layers, vocab 32000) zero-copy versus reading the file once sequentially.
// Usage: load_bench [work dir, default /tmp/plugformer-load-bench]
#include <ATen/ATen.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <vector>

#include <plugformer/plugformer.h>

using namespace plugformer;
using Clock = std::chrono::steady_clock;

namespace {
double since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }
long peak_rss_kb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}
double read_sequentially(const std::filesystem::path& file) {
  std::vector<char> buffer(8 << 20);
  std::ifstream in(file, std::ios::binary);
  const auto t = Clock::now();
  size_t total = 0;
  while (in.read(buffer.data(), std::streamsize(buffer.size())) || in.gcount() > 0) total += size_t(in.gcount());
  const double ms = since(t);
  std::printf("  (read %zu bytes)\n", total);
  return ms;
}
}  // namespace

int main(int argc, char** argv) {
  const std::filesystem::path dir = argc > 1 ? argv[1] : "/tmp/plugformer-load-bench";
  auto t = Clock::now();
  const auto& plugins = PluginLoader::load_default_plugins();
  const double discovery = since(t);
  std::printf("plugin discovery: %.2f ms for %zu plugin file(s)\n", discovery, plugins.size());

  if (!std::filesystem::exists(dir / "model.safetensors")) {
    auto config = AutoConfig::for_model("llama", {{"hidden_size", 768}, {"intermediate_size", 2048},
                                                  {"num_hidden_layers", 12}, {"num_attention_heads", 12},
                                                  {"vocab_size", 32000}, {"tie_word_embeddings", false}});
    auto model = AutoModelForCausalLM::from_config(config);
    model->save_pretrained(dir);
    std::printf("wrote %s\n", (dir / "model.safetensors").c_str());
  }
  const auto file = dir / "model.safetensors";
  const double mb = double(std::filesystem::file_size(file)) / 1e6;
  const long rss_before = peak_rss_kb();

  // Warm the page cache so both measurements see the same storage state.
  read_sequentially(file);
  const double read_ms = read_sequentially(file);
  t = Clock::now();
  auto model = AutoModelForCausalLM::from_pretrained(dir.string(), [] {
    PretrainedOptions o;
    o.torch_dtype = "auto";
    return o;
  }());
  const double load_ms = since(t);
  const long rss_after = peak_rss_kb();

  std::printf("\n| what | ms | ratio |\n|---|---|---|\n");
  std::printf("| read %.0f MB sequentially (warm cache) | %.1f | 1.00 |\n", mb, read_ms);
  std::printf("| from_pretrained, zero-copy (warm cache) | %.1f | %.3f |\n", load_ms, load_ms / read_ms);
  std::printf("\npeak RSS grew by %.1f MB while loading a %.0f MB file (%s parameters)\n",
              double(rss_after - rss_before) / 1e3, mb, std::to_string(model->num_parameters()).c_str());
  return 0;
}
