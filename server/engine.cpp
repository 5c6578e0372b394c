#include "engine.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstdlib>
#include <map>

#include <plugformer/distributed.h>
#include <plugformer/error.h>
#include <plugformer/log.h>
#include <plugformer/runtime.h>

namespace plugformer::server {

using Clock = std::chrono::steady_clock;
// Prompt tokens admitted in one iteration while sequences are decoding (at least one request).
// Those prompts prefill together, in one forward that delays every running sequence's next token
// once: 32-token prompts of 8 clients arriving a few at a time were prefilled two per iteration
// with 64, in one with 512 (session 31, bench/README.md: K = 8 bf16 tok/s +6%).
constexpr int64_t kPrefillTokensPerStep = 512;
// Prompt tokens in one packed forward: beyond a few hundred rows the products gain little, while
// the activations grow with every token.
constexpr int64_t kPackedPrefillTokens = 2048;

std::vector<SequenceEvent> Sequence::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  ready_.wait_for(lock, timeout, [&] { return !events_.empty(); });
  std::vector<SequenceEvent> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

bool Sequence::finished() const {
  std::lock_guard lock(mutex_);
  return done_;
}

void Sequence::push(SequenceEvent event) {
  {
    std::lock_guard lock(mutex_);
    if (done_) return;
    done_ = event.finish_reason || event.error;
    events_.push_back(std::move(event));
  }
  ready_.notify_all();
}

// A running request: its tokens, cache, sampler and the text not yet sent.
struct Engine::Active {
  std::shared_ptr<Sequence> handle;
  GenerationRequest request;
  std::vector<int64_t> tokens;  // prompt, then generated
  int64_t generated = 0;
  std::map<int64_t, int64_t> counts;  // generated token -> occurrences, for the penalties
  std::shared_ptr<KVCache> cache;
  int64_t cached = 0;  // positions the cache holds
  std::optional<TokenChooser> chooser;
  std::unique_ptr<DecodeStream> text;
  std::string pending;  // decoded, not sent: may begin a stop string
  Clock::time_point arrived, last_token;
  bool done = false;
  int64_t id = 0;  // names the sequence to the other tensor-parallel ranks
};

Engine::Engine(ModelPtr model, std::shared_ptr<const Tokenizer> tokenizer, EngineOptions options, Metrics& metrics)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), options_(options), metrics_(metrics) {
  if (options_.max_num_seqs < 1) throw InvalidInputError("--max-num-seqs must be at least 1");
  if (options_.max_queue < 0) throw InvalidInputError("--max-queue must be >= 0");
  if (model_->tensor_parallel()) mirror_ = std::make_unique<StepMirror>(model_->tensor_parallel());
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    aborting_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::vector<std::shared_ptr<Sequence>> Engine::submit(std::vector<GenerationRequest> requests) {
  std::vector<std::unique_ptr<Active>> queued;
  std::vector<std::shared_ptr<Sequence>> handles;
  const auto now = Clock::now();
  for (auto& request : requests) {
    queued.push_back(std::make_unique<Active>());
    Active& active = *queued.back();
    active.handle = std::make_shared<Sequence>();
    active.arrived = now;
    active.tokens = request.prompt;
    active.request = std::move(request);
    handles.push_back(active.handle);
  }
  {
    std::lock_guard lock(mutex_);
    if (draining_) throw ShuttingDownError("the server is shutting down and takes no new requests");
    const int64_t room = options_.max_queue + std::max<int64_t>(0, options_.max_num_seqs - running_count_);
    if (int64_t(waiting_.size() + queued.size()) > room)
      throw QueueFullError("the server is at capacity: " + std::to_string(options_.max_num_seqs) + " sequences running and " +
                           std::to_string(waiting_.size()) + " requests waiting (--max-queue " +
                           std::to_string(options_.max_queue) + "); retry later");
    for (auto& active : queued) {
      active->id = next_id_++;
      waiting_.push_back(std::move(active));
      ++in_flight_;
    }
  }
  wake_.notify_all();
  return handles;
}

void Engine::drain(Clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  draining_ = true;
  if (!idle_.wait_until(lock, deadline, [&] { return in_flight_ == 0; })) {
    logger().warn("serve: {} requests still running at the shutdown deadline; cancelling them", in_flight_);
    aborting_ = true;
    wake_.notify_all();
    idle_.wait(lock, [&] { return in_flight_ == 0; });
  }
}

void Engine::lost_rank(const DistributedError& error) {
  logger().error("serve: {}; exiting", error.what());
  std::_Exit(1);
}

void Engine::loop() {
  c10::InferenceMode inference;
  try {
    step_until_stopped();
    if (mirror_) mirror_->stop();
  } catch (const DistributedError& e) {
    lost_rank(e);
  }
}

void Engine::step_until_stopped() {
  const auto has_work = [&] { return stopping_ || aborting_ || !waiting_.empty() || !running_.empty(); };
  bool stepped = false;
  while (true) {
    bool abort = false;
    {
      std::unique_lock lock(mutex_);
      // Idle for a second (responses written by then): hand what the requests freed back to the
      // OS. While busy, glibc keeps up to 32 MB of it per arena for reuse (init_runtime).
      if (stepped && !wake_.wait_for(lock, std::chrono::seconds(1), has_work)) {
        lock.unlock();
        release_freed_memory();
        lock.lock();
      }
      stepped = false;
      // Idle tensor-parallel ranks hear from rank 0 now and then, well within the collective timeout.
      while (!wake_.wait_for(lock, std::chrono::seconds(30), has_work))
        if (mirror_) mirror_->keepalive();
      abort = aborting_;
      if (stopping_ && waiting_.empty() && running_.empty()) break;
      // Admitted in arrival order while slots are free. While sequences are decoding, the prompts of
      // one iteration stop at kPrefillTokensPerStep tokens (at least one request), so that a burst of
      // long prompts does not stall everyone's next token for all its prefills at once.
      const bool decoding = !running_.empty();
      int64_t prefill_tokens = 0;
      while (!waiting_.empty() && int64_t(running_.size()) < options_.max_num_seqs &&
             !(decoding && prefill_tokens > 0 &&
               prefill_tokens + int64_t(waiting_.front()->tokens.size()) > kPrefillTokensPerStep)) {
        prefill_tokens += int64_t(waiting_.front()->tokens.size());
        running_.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
        running_.back()->cached = -1;  // not prefilled yet
      }
      running_count_ = int64_t(running_.size());
      if (abort)
        for (auto& seq : waiting_) running_.push_back(std::move(seq));
      if (abort) waiting_.clear();
    }
    const auto now = Clock::now();
    std::vector<Active*> batch, prompts;
    for (auto& seq : running_) {
      if (abort) fail(*seq, "the server shut down before the request finished");
      else if (seq->handle->cancelled()) finish(*seq, "cancelled");
      else if (now > seq->request.deadline) finish(*seq, "length");
      else if (seq->cached < 0) prompts.push_back(seq.get());
      else batch.push_back(seq.get());
    }
    if (!prompts.empty()) prefill(prompts);
    if (!batch.empty()) decode(batch);
    stepped = true;

    int64_t kv_bytes = 0, retired = 0;
    std::erase_if(running_, [&](const std::unique_ptr<Active>& seq) {
      if (seq->done) ++retired;
      else if (seq->cache) kv_bytes += seq->cache->bytes();
      if (seq->done && mirror_) mirror_->release(seq->id);
      return seq->done;
    });
    {
      std::lock_guard lock(mutex_);
      in_flight_ -= retired;
      running_count_ = int64_t(running_.size());
      metrics_.engine_state(int64_t(waiting_.size()), running_count_, kv_bytes);
    }
    if (retired) idle_.notify_all();
  }
}

namespace {

// What `token` adds to the text after `before` (a few tokens of context: a SentencePiece word's
// space, a byte-level piece's bytes).
std::string token_text(const Tokenizer* tokenizer, const int64_t* before, size_t count, int64_t token) {
  if (!tokenizer) return "";
  const size_t context = std::min<size_t>(count, 4);
  std::vector<int64_t> ids(before + count - context, before + count);
  const std::string prefix = tokenizer->decode(ids, false);
  ids.push_back(token);
  const std::string text = tokenizer->decode(ids, false);
  return text.compare(0, prefix.size(), prefix) == 0 ? text.substr(prefix.size()) : tokenizer->decode({token}, false);
}

// log_softmax of the model's scores, before any processing (what OpenAI-style servers report),
// for `token` after the `count` tokens at `before`.
TokenLogprob logprob_of(const at::Tensor& logits, int64_t token, int64_t top, const Tokenizer* tokenizer,
                        const int64_t* before, size_t count) {
  at::Tensor logp = logits.reshape({-1}).to(at::kFloat).log_softmax(-1);
  TokenLogprob out{token, logp[token].item<double>(), token_text(tokenizer, before, count, token), {}};
  if (top > 0) {
    auto [values, indices] = logp.topk(std::min<int64_t>(top, logp.size(0)));
    for (int64_t i = 0; i < values.size(0); ++i) {
      const int64_t id = indices[i].item<int64_t>();
      out.top.push_back({id, values[i].item<double>(), token_text(tokenizer, before, count, id)});
    }
  }
  return out;
}

// The length of the longest end of `text` that begins one of `stops` (text to hold back).
size_t stop_prefix_at_end(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const auto& stop : stops)
    for (size_t n = std::min(stop.size() - 1, text.size()); n > hold; --n)
      if (text.compare(text.size() - n, n, stop, 0, n) == 0) {
        hold = n;
        break;
      }
  return hold;
}

}  // namespace

