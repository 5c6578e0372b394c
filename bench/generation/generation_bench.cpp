// Prefill and decode speed of plugformer's generate() on a decoder-only or encoder-decoder model
// (there "prefill" is encoding the prompt plus the first decoder step), with the memory bandwidth
// bound measured in the same process. Driven by run_bench.py, which runs the PyTorch eager peer
// (eager.py) and llama.cpp on the same weights.
//
//   generation_bench make-gpt2 DIR                       random gpt2-small (124M) in HF format
//   generation_bench make-t5 DIR                         random t5-small (60M) in HF format
//   generation_bench make-from-config CONFIG.json DIR    a random causal LM of any registered model_type
//   generation_bench run DIR [--dtype D] [--batch B] [--prompt N] [--new M] [--threads T] [--repeat R]
//   generation_bench bandwidth                           DRAM read bandwidth, GB/s
//   generation_bench attention                           decode attention over 128 / 512 / 1024 cached tokens
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <sys/resource.h>

#include <chrono>
#include <functional>
#include <iostream>
#include <map>
#include <string>

#include <plugformer/auto.h>
#include <plugformer/generation.h>
#include <plugformer/layers.h>
#include <plugformer/runtime.h>

using namespace plugformer;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Streams a 1 GiB matrix (far larger than the caches) through a matrix-vector product, the
// access pattern of decode: the best of several passes of OpenBLAS's sgemv and of our own
// decode kernel (a one-row Linear), whichever reads faster, in GB/s. (A reduction such as sum()
// reads ~25% slower here, so it would understate what a streaming kernel gets.)
double read_bandwidth() {
  c10::InferenceMode guard;
  Linear linear(4096, int64_t(1) << 16, false);
  linear.weight = at::ones({int64_t(1) << 16, 4096}, at::kFloat);
  const at::Tensor vector = at::ones({4096}, at::kFloat);
  double best = 0;
  for (int i = 0; i < 10; ++i) {
    const auto t = Clock::now();
    const at::Tensor y = i % 2 ? at::mv(linear.weight, vector) : linear.forward(vector.view({1, 4096}));
    const double gbps = double(linear.weight.nbytes()) / seconds_since(t) / 1e9;
    if (y.view(-1)[0].item<float>() > 0) best = std::max(best, gbps);
  }
  return best;
}

// Bytes a decode step reads: every weight once, except embedding tables (one row each), plus the
// embedding again when it serves as the tied LM head. An encoder-decoder model reads neither its
// encoder nor its cross-attention key/value projections (their output is cached).
int64_t weight_bytes_per_token(PreTrainedModel& model) {
  int64_t bytes = model.memory_footprint(false);
  for (const auto& m : model.modules())
    if (auto* e = dynamic_cast<Embedding*>(m.get())) bytes -= int64_t(e->weight.nbytes());
  if (model.config().is_encoder_decoder)
    for (const auto& p : model.named_parameters(true)) {
      const std::string& name = p.key();
      const bool encoder_only = name.rfind("encoder.", 0) == 0 || name.find("EncDecAttention.k.") != std::string::npos ||
                                name.find("EncDecAttention.v.") != std::string::npos;
      if (encoder_only && name.find("relative_attention_bias") == std::string::npos) bytes -= int64_t(p.value().nbytes());
    }
  if (auto head = model.get_output_embeddings();
      head && head->weight.data_ptr() == model.get_input_embeddings()->weight.data_ptr())
    bytes += int64_t(head->weight.nbytes());
  return bytes;
}

int64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return int64_t(usage.ru_maxrss) * 1024;
}

void make_gpt2(const std::string& dir) {
  auto config = AutoConfig::for_model("gpt2", json{{"n_embd", 768}, {"n_layer", 12}, {"n_head", 12},
                                                   {"n_positions", 1024}, {"vocab_size", 50257}});
  auto model = AutoModelForCausalLM::from_config(config);
  model->save_pretrained(dir);
  std::cout << "wrote " << dir << " (" << model->num_parameters() << " parameters)\n";
}

// t5-small's shape (transformers' T5Config defaults): relu feed-forward, tied embeddings.
void make_t5(const std::string& dir) {
  auto config = AutoConfig::for_model("t5", json::object());
  auto model = AutoModelForSeq2SeqLM::from_config(config);
  model->save_pretrained(dir);
  std::cout << "wrote " << dir << " (" << model->num_parameters() << " parameters)\n";
}

