#include "step_mirror.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <map>

#include <plugformer/log.h>

namespace plugformer::server {

namespace {

enum Command : int64_t { kStop = 0, kKeepalive = 1, kFromScratch = 2, kBatch = 3, kFreshBatch = 4 };

ModelInputs cached_call(at::Tensor ids, std::shared_ptr<KVCache> cache, int64_t logits_to_keep) {
  ModelInputs inputs;
  inputs.tensors["input_ids"] = std::move(ids);
  inputs.past_key_values = std::move(cache);
  inputs.use_cache = true;
  inputs.logits_to_keep = logits_to_keep;
  return inputs;
}

}  // namespace

ModelInputs prompt_step(const std::vector<int64_t>& tokens, std::shared_ptr<KVCache> cache, int64_t logits_to_keep) {
  return cached_call(at::tensor(tokens, at::kLong).unsqueeze(0), std::move(cache), logits_to_keep);
}

ModelInputs batch_step(const PreTrainedModel& model, const std::vector<std::vector<int64_t>>& tokens,
                       const std::vector<std::shared_ptr<KVCache>>& caches) {
  if (!model.decodes_cache_batches()) return prompt_step(tokens.front(), caches.front(), 1);
  std::vector<int64_t> ids, counts;
  for (const auto& row : tokens) {
    ids.insert(ids.end(), row.begin(), row.end());
    counts.push_back(int64_t(row.size()));
  }
  auto batch = KVCache::batch_of(caches, counts);
  // A decode step's rows are [rows, 1]; prompts lie one after another in one row.
  at::Tensor input = at::tensor(ids, at::kLong).unsqueeze(batch->is_packed_batch() ? 0 : 1);
  return cached_call(std::move(input), std::move(batch), 1);
}

void StepMirror::send(int64_t kind, int64_t logits_to_keep, const std::vector<int64_t>& body) {
  // A fixed-size header (command, released count, body length, logits_to_keep), then the ids.
  at::Tensor header = at::tensor({kind, int64_t(released_.size()), int64_t(body.size()), logits_to_keep}, at::kLong);
  group_->broadcast(header);
  std::vector<int64_t> payload = released_;
  payload.insert(payload.end(), body.begin(), body.end());
  released_.clear();
  if (payload.empty()) return;
  at::Tensor ids = at::tensor(payload, at::kLong);
  group_->broadcast(ids);
}

void StepMirror::from_scratch(int64_t seq, const std::vector<int64_t>& tokens, int64_t logits_to_keep) {
  std::vector<int64_t> body{seq};
  body.insert(body.end(), tokens.begin(), tokens.end());
  send(kFromScratch, logits_to_keep, body);
}

void StepMirror::batch(const std::vector<int64_t>& seqs, const std::vector<std::vector<int64_t>>& tokens, bool fresh) {
  std::vector<int64_t> body;  // per row: sequence, token count, tokens
  for (size_t i = 0; i < seqs.size(); ++i) {
    body.insert(body.end(), {seqs[i], int64_t(tokens[i].size())});
    body.insert(body.end(), tokens[i].begin(), tokens[i].end());
  }
  send(fresh ? kFreshBatch : kBatch, 1, body);
}

void StepMirror::keepalive() { send(kKeepalive, 0, {}); }
void StepMirror::stop() { send(kStop, 0, {}); }

void follow_engine_steps(PreTrainedModel& model, TensorParallelGroup& group) {
  c10::InferenceMode inference;
  std::map<int64_t, std::shared_ptr<KVCache>> caches;  // rank 0's sequence ids
  while (true) {
    at::Tensor header = at::zeros({4}, at::kLong);
    group.broadcast(header);
    const int64_t kind = header[0].item<int64_t>(), released = header[1].item<int64_t>(), length = header[2].item<int64_t>();
    at::Tensor payload = at::zeros({released + length}, at::kLong);
    if (payload.numel() > 0) group.broadcast(payload);
    const int64_t* p = payload.data_ptr<int64_t>();
    for (int64_t i = 0; i < released; ++i) caches.erase(p[i]);
    const int64_t* body = p + released;
    if (kind == kStop) return;
    if (kind == kKeepalive) continue;
    try {
      if (kind == kFromScratch) {
        auto cache = std::make_shared<KVCache>();
        caches[body[0]] = cache;
        model.forward(prompt_step(std::vector<int64_t>(body + 1, body + length), cache, header[3].item<int64_t>()));
      } else if (kind == kBatch || kind == kFreshBatch) {
        std::vector<std::vector<int64_t>> tokens;
        std::vector<std::shared_ptr<KVCache>> rows;
        for (int64_t i = 0; i < length; i += 2 + body[i + 1]) {
          if (kind == kFreshBatch) caches[body[i]] = std::make_shared<KVCache>();
          rows.push_back(caches.at(body[i]));
          tokens.emplace_back(body + i + 2, body + i + 2 + body[i + 1]);
        }
        model.forward(batch_step(model, tokens, rows));
      }
    } catch (const DistributedError&) {
      throw;
    } catch (const std::exception& e) {
      // Rank 0's call fails the same way and fails its request; the ranks stay in step.
      logger().debug("tensor-parallel follower: a mirrored call failed: {}", e.what());
    }
  }
}

}  // namespace plugformer::server
