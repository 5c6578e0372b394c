// run <task> <model> <text...>: transformers' pipelines from the command line.
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <optional>

#include <CLI/CLI.hpp>

#include <plugformer/pipelines.h>

#include "commands.h"

namespace plugformer::cli {

namespace {

struct RunArgs {
  std::string task, model;
  std::vector<std::string> texts;
  bool json_output = false, normalize = false, handle_impossible_answer = false;
  std::optional<int64_t> top_k, max_answer_len;
  std::string function_to_apply = "default", aggregation_strategy = "none", pooling = "none";
};

std::string score(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", s);
  return buf;
}

// One result of one input, readable: a line per candidate / label / entity / answer.
void print_result(const std::string& task, const json& r) {
  if (task == "feature-extraction") {
    const json& v = r.is_array() && !r.empty() && r[0].is_array() ? r[0] : json::array({r});
    std::cout << v.size() << " x " << (v.empty() ? 0 : v[0].size()) << " features; first row:";
    for (size_t i = 0; i < std::min<size_t>(8, v.empty() ? 0 : v[0].size()); ++i) std::cout << " " << score(v[0][i]);
    std::cout << (v.empty() || v[0].size() > 8 ? " ..." : "") << "\n";
    return;
  }
  const json items = r.is_object() ? json::array({r}) : r;
  for (const auto& item : items) {
    if (item.is_array()) {  // fill-mask with several masks: one block per mask
      print_result(task, item);
      std::cout << "--\n";
    } else if (item.contains("token_str")) {
      std::cout << score(item["score"]) << "  " << item["token_str"].get<std::string>() << "  | "
                << item["sequence"].get<std::string>() << "\n";
    } else if (item.contains("label")) {
      std::cout << score(item["score"]) << "  " << item["label"].get<std::string>() << "\n";
    } else if (item.contains("answer")) {
      std::cout << score(item["score"]) << "  [" << item["start"] << ", " << item["end"] << ")  "
                << item["answer"].get<std::string>() << "\n";
    } else {
      const std::string entity = item.contains("entity_group") ? item["entity_group"] : item["entity"];
      std::cout << score(item["score"]) << "  " << std::left << std::setw(10) << entity << " [" << item["start"] << ", "
                << item["end"] << ")  " << item["word"].get<std::string>() << "\n";
    }
  }
}

void run(const RunArgs& args) {
  json options = {{"function_to_apply", args.function_to_apply},
                  {"aggregation_strategy", args.aggregation_strategy},
                  {"pooling", args.pooling},
                  {"normalize", args.normalize},
                  {"handle_impossible_answer", args.handle_impossible_answer}};
  if (args.top_k) options["top_k"] = *args.top_k;
  if (args.max_answer_len) options["max_answer_len"] = *args.max_answer_len;
  const json result = run_pipeline(args.task, args.model, args.texts, options);
  if (args.json_output) {
    std::cout << result.dump() << "\n";
    return;
  }
  const bool per_input = args.texts.size() > 1 && args.task != "question-answering";
  for (size_t i = 0; i < (per_input ? result.size() : 1); ++i) {
    if (per_input) std::cout << "== " << args.texts[i] << "\n";
    print_result(args.task == "ner" ? "token-classification" : args.task, per_input ? result[i] : result);
  }
}

}  // namespace

void add_pipeline_commands(CLI::App& app) {
  static RunArgs args;
  auto* cmd = app.add_subcommand("run", "A transformers pipeline: fill-mask, text-classification, "
                                        "token-classification, question-answering, feature-extraction");
  cmd->add_option("task", args.task, "fill-mask | text-classification (sentiment-analysis) | token-classification "
                                     "(ner) | question-answering | feature-extraction")
      ->required();
  cmd->add_option("model", args.model, "Model directory or Hub id")->required();
  cmd->add_option("texts", args.texts, "Input texts (question-answering: the question, then the context)")->required();
  cmd->add_flag("--json", args.json_output, "Print what the Python pipeline returns, as JSON");
  cmd->add_option("--top-k", args.top_k, "Candidates / labels / answers to return");
  cmd->add_option("--function-to-apply", args.function_to_apply, "text-classification: default | softmax | sigmoid | none");
  cmd->add_option("--aggregation-strategy", args.aggregation_strategy, "token-classification: none | simple");
  cmd->add_option("--max-answer-len", args.max_answer_len, "question-answering: longest answer in tokens (15)");
  cmd->add_flag("--handle-impossible-answer", args.handle_impossible_answer, "question-answering: allow no answer");
  cmd->add_option("--pooling", args.pooling, "feature-extraction: none (every token) | cls | mean");
  cmd->add_flag("--normalize", args.normalize, "feature-extraction: scale to unit L2 norm");
  cmd->callback([] { run(args); });
}

}  // namespace plugformer::cli
