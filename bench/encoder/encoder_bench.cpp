// Forward speed of an encoder (BertModel) at a given batch x sequence shape, with the FLOPs done
// and the machine's sgemm peak measured in the same process. Driven by run_bench.py, which runs
// the PyTorch eager peer (eager_bert.py) on the same weights.
//
//   encoder_bench make-bert DIR                                   random bert-base (110M) in HF format
//   encoder_bench make-minilm DIR TOKENIZER_DIR                   all-MiniLM-L6-v2-shaped sentence-transformers folder
//   encoder_bench embed DIR --input FILE [--batch 32] [--repeat R] [--dump-ids F]   sentences/s, tokenization included
//   encoder_bench make-cross-encoder DIR TOKENIZER_DIR            ms-marco-MiniLM-L-6-v2-shaped cross-encoder
//   encoder_bench rerank DIR --input FILE [--passages 100] [--batch 32] [--repeat R] [--dump-ids F]
//                                                                 (query, passage) pairs/s, tokenization included
//   encoder_bench run DIR [--dtype D] [--batch B] [--seq S] [--threads T] [--repeat R] [--profile TRACE]
//                         (--profile: one more forward under libtorch's profiler, written as a Chrome trace)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <iostream>
#include <map>
#include <string>

#include <plugformer/auto.h>
#include <plugformer/runtime.h>
#include <plugformer/sentence_transformers.h>

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

// An all-MiniLM-L6-v2-shaped sentence-transformers folder (random weights; the real all-MiniLM
// tokenizer files from `tokenizer_dir`): Transformer (max_seq_length 256) -> mean -> Normalize.
void make_minilm(const std::string& dir, const std::string& tokenizer_dir) {
  namespace fs = std::filesystem;
  auto config = AutoConfig::for_model("bert", json{{"hidden_size", 384}, {"num_hidden_layers", 6},
                                                   {"num_attention_heads", 12}, {"intermediate_size", 1536},
                                                   {"vocab_size", 30522}, {"max_position_embeddings", 512}});
  auto model = AutoModel::from_config(config);
  model->save_pretrained(dir);
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"})
    fs::copy_file(fs::path(tokenizer_dir) / file, fs::path(dir) / file, fs::copy_options::overwrite_existing);
  write_json_file(fs::path(dir) / "modules.json",
                  json::array({{{"idx", 0}, {"name", "0"}, {"path", ""}, {"type", "sentence_transformers.models.Transformer"}},
                               {{"idx", 1}, {"name", "1"}, {"path", "1_Pooling"}, {"type", "sentence_transformers.models.Pooling"}},
                               {{"idx", 2}, {"name", "2"}, {"path", "2_Normalize"}, {"type", "sentence_transformers.models.Normalize"}}}));
  write_json_file(fs::path(dir) / "sentence_bert_config.json", json{{"max_seq_length", 256}, {"do_lower_case", false}});
  fs::create_directories(fs::path(dir) / "1_Pooling");
  write_json_file(fs::path(dir) / "1_Pooling/config.json", json{{"word_embedding_dimension", 384}, {"pooling_mode_mean_tokens", true}});
  std::cout << "wrote " << dir << " (" << model->num_parameters() << " parameters)\n";
}

// An ms-marco-MiniLM-L-6-v2-shaped cross-encoder (BertForSequenceClassification with one label;
// random weights, the tokenizer files of `tokenizer_dir`).
void make_cross_encoder(const std::string& dir, const std::string& tokenizer_dir) {
  namespace fs = std::filesystem;
  auto config = AutoConfig::for_model("bert", json{{"hidden_size", 384}, {"num_hidden_layers", 6},
                                                   {"num_attention_heads", 12}, {"intermediate_size", 1536},
                                                   {"vocab_size", 30522}, {"max_position_embeddings", 512},
                                                   {"num_labels", 1}, {"architectures", {"BertForSequenceClassification"}}});
  auto model = AutoModelForSequenceClassification::from_config(config);
  model->save_pretrained(dir);
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"})
    fs::copy_file(fs::path(tokenizer_dir) / file, fs::path(dir) / file, fs::copy_options::overwrite_existing);
  std::cout << "wrote " << dir << " (" << model->num_parameters() << " parameters)\n";
}

