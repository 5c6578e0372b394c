// Forward speed of an encoder (BertModel) at a given batch x sequence shape, with the FLOPs done
// and the machine's sgemm peak measured in the same process. Driven by run_bench.py, which runs
// the PyTorch eager peer (eager_bert.py) on the same weights.
//
//   encoder_bench make-bert DIR                                   random bert-base (110M) in HF format
//   encoder_bench run DIR [--dtype D] [--batch B] [--seq S] [--threads T] [--repeat R]
//   encoder_bench sgemm [--threads T]                             fp32 GEMM peak, GFLOP/s
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <iostream>
#include <map>
#include <string>

#include <plugformer/auto.h>
#include <plugformer/runtime.h>

using namespace plugformer;
using Clock = std::chrono::steady_clock;

namespace {

template <class Fn>
double best_seconds(int64_t repeat, Fn&& fn) {
  fn();  // warm-up
  double best = 1e30;
  for (int64_t i = 0; i < repeat; ++i) {
    const auto t = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t).count());
  }
  return best;
}

// A large square fp32 product: what OpenBLAS reaches on this machine.
double sgemm_peak() {
  const at::Tensor a = at::randn({2048, 2048}), b = at::randn({2048, 2048});
  const double s = best_seconds(5, [&] { at::mm(a, b); });
  return 2.0 * 2048 * 2048 * 2048 / s / 1e9;
}

// FLOPs of one BERT encoder forward: per token and layer 24 h^2 (q, k, v, o and the two
// feed-forward products, 2 FLOPs per multiply-add) plus 4 s h for scores and values; the pooler.
double bert_flops(const PretrainedConfig& c, int64_t batch, int64_t seq) {
  const double h = c.get("hidden_size").get<double>(), ff = c.get("intermediate_size").get<double>();
  const double layers = c.get("num_hidden_layers").get<double>();
  const double tokens = double(batch * seq);
  return layers * tokens * (8 * h * h + 4 * h * ff + 4 * double(seq) * h) + double(batch) * 2 * h * h;
}

void make_bert(const std::string& dir) {
  auto config = AutoConfig::for_model("bert", json{{"hidden_size", 768}, {"num_hidden_layers", 12},
                                                   {"num_attention_heads", 12}, {"intermediate_size", 3072},
                                                   {"vocab_size", 30522}, {"max_position_embeddings", 512}});
  auto model = AutoModel::from_config(config);
  model->save_pretrained(dir);
  std::cout << "wrote " << dir << " (" << model->num_parameters() << " parameters)\n";
}

void run(const std::string& dir, std::map<std::string, std::string> opt) {
  const int64_t batch = std::stoll(opt["--batch"]), seq = std::stoll(opt["--seq"]);
  PretrainedOptions options;
  options.torch_dtype = opt["--dtype"];
  auto model = AutoModel::from_pretrained(dir, options);
  if (!opt["--threads"].empty()) at::set_num_threads(std::stoi(opt["--threads"]));
  const int64_t vocab = model->config().get("vocab_size").get<int64_t>();
  at::manual_seed(0);
  ModelInputs inputs{{"input_ids", at::randint(0, vocab, {batch, seq}, at::kLong)},
                     {"attention_mask", at::ones({batch, seq}, at::kLong)}};
  c10::InferenceMode guard;
  const double s = best_seconds(std::stoll(opt["--repeat"]), [&] { model->forward(inputs); });
  const double flops = bert_flops(model->config(), batch, seq);
  json out = {{"engine", "plugformer"},       {"dtype", opt["--dtype"]}, {"batch", batch},
              {"seq", seq},                   {"ms", s * 1e3},           {"gflops", flops / s / 1e9},
              {"sgemm_peak_gflops", sgemm_peak()}};
  std::cout << out.dump() << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string command = argc > 1 ? argv[1] : "";
    if (command == "make-bert" && argc == 3) {
      make_bert(argv[2]);
      return 0;
    }
    if (command == "run" && argc >= 3) {
      std::map<std::string, std::string> opt = {
          {"--dtype", "float32"}, {"--batch", "8"}, {"--seq", "128"}, {"--threads", ""}, {"--repeat", "10"}};
      for (int i = 3; i + 1 < argc; i += 2) {
        if (!opt.count(argv[i])) throw InvalidInputError(std::string("unknown option ") + argv[i]);
        opt[argv[i]] = argv[i + 1];
      }
      run(argv[2], opt);
      return 0;
    }
    std::cerr << "usage: encoder_bench make-bert DIR | run DIR [--dtype D] [--batch B] [--seq S] [--threads T] "
                 "[--repeat R]\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
