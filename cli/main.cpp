// The plugformer command.
#include <cstdlib>
#include <iostream>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/log.h>

#include "commands.h"
#include "tensor_parallel_launch.h"

int main(int argc, char** argv) {
  plugformer::cli::remember_command_line(argc, argv);
  CLI::App app{"plugformer: run Hugging Face transformer checkpoints from C++"};
  app.require_subcommand(1);
  plugformer::cli::add_model_commands(app);
  plugformer::cli::add_pipeline_commands(app);
  plugformer::cli::add_embedding_commands(app);
  plugformer::cli::add_chat_commands(app);
  plugformer::cli::add_serve_commands(app);
#ifdef PLUGFORMER_HAS_TOKENIZE_COMMANDS
  add_tokenize_commands(app, [](const std::string& dir) { return plugformer::AutoTokenizer::from_pretrained(dir); });
#endif
#ifdef PLUGFORMER_HAS_HUB_COMMANDS
  add_hub_commands(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const plugformer::Error& e) {
    // A tensor-parallel rank started by a launcher says which rank it is.
    const char* rank = std::getenv("RANK");
    std::cerr << (rank ? std::string("rank ") + rank + ": " : "") << "error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    // Others' exceptions (libtorch's) may carry a C++ backtrace after their first line: it goes
    // to the debug log only (PLUGFORMER_LOG_LEVEL=debug).
    const std::string what = e.what();
    plugformer::logger().debug("{}", what);
    std::cerr << "error: " << what.substr(0, what.find('\n')) << "\n";
    return 2;
  }
  return 0;
}
