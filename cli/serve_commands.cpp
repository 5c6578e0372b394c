// serve: the OpenAI / TEI-compatible HTTP server (server/http_server.h).
#include <pthread.h>
#include <signal.h>
#include <cstdlib>  // getenv

#include "commands.h"
#include "http_server.h"
#include "tensor_parallel_launch.h"

namespace plugformer::cli {

void add_serve_commands(CLI::App& app) {
  static server::ServerOptions options;
  static TensorParallelArgs parallel;
  auto* cmd = app.add_subcommand("serve", "Serve a model over HTTP (OpenAI /v1 API, TEI /embed and /rerank)");
  cmd->add_option("model", options.model, "Model directory or Hub repo id")->required();
  cmd->add_option("--served-model-name", options.served_model_name, "The model name clients use (default: the folder name)");
  cmd->add_option("--host", options.host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", options.port, "Port (0: any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", options.api_keys, "Accept only requests with 'Authorization: Bearer KEY' (repeatable; "
                                                 "also PLUGFORMER_API_KEY)");
  cmd->add_option("--dtype", options.dtype, "Weights dtype: float32, bfloat16, float16 or auto");
  cmd->add_option("--quantize", options.quantize, "Weight-only quantization: int8");
  cmd->add_option("--task", options.task, "generate, embed or rerank (default: from the checkpoint)");
  cmd->add_option("--chat-template", options.chat_template_file, "A Jinja chat template file replacing the model's");
  cmd->add_option("--max-num-seqs", options.max_num_seqs, "Sequences decoded together")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--max-queue", options.max_queue, "Requests waiting for a slot before 429")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-model-len", options.max_model_len, "Prompt + generated tokens (default: the model's context)");
  cmd->add_option("--request-timeout", options.request_timeout, "Seconds a request may take in all")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--max-body-bytes", options.max_body_bytes, "Largest request body")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--shutdown-timeout", options.shutdown_timeout, "Seconds SIGTERM waits for running requests")->capture_default_str()->check(CLI::NonNegativeNumber);
  add_tensor_parallel_options(cmd, parallel);
  cmd->callback([] {
    // The key from the environment too, never printed.
    if (const char* key = std::getenv("PLUGFORMER_API_KEY"); key && *key) options.api_keys.emplace_back(key);
    // SIGTERM / SIGINT are for the server's own signal thread: block them before the tensor-parallel
    // group starts its threads, which inherit the mask.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    RankLauncher ranks;
    options.tensor_parallel = ranks.join(parallel);
    if (options.tensor_parallel && options.tensor_parallel->rank() != 0) {
      // Rank 0 serves HTTP and stops this rank when it shuts down (a terminal's Ctrl-C goes to it);
      // SIGTERM still ends this rank.
      sigset_t term;
      sigemptyset(&term);
      sigaddset(&term, SIGTERM);
      pthread_sigmask(SIG_UNBLOCK, &term, nullptr);
      server::follow_tensor_parallel_server(options);
      return;
    }
    server::run_server(options);
    ranks.wait();
  });
}

}  // namespace plugformer::cli
