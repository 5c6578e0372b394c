// Core's side of tensor parallelism: the slice of a checkpoint tensor a rank loads, and what the
// split layers do with their partial outputs (distributed.h has the public side).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "plugformer/distributed.h"

namespace plugformer {

// A parameter's share on one rank: blocks [start, start + length) of dimension `dim` of the full
// tensor (of size `full` there), concatenated and zero-padded to `local`.
struct TensorParallelSlice {
  int64_t dim = 0, full = 0, local = 0;
  std::vector<std::pair<int64_t, int64_t>> blocks;
};
// This rank's part of a full checkpoint tensor (a view of it when that is one leading block):
// CheckpointError naming `source` and `key` when the tensor is not the size the plan expects.
at::Tensor take_slice(const TensorParallelSlice& slice, const at::Tensor& full, const std::string& source,
                      const std::string& key);

// A split layer's output from its local product (computed without the bias for rowwise layers).
at::Tensor finish_parallel_linear(const TensorParallelShard& shard, at::Tensor out, const at::Tensor& bias);
// A vocab_rows embedding lookup: rows held elsewhere give zeros, summed over ranks.
at::Tensor parallel_embedding(const TensorParallelShard& shard, const at::Tensor& weight, const at::Tensor& ids);

}  // namespace plugformer