void Engine::start_fresh_cache(Active& seq) {
  seq.cache = std::make_shared<KVCache>();
  const auto& config = seq.request.config;
  int64_t longest = config.max_new_tokens ? int64_t(seq.tokens.size()) + *config.max_new_tokens : 0;
  if (options_.max_model_len > 0) longest = longest > 0 ? std::min(longest, options_.max_model_len) : options_.max_model_len;
  seq.cache->reserve(longest);
}

at::Tensor Engine::run_from_scratch(Active& seq, int64_t logits_to_keep) {
  start_fresh_cache(seq);
  if (mirror_) mirror_->from_scratch(seq.id, seq.tokens, logits_to_keep);
  at::Tensor logits = model_->forward(prompt_step(seq.tokens, seq.cache, logits_to_keep))["logits"][0];
  seq.cached = int64_t(seq.tokens.size());
  return logits;
}

void Engine::prefill(const std::vector<Active*>& prompts) {
  // Prompts run together when the model takes cache batches: one packed forward, in which every
  // projection reads its weights once for all their tokens. Prompt logprobs need every position's
  // logits, so such a request runs alone.
  std::vector<Active*> together;
  int64_t packed = 0;
  const auto run_together = [&] {
    if (together.size() == 1) prefill_alone(*together.front());
    else if (!together.empty()) prefill_together(together);
    together.clear();
    packed = 0;
  };
  for (Active* seq : prompts) {
    try {
      seq->chooser.emplace(seq->request.config, int64_t(seq->request.prompt.size()));
      if (tokenizer_)
        seq->text = std::make_unique<DecodeStream>(tokenizer_, seq->request.prompt, seq->request.skip_special_tokens);
    } catch (const std::exception& e) {
      fail(*seq, e.what());
      continue;
    }
    if (!model_->decodes_cache_batches() || seq->request.prompt_logprobs) {
      prefill_alone(*seq);
      continue;
    }
    const int64_t length = int64_t(seq->tokens.size());
    if (packed > 0 && packed + length > kPackedPrefillTokens) run_together();
    together.push_back(seq);
    packed += length;
  }
  run_together();
}

