// The server's Prometheus metrics (text exposition format 0.0.4), updated by the HTTP layer and
// the engine, read by GET /metrics.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace plugformer::server {

// Cumulative buckets with fixed upper bounds, as Prometheus histograms are.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size(), 0) {}
  void observe(double value);
  // `name`_bucket{le=...}, _sum and _count lines.
  void write(std::string& out, const std::string& name) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  double sum_ = 0;
};

class Metrics {
 public:
  Metrics();
  void request_done(const std::string& endpoint, int status);
  void tokens(int64_t prompt, int64_t generated);
  void first_token(double seconds);
  void inter_token(double seconds);
  void decode_step(int64_t batch_size);
  void prefill_step(int64_t prompts);
  // Gauges the engine sets once per iteration.
  void engine_state(int64_t waiting, int64_t running, int64_t kv_cache_bytes);
  std::string prometheus_text() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0, generated_tokens_ = 0;
  int64_t waiting_ = 0, running_ = 0, kv_cache_bytes_ = 0;
  Histogram ttft_, itl_, batch_size_, prefill_batch_size_;
};

}  // namespace plugformer::server
