// Tensor parallelism across processes and hosts over c10d (the engine torch.distributed runs on):
// a TensorParallelGroup joins the ranks (TCPStore rendezvous + ProcessGroupGloo, torchrun's
// RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT), and a model loaded with it
// (PretrainedOptions::tensor_parallel) holds only its slices of each split layer, as the family's
// plan (PreTrainedModel::tensor_parallel_plan, layers.h) says. generate() keeps the ranks in step:
// rank 0 picks every token and broadcasts it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "plugformer/error.h"
#include "plugformer/layers.h"

namespace plugformer {

// A rank lost (killed, hung, unreachable), ranks that disagree (world size, model, dtype), or a
// rendezvous that cannot happen (master port in use, master unreachable). The message names the rank.
class DistributedError : public Error { using Error::Error; };

// Where a rank finds the others.
struct DistributedOptions {
  int64_t rank = 0, world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;  // rank 0's TCPStore; 0 picks a free port (read it back from master_port())
  // A rendezvous or collective waiting longer fails (a killed rank is noticed at once; this bounds hangs).
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  // torchrun's variables RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; nullopt when RANK is unset.
  // DistributedError for values that are not numbers or out of range.
  static std::optional<DistributedOptions> from_env();
};

class TensorParallelGroup {
 public:
  // Rendezvous (rank 0 hosts the store; every rank checks it was started with rank 0's world
  // size and that no other process took its rank), then a Gloo group over the interface that
  // reaches the master (GLOO_SOCKET_IFNAME overrides). Every rank sends a heartbeat to the store,
  // so a failed collective names the rank that stopped.
  static std::shared_ptr<TensorParallelGroup> init(const DistributedOptions& options);
  // A host application's own group (any CPU c10d backend). With `store`, failures name lost ranks.
  explicit TensorParallelGroup(c10::intrusive_ptr<c10d::ProcessGroup> group,
                               c10::intrusive_ptr<c10d::Store> store = {});
  ~TensorParallelGroup();
  TensorParallelGroup(const TensorParallelGroup&) = delete;
  TensorParallelGroup& operator=(const TensorParallelGroup&) = delete;

  int64_t rank() const;
  int64_t size() const;
  int master_port() const;  // the store's port (init only; 0 otherwise)

  // Collectives. Reduced-precision tensors travel as fp32 (Gloo sums fp32 / fp64 / integers).
  void all_reduce(at::Tensor& tensor);                 // sum over ranks, in place
  at::Tensor all_gather(const at::Tensor& tensor);     // equal shapes, concatenated along the last dim in rank order
  void broadcast(at::Tensor& tensor);                  // rank 0's values on every rank, in place
  // Every rank's `value` must equal rank 0's: DistributedError naming `what` and the ranks that differ.
  void require_same(const std::string& what, const std::string& value);

  // Wall time spent inside collectives, and their count (bench/ reports the share per token).
  double collective_seconds() const;
  int64_t collective_count() const;

 private:
  struct State;
  explicit TensorParallelGroup(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// A loopback TCP port no one listens on now (the kernel's pick): a single host's master port.
int free_local_port();

// The slice of `units` whole units (heads, or single features) that `rank` of `world` holds:
// (first unit, count). Blocks of units / world when world divides them; one unit shared by
// world / units ranks when units divides world (key / value heads fewer than ranks); otherwise
// ConfigError naming `what`.
std::pair<int64_t, int64_t> tensor_parallel_units(int64_t units, int64_t rank, int64_t world, const std::string& what);

// What a split Linear / Conv1D / Embedding needs at run time (set by PreTrainedModel when it is
// sharded; layers.h holds a pointer to it).
struct TensorParallelShard {
  std::shared_ptr<TensorParallelGroup> group;
  ParallelStyle style = ParallelStyle::colwise;
  int64_t full_size = 0;   // colwise_gather: output features of the whole layer; vocab_rows: its rows
  int64_t first_row = 0;   // vocab_rows: the first row this rank holds
};

}  // namespace plugformer