void Engine::prefill_alone(Active& seq) {
  try {
    const at::Tensor logits = run_from_scratch(seq, seq.request.prompt_logprobs ? 0 : 1);
    metrics_.prefill_step(1);
    if (seq.request.prompt_logprobs)
      for (size_t i = 1; i < seq.tokens.size(); ++i)
        seq.handle->prompt_logprobs.push_back(
            logprob_of(logits[int64_t(i) - 1], seq.tokens[i], seq.request.logprobs.value_or(0), tokenizer_.get(),
                       seq.tokens.data(), i));
    first_token(seq, logits[logits.size(0) - 1].unsqueeze(0).to(at::kFloat).clone());
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    fail(seq, e.what());
  }
}

void Engine::prefill_together(const std::vector<Active*>& prompts) {
  std::vector<std::vector<int64_t>> tokens;
  std::vector<std::shared_ptr<KVCache>> caches;
  std::vector<int64_t> ids;
  for (Active* seq : prompts) {
    start_fresh_cache(*seq);
    tokens.push_back(seq->tokens);
    caches.push_back(seq->cache);
    ids.push_back(seq->id);
  }
  at::Tensor logits;
  try {
    if (mirror_) mirror_->batch(ids, tokens, true);
    logits = model_->forward(batch_step(*model_, tokens, caches))["logits"].select(1, 0).to(at::kFloat);
    metrics_.prefill_step(int64_t(prompts.size()));
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception&) {
    // Whatever failed fails only its own request: each prompt runs again alone, into a fresh cache.
    for (Active* seq : prompts) prefill_alone(*seq);
    return;
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    prompts[i]->cached = int64_t(prompts[i]->tokens.size());
    try {
      first_token(*prompts[i], logits[int64_t(i)].unsqueeze(0).clone());
    } catch (const std::exception& e) {
      fail(*prompts[i], e.what());
    }
  }
}

void Engine::first_token(Active& seq, at::Tensor logits) {
  metrics_.tokens(int64_t(seq.tokens.size()), 0);
  advance(seq, std::move(logits));
}

