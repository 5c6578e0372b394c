// Each file of the CLI adds its subcommands to the app.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <plugformer/tokenizer.h>

namespace plugformer {
class PreTrainedModel;
struct PretrainedOptions;
struct GenerationConfig;
}  // namespace plugformer

namespace plugformer::cli {

// The generation options generate and chat share; overrides of generation_config.json when given.
struct SamplingArgs {
  std::string dtype, quantize;
  int64_t max_new_tokens = 64;
  std::optional<bool> do_sample;
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k, num_beams, no_repeat_ngram_size, seed;
  std::vector<std::string> stop;
};
void add_sampling_options(CLI::App* command, SamplingArgs& args);
// The model's generation config (config.json, generation_config.json) with the options applied.
GenerationConfig generation_config_for(const PreTrainedModel& model, const std::string& model_path,
                                       const PretrainedOptions& options, const SamplingArgs& args);

void add_model_commands(CLI::App& app);     // list, info, generate, forward
void add_pipeline_commands(CLI::App& app);  // run <task>
void add_embedding_commands(CLI::App& app); // embed, rerank
void add_chat_commands(CLI::App& app);      // chat-template, chat
void add_serve_commands(CLI::App& app);     // serve

}  // namespace plugformer::cli

// tokenize / detokenize (tokenize_commands.cpp); `load` builds the tokenizer of a directory.
void add_tokenize_commands(CLI::App& app,
                           std::function<std::shared_ptr<plugformer::Tokenizer>(const std::string& dir)> load);
// download / cache (hub_commands.cpp).
void add_hub_commands(CLI::App& app);
