// TensorParallelGroup: rendezvous over c10d's TCPStore, collectives over Gloo, and the heartbeats
// that let a failed collective say which rank was lost.
#include "plugformer/distributed.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <gloo/rendezvous/context.h>
#include <gloo/transport/buffer.h>
#include <gloo/transport/pair.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "plugformer/log.h"
#include "modeling/worker_team.h"

namespace plugformer {

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kHeartbeatPeriod = std::chrono::milliseconds(200);
// How long a rank's heartbeat must stand still to be called lost.
constexpr auto kLostAfter = std::chrono::milliseconds(1200);
const std::string kKeys = "plugformer/";

std::string bytes_to_string(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }
std::vector<uint8_t> string_bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

int64_t env_number(const char* name, int64_t lo, int64_t hi) {
  const char* value = std::getenv(name);
  if (!value || !*value) throw DistributedError(std::string("environment variable ") + name + " is not set");
  char* end = nullptr;
  const long long n = std::strtoll(value, &end, 10);
  if (*end != '\0' || n < lo || n > hi)
    throw DistributedError(std::string("environment variable ") + name + "='" + value + "' must be an integer in [" +
                           std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return n;
}

// The local address this host uses to reach `master` (a UDP "connect" sends nothing), so Gloo
// listens on the interface the other ranks can reach, whatever the host name resolves to.
std::string address_towards(const std::string& master, int port) {
  addrinfo hints{}, *found = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  if (::getaddrinfo(master.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || !found)
    throw DistributedError("master address '" + master + "' does not resolve to an IPv4 address");
  std::string local;
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
    sockaddr_in self{};
    socklen_t len = sizeof(self);
    char text[INET_ADDRSTRLEN] = {};
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &len) == 0 &&
        ::inet_ntop(AF_INET, &self.sin_addr, text, sizeof(text)))
      local = text;
  }
  if (fd >= 0) ::close(fd);
  ::freeaddrinfo(found);
  if (local.empty()) throw DistributedError("no route from this host to the master address " + master);
  return local;
}

// Spinning on a socket pays when each thread of this host's ranks has a core of its own; otherwise a
// spinning rank takes the core a computing one needs. PLUGFORMER_TP_BUSY_POLL=0 / 1 decides instead.
bool busy_poll_pays(int64_t ranks_on_this_host) {
  if (const char* chosen = std::getenv("PLUGFORMER_TP_BUSY_POLL"); chosen && *chosen) return std::string(chosen) != "0";
  return ranks_on_this_host * at::get_num_threads() <= usable_cores();
}

std::string host_name() {
  char name[256] = {};
  return ::gethostname(name, sizeof(name) - 1) == 0 ? std::string(name) : std::string("?");
}

}  // namespace

// The point-to-point traffic of init's groups, on a Gloo context of its own whose pairs run in
// Gloo's synchronous mode: the waiting thread reads its socket itself. Through ProcessGroupGloo a
// send / recv went caller -> c10d worker -> Gloo's event loop -> worker -> caller, after a
// ready-to-receive round trip per message: ~0.9 ms per exchange on 2 busy vCPUs, where the bytes of
// a decode step take microseconds.
class DirectPairs {
 public:
  DirectPairs(std::shared_ptr<gloo::Context> context, bool spin)
      : context_(std::move(context)), spin_(spin), spinning_(size_t(context_->size), false) {
    for (int r = 0; r < context_->size; ++r)
      if (r != context_->rank) context_->getPair(r)->setSync(true, false);
  }

  bool spins() const { return spin_; }

  // Sends `out` to `partner` while receiving as many bytes from it into `in`; the ranks are
  // computing the same step, so a short wait spins (when that pays).
  void exchange(const void* out, void* in, size_t bytes, int partner) {
    if (bytes == 0) return;
    auto& pair = pair_to(partner, spin_);
    auto receiving = pair->createRecvBuffer(kSlot, in, bytes);
    auto sending = pair->createSendBuffer(kSlot, const_cast<void*>(out), bytes);
    // A blocking write larger than the sockets' buffers waits for the peer to read: above
    // kBothWriteFirst the lower rank writes first and the higher one reads first.
    if (bytes <= kBothWriteFirst || context_->rank < partner) {
      sending->send(0, bytes);
      receiving->waitRecv();
    } else {
      receiving->waitRecv();
      sending->send(0, bytes);
    }
    sending->waitSend();
  }