// A random causal LM shaped by a config.json-like file (model_type and the fields that differ from
// the family's defaults), e.g. bench/generation/configs/qwen2.5-0.5b-shape.json.
void make_from_config(const std::string& config_file, const std::string& dir) {
  json fields = read_json_file(config_file);
  const std::string type = fields.value("model_type", "");
  fields.erase("model_type");
  auto model = AutoModelForCausalLM::from_config(AutoConfig::for_model(type, fields));
  model->save_pretrained(dir);
  std::cout << "wrote " << dir << " (" << model->num_parameters() << " parameters)\n";
}

void run(const std::string& dir, std::map<std::string, std::string> opt) {
  const int64_t batch = std::stoll(opt["--batch"]), prompt = std::stoll(opt["--prompt"]),
                new_tokens = std::stoll(opt["--new"]);
  PretrainedOptions options;
  options.torch_dtype = opt["--dtype"];
  options.quantization = opt["--quantize"];
  const auto load_start = Clock::now();
  auto model = AutoConfig::from_pretrained(dir, options)->is_encoder_decoder
                   ? AutoModelForSeq2SeqLM::from_pretrained(dir, options)
                   : AutoModelForCausalLM::from_pretrained(dir, options);
  const double load_s = seconds_since(load_start);
  if (!opt["--threads"].empty()) at::set_num_threads(std::stoi(opt["--threads"]));

  const int64_t vocab = model->config().get("vocab_size").get<int64_t>();
  at::Tensor ids = at::randint(0, vocab, {batch, prompt}, at::kLong);
  GenerationConfig config = GenerationConfig::from_model_config(model->config());
  config.eos_token_id.clear();  // always generate new_tokens
  config.max_new_tokens = new_tokens;
  config.do_sample = false;
  c10::InferenceMode guard;
  {
    GenerationConfig warm = config;
    warm.max_new_tokens = 2;
    generate(*model, ids.narrow(1, 0, 8), {}, warm);
  }
  // The best of --repeat runs for each phase: a shared machine adds noise, never speed.
  double prefill_s = 1e30, decode_s = 1e30;
  for (int64_t r = 0; r < std::stoll(opt["--repeat"]); ++r) {
    Clock::time_point first;
    bool seen = false;
    const auto start = Clock::now();
    generate(*model, ids, {}, config, [&](int64_t row, int64_t) {
      if (!seen && row == 0) {
        first = Clock::now();
        seen = true;
      }
      return true;
    });
    const auto end = Clock::now();
    prefill_s = std::min(prefill_s, std::chrono::duration<double>(first - start).count());
    decode_s = std::min(decode_s, std::chrono::duration<double>(end - first).count());
  }
  const int64_t peak_rss = peak_rss_bytes();  // before the bandwidth probe allocates its buffer
  const double bandwidth = read_bandwidth();
  const int64_t bytes = weight_bytes_per_token(*model);
  json out = {{"engine", "plugformer"},
              {"dtype", opt["--quantize"].empty() ? opt["--dtype"] : opt["--quantize"]},
              {"batch", batch},
              {"prefill_tokens_per_s", double(batch * prompt) / prefill_s},
              {"decode_tokens_per_s", double(batch * (new_tokens - 1)) / decode_s},
              {"ttft_ms", prefill_s * 1e3},
              {"load_ms", load_s * 1e3},
              {"peak_rss_mb", peak_rss / 1e6},
              {"weight_mb_per_token", bytes / 1e6},
              {"bandwidth_gbps", bandwidth},
              {"decode_bound_tokens_per_s", bandwidth * 1e9 / double(bytes)}};
  std::cout << out.dump() << std::endl;
}

