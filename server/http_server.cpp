#include "http_server.h"

#include <httplib.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <sstream>

#include <plugformer/auto.h>
#include <plugformer/log.h>
#include <plugformer/sentence_transformers.h>

#include "engine.h"
#include "metrics.h"
#include "openai_api.h"
#include "tei_api.h"

namespace plugformer::server {

namespace {

using Clock = std::chrono::steady_clock;

// Runs encoder jobs (embeddings, reranking) one at a time on its own thread; at most `limit` wait.
class EncoderWorker {
 public:
  explicit EncoderWorker(int64_t limit) : limit_(limit), thread_([this] { loop(); }) {}
  ~EncoderWorker() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  at::Tensor run(std::function<at::Tensor()> job) {
    std::packaged_task<at::Tensor()> task(std::move(job));
    auto result = task.get_future();
    {
      std::lock_guard lock(mutex_);
      if (int64_t(jobs_.size()) > limit_)
        throw QueueFullError("the server is at capacity: " + std::to_string(jobs_.size()) + " encoder requests waiting");
      jobs_.push_back(std::move(task));
    }
    wake_.notify_all();
    return result.get();
  }

 private:
  void loop() {
    c10::InferenceMode inference;
    while (true) {
      std::packaged_task<at::Tensor()> task;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        task = std::move(jobs_.front());
        jobs_.pop_front();
      }
      task();
    }
  }
  int64_t limit_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::packaged_task<at::Tensor()>> jobs_;
  bool stop_ = false;
  std::thread thread_;
};

// TEI reports errors as {"error": message, "error_type": kind}.
json tei_error(const std::string& message, int status) {
  const char* kind = status == 429 ? "Overloaded" : status == 413 ? "Validation" : status >= 500 ? "Backend" : "Validation";
  return {{"error", message}, {"error_type", kind}};
}

// Error messages can quote the client's bytes (a percent-decoded path, the JSON parser's "last
// read"), which need not be UTF-8: dump() would throw from the error path (a 500, or std::terminate
// from httplib's error handler). Invalid bytes become U+FFFD instead.
std::string dump_lossy(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

// Runs fn on a thread of its own that ends with it (its exception rethrown here). libgomp keeps an
// idle OpenMP team for every thread that ever ran a parallel region, and with more such threads
// than cores it spins only 100 times at a barrier before sleeping on a futex: with the loading
// thread's team left over, every decode step of the engine's thread lost ~10 ms to wake-ups (bf16
// small Llama, 8 sequences, 2 cores: 28 ms per step against 18 for the same rows in one thread).
template <class Fn>
void run_on_passing_thread(Fn&& fn) {
  std::exception_ptr error;
  std::thread thread([&] {
    try {
      fn();
    } catch (...) {
      error = std::current_exception();
    }
  });
  thread.join();
  if (error) std::rethrow_exception(error);
}

json parse_body(const httplib::Request& req) {
  try {
    return json::parse(req.body);
  } catch (const json::exception& e) {  // syntax, or a number beyond double's range
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
}

std::string base64(const void* data, size_t size) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* bytes = static_cast<const unsigned char*>(data);
  std::string out;
  out.reserve((size + 2) / 3 * 4);
  for (size_t i = 0; i < size; i += 3) {
    const uint32_t n = uint32_t(bytes[i]) << 16 | (i + 1 < size ? uint32_t(bytes[i + 1]) << 8 : 0) |
                       (i + 2 < size ? uint32_t(bytes[i + 2]) : 0);
    out += table[n >> 18 & 63];
    out += table[n >> 12 & 63];
    out += i + 1 < size ? table[n >> 6 & 63] : '=';
    out += i + 2 < size ? table[n & 63] : '=';
  }
  return out;
}

std::string folder_name(const std::string& model) {
  const std::filesystem::path p(model);
  if (std::filesystem::is_directory(p)) return std::filesystem::weakly_canonical(p).filename().string();
  return model;  // a Hub repo id
}

// How the model is loaded, on every tensor-parallel rank alike.
PretrainedOptions model_options(const ServerOptions& options) {
  PretrainedOptions po;
  po.torch_dtype = options.dtype;
  po.quantization = options.quantize;
  po.tensor_parallel = options.tensor_parallel;
  return po;
}

// --task, or what the checkpoint is for. Tensor parallelism serves generation only.
std::string serving_task(const ServerOptions& options, const PretrainedConfig& config) {
  std::string task = options.task;
  if (task.empty()) {
    const bool causal = !config.architectures.empty() && config.architectures.front().ends_with("ForCausalLM");
    const bool classifier = !config.architectures.empty() && config.architectures.front().ends_with("ForSequenceClassification");
    if (causal) task = "generate";
    else if (classifier && !resolve_file(options.model, "modules.json", model_options(options), true)) task = "rerank";
    else task = "embed";
  }
  if (options.tensor_parallel && task != "generate")
    throw InvalidInputError("--tensor-parallel serves text generation only; this model's task is '" + task + "'");
  return task;
}

class Server {
 public:
  explicit Server(ServerOptions options) : options_(std::move(options)) {}

  int run() {
    // Signals go to one waiting thread (blocked everywhere else); a closed socket is a failed write, not a signal.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
#ifdef __GLIBC__
    // One malloc arena per core, not glibc's eight: the ~150 mostly idle HTTP threads spread their
    // allocations over every arena, and malloc_trim (below) does not shrink an arena's free top, so
    // RSS kept growing with the arenas touched (+19 MB in 30 s of tests/server/soak; +2.6% with
    // this). MALLOC_ARENA_MAX still decides when it is set.
    if (!std::getenv("MALLOC_ARENA_MAX")) ::mallopt(M_ARENA_MAX, int(std::max(1u, std::thread::hardware_concurrency())));
#endif

    configure_http();
    const int port = options_.port == 0 ? http_.bind_to_any_port(options_.host)
                                        : (http_.bind_to_port(options_.host, options_.port) ? options_.port : -1);
    if (port < 0)
      throw IOError("serve: cannot listen on " + options_.host + ":" + std::to_string(options_.port) +
                    " (in use, or not an address of this machine)");
    // httplib listens with a backlog of 5: a burst of connections would wait on TCP retransmits
    // longer than the read timeout. Listening again raises it.
    ::listen(listen_socket_, SOMAXCONN);
    std::thread listener([this] { http_.listen_after_bind(); });
    std::thread signal_waiter([&, signals] {
      int received = 0;
      sigwait(&signals, &received);
      shutdown_requested_ = true;
    });

    try {
      run_on_passing_thread([this] { load(); });
    } catch (...) {
      http_.stop();
      listener.join();
      pthread_kill(signal_waiter.native_handle(), SIGTERM);
      signal_waiter.join();
      throw;
    }
    ready_ = true;
    std::cout << "plugformer serve: listening on http://" << options_.host << ":" << port << std::endl;
    logger().info("serve: {} ({}) ready", context_.name, task_);

    // Once no request came for a second, the memory the request threads freed goes back to the
    // system: glibc keeps it in their arenas, so after a burst of load an idle server held ~80 MB
    // more than it used (stories260K, tests/server/soak).
    uint64_t seen = requests_seen_;
    auto quiet_since = Clock::now();
    bool trimmed = true;
    while (!shutdown_requested_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (requests_seen_ != seen || active_requests_ > 0) {
        seen = requests_seen_;
        quiet_since = Clock::now();
        trimmed = false;
      } else if (!trimmed && Clock::now() - quiet_since >= std::chrono::seconds(1)) {
#ifdef __GLIBC__
        ::malloc_trim(0);
#endif
        trimmed = true;
      }
    }
    signal_waiter.join();
    logger().info("serve: shutting down; finishing running requests (up to {} s)", options_.shutdown_timeout);
    draining_ = true;
    const auto deadline = Clock::now() + std::chrono::milliseconds(int64_t(options_.shutdown_timeout * 1000));
    if (engine_) engine_->drain(deadline);
    // Streams write their last chunks after their sequence ends: give them until the deadline.
    while (active_requests_ > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    http_.stop();
    listener.join();
    return 0;
  }

 private:
  void load() {
    PretrainedOptions po = model_options(options_);
    ConfigPtr config = AutoConfig::from_pretrained(options_.model, po);
    task_ = serving_task(options_, *config);
    context_.name = options_.served_model_name.empty() ? folder_name(options_.model) : options_.served_model_name;
    context_.vocab_size = config->has("vocab_size") && config->get("vocab_size").is_number_integer()
                              ? config->get("vocab_size").get<int64_t>() : 0;
    int64_t model_len = 0;
    for (const char* key : {"max_position_embeddings", "n_positions", "max_seq_len"})
      if (config->has(key) && config->get(key).is_number_integer()) {
        model_len = config->get(key).get<int64_t>();
        break;
      }
    if (options_.max_model_len > 0 && model_len > 0 && options_.max_model_len > model_len)
      throw InvalidInputError("--max-model-len " + std::to_string(options_.max_model_len) + " exceeds the model's context (" +
                              std::to_string(model_len) + " positions)");
    context_.max_model_len = options_.max_model_len > 0 ? options_.max_model_len : (model_len > 0 ? model_len : 2048);

    if (task_ == "generate") {
      if (config->is_encoder_decoder) throw InvalidInputError("serve: encoder-decoder models cannot be served for generation yet");
      ModelPtr model = AutoModelForCausalLM::from_pretrained(options_.model, po);
      try {
        context_.tokenizer = AutoTokenizer::from_pretrained(options_.model, po);
      } catch (const FileNotFoundError& e) {
        logger().warn("serve: no tokenizer ({}); prompts must be token ids", e.what());
      }
      context_.defaults = GenerationConfig::from_model_config(model->config());
      if (auto file = resolve_file(options_.model, "generation_config.json", po, true)) {
        read_generation_config(context_, read_json_file(*file), file->string());
      }
      if (context_.tokenizer)
        if (auto eos = context_.tokenizer->eos_token_id(); eos && std::find(context_.defaults.eos_token_id.begin(),
                                                                             context_.defaults.eos_token_id.end(),
                                                                             *eos) == context_.defaults.eos_token_id.end())
          context_.defaults.eos_token_id.push_back(*eos);
      if (!options_.chat_template_file.empty()) {
        std::ifstream in(options_.chat_template_file, std::ios::binary);
        if (!in) throw FileNotFoundError("--chat-template: cannot read " + options_.chat_template_file);
        context_.chat_template.assign(std::istreambuf_iterator<char>(in), {});
        if (context_.chat_template.empty()) throw InvalidInputError("--chat-template: " + options_.chat_template_file + " is empty");
        JinjaTemplate check(context_.chat_template);  // a syntax error fails now, not at the first request
      }
      engine_ = std::make_unique<Engine>(model, context_.tokenizer,
                                         EngineOptions{options_.max_num_seqs, options_.max_queue, context_.max_model_len},
                                         metrics_);
    } else if (task_ == "embed") {
      embedder_ = SentenceTransformer::from_pretrained(options_.model, po);
      context_.tokenizer = AutoTokenizer::from_pretrained(options_.model, po);
      encoder_worker_ = std::make_unique<EncoderWorker>(options_.max_queue);
    } else if (task_ == "rerank") {
      reranker_ = CrossEncoder::from_pretrained(options_.model, po);
      context_.tokenizer = AutoTokenizer::from_pretrained(options_.model, po);
      encoder_worker_ = std::make_unique<EncoderWorker>(options_.max_queue);
    } else {
      throw InvalidInputError("--task must be generate, embed or rerank, got '" + task_ + "'");
    }
  }

  void configure_http() {
    const size_t threads = size_t(std::clamp<int64_t>(2 * (options_.max_num_seqs + options_.max_queue) + 8, 16, 512));
    http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    http_.set_payload_max_length(size_t(options_.max_body_bytes));
    http_.set_read_timeout(10);
    http_.set_write_timeout(std::max<time_t>(10, time_t(options_.request_timeout)));
    http_.set_keep_alive_timeout(5);
    http_.set_socket_options([this](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      listen_socket_ = sock;
    });

    http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      ++requests_seen_;
      if (req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      if (req.path != "/metrics") {
        if (!ready_ || draining_) {
          send(res, req.path, ApiError(503, draining_ ? "the server is shutting down" : "the model is still loading"));
          return httplib::Server::HandlerResponse::Handled;
        }
        if (!authorized(req)) {
          send(res, req.path, ApiError(401, "Incorrect API key provided. Pass it as 'Authorization: Bearer <key>'.", "",
                                       "invalid_api_key"));
          return httplib::Server::HandlerResponse::Handled;
        }
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    // Errors httplib answers itself (unknown route, oversized or unreadable body) get an error object too.
    http_.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
      ++requests_seen_;
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      if (res.status == 413)
        send(res, req.path, body_too_large());
      else if (res.status == 404)
        send(res, "unknown", ApiError(404, "no route " + req.method + " " + req.path));
      else
        send(res, "unknown", ApiError(res.status, "the request could not be read (" + std::to_string(res.status) + ")"));
      return httplib::Server::HandlerResponse::Handled;
    }));

    http_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      const bool ok = ready_ && !draining_;
      res.status = ok ? 200 : 503;
      res.set_content(json{{"status", ok ? "ok" : draining_ ? "shutting down" : "loading"}}.dump(), "application/json");
    });
    http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_.prometheus_text(), "text/plain; version=0.0.4");
    });
    route("GET", "/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(json{{"object", "list"}, {"data", json::array({model_object()})}}.dump(), "application/json");
    });
    route(
        "GET", "/v1/models/(.+)",
        [this](const httplib::Request& req, httplib::Response& res) {
          check_model_name(json{{"model", req.matches[1].str()}}, context_);
          res.set_content(model_object().dump(), "application/json");
        },
        "/v1/models/{model}");
    route("POST", "/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      completions(parse_completion_request(parse_body(req), generation_context()), res);
    });
    route("POST", "/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      completions(parse_chat_request(parse_body(req), generation_context()), res);
    });
    route("POST", "/v1/embeddings", [this](const httplib::Request& req, httplib::Response& res) { embeddings(req, res); });
    route("POST", "/embed", [this](const httplib::Request& req, httplib::Response& res) { tei_embed(req, res); });
    route("POST", "/rerank", [this](const httplib::Request& req, httplib::Response& res) { tei_rerank(req, res); });
    route("POST", "/tokenize", [this](const httplib::Request& req, httplib::Response& res) { tokenize(req, res); });
    route("POST", "/detokenize", [this](const httplib::Request& req, httplib::Response& res) { detokenize(req, res); });
  }

  bool authorized(const httplib::Request& req) const {
    if (options_.api_keys.empty()) return true;
    const std::string header = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (header.compare(0, prefix.size(), prefix) != 0) return false;
    const std::string key = header.substr(prefix.size());
    return std::find(options_.api_keys.begin(), options_.api_keys.end(), key) != options_.api_keys.end();
  }

  static bool is_tei(const std::string& path) { return path == "/embed" || path == "/rerank"; }

  // The error in the endpoint's format, counted in the metrics.
  void send(httplib::Response& res, const std::string& path, const ApiError& e) {
    res.status = e.status;
    if (e.status == 429 || e.status == 503) res.set_header("Retry-After", "1");
    res.set_content(dump_lossy(is_tei(path) ? tei_error(e.what(), e.status) : e.to_json()), "application/json");
    metrics_.request_done(path, e.status);
  }

  json model_object() const {
    return {{"id", context_.name},      {"object", "model"},      {"created", started_},
            {"owned_by", "plugformer"}, {"root", options_.model}, {"max_model_len", context_.max_model_len}};
  }

  // Registers a handler whose errors become HTTP errors and whose outcome is counted. `pattern` is
  // httplib's (a regex); metrics count the requests under `label` (the pattern by default).
  template <class Handler>
  void route(const std::string& method, const std::string& pattern, Handler handler, std::string label = {}) {
    const std::string path = label.empty() ? pattern : std::move(label);
    auto wrapped = [this, path, handler](const httplib::Request& req, httplib::Response& res) {
      // Counted down however the handler ends: a leaked count holds SIGTERM for --shutdown-timeout.
      ++active_requests_;
      struct Done {
        std::atomic<int64_t>& count;
        ~Done() { --count; }
      } done{active_requests_};
      try {
        handler(req, res);
        metrics_.request_done(path, res.status == -1 ? 200 : res.status);  // httplib fills in 200 later
      } catch (const ApiError& e) {
        send(res, path, e);
      } catch (const QueueFullError& e) {
        send(res, path, ApiError(429, e.what(), "", "rate_limit_exceeded"));
      } catch (const ShuttingDownError& e) {
        send(res, path, ApiError(503, e.what()));
      } catch (const InvalidInputError& e) {
        send(res, path, ApiError(400, e.what()));
      } catch (const std::exception& e) {
        const std::string what = e.what();
        logger().error("serve: {} failed: {}", path, what);
        send(res, path, ApiError(500, what.substr(0, what.find('\n'))));
      }
    };
    if (method == "GET") {
      http_.Get(pattern, wrapped);
      return;
    }
    http_.Post(pattern, wrapped);  // a POST without a body
    // httplib (0.11) applies the body limit to a Content-Length only: a chunked body was read whole,
    // however large. Bodies are read here instead, keeping at most --max-body-bytes; the rest of an
    // oversized one is read and dropped (as httplib skips an oversized Content-Length), then a 400.
    http_.Post(pattern, [this, path, wrapped](const httplib::Request& req, httplib::Response& res,
                                              const httplib::ContentReader& read) {
      std::string body;
      bool too_large = false;
      const auto keep = [&](const char* data, size_t size) {
        too_large = too_large || body.size() + size > size_t(options_.max_body_bytes);
        if (!too_large) body.append(data, size);
        return true;
      };
      const bool complete = req.is_multipart_form_data()
                                ? read([](const httplib::MultipartFormData&) { return true; }, [](const char*, size_t) { return true; })
                                : read(keep);
      if (too_large || res.status == 413) return send(res, path, body_too_large());
      if (!complete) return send(res, path, ApiError(400, "the request body could not be read"));
      if (req.is_multipart_form_data()) return send(res, path, ApiError(400, "the request body must be JSON, not multipart/form-data"));
      const_cast<httplib::Request&>(req).body = std::move(body);  // httplib's own Request, not const
      wrapped(req, res);
    });
  }

  ApiError body_too_large() const {
    return ApiError(400, "the request body is larger than the server's limit of " + std::to_string(options_.max_body_bytes) + " bytes");
  }

  const ModelContext& generation_context() const {
    if (!engine_)
      throw ApiError(400, "this server serves an " + std::string(task_ == "rerank" ? "reranker" : "embedding model") +
                              " (" + context_.name + "): completions are not available", "model");
    return context_;
  }

  void completions(CompletionJob job, httplib::Response& res) {
    job.request.deadline = Clock::now() + std::chrono::milliseconds(int64_t(options_.request_timeout * 1000));
    std::vector<GenerationRequest> requests;
    for (size_t i = 0; i < job.choices(); ++i) requests.push_back(job.choice_request(i));
    auto sequences = std::make_shared<std::vector<std::shared_ptr<Sequence>>>(engine_->submit(std::move(requests)));
    const std::string id = new_response_id(job.chat);
    const int64_t created = unix_time();
    if (!job.stream) {
      std::vector<ChoiceResult> results(sequences->size());
      for (size_t i = 0; i < sequences->size(); ++i) {
        while (results[i].finish_reason.empty()) {
          for (auto& event : (*sequences)[i]->wait(std::chrono::milliseconds(200))) {
            if (event.error) {
              for (auto& s : *sequences) s->cancel();
              throw ApiError(500, "generation failed: " + *event.error);
            }
            add_event(results[i], std::move(event));
          }
        }
        results[i].prompt_logprobs = (*sequences)[i]->prompt_logprobs;
      }
      res.set_content(completion_response(job, context_, results, id, created).dump(), "application/json");
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    auto shared_job = std::make_shared<CompletionJob>(std::move(job));
    ++active_requests_;
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, sequences, shared_job, id, created](size_t, httplib::DataSink& sink) {
          return stream_events(*shared_job, *sequences, id, created, sink);
        },
        [this, sequences](bool) {
          for (auto& s : *sequences) s->cancel();  // no-op for finished ones; a client gone cancels the rest
          --active_requests_;
        });
  }

  static void add_event(ChoiceResult& r, SequenceEvent event) {
    r.text += event.text;
    r.tokens.insert(r.tokens.end(), event.tokens.begin(), event.tokens.end());
    r.logprobs.insert(r.logprobs.end(), event.logprobs.begin(), event.logprobs.end());
    if (event.finish_reason) r.finish_reason = *event.finish_reason;
  }

  // Writes every choice's chunks as they come, then usage and [DONE]; false when the client is gone.
  bool stream_events(const CompletionJob& job, std::vector<std::shared_ptr<Sequence>>& sequences, const std::string& id,
                     int64_t created, httplib::DataSink& sink) {
    auto write = [&](const json& payload) {
      const std::string frame = "data: " + dump_lossy(payload) + "\n\n";
      return sink.write(frame.data(), frame.size());
    };
    std::vector<ChoiceResult> results(sequences.size());
    std::vector<bool> started(sequences.size(), false);
    size_t open = sequences.size();
    while (open > 0) {
      bool waited = false;
      for (size_t i = 0; i < sequences.size(); ++i) {
        if (!results[i].finish_reason.empty()) continue;
        // Block on the first open choice briefly, poll the others.
        auto events = sequences[i]->wait(std::chrono::milliseconds(waited ? 0 : 100));
        waited = true;
        for (auto& event : events) {
          if (event.error) {
            write(ApiError(500, "generation failed: " + *event.error).to_json());
            results[i].finish_reason = "error";
            --open;
            break;
          }
          std::string text = event.text;
          if (!started[i] && job.echo && !job.chat && context_.tokenizer)
            text = context_.tokenizer->decode(job.prompts[i / size_t(job.n)], true) + text;
          const bool first = !started[i];
          const bool worth_sending = first || !text.empty() || event.finish_reason || !event.logprobs.empty();
          if (worth_sending &&
              !write(completion_chunk(job, context_, id, created, i, text, event.logprobs, event.finish_reason, first)))
            return false;
          started[i] = true;
          add_event(results[i], std::move(event));
          if (!results[i].finish_reason.empty()) --open;
        }
      }
    }
    if (job.include_usage)
      if (!write({{"id", id}, {"object", job.chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                  {"model", context_.name}, {"choices", json::array()}, {"usage", usage_json(job, results)}}))
        return false;
    const std::string done = "data: [DONE]\n\n";
    if (!sink.write(done.data(), done.size())) return false;
    sink.done();
    return true;
  }

  const SentenceTransformer& embedder() const {
    if (!embedder_) throw ApiError(400, "this server does not serve an embedding model (" + context_.name + ", " + task_ + ")", "model");
    return *embedder_;
  }

  int64_t count_tokens(const std::vector<std::string>& texts) const {
    int64_t n = 0;
    for (const auto& t : texts) n += int64_t(context_.tokenizer->encode(t).ids.size());
    return n;
  }

  void embeddings(const httplib::Request& req, httplib::Response& res) {
    const EmbeddingsJob job = parse_embeddings_request(parse_body(req), context_);
    const SentenceTransformer& model = embedder();
    const at::Tensor vectors =
        encoder_worker_->run([&] { return job.ids.empty() ? model.encode(job.texts) : model.encode_ids(job.ids); });
    json data = json::array();
    for (int64_t i = 0; i < vectors.size(0); ++i) {
      const at::Tensor row = vectors[i].contiguous();
      json embedding = job.base64 ? json(base64(row.data_ptr<float>(), size_t(row.numel()) * sizeof(float)))
                                  : json(std::vector<float>(row.data_ptr<float>(), row.data_ptr<float>() + row.numel()));
      data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", std::move(embedding)}});
    }
    int64_t tokens = count_tokens(job.texts);
    for (const auto& row : job.ids) tokens += int64_t(row.size());
    res.set_content(json{{"object", "list"}, {"data", data}, {"model", context_.name},
                         {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}}
                        .dump(),
                    "application/json");
  }

  void tei_embed(const httplib::Request& req, httplib::Response& res) {
    const EmbedJob job = parse_embed_request(parse_body(req));
    const SentenceTransformer& model = embedder();
    EncodeOptions options;
    options.normalize_embeddings = job.normalize;
    options.prompt_name = job.prompt_name;
    if (!job.truncate) check_input_lengths(job.texts, tokenizer(), model.max_seq_length());
    const at::Tensor vectors = encoder_worker_->run([&] { return model.encode(job.texts, options); });
    json out = json::array();
    for (int64_t i = 0; i < vectors.size(0); ++i) {
      const at::Tensor row = vectors[i].contiguous();
      out.push_back(std::vector<float>(row.data_ptr<float>(), row.data_ptr<float>() + row.numel()));
    }
    res.set_content(out.dump(), "application/json");
  }

  void tei_rerank(const httplib::Request& req, httplib::Response& res) {
    const RerankJob job = parse_rerank_request(parse_body(req));
    if (!reranker_) throw ApiError(400, "this server does not serve a reranker (" + context_.name + ", " + task_ + ")");
    std::vector<std::pair<std::string, std::string>> pairs;
    std::vector<std::string> pairs_text;  // what the length check counts
    for (const auto& t : job.texts) {
      pairs.emplace_back(job.query, t);
      pairs_text.push_back(job.query + " " + t);
    }
    if (!job.truncate) check_input_lengths(pairs_text, tokenizer(), reranker_->max_length());
    PredictOptions options;
    options.activation = job.raw_scores ? "identity" : "sigmoid";
    const at::Tensor scores = encoder_worker_->run([&] { return reranker_->predict(pairs, options); });
    if (scores.dim() != 1) throw ApiError(400, "the reranker has several labels; /rerank needs a one-score model");
    const at::Tensor values = scores.to(at::kDouble).contiguous();
    const std::vector<double> list(values.data_ptr<double>(), values.data_ptr<double>() + values.numel());
    res.set_content(rerank_response(job, list).dump(), "application/json");
  }

  const Tokenizer& tokenizer() const {
    if (!context_.tokenizer) throw ApiError(400, "this model has no tokenizer");
    return *context_.tokenizer;
  }

  void tokenize(const httplib::Request& req, httplib::Response& res) {
    const TokenizeJob job = parse_tokenize_request(parse_body(req));
    res.set_content(tokenize_response(job, tokenizer()).dump(), "application/json");
  }

  void detokenize(const httplib::Request& req, httplib::Response& res) {
    const std::vector<int64_t> ids = parse_detokenize_request(parse_body(req), context_);
    res.set_content(json{{"content", tokenizer().decode(ids, false)}}.dump(), "application/json");
  }

  ServerOptions options_;
  httplib::Server http_;
  Metrics metrics_;
  ModelContext context_;
  std::string task_;
  std::unique_ptr<Engine> engine_;
  std::shared_ptr<SentenceTransformer> embedder_;
  std::shared_ptr<CrossEncoder> reranker_;
  std::unique_ptr<EncoderWorker> encoder_worker_;
  std::atomic<bool> ready_{false}, draining_{false}, shutdown_requested_{false};
  std::atomic<int64_t> active_requests_{0};
  std::atomic<uint64_t> requests_seen_{0};  // requests routed or refused, for the idle memory trim
  int listen_socket_ = -1;
  int64_t started_ = unix_time();
};

}  // namespace

int run_server(const ServerOptions& options) { return Server(options).run(); }

void follow_tensor_parallel_server(const ServerOptions& options) {
  const PretrainedOptions po = model_options(options);
  ConfigPtr config = AutoConfig::from_pretrained(options.model, po);
  serving_task(options, *config);
  ModelPtr model = AutoModelForCausalLM::from_pretrained(options.model, po);
  follow_engine_steps(*model, *options.tensor_parallel);
}

}  // namespace plugformer::server
