// The continuous-batching generation engine (iteration-level scheduling, as vLLM and TGI do it).
// One scheduler thread owns the model: each iteration admits waiting requests (their prompts
// prefilled together, each into the request's own KV cache), runs one decode step over every
// running sequence at once (KVCache::batch_of: each row attends to its own history, nothing padded
// or recomputed), and retires finished or cancelled sequences, freeing their caches. HTTP threads
// only submit requests and read their events.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <plugformer/error.h>
#include <plugformer/generation.h>
#include <plugformer/modeling.h>
#include <plugformer/tokenizer.h>

#include "metrics.h"
#include "step_mirror.h"

namespace plugformer::server {

struct GenerationRequest {
  std::vector<int64_t> prompt;
  GenerationConfig config;  // max_new_tokens, sampling, eos ids, seed
  // OpenAI's penalties over the tokens generated so far: logit -= count * frequency + (count > 0) * presence.
  double presence_penalty = 0, frequency_penalty = 0;
  std::vector<std::string> stop;  // stop strings: the text ends before the first one found
  bool ignore_eos = false;
  std::optional<int64_t> logprobs;  // return each token's logprob and this many top alternatives
  bool prompt_logprobs = false;     // also the prompt's (echo with logprobs)
  bool skip_special_tokens = true;
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

// A token's text is what it adds after the tokens before it (" there", not "there").
struct TokenLogprob {
  int64_t token;
  double logprob;
  std::string text;
  struct Alternative {
    int64_t token;
    double logprob;
    std::string text;
  };
  std::vector<Alternative> top;  // the most likely tokens at that position
};

// What a sequence reports: new tokens and the text that became final with them; the last event
// carries finish_reason ("stop", "length") or an error message.
struct SequenceEvent {
  std::vector<int64_t> tokens;
  std::string text;
  std::vector<TokenLogprob> logprobs;
  std::optional<std::string> finish_reason, error;
};

// A request's handle, shared by its HTTP thread and the engine.
class Sequence {
 public:
  // Waits up to `timeout` for events; empty when none came. The last event has finish_reason or error.
  std::vector<SequenceEvent> wait(std::chrono::milliseconds timeout);
  // The client is gone: the engine drops the sequence at its next step.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  bool finished() const;
  // Filled by the engine before the first event.
  std::vector<TokenLogprob> prompt_logprobs;

 private:
  friend class Engine;
  void push(SequenceEvent event);

  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<SequenceEvent> events_;
  bool done_ = false;
  std::atomic<bool> cancelled_{false};
};

struct EngineOptions {
  int64_t max_num_seqs = 8;   // sequences decoded together
  int64_t max_queue = 64;     // requests waiting for a slot
  int64_t max_model_len = 0;  // prompt + generated tokens
};

// The queue is full: the caller answers 429.
class QueueFullError : public Error {
 public:
  using Error::Error;
};
// The server is draining for shutdown: the caller answers 503.
class ShuttingDownError : public Error {
 public:
  using Error::Error;
};

class Engine {
 public:
  Engine(ModelPtr model, std::shared_ptr<const Tokenizer> tokenizer, EngineOptions options, Metrics& metrics);
  ~Engine();

  // Queues a request's sequences (one per prompt and choice) at once, so that they start in the
  // same iteration and their prompts prefill together; QueueFullError, with none queued, when they
  // do not all fit within --max-queue.
  std::vector<std::shared_ptr<Sequence>> submit(std::vector<GenerationRequest> requests);
  // No new requests from now on; waits up to `deadline` for the queued and running ones, cancels the rest.
  void drain(std::chrono::steady_clock::time_point deadline);
  int64_t max_model_len() const { return options_.max_model_len; }
  const PreTrainedModel& model() const { return *model_; }

 private:
  struct Active;
  void loop();
  void step_until_stopped();
  // Runs the model on all of the sequence's tokens into a fresh cache: logits of the last
  // `logits_to_keep` positions (0: all), [positions, vocab].
  at::Tensor run_from_scratch(Active& seq, int64_t logits_to_keep);
  // A new, empty cache for the sequence, with room for its longest possible history.
  void start_fresh_cache(Active& seq);
  // The first token of each new sequence: their prompts run together where the model can.
  void prefill(const std::vector<Active*>& prompts);
  void prefill_alone(Active& seq);
  void prefill_together(const std::vector<Active*>& prompts);
  // Counts the prompt and chooses the first token from the logits at the prompt's end ([1, vocab]).
  void first_token(Active& seq, at::Tensor logits);
  void decode(std::vector<Active*>& batch);
  // Applies the penalties, records logprobs, chooses the token and reports it; false once finished.
  void advance(Active& seq, at::Tensor logits);
  void finish(Active& seq, const std::string& reason);
  void fail(Active& seq, const std::string& message);

  // A lost tensor-parallel rank leaves the model unusable: the process exits with the error.
  [[noreturn]] static void lost_rank(const DistributedError& error);

  ModelPtr model_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  EngineOptions options_;
  Metrics& metrics_;
  std::unique_ptr<StepMirror> mirror_;  // a tensor-parallel model: the other ranks repeat each call
  int64_t next_id_ = 0;                 // sequence ids for the mirror

  std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::deque<std::unique_ptr<Active>> waiting_;
  std::vector<std::unique_ptr<Active>> running_;  // changed by the scheduler thread only, under mutex_
  int64_t running_count_ = 0, in_flight_ = 0;      // running; submitted and not retired
  bool stopping_ = false, draining_ = false, aborting_ = false;
  std::thread thread_;
};

}  // namespace plugformer::server
