// Tensor-parallel ranks for CLI commands (see tensor_parallel_launch.cpp).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

#include <CLI/CLI.hpp>

#include <plugformer/distributed.h>

namespace plugformer::cli {

struct TensorParallelArgs {
  int64_t world_size = 1, nnodes = 1, node_rank = 0;
  std::string master_addr;
  std::optional<int> master_port;
};
void add_tensor_parallel_options(CLI::App* command, TensorParallelArgs& args);
// main() keeps argv so a launcher can start copies of this command as the other ranks.
void remember_command_line(int argc, char** argv);

// The ranks this process started. Destroyed before wait() (this rank failed), it stops them.
class RankLauncher {
 public:
  RankLauncher() = default;
  ~RankLauncher();
  RankLauncher(const RankLauncher&) = delete;
  RankLauncher& operator=(const RankLauncher&) = delete;
  // This process's group: nullptr without parallelism; from RANK / WORLD_SIZE / MASTER_* when
  // set; else this process is the first rank of its node and starts the node's other ranks.
  std::shared_ptr<TensorParallelGroup> join(const TensorParallelArgs& args);
  // Waits for the started ranks; DistributedError naming those that failed.
  void wait();

 private:
  struct Child {
    int64_t rank;
    pid_t pid;
  };
  std::vector<Child> children_;
};

}  // namespace plugformer::cli
