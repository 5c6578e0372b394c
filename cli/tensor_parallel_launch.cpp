// --tensor-parallel / --nnodes / --node-rank / --master-addr / --master-port, with torchrun's
// conventions: a process started with RANK in its environment is one rank; otherwise this process
// becomes its node's first rank and starts the node's other ranks as copies of itself.
#include "tensor_parallel_launch.h"

#include <ATen/Parallel.h>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <plugformer/error.h>

extern char** environ;

namespace plugformer::cli {

namespace {

std::vector<std::string> command_line;

std::string describe_status(int status) {
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

}  // namespace

void remember_command_line(int argc, char** argv) { command_line.assign(argv, argv + argc); }

void add_tensor_parallel_options(CLI::App* cmd, TensorParallelArgs& a) {
  cmd->add_option("--tensor-parallel", a.world_size, "Split the model over N ranks (processes), all on this host unless --nnodes")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--nnodes", a.nnodes, "Hosts taking part; each runs --tensor-parallel / --nnodes ranks")->check(CLI::PositiveNumber);
  cmd->add_option("--node-rank", a.node_rank, "This host's index among --nnodes (0 hosts the master)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--master-addr", a.master_addr, "Address of the host with node rank 0 (default 127.0.0.1)");
  cmd->add_option("--master-port", a.master_port,
                  "Port of the master's store (default: a free port on one host, 29500 across hosts)")
      ->check(CLI::Range(1, 65535));
}

std::shared_ptr<TensorParallelGroup> RankLauncher::join(const TensorParallelArgs& a) {
  if (auto env = DistributedOptions::from_env()) {  // started by a launcher (ours or torchrun)
    if (a.world_size > 1 && a.world_size != env->world_size)
      throw DistributedError("--tensor-parallel " + std::to_string(a.world_size) + " disagrees with WORLD_SIZE=" +
                             std::to_string(env->world_size));
    return TensorParallelGroup::init(*env);
  }
  if (a.world_size == 1 && a.nnodes == 1) return nullptr;
  if (a.world_size % a.nnodes != 0)
    throw DistributedError("--tensor-parallel " + std::to_string(a.world_size) + " is not a multiple of --nnodes " +
                           std::to_string(a.nnodes));
  if (a.node_rank >= a.nnodes)
    throw DistributedError("--node-rank " + std::to_string(a.node_rank) + " must be below --nnodes " + std::to_string(a.nnodes));
  const int64_t per_node = a.world_size / a.nnodes;
  DistributedOptions o;
  o.world_size = a.world_size;
  o.rank = a.node_rank * per_node;
  o.master_addr = a.master_addr.empty() ? "127.0.0.1" : a.master_addr;
  o.master_port = a.master_port ? *a.master_port : a.nnodes == 1 ? free_local_port() : 29500;

  // The node's cores are shared by its ranks (torchrun sets OMP_NUM_THREADS the same way).
  const char* threads_env = std::getenv("OMP_NUM_THREADS");
  const int threads = threads_env && *threads_env
                          ? std::max(1, std::atoi(threads_env))
                          : std::max<int>(1, int(std::thread::hardware_concurrency() / unsigned(per_node)));
  ::setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);  // also read by plugformer's runtime
  at::set_num_threads(threads);
  for (int64_t local = 1; local < per_node; ++local) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) env.emplace_back(*e);
    const int64_t rank = o.rank + local;
    for (auto [key, value] : {std::pair<std::string, std::string>{"RANK", std::to_string(rank)},
                              {"LOCAL_RANK", std::to_string(local)},
                              {"WORLD_SIZE", std::to_string(o.world_size)},
                              {"MASTER_ADDR", o.master_addr},
                              {"MASTER_PORT", std::to_string(o.master_port)},
                              {"OMP_NUM_THREADS", std::to_string(threads)}})
      env.push_back(key + "=" + value);
    std::vector<char*> argv, envp;
    for (auto& s : command_line) argv.push_back(s.data());
    argv.push_back(nullptr);
    for (auto& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    if (int err = ::posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data()); err != 0)
      throw DistributedError("could not start tensor-parallel rank " + std::to_string(rank) + ": " + std::strerror(err));
    children_.push_back({rank, pid});
  }
  return TensorParallelGroup::init(o);
}

void RankLauncher::wait() {
  std::string failed;
  for (auto& child : children_) {
    int status = 0;
    if (::waitpid(child.pid, &status, 0) == child.pid && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
      failed += (failed.empty() ? "" : "; ") + ("rank " + std::to_string(child.rank) + " " + describe_status(status));
    child.pid = 0;
  }
  children_.clear();
  if (!failed.empty()) throw DistributedError("tensor-parallel " + failed);
}

RankLauncher::~RankLauncher() {
  // This rank failed: stop the ranks it started (they would fail at their next collective anyway).
  for (const auto& child : children_) ::kill(child.pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (const auto& child : children_) {
    while (::waitpid(child.pid, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(child.pid, SIGKILL);
        ::waitpid(child.pid, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

}  // namespace plugformer::cli
