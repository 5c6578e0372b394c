// Tensor-parallel serving: the engine runs on rank 0 and every other rank repeats its model calls
// (same inputs, same cache histories, same logits_to_keep), so the split layers' collectives line
// up. Rank 0 broadcasts one command per model call; tokens are chosen on rank 0 only.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <plugformer/distributed.h>
#include <plugformer/modeling.h>

namespace plugformer::server {

// The engine's two kinds of model call, built by one function each so that every rank builds
// them alike: a sequence's tokens run into a fresh cache, and one step where row i adds tokens[i]
// to caches[i] (the caches batched when the family can, else one row per call): one token per row
// in a decode step, whole prompts when new sequences are prefilled together.
ModelInputs prompt_step(const std::vector<int64_t>& tokens, std::shared_ptr<KVCache> cache, int64_t logits_to_keep);
ModelInputs batch_step(const PreTrainedModel& model, const std::vector<std::vector<int64_t>>& tokens,
                       const std::vector<std::shared_ptr<KVCache>>& caches);

class StepMirror {
 public:
  explicit StepMirror(std::shared_ptr<TensorParallelGroup> group) : group_(std::move(group)) {}
  // Before rank 0 runs sequence `seq`'s tokens into a fresh cache.
  void from_scratch(int64_t seq, const std::vector<int64_t>& tokens, int64_t logits_to_keep);
  // Before one batch_step: row i extends sequence seqs[i]'s cache with tokens[i] (`fresh`: new
  // sequences, whose caches start empty).
  void batch(const std::vector<int64_t>& seqs, const std::vector<std::vector<int64_t>>& tokens, bool fresh);
  // A finished sequence: the other ranks drop its cache (sent with the next command).
  void release(int64_t seq) { released_.push_back(seq); }
  // While idle, so the other ranks' wait never reaches the collective timeout.
  void keepalive();
  // The engine stopped: the other ranks return from follow_engine_steps.
  void stop();

 private:
  void send(int64_t kind, int64_t logits_to_keep, const std::vector<int64_t>& body);
  std::shared_ptr<TensorParallelGroup> group_;
  std::vector<int64_t> released_;
};

// Ranks other than 0: repeats rank 0's model calls until it stops (returns) or a rank is lost
// (DistributedError).
void follow_engine_steps(PreTrainedModel& model, TensorParallelGroup& group);

}  // namespace plugformer::server