std::vector<std::string> read_lines(const std::string& file) {
  std::vector<std::string> lines;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  if (lines.empty()) throw InvalidInputError(file + ": no lines");
  return lines;
}

// (query, passage) pairs per second of CrossEncoder::predict, one call per query as rank() makes
// it: each line of the file in turn is a query, the next --passages lines its passages (tokenization
// included). --dump-ids writes each call's batches (input_ids and token_type_ids) as
// sentence-transformers makes them, for the eager peer.
void rerank(const std::string& dir, std::map<std::string, std::string> opt) {
  if (!opt["--threads"].empty()) at::set_num_threads(std::stoi(opt["--threads"]));
  const std::vector<std::string> lines = read_lines(opt["--input"]);
  const size_t passages = std::stoul(opt["--passages"]);
  std::vector<std::vector<std::pair<std::string, std::string>>> queries;
  for (size_t q = 0; q + passages < lines.size(); q += passages + 1) {
    queries.emplace_back();
    for (size_t p = 1; p <= passages; ++p) queries.back().emplace_back(lines[q], lines[q + p]);
  }
  auto model = CrossEncoder::from_pretrained(dir);
  PredictOptions options;
  options.batch_size = std::stoll(opt["--batch"]);
  if (queries.empty()) throw InvalidInputError(opt["--input"] + ": fewer lines than one query and its passages");
  model->predict(queries.front(), options);  // warm-up
  double s = 1e30;
  for (int64_t r = 0; r < std::stoll(opt["--repeat"]); ++r) {
    const auto start = Clock::now();
    for (const auto& pairs : queries) model->predict(pairs, options);
    s = std::min(s, std::chrono::duration<double>(Clock::now() - start).count());
  }
  if (!opt["--dump-ids"].empty()) {
    // The batches sentence-transformers' predict makes: pairs sorted by decreasing characters
    // (bytes here: the license text is ASCII), encoded with the model's truncation and unpadded
    // (tokenizer.json's padding would pad to the call's longest; each batch pads to its own).
    auto tokenizer = AutoTokenizer::from_pretrained(dir);
    tokenizer->set_padding(std::nullopt);
    json calls = json::array();
    for (auto pairs : queries) {
      std::stable_sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) {
        return a.first.size() + a.second.size() > b.first.size() + b.second.size();
      });
      const std::vector<Encoding> encodings = tokenizer->encode_batch_pairs(pairs);
      json batches = json::array();
      for (size_t i = 0; i < encodings.size(); i += size_t(options.batch_size)) {
        json batch = json::array();
        for (size_t j = i; j < std::min(encodings.size(), i + size_t(options.batch_size)); ++j)
          batch.push_back({{"ids", encodings[j].ids}, {"types", encodings[j].type_ids}});
        batches.push_back(batch);
      }
      calls.push_back(batches);
    }
    write_json_file(opt["--dump-ids"], calls, -1);
  }
  const size_t pairs = queries.size() * passages;
  std::cout << json{{"engine", "plugformer"}, {"pairs", pairs}, {"seconds", s}, {"pairs_per_s", double(pairs) / s}}.dump()
            << std::endl;
}

