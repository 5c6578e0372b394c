// Tensor parallelism over real processes on loopback: fixtures on 2 and 4 ranks (through
// tp_fixture_worker), `plugformer generate --tensor-parallel N` against one process, and the
// faults: a rank killed mid-generation, ranks that disagree, a busy master port.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <plugformer/distributed.h>

namespace {

using Clock = std::chrono::steady_clock;
const std::string kCli = std::string(PLUGFORMER_BINARY_DIR) + "/bin/plugformer";
const std::string kStories = std::string(PLUGFORMER_SOURCE_DIR) + "/models/stories260K";
std::string fixture(const std::string& name) { return std::string(PLUGFORMER_FIXTURES_DIR) + "/models/" + name; }

// A child process with its stdout on a pipe and its stderr in a file; killed if still running
// when destroyed.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {}) {
    static int counter = 0;
    err_path_ = std::string(PLUGFORMER_BINARY_DIR) + "/test_tmp/tp-" + std::to_string(::getpid()) + "-" +
                std::to_string(counter++) + ".err";
    std::filesystem::create_directories(std::filesystem::path(err_path_).parent_path());
    int out[2];
    EXPECT_EQ(::pipe(out), 0);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      const int err = ::open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(err, 2);
      ::close(out[0]);
      ::setpgid(0, 0);  // its own group, so a timeout kills the ranks it started too
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> raw;
      for (const auto& a : argv) raw.push_back(const_cast<char*>(a.c_str()));
      raw.push_back(nullptr);
      ::execv(raw[0], raw.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = out[0];
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
    std::error_code ignored;  // tests print err() where they need it
    std::filesystem::remove(err_path_, ignored);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }

  // Reads stdout until it contains `text` or `seconds` pass.
  bool wait_for_output(const std::string& text, double seconds) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    while (out_text_.find(text) == std::string::npos && Clock::now() < deadline) read_some(50);
    return out_text_.find(text) != std::string::npos;
  }
  // Exit status (-1 when it had to be killed after `seconds`); stdout read to its end.
  int wait(double seconds) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    int status = 0;
    while (true) {
      read_some(20);
      const pid_t done = ::waitpid(pid_, &status, WNOHANG);
      if (done == pid_) break;
      if (Clock::now() > deadline) {
        ::kill(-pid_, SIGKILL);
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
        return -1;
      }
    }
    while (read_some(0)) {
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  const std::string& out() const { return out_text_; }
  std::string err() const {
    std::ifstream in(err_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  bool read_some(int timeout_ms) {
    pollfd p{out_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::read(out_, buf, sizeof buf);
    if (n <= 0) return false;
    out_text_.append(buf, size_t(n));
    return true;
  }
  pid_t pid_ = -1;
  int out_ = -1;
  std::string out_text_, err_path_;
};

std::map<std::string, std::string> rank_env(int rank, int world, int port) {
  return {{"RANK", std::to_string(rank)}, {"WORLD_SIZE", std::to_string(world)}, {"MASTER_ADDR", "127.0.0.1"},
          {"MASTER_PORT", std::to_string(port)}, {"OMP_NUM_THREADS", "1"}};
}

const std::vector<std::string> kFixtures = {"llama-tiny", "qwen2-tiny", "qwen3-tiny", "mistral-tiny-window", "gemma-tiny",
                                            "gemma2-tiny", "phi3-tiny-longrope", "phi3-tiny-seqcls", "llama-tiny-tied-seqcls",
                                            "gpt2-tiny-lm", "gpt2-tiny-seqcls"};

// Runs tp_fixture_worker on `world` ranks with `args`; rank 0's report (one line per check).
std::string run_workers(int world, const std::vector<std::string>& args, const std::map<std::string, std::string>& extra_env = {}) {
  const int port = plugformer::free_local_port();
  std::vector<std::unique_ptr<Child>> ranks;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> argv = {std::string(PLUGFORMER_BINARY_DIR) + "/bin/tp_fixture_worker"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto env = rank_env(r, world, port);
    env.insert(extra_env.begin(), extra_env.end());
    ranks.push_back(std::make_unique<Child>(argv, env));
  }
  for (int r = world - 1; r >= 0; --r) {
    const int code = ranks[size_t(r)]->wait(600);
    EXPECT_EQ(code, 0) << "rank " << r << ":\n" << ranks[size_t(r)]->out() << ranks[size_t(r)]->err();
  }
  const std::string& report = ranks[0]->out();
  EXPECT_EQ(report.find("FAIL"), std::string::npos) << report;
  return report;
}

void run_fixture_workers(int world, const std::vector<std::string>& fixtures = kFixtures, bool own_group = false) {
  std::vector<std::string> dirs;
  for (const auto& f : fixtures) dirs.push_back(fixture(f));
  const std::string report = run_workers(world, dirs, own_group ? std::map<std::string, std::string>{{"PLUGFORMER_TP_OWN_GROUP", "1"}}
                                                               : std::map<std::string, std::string>{});
  EXPECT_GE(std::count(report.begin(), report.end(), '\n'), int64_t(4 * fixtures.size())) << report;  // every fixture reported
}

// `plugformer generate ... --json` on `ranks` ranks: (exit code, generated ids, stderr).
struct Generated {
  int code;
  std::vector<int64_t> ids;
  std::string err;
};
Generated generate(const std::vector<std::string>& extra, int ranks) {
  std::vector<std::string> argv = {kCli, "generate", kStories, "Once upon a time", "--json", "--max-new-tokens", "40"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  if (ranks > 1) argv.insert(argv.end(), {"--tensor-parallel", std::to_string(ranks)});
  Child child(argv, {{"OMP_NUM_THREADS", "1"}});
  Generated g{child.wait(300), {}, child.err()};
  if (g.code == 0) g.ids = nlohmann::json::parse(child.out())["generated_ids"].get<std::vector<int64_t>>();
  return g;
}

TEST(TensorParallel, CollectivesAreExactForEverySizeSpinningOrSleeping) {
  // Power-of-two groups exchange over Gloo pairs in synchronous mode, spinning or sleeping on the
  // socket; messages above 32 KiB go in a fixed order (two 16 MiB writes at once block each other
  // for good); three ranks reduce through ProcessGroupGloo; a host application's group goes
  // through c10d throughout.
  for (const auto& [world, spin] : std::vector<std::pair<int, std::string>>{{2, "1"}, {2, "0"}, {3, "0"}, {4, "0"}}) {
    const std::string report = run_workers(world, {"--collectives"}, {{"PLUGFORMER_TP_BUSY_POLL", spin}});
    EXPECT_EQ(std::count(report.begin(), report.end(), '\n'), 24) << world << " ranks, busy poll " << spin << ":\n" << report;
  }
  const std::string own = run_workers(2, {"--collectives"}, {{"PLUGFORMER_TP_OWN_GROUP", "1"}});
  EXPECT_EQ(std::count(own.begin(), own.end(), '\n'), 24) << own;
}

TEST(TensorParallel, FixturesOnTwoRanksMatchOneProcessAndTransformers) { run_fixture_workers(2); }
TEST(TensorParallel, FixturesOnFourRanksMatchOneProcessAndTransformers) { run_fixture_workers(4); }
TEST(TensorParallel, AHostApplicationsOwnGlooGroupWorks) { run_fixture_workers(2, {"llama-tiny"}, /*own_group=*/true); }

TEST(TensorParallel, StoriesGreedyTokensOnTwoAndFourRanksAreLlama2cs) {
  // karpathy/llama2.c's run.c: the 40 greedy tokens after "Once upon a time" (tests/fixtures/llama_stories260K.json).
  std::ifstream in(std::string(PLUGFORMER_FIXTURES_DIR) + "/llama_stories260K.json");
  const auto expected = nlohmann::json::parse(in)["prompts"][0]["greedy"]["ids"].get<std::vector<int64_t>>();
  for (int ranks : {1, 2, 4}) {
    const Generated g = generate({}, ranks);
    ASSERT_EQ(g.code, 0) << ranks << " ranks: " << g.err;
    EXPECT_EQ(g.ids, expected) << ranks << " ranks";
  }
}

TEST(TensorParallel, SeededSamplingGivesOneProcesssText) {
  const std::vector<std::string> sampling = {"--do-sample", "true", "--temperature", "1.3", "--seed", "1234"};
  const Generated one = generate(sampling, 1), two = generate(sampling, 2);
  ASSERT_EQ(one.code, 0) << one.err;
  ASSERT_EQ(two.code, 0) << two.err;
  EXPECT_EQ(two.ids, one.ids);
  const Generated greedy = generate({}, 1);
  EXPECT_NE(one.ids, greedy.ids) << "sampling at temperature 1.3 should leave the greedy path";
}

TEST(TensorParallel, KilledRankMakesTheOthersExitNamingIt) {
  // Four ranks started by torchrun-style variables; rank 2 is stopped as soon as rank 0 streams
  // its first token (the others then wait on it mid-generation) and killed.
  const int port = plugformer::free_local_port(), world = 4;
  std::vector<std::unique_ptr<Child>> ranks;
  for (int r = 0; r < world; ++r)
    ranks.push_back(std::make_unique<Child>(
        std::vector<std::string>{kCli, "generate", kStories, "Once upon a time", "--max-new-tokens", "480"},
        rank_env(r, world, port)));
  ASSERT_TRUE(ranks[0]->wait_for_output("Once upon a time,", 120)) << ranks[0]->out() << ranks[0]->err();
  ::kill(ranks[2]->pid(), SIGSTOP);
  ::kill(ranks[2]->pid(), SIGKILL);
  const auto killed = Clock::now();
  for (int r : {0, 1, 3}) {
    const int code = ranks[size_t(r)]->wait(60);
    EXPECT_EQ(code, 1) << "rank " << r << " should fail cleanly: " << ranks[size_t(r)]->err();
    EXPECT_NE(ranks[size_t(r)]->err().find("rank 2 stopped responding"), std::string::npos)
        << "rank " << r << ": " << ranks[size_t(r)]->err();
  }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - killed).count(), 30.0);
}

TEST(TensorParallel, RanksWithDifferentModelsDtypesOrWorldSizesRefuse) {
  struct Case {
    std::vector<std::string> rank1_args;
    int rank1_world;
    std::string message;
  };
  const std::vector<std::string> base = {kCli, "generate", fixture("llama-tiny"), "--ids", "1,2,3", "--max-new-tokens", "3"};
  const std::vector<Case> cases = {
      {{kCli, "generate", fixture("qwen2-tiny"), "--ids", "1,2,3", "--max-new-tokens", "3"}, 2, "disagree on the model"},
      {{kCli, "generate", fixture("llama-tiny"), "--ids", "1,2,3", "--max-new-tokens", "3", "--dtype", "bfloat16"}, 2,
       "disagree on the model"},
      {base, 3, "world size"},
  };
  for (const auto& c : cases) {
    const int port = plugformer::free_local_port();
    Child rank0(base, rank_env(0, 2, port));
    Child rank1(c.rank1_args, rank_env(1, c.rank1_world, port));
    for (Child* r : {&rank0, &rank1}) {
      EXPECT_EQ(r->wait(60), 1) << r->err();
      EXPECT_NE(r->err().find(c.message), std::string::npos) << r->err();
    }
  }
}

TEST(TensorParallel, BusyMasterPortIsAClearError) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string port = std::to_string(ntohs(addr.sin_port));
  Child child({kCli, "generate", kStories, "Once", "--tensor-parallel", "2", "--master-port", port});
  EXPECT_EQ(child.wait(60), 1) << child.err();
  EXPECT_NE(child.err().find("cannot listen on the master port 127.0.0.1:" + port), std::string::npos) << child.err();
  ::close(fd);
}

TEST(TensorParallel, UnsplittableSizesAndBeamSearchAreRefused) {
  // llama-tiny has 4 heads: 3 ranks divide neither them nor the 2 key / value heads.
  Child three({kCli, "generate", fixture("llama-tiny"), "--ids", "1,2", "--tensor-parallel", "3"});
  EXPECT_EQ(three.wait(60), 1) << three.err();
  EXPECT_NE(three.err().find("cannot be split over 3 tensor-parallel ranks"), std::string::npos) << three.err();
  Child beams({kCli, "generate", kStories, "Once", "--tensor-parallel", "2", "--num-beams", "2"});
  EXPECT_EQ(beams.wait(60), 1) << beams.err();
  EXPECT_NE(beams.err().find("beam search is not available for a tensor-parallel model"), std::string::npos) << beams.err();
}

// `plugformer serve --tensor-parallel 2`: rank 0 serves HTTP, rank 1 follows its model calls.
std::string stories_greedy_text() {
  std::ifstream in(std::string(PLUGFORMER_FIXTURES_DIR) + "/llama_stories260K.json");
  return nlohmann::json::parse(in)["prompts"][0]["greedy"]["text"].get<std::string>();
}

int serving_port(Child& server) {
  EXPECT_TRUE(server.wait_for_output("listening on http://127.0.0.1:", 120)) << server.err();
  const std::string& out = server.out();
  return std::stoi(out.substr(out.find("127.0.0.1:") + 10));
}

// The texts of `n` greedy choices for "Once upon a time" (an HTTP error as the only text).
std::vector<std::string> complete_choices(int port, int max_tokens, int n) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(120, 0);
  const nlohmann::json body = {{"model", "stories260K"}, {"prompt", "Once upon a time"}, {"max_tokens", max_tokens},
                               {"temperature", 0}, {"n", n}};
  auto res = client.Post("/v1/completions", body.dump(), "application/json");
  if (!res || res->status != 200) return {"HTTP error " + (res ? std::to_string(res->status) + " " + res->body : "(no response)")};
  const nlohmann::json reply = nlohmann::json::parse(res->body);
  std::vector<std::string> texts;
  for (const auto& choice : reply.at("choices")) texts.push_back(choice.at("text").get<std::string>());
  return texts;
}