// GB/s of weight read by one-row and eight-row products through the shared layers, per weight
// type and layout (int8 = quantized, fp32 activations), next to libtorch's own matrix-vector
// product (OpenBLAS sgemv) on the same fp32 weights.
void linear_speed() {
  c10::InferenceMode guard;
  const int64_t in = 768, out = 3072, copies = 64;  // 64 distinct weights: 600 MB fp32, beyond the caches
  auto timed = [&](const std::function<void(int64_t)>& product) {
    double best = 1e9;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t = Clock::now();
      for (int64_t i = 0; i < copies; ++i) product(i);
      best = std::min(best, seconds_since(t));
    }
    return best;
  };
  for (auto type : {at::kFloat, at::kBFloat16, at::kChar}) {
    const auto activation = type == at::kChar ? at::kFloat : type;
    const int64_t bytes = copies * in * out * int64_t(c10::elementSize(type));
    for (bool conv : {false, true}) {
      if (conv && type == at::kChar) continue;  // int8 weights are stored [out, in] in both layouts
      std::vector<std::shared_ptr<Linear>> linears;
      std::vector<std::shared_ptr<Conv1D>> convs;
      for (int64_t i = 0; i < copies; ++i) {
        if (conv) {
          convs.push_back(std::make_shared<Conv1D>(in, out));
          convs.back()->weight = at::randn({in, out}).to(type);
          convs.back()->bias = at::zeros({out}, type);
        } else {
          linears.push_back(std::make_shared<Linear>(in, out, false));
          if (type == at::kChar) {
            linears.back()->weight = at::randint(-127, 128, {out, in}).to(at::kChar);
            linears.back()->register_buffer("weight_scale", at::full({out}, 0.01f));
          } else {
            linears.back()->weight = at::randn({out, in}).to(type);
          }
        }
      }
      for (int64_t rows : {1, 8}) {  // batch-1 and batch-8 decode
        const at::Tensor x = at::randn({rows, 1, in}).to(activation);
        const double best = timed([&](int64_t i) { conv ? convs[size_t(i)]->forward(x) : linears[size_t(i)]->forward(x); });
        std::cout << c10::toString(type) << (conv ? " Conv1D " : " Linear ") << rows << " row(s) "
                  << double(bytes) / best / 1e9 << " GB/s\n";
      }
      if (type == at::kFloat && !conv) {
        const at::Tensor v = at::randn({in});
        const double mv = timed([&](int64_t i) { at::mv(linears[size_t(i)]->weight, v); });
        std::cout << "Float at::mv (libtorch) " << double(bytes) / mv / 1e9 << " GB/s\n";
      }
    }
  }
}

// Decode attention (one query over a KV cache) through the shared layer: microseconds per call
// and GB/s of keys and values read, for gpt2-small's 12 heads of 64 at several cache lengths.
void attention_speed() {
  c10::InferenceMode guard;
  for (int64_t len : {128, 512, 1024}) {
    const at::Tensor q = at::randn({1, 12, 1, 64}), k = at::randn({1, 12, len, 64}), v = at::randn({1, 12, len, 64});
    const at::Tensor mask = at::zeros({1, 1, 1, len});
    const int64_t calls = 2000;
    double best = 1e9;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t = Clock::now();
      for (int64_t i = 0; i < calls; ++i) attention(q, k, v, mask, 0.125);
      best = std::min(best, seconds_since(t) / double(calls));
    }
    std::cout << "cache " << len << ": " << best * 1e6 << " us per call, "
              << double(k.nbytes() + v.nbytes()) / best / 1e9 << " GB/s\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    init_runtime();
    const std::string command = argc > 1 ? argv[1] : "";
    if ((command == "make-gpt2" || command == "make-t5") && argc == 3) {
      (command == "make-gpt2" ? make_gpt2 : make_t5)(argv[2]);
      return 0;
    }
    if (command == "make-from-config" && argc == 4) {
      make_from_config(argv[2], argv[3]);
      return 0;
    }
    if (command == "attention") {
      attention_speed();
      return 0;
    }
    if (command == "linear") {
      linear_speed();
      return 0;
    }
    if (command == "bandwidth") {
      std::cout << read_bandwidth() << "\n";
      return 0;
    }
    if (command == "run" && argc >= 3) {
      std::map<std::string, std::string> opt = {
          {"--dtype", "float32"}, {"--batch", "1"}, {"--prompt", "512"}, {"--new", "128"}, {"--threads", ""}, {"--repeat", "1"},
          {"--quantize", ""}};
      for (int i = 3; i + 1 < argc; i += 2) {
        if (!opt.count(argv[i])) throw InvalidInputError(std::string("unknown option ") + argv[i]);
        opt[argv[i]] = argv[i + 1];
      }
      run(argv[2], opt);
      return 0;
    }
    std::cerr << "usage: generation_bench make-gpt2 DIR | make-t5 DIR | make-from-config CONFIG DIR | run DIR [--dtype D] [--batch B] [--prompt N] [--new M] [--repeat R] "
                 "[--threads T] [--quantize int8] | linear | attention | bandwidth\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
