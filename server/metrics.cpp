#include "metrics.h"

#include <algorithm>
#include <sstream>

namespace plugformer::server {

namespace {

std::string number(double v) {
  std::ostringstream out;
  out.precision(12);
  out << v;
  return out.str();
}

void add_metric(std::string& out, const std::string& name, const char* type, const char* help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

void Histogram::observe(double value) {
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  if (it != bounds_.end()) ++counts_[size_t(it - bounds_.begin())];
  ++count_;
  sum_ += value;
}

void Histogram::write(std::string& out, const std::string& name) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      itl_({0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5}),
      batch_size_({1, 2, 4, 8, 16, 32, 64, 128, 256}),
      prefill_batch_size_({1, 2, 4, 8, 16, 32, 64, 128, 256}) {}

void Metrics::request_done(const std::string& endpoint, int status) {
  std::lock_guard lock(mutex_);
  ++requests_[{endpoint, status}];
}

void Metrics::tokens(int64_t prompt, int64_t generated) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += uint64_t(prompt);
  generated_tokens_ += uint64_t(generated);
}

void Metrics::first_token(double seconds) {
  std::lock_guard lock(mutex_);
  ttft_.observe(seconds);
}

void Metrics::inter_token(double seconds) {
  std::lock_guard lock(mutex_);
  itl_.observe(seconds);
}

void Metrics::decode_step(int64_t batch_size) {
  std::lock_guard lock(mutex_);
  batch_size_.observe(double(batch_size));
}

void Metrics::prefill_step(int64_t prompts) {
  std::lock_guard lock(mutex_);
  prefill_batch_size_.observe(double(prompts));
}

void Metrics::engine_state(int64_t waiting, int64_t running, int64_t kv_cache_bytes) {
  std::lock_guard lock(mutex_);
  waiting_ = waiting, running_ = running, kv_cache_bytes_ = kv_cache_bytes;
}

std::string Metrics::prometheus_text() const {
  std::lock_guard lock(mutex_);
  std::string out;
  add_metric(out, "plugformer_requests_total", "counter", "HTTP requests by endpoint and status code.");
  for (const auto& [key, count] : requests_)
    out += "plugformer_requests_total{endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(count) + "\n";
  add_metric(out, "plugformer_prompt_tokens_total", "counter", "Prompt tokens prefilled.");
  out += "plugformer_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  add_metric(out, "plugformer_generation_tokens_total", "counter", "Tokens generated.");
  out += "plugformer_generation_tokens_total " + std::to_string(generated_tokens_) + "\n";
  add_metric(out, "plugformer_queue_length", "gauge", "Requests waiting for a sequence slot.");
  out += "plugformer_queue_length " + std::to_string(waiting_) + "\n";
  add_metric(out, "plugformer_running_sequences", "gauge", "Sequences being decoded.");
  out += "plugformer_running_sequences " + std::to_string(running_) + "\n";
  add_metric(out, "plugformer_kv_cache_bytes", "gauge", "Bytes held by the running sequences' KV caches.");
  out += "plugformer_kv_cache_bytes " + std::to_string(kv_cache_bytes_) + "\n";
  add_metric(out, "plugformer_batch_size", "histogram", "Sequences per decode step.");
  batch_size_.write(out, "plugformer_batch_size");
  add_metric(out, "plugformer_prefill_batch_size", "histogram", "Prompts per prefill forward.");
  prefill_batch_size_.write(out, "plugformer_prefill_batch_size");
  add_metric(out, "plugformer_time_to_first_token_seconds", "histogram", "From request arrival to its first token.");
  ttft_.write(out, "plugformer_time_to_first_token_seconds");
  add_metric(out, "plugformer_inter_token_latency_seconds", "histogram", "Between a sequence's consecutive tokens.");
  itl_.write(out, "plugformer_inter_token_latency_seconds");
  return out;
}

}  // namespace plugformer::server