  // One-way transfers (broadcast): the receiver may wait for rank 0 for long (a server between
  // requests), so it sleeps in the kernel instead of spinning.
  void send(const void* out, size_t bytes, int partner) {
    if (bytes == 0) return;
    auto sending = pair_to(partner, false)->createSendBuffer(kSlot, const_cast<void*>(out), bytes);
    sending->send(0, bytes);
    sending->waitSend();
  }
  void recv(void* in, size_t bytes, int partner) {
    if (bytes == 0) return;
    auto receiving = pair_to(partner, false)->createRecvBuffer(kSlot, in, bytes);
    receiving->waitRecv();
  }

 private:
  static constexpr int kSlot = 1;
  static constexpr size_t kBothWriteFirst = size_t(32) << 10;

  std::unique_ptr<gloo::transport::Pair>& pair_to(int partner, bool spin) {
    auto& pair = context_->getPair(partner);
    if (spinning_[size_t(partner)] != spin) {
      pair->setSync(true, spin);
      spinning_[size_t(partner)] = spin;
    }
    return pair;
  }

  std::shared_ptr<gloo::Context> context_;
  bool spin_;
  std::vector<bool> spinning_;
};

std::optional<DistributedOptions> DistributedOptions::from_env() {
  if (!std::getenv("RANK")) return std::nullopt;
  DistributedOptions o;
  o.world_size = env_number("WORLD_SIZE", 1, 1 << 20);
  o.rank = env_number("RANK", 0, o.world_size - 1);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr && *addr) o.master_addr = addr;
  if (std::getenv("MASTER_PORT")) o.master_port = int(env_number("MASTER_PORT", 0, 65535));
  return o;
}

struct TensorParallelGroup::State {
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::unique_ptr<DirectPairs> direct;        // init's groups; collectives of other groups go through `group`
  c10::intrusive_ptr<c10d::Store> store;      // heartbeats and lost-rank verdicts; may be null
  c10::intrusive_ptr<c10d::Store> rendezvous;  // init's store (rank 0: the server), kept for the group's life
  int port = 0;
  std::string master;                         // "addr:port", for messages
  std::mutex stats_mutex;
  double seconds = 0;
  int64_t count = 0;
  // Heartbeats: this rank adds 1 to plugformer/heartbeat/<rank> every kHeartbeatPeriod.
  std::thread heartbeat;
  std::mutex heartbeat_mutex;
  std::condition_variable heartbeat_wake;
  bool stopping = false;

  ~State() {
    {
      std::lock_guard<std::mutex> lock(heartbeat_mutex);
      stopping = true;
    }
    heartbeat_wake.notify_all();
    if (heartbeat.joinable()) heartbeat.join();
  }

  std::string heartbeat_key(int64_t rank) const { return kKeys + "heartbeat/" + std::to_string(rank); }

  void start_heartbeat() {
    if (!store) return;
    heartbeat = std::thread([this] {
      const std::string key = heartbeat_key(group->getRank());
      std::unique_lock<std::mutex> lock(heartbeat_mutex);
      while (!stopping) {
        try {
          store->add(key, 1);
        } catch (const std::exception&) {
          return;  // the store (rank 0) is gone; a collective will report it
        }
        heartbeat_wake.wait_for(lock, kHeartbeatPeriod, [this] { return stopping; });
      }
    });
  }

  // Which ranks stopped: those whose heartbeat did not move over kLostAfter. The first rank to
  // find out records it, so ranks that fail later (their neighbour exited) name the same rank.
  std::string lost_ranks() {
    if (!store) return "";
    try {
      const std::string verdict = kKeys + "lost";
      if (store->check({verdict})) return bytes_to_string(store->get(verdict));
      const int64_t world = group->getSize();
      std::vector<int64_t> before(size_t(world), 0);
      for (int64_t r = 0; r < world; ++r) before[size_t(r)] = store->add(heartbeat_key(r), 0);
      std::this_thread::sleep_for(kLostAfter);
      if (store->check({verdict})) return bytes_to_string(store->get(verdict));
      std::string lost;
      for (int64_t r = 0; r < world; ++r)
        if (r != group->getRank() && store->add(heartbeat_key(r), 0) == before[size_t(r)])
          lost += (lost.empty() ? "rank " : ", rank ") + std::to_string(r);
      if (!lost.empty()) store->set(verdict, string_bytes(lost));
      return lost;
    } catch (const std::exception&) {
      return "rank 0 (the master" + (master.empty() ? std::string(")") : " at " + master + ")");
    }
  }

