// `plugformer serve`: one model behind OpenAI's (/v1/models, /v1/completions, /v1/chat/completions,
// /v1/embeddings), TEI's (/embed, /rerank) and llama-server's (/tokenize, /detokenize) endpoints,
// with /health and Prometheus /metrics. The HTTP layer parses, validates and streams; generation
// goes through the continuous-batching Engine, encoders through one worker thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <plugformer/distributed.h>

namespace plugformer::server {

struct ServerOptions {
  std::string model;              // directory or Hub repo id
  std::string served_model_name;  // default: the model's folder name / repo id
  std::string host = "127.0.0.1";
  int port = 8080;                // 0: any free port
  std::vector<std::string> api_keys;  // empty: no authentication
  std::string dtype, quantize;
  std::string task;               // "generate", "embed", "rerank"; empty: from the checkpoint
  std::string chat_template_file;
  int64_t max_num_seqs = 8, max_queue = 64;
  int64_t max_model_len = 0;      // 0: the model's max_position_embeddings
  double request_timeout = 600;   // seconds a request may take in all
  int64_t max_body_bytes = 16 << 20;
  double shutdown_timeout = 30;   // seconds SIGTERM waits for running requests
  // This process is rank 0 of a tensor-parallel group (generation only): the other ranks run
  // follow_tensor_parallel_server.
  std::shared_ptr<TensorParallelGroup> tensor_parallel;
};

// Listens, loads the model (GET /health answers 503 until then), prints
// "plugformer serve: listening on http://HOST:PORT" once ready, and serves until SIGTERM or SIGINT;
// then finishes the running requests (up to shutdown_timeout) and returns 0.
int run_server(const ServerOptions& options);

// A tensor-parallel rank other than 0: loads its slices of the model as rank 0 does, then repeats
// rank 0's model calls until rank 0's server stops (returns) or a rank is lost (DistributedError).
void follow_tensor_parallel_server(const ServerOptions& options);

}  // namespace plugformer::server
