// Each file of the CLI adds its subcommands to the app.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include <plugformer/tokenizer.h>

namespace plugformer::cli {

void add_model_commands(CLI::App& app);     // list, info, generate, forward
void add_pipeline_commands(CLI::App& app);  // run <task>
void add_embedding_commands(CLI::App& app); // embed, rerank

}  // namespace plugformer::cli

// tokenize / detokenize (tokenize_commands.cpp); `load` builds the tokenizer of a directory.
void add_tokenize_commands(CLI::App& app,
                           std::function<std::shared_ptr<plugformer::Tokenizer>(const std::string& dir)> load);
// download / cache (hub_commands.cpp).
void add_hub_commands(CLI::App& app);