  void exchange(const at::Tensor& send, const at::Tensor& recv, int64_t partner);

  // Runs one collective (`body` waits for its work), timed; a failure becomes a DistributedError
  // naming the lost ranks.
  void run(const char* what, const std::function<void()>& body) {
    const auto begin = Clock::now();
    try {
      body();
    } catch (const std::exception& e) {
      const std::string lost = lost_ranks();
      // Rank 0 hosts the store: it stays up a moment so ranks still diagnosing read its verdict.
      if (rendezvous && group->getRank() == 0 && group->getSize() > 1) std::this_thread::sleep_for(2 * kLostAfter);
      throw DistributedError("tensor-parallel " + std::string(what) + " failed on rank " +
                             std::to_string(group->getRank()) + " of " + std::to_string(group->getSize()) + ": " +
                             (lost.empty() ? "" : lost + " stopped responding (killed, hung or unreachable); ") +
                             first_line(e.what()));
    }
    std::lock_guard<std::mutex> lock(stats_mutex);
    seconds += std::chrono::duration<double>(Clock::now() - begin).count();
    ++count;
  }
};

TensorParallelGroup::TensorParallelGroup(std::unique_ptr<State> state) : state_(std::move(state)) {
  state_->start_heartbeat();
}

TensorParallelGroup::TensorParallelGroup(c10::intrusive_ptr<c10d::ProcessGroup> group, c10::intrusive_ptr<c10d::Store> store)
    : state_(std::make_unique<State>()) {
  if (!group) throw DistributedError("TensorParallelGroup needs a process group");
  state_->group = std::move(group);
  state_->store = std::move(store);
  state_->start_heartbeat();
}

TensorParallelGroup::~TensorParallelGroup() = default;

std::shared_ptr<TensorParallelGroup> TensorParallelGroup::init(const DistributedOptions& o) {
  if (o.world_size < 1) throw DistributedError("world size must be at least 1, got " + std::to_string(o.world_size));
  if (o.rank < 0 || o.rank >= o.world_size)
    throw DistributedError("rank " + std::to_string(o.rank) + " is outside [0, " + std::to_string(o.world_size) + ")");
  if (o.master_port < 0 || o.master_port > 65535)
    throw DistributedError("master port " + std::to_string(o.master_port) + " is outside [0, 65535]");
  if (o.master_port == 0 && o.world_size > 1 && o.rank != 0)
    throw DistributedError("rank " + std::to_string(o.rank) + " needs the master's port (master port 0 means: rank 0 picks one)");
  auto state = std::make_unique<State>();
  const std::string where = o.master_addr + ":" + std::to_string(o.master_port);

  c10d::TCPStoreOptions store_options;
  store_options.port = uint16_t(o.master_port);
  store_options.isServer = o.rank == 0;
  store_options.waitWorkers = false;
  store_options.timeout = o.timeout;
  c10::intrusive_ptr<c10d::TCPStore> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, store_options);
  } catch (const std::exception& e) {
    if (o.rank == 0)
      throw DistributedError("rank 0 cannot listen on the master port " + where + " (" + first_line(e.what()) +
                             "); is another job using it? choose another --master-port / MASTER_PORT");
    throw DistributedError("rank " + std::to_string(o.rank) + " cannot reach the master (rank 0) at " + where + ": " +
                           first_line(e.what()));
  }
  state->port = store->getPort();
  state->master = o.master_addr + ":" + std::to_string(state->port);

  // Every rank states its world size; each compares with rank 0's (rank 0 with everyone's), so
  // ranks started with different sizes refuse instead of waiting for ranks that never come. The
  // others read rank 0's size before stating theirs: rank 0 may refuse and close the store as soon
  // as it sees a different one, and a read after that would fail without saying why.
  const std::string me = std::to_string(o.rank), world = std::to_string(o.world_size);
  try {
    if (store->add(kKeys + "joined/" + me, 1) != 1)
      throw DistributedError("two processes were started as rank " + me + " (master " + state->master + ")");
    auto world_of = [&](int64_t r) { return bytes_to_string(store->get(kKeys + "world/" + std::to_string(r))); };
    auto refuse = [&](int64_t r, const std::string& theirs) {
      throw DistributedError("rank " + std::to_string(r) + " was started with world size " + theirs + " but rank " + me +
                             " with " + world + "; start every rank with the same --tensor-parallel / WORLD_SIZE");
    };
    if (o.rank == 0) store->set(kKeys + "world/0", string_bytes(world));
    const std::string first = world_of(0);
    if (o.rank != 0) store->set(kKeys + "world/" + me, string_bytes(world));
    if (first != world) refuse(0, first);
    if (o.rank == 0)
      for (int64_t r = 1; r < o.world_size; ++r)
        if (const std::string theirs = world_of(r); theirs != world) refuse(r, theirs);
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    throw DistributedError("rank " + me + " of " + world + ": the rendezvous at " + state->master +
                           " failed (did every rank start? same --master-addr / --master-port?): " + first_line(e.what()));
  }

  auto gloo = c10d::ProcessGroupGloo::Options::create();
  gloo->timeout = o.timeout;
  try {
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else
      gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(address_towards(o.master_addr, state->port)));
    state->group = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("gloo", store),
                                                              int(o.rank), int(o.world_size), gloo);
    int64_t ranks_here = 0;
    const std::string here = host_name();
    store->set(kKeys + "host/" + me, string_bytes(here));
    for (int64_t r = 0; r < o.world_size; ++r) ranks_here += bytes_to_string(store->get(kKeys + "host/" + std::to_string(r))) == here;
    auto direct = std::make_shared<gloo::rendezvous::Context>(int(o.rank), int(o.world_size));
    direct->setTimeout(o.timeout);
    c10d::ProcessGroupGloo::GlooStore direct_store(c10::make_intrusive<c10d::PrefixStore>("direct", store));
    direct->connectFullMesh(direct_store, gloo->devices.front());
    state->direct = std::make_unique<DirectPairs>(std::move(direct), busy_poll_pays(ranks_here));
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    throw DistributedError("rank " + me + " of " + world + " could not connect to the other ranks: " + first_line(e.what()));
  }
  // Heartbeats on a connection of their own, so they never queue behind a waiting get().
  c10d::TCPStoreOptions client = store_options;
  client.isServer = false;
  client.port = uint16_t(state->port);
  client.timeout = std::chrono::seconds(5);
  state->store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, client);
  state->rendezvous = store;
  auto group = std::shared_ptr<TensorParallelGroup>(new TensorParallelGroup(std::move(state)));
  logger().debug("tensor-parallel rank {} of {} joined at {} ({} on sockets)", o.rank, o.world_size, where,
                 group->state_->direct->spins() ? "spinning" : "sleeping");
  return group;
}