void Engine::decode(std::vector<Active*>& batch) {
  // A sequence whose cache cannot be extended (longrope crossing its original context) starts over alone.
  std::vector<Active*> rows;
  for (Active* seq : batch) {
    if (model_->reuses_cache(int64_t(seq->tokens.size()), seq->cached)) {
      rows.push_back(seq);
      continue;
    }
    try {
      advance(*seq, run_from_scratch(*seq, 1)[-1].unsqueeze(0).to(at::kFloat).clone());
    } catch (const DistributedError&) {
      throw;
    } catch (const std::exception& e) {
      fail(*seq, e.what());
    }
  }
  if (rows.empty()) return;
  // One step over every row when the model runs cache batches; otherwise each row on its own.
  const bool together = model_->decodes_cache_batches();
  const size_t group = together ? rows.size() : 1;
  for (size_t start = 0; start < rows.size(); start += group) {
    const size_t count = std::min(group, rows.size() - start);
    std::vector<std::vector<int64_t>> last;
    std::vector<int64_t> ids;
    std::vector<std::shared_ptr<KVCache>> caches;
    for (size_t i = start; i < start + count; ++i) {
      last.push_back({rows[i]->tokens.back()});
      ids.push_back(rows[i]->id);
      caches.push_back(rows[i]->cache);
    }
    try {
      if (mirror_) mirror_->batch(ids, last, false);
      at::Tensor logits = model_->forward(batch_step(*model_, last, caches))["logits"].select(1, 0).to(at::kFloat);
      metrics_.decode_step(int64_t(count));
      for (size_t i = 0; i < count; ++i) {
        Active& seq = *rows[start + i];
        seq.cached += 1;
        advance(seq, logits[int64_t(i)].unsqueeze(0).clone());
      }
    } catch (const DistributedError&) {
      throw;
    } catch (const std::exception& e) {
      for (size_t i = start; i < start + count; ++i) fail(*rows[i], e.what());
    }
  }
}

void Engine::advance(Active& seq, at::Tensor logits) {
  const GenerationRequest& r = seq.request;
  const at::Tensor raw = r.logprobs ? logits.clone() : at::Tensor();
  if (r.presence_penalty != 0 || r.frequency_penalty != 0) {
    float* scores = logits.data_ptr<float>();
    for (const auto& [token, count] : seq.counts)
      scores[token] -= float(double(count) * r.frequency_penalty + r.presence_penalty);
  }
  const int64_t token = seq.chooser->choose(logits, seq.tokens);
  SequenceEvent event;
  if (r.logprobs) event.logprobs.push_back(logprob_of(raw, token, *r.logprobs, tokenizer_.get(), seq.tokens.data(), seq.tokens.size()));
  seq.tokens.push_back(token);
  ++seq.counts[token];
  ++seq.generated;
  metrics_.tokens(0, 1);
  const auto now = Clock::now();
  if (seq.generated == 1) metrics_.first_token(std::chrono::duration<double>(now - seq.arrived).count());
  else metrics_.inter_token(std::chrono::duration<double>(now - seq.last_token).count());
  seq.last_token = now;

  event.tokens = {token};
  const auto& eos = r.config.eos_token_id;
  const bool at_eos = !r.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end();
  const bool at_length = (r.config.max_new_tokens && seq.generated >= *r.config.max_new_tokens) ||
                         (options_.max_model_len > 0 && int64_t(seq.tokens.size()) >= options_.max_model_len);
  if (seq.text) {
    seq.pending += seq.text->step(token);
    if (at_eos || at_length) seq.pending += seq.text->finish();
  }
  // Stop strings end the text before them; the end of the text that may begin one waits.
  size_t stop_at = std::string::npos;
  for (const auto& stop : r.stop) stop_at = std::min(stop_at, seq.pending.find(stop));
  if (stop_at != std::string::npos) {
    event.text = seq.pending.substr(0, stop_at);
    event.finish_reason = "stop";
  } else if (at_eos || at_length) {
    event.text = std::move(seq.pending);
    event.finish_reason = at_eos ? "stop" : "length";
  } else {
    const size_t hold = stop_prefix_at_end(seq.pending, r.stop);
    event.text = seq.pending.substr(0, seq.pending.size() - hold);
    seq.pending.erase(0, seq.pending.size() - hold);
  }
  seq.done = bool(event.finish_reason);
  seq.handle->push(std::move(event));
  if (seq.done) seq.cache.reset();
}

void Engine::finish(Active& seq, const std::string& reason) {
  SequenceEvent event;
  if (reason != "cancelled") event.text = std::move(seq.pending);
  event.finish_reason = reason;
  seq.handle->push(std::move(event));
  seq.done = true;
  seq.cache.reset();
}

void Engine::fail(Active& seq, const std::string& message) {
  logger().warn("serve: a request failed: {}", message.substr(0, message.find('\n')));
  SequenceEvent event;
  event.error = message.substr(0, message.find('\n'));
  seq.handle->push(std::move(event));
  seq.done = true;
  seq.cache.reset();
}

}  // namespace plugformer::server
