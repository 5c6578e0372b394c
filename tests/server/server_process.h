// `plugformer serve` as a child process on a free loopback port, for tests over real sockets.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace plugformer::test {

class ServerProcess {
 public:
  // Starts `plugformer serve <args>` with --port 0 and waits (up to 60 s) for its listening line;
  // with a `fixed_port`, serves there and returns at once (the model may still be loading).
  explicit ServerProcess(std::vector<std::string> args, std::vector<std::string> env = {}, int fixed_port = 0) {
    log_ = std::string(PLUGFORMER_BINARY_DIR) + "/test_tmp/serve-" + std::to_string(::getpid()) + "-" +
           std::to_string(counter()++) + ".log";
    std::filesystem::create_directories(std::filesystem::path(log_).parent_path());
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      const int err = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(err, 2);
      ::close(out[0]);
      for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
      std::vector<std::string> argv = {std::string(PLUGFORMER_BINARY_DIR) + "/bin/plugformer", "serve"};
      argv.insert(argv.end(), args.begin(), args.end());
      argv.insert(argv.end(), {"--port", std::to_string(fixed_port)});
      std::vector<char*> raw;
      for (auto& a : argv) raw.push_back(a.data());
      raw.push_back(nullptr);
      ::execv(raw[0], raw.data());
      ::_exit(127);
    }
    ::close(out[1]);
    stdout_ = out[0];
    if (fixed_port > 0) {
      port_ = fixed_port;
      return;
    }
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (line.find('\n') == std::string::npos) {
      pollfd p{stdout_, POLLIN, 0};
      if (std::chrono::steady_clock::now() > deadline || ::poll(&p, 1, 200) < 0) break;
      char buf[256];
      if (p.revents & (POLLIN | POLLHUP)) {
        const ssize_t n = ::read(stdout_, buf, sizeof buf);
        if (n <= 0) break;
        line.append(buf, size_t(n));
      }
    }
    const auto at = line.find("http://127.0.0.1:");
    if (at == std::string::npos) {
      kill();
      const std::string message = "the server did not start: " + line + " / " + log();
      remove_log();  // a constructor that throws gets no destructor
      throw std::runtime_error(message);
    }
    port_ = std::stoi(line.substr(at + 17));
  }
  ~ServerProcess() {
    kill();
    remove_log();  // tests print log() where they need it; the file goes with the process
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string log() const {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // SIGTERM, then the exit code (-1 if it did not exit within `seconds`, then killed).
  int terminate(int seconds = 30) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    return wait_exit(seconds);
  }
  int wait_exit(int seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill();
    return -1;
  }
  void kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (stdout_ >= 0) ::close(stdout_), stdout_ = -1;
  }

 private:
  void remove_log() const {
    std::error_code ignored;
    std::filesystem::remove(log_, ignored);
  }
  static int& counter() {
    static int n = 0;
    return n;
  }
  pid_t pid_ = -1;
  int stdout_ = -1, port_ = 0;
  std::string log_;
};

}  // namespace plugformer::test