int64_t TensorParallelGroup::rank() const { return state_->group->getRank(); }
int64_t TensorParallelGroup::size() const { return state_->group->getSize(); }
int TensorParallelGroup::master_port() const { return state_->port; }

namespace {

bool power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// Gloo sums fp32, fp64 and integers; other floating types travel as fp32.
at::Tensor wire_tensor(const at::Tensor& t) {
  const bool native = t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble || !t.is_floating_point();
  return native ? t.contiguous() : t.to(at::kFloat).contiguous();
}

}  // namespace

// Sends `send` to `partner` while receiving the same number of elements from it into `recv` (both contiguous).
void TensorParallelGroup::State::exchange(const at::Tensor& send, const at::Tensor& recv, int64_t partner) {
  if (direct) return direct->exchange(send.data_ptr(), recv.data_ptr(), size_t(send.nbytes()), int(partner));
  std::vector<at::Tensor> out{send}, in{recv};
  auto sent = group->send(out, int(partner), 0);
  auto received = group->recv(in, int(partner), 0);
  sent->wait();
  received->wait();
}

// Power-of-two groups exchange with partner rank ^ 2^k in log2(size) rounds (recursive
// doubling): one network hop per round, where Gloo's ring all-reduce takes several; each rank
// adds the same two partial sums (in either order: the same bits), so every rank ends identical.
void TensorParallelGroup::all_reduce(at::Tensor& tensor) {
  if (size() == 1) return;
  at::Tensor sum = wire_tensor(tensor);
  state_->run("all-reduce", [&] {
    if (!power_of_two(size())) {
      std::vector<at::Tensor> buffer{sum};
      state_->group->allreduce(buffer)->wait();
      return;
    }
    const at::Tensor theirs = at::empty_like(sum);
    for (int64_t step = 1; step < size(); step <<= 1) {
      state_->exchange(sum, theirs, rank() ^ step);
      sum.add_(theirs);
    }
  });
  if (!sum.is_same(tensor)) tensor.copy_(sum);
}