std::string complete(int port, int max_tokens) { return complete_choices(port, max_tokens, 1).front(); }

TEST(TensorParallel, ServeOnTwoRanksAnswersConcurrentRequestsAsOneProcessAndStopsCleanly) {
  Child server({kCli, "serve", kStories, "--port", "0", "--tensor-parallel", "2"});
  const int port = serving_port(server);
  std::vector<std::string> texts(4);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < texts.size(); ++i) clients.emplace_back([&, i] { texts[i] = complete(port, 40); });
  for (auto& c : clients) c.join();
  for (const auto& text : texts) EXPECT_EQ(text, stories_greedy_text());
  // A request's choices start together: their prompts prefill in one packed call, which rank 1 repeats.
  EXPECT_EQ(complete_choices(port, 40, 3), std::vector<std::string>(3, stories_greedy_text()));
  ::kill(server.pid(), SIGTERM);
  EXPECT_EQ(server.wait(60), 0) << server.err();
}

TEST(TensorParallel, ServeExitsNamingAKilledFollower) {
  Child server({kCli, "serve", kStories, "--port", "0", "--tensor-parallel", "2"});
  const int port = serving_port(server);
  EXPECT_EQ(complete(port, 5), ", there was a little");
  std::ifstream children("/proc/" + std::to_string(server.pid()) + "/task/" + std::to_string(server.pid()) + "/children");
  pid_t follower = 0;
  ASSERT_TRUE(children >> follower) << "rank 1 is a child of the server";
  ::kill(follower, SIGKILL);
  complete(port, 5);  // the next model call finds rank 1 gone
  const auto killed = Clock::now();
  EXPECT_EQ(server.wait(60), 1) << server.err();
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - killed).count(), 30.0);
  EXPECT_NE(server.err().find("rank 1 stopped responding"), std::string::npos) << server.err();
}

}  // namespace
