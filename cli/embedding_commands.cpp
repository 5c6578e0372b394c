// embed / rerank: sentence-transformers' SentenceTransformer.encode and CrossEncoder.predict over
// an input file of JSON lines.
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>

#include <CLI/CLI.hpp>

#include <plugformer/error.h>
#include <plugformer/sentence_transformers.h>

#include "commands.h"

namespace plugformer::cli {

namespace {

struct EmbeddingArgs {
  std::string model, input, prompt_name, activation;
  bool no_normalize = false, json_output = false;
};

// The input file's lines as JSON values (blank lines skipped); errors name the file and line.
std::vector<json> read_json_lines(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw FileNotFoundError(file + ": cannot open the input file");
  std::vector<json> values;
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      values.push_back(json::parse(line));
    } catch (const json::exception&) {
      throw InvalidInputError(file + ":" + std::to_string(number) + ": not a JSON value");
    }
    if (values.back().is_null()) throw InvalidInputError(file + ":" + std::to_string(number) + ": null is not an input");
  }
  if (values.empty()) throw InvalidInputError(file + ": no inputs (one JSON value per line expected)");
  return values;
}

// A [n] or [n, k] float tensor as JSON (rounding-free: every float printed as a double).
json tensor_json(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  const double* p = c.data_ptr<double>();
  if (c.dim() == 1) return json(std::vector<double>(p, p + c.numel()));
  json rows = json::array();
  for (int64_t r = 0; r < c.size(0); ++r) rows.push_back(std::vector<double>(p + r * c.size(1), p + (r + 1) * c.size(1)));
  return rows;
}

void print(const at::Tensor& t, bool as_json) {
  if (as_json) {
    std::cout << tensor_json(t).dump() << "\n";
    return;
  }
  const json rows = tensor_json(t);
  std::cout << std::setprecision(6);
  for (const auto& row : rows) {
    if (row.is_array())
      for (size_t i = 0; i < row.size(); ++i) std::cout << (i ? " " : "") << row[i].get<double>();
    else
      std::cout << row.get<double>();
    std::cout << "\n";
  }
}

void run_embed(const EmbeddingArgs& a) {
  std::vector<std::string> texts;
  const auto lines = read_json_lines(a.input);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!lines[i].is_string())
      throw InvalidInputError(a.input + ": input " + std::to_string(i + 1) + " is not a JSON string");
    texts.push_back(lines[i].get<std::string>());
  }
  auto model = SentenceTransformer::from_pretrained(a.model);
  EncodeOptions options;
  if (!a.prompt_name.empty()) options.prompt_name = a.prompt_name;
  options.normalize_modules = !a.no_normalize;
  print(model->encode(texts, options), a.json_output);
}

void run_rerank(const EmbeddingArgs& a) {
  std::vector<std::pair<std::string, std::string>> pairs;
  const auto lines = read_json_lines(a.input);
  for (size_t i = 0; i < lines.size(); ++i) {
    const json& p = lines[i];
    if (!p.is_array() || p.size() != 2 || !p[0].is_string() || !p[1].is_string())
      throw InvalidInputError(a.input + ": input " + std::to_string(i + 1) +
                              " is not a [query, passage] pair of two JSON strings");
    pairs.emplace_back(p[0].get<std::string>(), p[1].get<std::string>());
  }
  auto model = CrossEncoder::from_pretrained(a.model);
  PredictOptions options;
  if (!a.activation.empty()) options.activation = a.activation;
  print(model->predict(pairs, options), a.json_output);
}

}  // namespace

void add_embedding_commands(CLI::App& app) {
  static EmbeddingArgs embed_args, rerank_args;
  auto* embed = app.add_subcommand("embed", "Sentence embeddings of a sentence-transformers model (one per input line)");
  embed->add_option("model", embed_args.model, "Model directory or Hub id")->required();
  embed->add_option("--input", embed_args.input, "File with one JSON string per line")->required();
  embed->add_option("--prompt-name", embed_args.prompt_name, "One of the model's prompts (config_sentence_transformers.json)");
  embed->add_flag("--no-normalize", embed_args.no_normalize, "Skip the model's Normalize module");
  embed->add_flag("--json", embed_args.json_output, "Print one JSON list of embeddings");
  embed->callback([] { run_embed(embed_args); });

  auto* rerank = app.add_subcommand("rerank", "Cross-encoder scores of [query, passage] pairs (one per input line)");
  rerank->add_option("model", rerank_args.model, "Model directory or Hub id")->required();
  rerank->add_option("--input", rerank_args.input, "File with one JSON [query, passage] pair per line")->required();
  rerank->add_option("--activation", rerank_args.activation, "sigmoid | identity (default: the model's; sigmoid for one label)")
      ->check(CLI::IsMember({"sigmoid", "identity"}));
  rerank->add_flag("--json", rerank_args.json_output, "Print one JSON list of scores");
  rerank->callback([] { run_rerank(rerank_args); });
}

}  // namespace plugformer::cli