at::Tensor TensorParallelGroup::all_gather(const at::Tensor& tensor) {
  if (size() == 1) return tensor;
  const at::Tensor mine = wire_tensor(tensor);
  const int64_t world = size(), me = rank(), n = mine.numel();
  at::Tensor blocks;  // [world, n]: rank r's tensor in row r
  state_->run("all-gather", [&] {
    if (!power_of_two(world)) {
      // Gloo's worker thread copies into the outputs: they must not be inference tensors.
      std::vector<std::vector<at::Tensor>> outputs(1);
      {
        c10::InferenceMode normal_tensors(false);
        for (int64_t r = 0; r < world; ++r) outputs[0].push_back(at::empty_like(mine));
      }
      std::vector<at::Tensor> input{mine};
      state_->group->allgather(outputs, input)->wait();
      blocks = at::stack(outputs[0]).reshape({world, n});
      return;
    }
    blocks = at::empty({world, n}, mine.options());
    blocks[me].copy_(mine.reshape({n}));
    // Round k: this rank holds the 2^k rows of its aligned group and swaps them for its partner's.
    for (int64_t step = 1; step < world; step <<= 1) {
      const int64_t partner = me ^ step, held = me & ~(step - 1), theirs = partner & ~(step - 1);
      state_->exchange(blocks.narrow(0, held, step), blocks.narrow(0, theirs, step), partner);
    }
  });
  // Rows -> concatenation along the last dimension.
  std::vector<int64_t> shape = mine.sizes().vec();
  shape.insert(shape.begin(), world);
  at::Tensor out = blocks.view(shape).movedim(0, -2);
  shape.erase(shape.begin());
  shape.back() *= world;
  return out.reshape(shape).to(tensor.scalar_type());
}

void TensorParallelGroup::broadcast(at::Tensor& tensor) {
  if (size() == 1) return;
  if (state_->direct) {
    // A binomial tree: in the round of `step`, ranks below it pass the data on to rank + step.
    at::Tensor data = tensor.contiguous();
    const auto bytes = size_t(data.nbytes());
    state_->run("broadcast", [&] {
      for (int64_t step = 1; step < size(); step <<= 1) {
        if (rank() < step && rank() + step < size()) state_->direct->send(data.data_ptr(), bytes, int(rank() + step));
        else if (rank() >= step && rank() < 2 * step) state_->direct->recv(data.data_ptr(), bytes, int(rank() - step));
      }
    });
    if (!data.is_same(tensor)) tensor.copy_(data);
    return;
  }
  std::vector<at::Tensor> buffer{tensor.contiguous()};
  state_->run("broadcast", [&] { state_->group->broadcast(buffer)->wait(); });
  if (!buffer[0].is_same(tensor)) tensor.copy_(buffer[0]);
}

void TensorParallelGroup::require_same(const std::string& what, const std::string& value) {
  // Compare fingerprints first (one all-gather of fixed size), then name the ranks that differ.
  const int64_t hash = int64_t(std::hash<std::string>{}(value) & 0x7fffffffffffffffULL);
  const at::Tensor all = all_gather(at::full({1}, hash, at::kLong));
  std::string differ;
  for (int64_t r = 1; r < size(); ++r)
    if (all[r].item<int64_t>() != all[0].item<int64_t>()) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (!differ.empty())
    throw DistributedError("tensor-parallel ranks disagree on " + what + ": rank(s) " + differ +
                           " differ from rank 0 (seen from rank " + std::to_string(rank()) +
                           "); start every rank with the same model, dtype and options");
}

double TensorParallelGroup::collective_seconds() const {
  std::lock_guard<std::mutex> lock(state_->stats_mutex);
  return state_->seconds;
}

int64_t TensorParallelGroup::collective_count() const {
  std::lock_guard<std::mutex> lock(state_->stats_mutex);
  return state_->count;
}

int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = -1;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  if (fd >= 0) ::close(fd);
  if (port < 0) throw DistributedError("no free local port for the tensor-parallel master");
  return port;
}

std::pair<int64_t, int64_t> tensor_parallel_units(int64_t units, int64_t rank, int64_t world, const std::string& what) {
  if (units % world == 0) return {rank * (units / world), units / world};
  if (world % units == 0) return {rank / (world / units), 1};
  throw ConfigError(what + ": " + std::to_string(units) + " cannot be split over " + std::to_string(world) +
                    " tensor-parallel ranks (one must divide the other)");
}

}  // namespace plugformer