// Sentences per second of SentenceTransformer::encode over the lines of a text file, tokenization
// included. --dump-ids writes the token ids of each batch (sentence-transformers' order: longest
// first) for the eager peer.
void embed(const std::string& dir, std::map<std::string, std::string> opt) {
  if (!opt["--threads"].empty()) at::set_num_threads(std::stoi(opt["--threads"]));
  const std::vector<std::string> lines = read_lines(opt["--input"]);
  auto model = SentenceTransformer::from_pretrained(dir);
  EncodeOptions options;
  options.batch_size = std::stoll(opt["--batch"]);
  model->encode({lines.front()}, options);  // warm-up
  double best = 1e30;
  for (int64_t r = 0; r < std::stoll(opt["--repeat"]); ++r) {
    const auto start = std::chrono::steady_clock::now();
    model->encode(lines, options);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  if (!opt["--dump-ids"].empty()) {
    auto tokenizer = AutoTokenizer::from_pretrained(dir);
    tokenizer->set_truncation(TruncationParams{size_t(model->max_seq_length())});
    tokenizer->set_padding(std::nullopt);
    std::vector<size_t> order(lines.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lines[a].size() > lines[b].size(); });
    json batches = json::array();
    for (size_t i = 0; i < order.size(); i += size_t(options.batch_size)) {
      json batch = json::array();
      for (size_t j = i; j < std::min(order.size(), i + size_t(options.batch_size)); ++j) {
        std::string text = lines[order[j]];
        const size_t first = text.find_first_not_of(" \t\r\n"), last = text.find_last_not_of(" \t\r\n");
        text = first == std::string::npos ? "" : text.substr(first, last - first + 1);
        batch.push_back(tokenizer->encode(text).ids);
      }
      batches.push_back(batch);
    }
    write_json_file(opt["--dump-ids"], batches, -1);
  }
  std::cout << json{{"engine", "plugformer"}, {"sentences", lines.size()}, {"seconds", best},
                    {"sentences_per_s", double(lines.size()) / best}}.dump() << std::endl;
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
  if (!opt["--profile"].empty()) {
    torch::autograd::profiler::RecordProfile profile(opt["--profile"]);
    model->forward(inputs);
  }
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
    if (command == "make-minilm" && argc == 4) {
      make_minilm(argv[2], argv[3]);
      return 0;
    }
    if (command == "embed" && argc >= 3) {
      std::map<std::string, std::string> opt = {
          {"--input", ""}, {"--batch", "32"}, {"--threads", ""}, {"--repeat", "1"}, {"--dump-ids", ""}};
      for (int i = 3; i + 1 < argc; i += 2) {
        if (!opt.count(argv[i])) throw InvalidInputError(std::string("unknown option ") + argv[i]);
        opt[argv[i]] = argv[i + 1];
      }
      embed(argv[2], opt);
      return 0;
    }
    if (command == "make-cross-encoder" && argc == 4) {
      make_cross_encoder(argv[2], argv[3]);
      return 0;
    }
    if (command == "rerank" && argc >= 3) {
      std::map<std::string, std::string> opt = {{"--input", ""},   {"--passages", "100"}, {"--batch", "32"},
                                                {"--threads", ""}, {"--repeat", "1"},     {"--dump-ids", ""}};
      for (int i = 3; i + 1 < argc; i += 2) {
        if (!opt.count(argv[i])) throw InvalidInputError(std::string("unknown option ") + argv[i]);
        opt[argv[i]] = argv[i + 1];
      }
      rerank(argv[2], opt);
      return 0;
    }
    if (command == "make-bert" && argc == 3) {
      make_bert(argv[2]);
      return 0;
    }
    if (command == "run" && argc >= 3) {
      std::map<std::string, std::string> opt = {
          {"--dtype", "float32"}, {"--batch", "8"}, {"--seq", "128"}, {"--threads", ""}, {"--repeat", "10"},
          {"--profile", ""}};
      for (int i = 3; i + 1 < argc; i += 2) {
        if (!opt.count(argv[i])) throw InvalidInputError(std::string("unknown option ") + argv[i]);
        opt[argv[i]] = argv[i + 1];
      }
      run(argv[2], opt);
      return 0;
    }
    std::cerr << "usage: encoder_bench make-bert DIR | make-minilm DIR TOKENIZER_DIR | make-cross-encoder DIR "
                 "TOKENIZER_DIR | run DIR [options] | embed DIR --input FILE [options] | rerank DIR --input FILE "
                 "[options] (options: see the top of bench/encoder/encoder_bench.cpp)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
