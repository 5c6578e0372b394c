// Downloads under injected faults (issue 30): server errors and rate limits, a redirect loop, a
// trickling server, a push between HEAD and GET, bytes that are not what was announced, a full
// disk, 100 SIGKILLs at random points, four processes fetching one repo. After every fault the
// cache must be valid: each blob's hash is its name, each snapshot file resolves to a whole blob,
// no lock stays held; once a run completes, no .incomplete is left.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <random>
#include <thread>

#include "hub_test_util.h"
#include "plugformer/error.h"

namespace plugformer::testing {
namespace {

using hub::HubOptions;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The helper process (tests/hub/download_helper.cpp), optionally with a file size limit.
class Helper {
 public:
  Helper(const MockHub& hub, const fs::path& cache, const std::string& repo, const std::string& what,
         rlim_t file_size_limit = RLIM_INFINITY)
      : err_path_(fs::temp_directory_path() /
                  ("plugformer-hub-helper-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++) + ".err")) {
    const std::string helper = HUB_DOWNLOAD_HELPER;
    std::vector<std::string> args = {helper, hub.endpoint(), cache.string(), repo, what};
    pid_ = ::fork();
    if (pid_ == 0) {
      const int err = ::open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(err, 2);
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      if (file_size_limit != RLIM_INFINITY) {
        ::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG, as on a full disk
        rlimit limit{file_size_limit, file_size_limit};
        ::setrlimit(RLIMIT_FSIZE, &limit);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(helper.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~Helper() {
    std::error_code ec;
    fs::remove(err_path_, ec);
  }
  Helper(const Helper&) = delete;
  Helper& operator=(const Helper&) = delete;
  void kill() { ::kill(pid_, SIGKILL); }
  // Exit code, or 128 + signal.
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  std::string error_output() const { return read_text(err_path_); }

 private:
  static inline int counter_ = 0;
  fs::path err_path_;
  pid_t pid_ = -1;
};

// The message of the `E` that downloading `file` throws ("" and a test failure if none does).
template <class E>
std::string download_error(const std::string& file, const HubOptions& opts) {
  try {
    hub::hf_hub_download("org/tiny", file, opts);
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "downloading " << file << " did not fail";
  return "";
}

std::string hex_name_hash(const fs::path& blob) {
  const std::string name = blob.filename().string();
  const std::string content = read_text(blob);
  return name.size() == 64 ? MockHub::sha256_hex(content) : MockHub::git_sha1_hex(content);
}

class FaultTest : public HubTest {
 protected:
  void SetUp() override {
    HubTest::SetUp();
    files = {{"config.json", R"({"model_type": "llama", "hidden_size": 8})"},
             {"tokenizer.json", std::string(300 * 1024, 't')},
             {"model.safetensors", binary_blob(1024 * 1024, 3)}};
    commit = hub.add_commit("org/tiny", files);
  }

  // The cache invariants that must hold after any fault, and after a completed run also that
  // every file is there and no .incomplete is left.
  void expect_cache_valid(bool complete) {
    const fs::path st = storage("org/tiny");
    std::error_code ec;
    if (fs::is_directory(st / "blobs", ec)) {
      for (const auto& e : fs::directory_iterator(st / "blobs")) {
        const std::string name = e.path().filename().string();
        if (name.size() > 11 && name.substr(name.size() - 11) == ".incomplete") {
          EXPECT_FALSE(complete) << name << " left after a completed run";
          continue;
        }
        EXPECT_EQ(hex_name_hash(e.path()), name) << "blob whose bytes are not its name";
      }
    }
    if (fs::is_directory(st / "snapshots", ec)) {
      for (const auto& e : fs::recursive_directory_iterator(st / "snapshots")) {
        if (e.is_directory()) continue;
        const std::string rel = e.path().lexically_relative(st / "snapshots" / commit).string();
        ASSERT_TRUE(files.count(rel)) << "unexpected file in snapshots: " << e.path();
        EXPECT_TRUE(fs::is_symlink(e.path()));
        EXPECT_EQ(read_text(e.path()), files[rel]) << rel << " visible but not whole";
      }
    }
    if (fs::is_directory(cache / ".locks", ec)) {
      for (const auto& e : fs::recursive_directory_iterator(cache / ".locks")) {
        if (!e.is_regular_file()) continue;
        const int fd = ::open(e.path().c_str(), O_RDWR);
        EXPECT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0) << "lock still held: " << e.path();
        ::close(fd);
      }
    }
    if (complete) {
      for (const auto& [name, content] : files)
        EXPECT_EQ(read_text(st / "snapshots" / commit / name), content) << name;
    }
  }

  bool nothing_cached(const std::string& file) {
    return !fs::exists(storage("org/tiny") / "snapshots" / commit / file) &&
           !fs::exists(storage("org/tiny") / "blobs" / MockHub::sha256_hex(files[file])) &&
           !fs::exists(storage("org/tiny") / "blobs" / MockHub::git_sha1_hex(files[file]));
  }

  std::map<std::string, std::string> files;
  std::string commit;
};

TEST_F(FaultTest, ServerErrorsAndRateLimitsAreRetried) {
  for (int status : {500, 502, 503, 429}) {
    SCOPED_TRACE(status);
    fs::remove_all(cache);
    hub.clear_requests();
    hub.set_fault("config.json", MockFault{.fail_5xx = 2, .fail_status = status});
    EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "config.json", opts)), files["config.json"]);
    EXPECT_EQ(hub.count("HEAD", "config.json"), 3u);
    // The download leg (the CDN for LFS files).
    hub.set_fault("model.safetensors", MockFault{.fail_status = status, .fail_get = 2});
    EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "model.safetensors", opts)), files["model.safetensors"]);
    EXPECT_EQ(hub.count("GET", "/lfs/"), 3u);
    expect_cache_valid(false);
  }
}

TEST_F(FaultTest, RetryAfterIsHonouredInSecondsAndAsADate) {
  auto start = Clock::now();
  hub.set_fault("config.json", MockFault{.fail_5xx = 1, .fail_status = 429, .retry_after = "1"});
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "config.json", opts)), files["config.json"]);
  EXPECT_GE(seconds_since(start), 1.0) << "the backoff base is 5 ms here: only Retry-After makes it wait";

  char date[64];
  const std::time_t in_two_seconds = std::time(nullptr) + 2;
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", std::gmtime(&in_two_seconds));
  start = Clock::now();
  hub.set_fault("model.safetensors", MockFault{.fail_5xx = 1, .fail_status = 503, .retry_after = date});
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "model.safetensors", opts)), files["model.safetensors"]);
  EXPECT_GE(seconds_since(start), 0.9);
}

TEST_F(FaultTest, PersistentErrorsGiveUpWithAClearError) {
  for (int status : {500, 502, 503, 429}) {
    SCOPED_TRACE(status);
    hub.clear_requests();
    hub.set_fault("model.safetensors", MockFault{.fail_5xx = 100, .fail_status = status});
    const std::string msg = download_error<LocalEntryNotFoundError>("model.safetensors", opts);
    EXPECT_NE(msg.find(std::to_string(status)), std::string::npos) << msg;
    EXPECT_NE(msg.find("gave up after 6 attempts"), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
    EXPECT_EQ(hub.count("HEAD", "model.safetensors"), 6u);
    EXPECT_TRUE(nothing_cached("model.safetensors"));
    expect_cache_valid(false);
  }
}

TEST_F(FaultTest, WrongBytesNeverEnterTheCache) {
  // An LFS object whose bytes are not its sha256.
  std::string wrong = files["model.safetensors"];
  wrong[12345] ^= 1;
  hub.set_fault("model.safetensors", MockFault{.served_instead = wrong});
  EXPECT_NE(download_error<HubError>("model.safetensors", opts).find("sha256 mismatch"), std::string::npos);
  EXPECT_TRUE(nothing_cached("model.safetensors"));
  // A regular file whose GET answers other bytes (and their ETag) than its HEAD announced.
  hub.set_fault("config.json", MockFault{.served_instead = R"({"model_type": "gpt2"})"});
  EXPECT_NE(download_error<HubError>("config.json", opts).find("changed on the Hub during the download"),
            std::string::npos);
  EXPECT_TRUE(nothing_cached("config.json"));
  const fs::path incomplete = storage("org/tiny") / "blobs" / (MockHub::git_sha1_hex(files["config.json"]) + ".incomplete");
  EXPECT_TRUE(!fs::exists(incomplete) || fs::file_size(incomplete) == 0) << "no foreign byte is kept";
  expect_cache_valid(false);
  hub.clear_faults();
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "config.json", opts)), files["config.json"]);
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "model.safetensors", opts)), files["model.safetensors"]);
}

TEST_F(FaultTest, PushBetweenHeadAndGetGetsTheAnnouncedVersion) {
  const std::string updated = R"({"model_type": "llama", "hidden_size": 16})";
  hub.set_fault("config.json", MockFault{.changed_content = updated});
  const fs::path p = hub::hf_hub_download("org/tiny", "config.json", opts);
  EXPECT_EQ(read_text(p), files["config.json"]) << "the bytes of the commit the HEAD named";
  EXPECT_EQ(p.parent_path().filename().string(), commit);
  EXPECT_EQ(hub.count("GET", "/resolve/" + commit + "/config.json"), 1u) << "the GET is pinned to that commit";
  // The next call sees the push.
  const fs::path q = hub::hf_hub_download("org/tiny", "config.json", opts);
  EXPECT_EQ(read_text(q), updated);
  EXPECT_NE(q.parent_path().filename().string(), commit);
}

TEST_F(FaultTest, RedirectLoopIsAnErrorNotARetryStorm) {
  hub.set_fault("config.json", MockFault{.redirect_loop = true});
  hub.set_fault("model.safetensors", MockFault{.redirect_loop = true});
  for (const std::string file : {"config.json", "model.safetensors"}) {
    SCOPED_TRACE(file);
    hub.clear_requests();
    EXPECT_NE(download_error<HubError>(file, opts).find("redirect loop"), std::string::npos);
    EXPECT_LE(hub.requests().size(), 13u) << "one chain of redirects, not retried";
    EXPECT_TRUE(nothing_cached(file));
  }
  expect_cache_valid(false);
}

TEST_F(FaultTest, TricklingServerTimesOut) {
  env.set("HF_HUB_DOWNLOAD_TIMEOUT", "1");
  hub.set_fault("model.safetensors", MockFault{.trickle = true});
  const auto start = Clock::now();
  const std::string msg = download_error<hub::HubConnectionError>("model.safetensors", opts);
  EXPECT_NE(msg.find("too slow"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gave up after 6 attempts"), std::string::npos) << msg;
  EXPECT_LT(seconds_since(start), 40.0);
  EXPECT_TRUE(nothing_cached("model.safetensors"));
  expect_cache_valid(false);
  hub.clear_faults();
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "model.safetensors", opts)), files["model.safetensors"]);
  expect_cache_valid(false);
}

TEST_F(FaultTest, KilledAtAHundredRandomPointsTheCacheStaysValid) {
  // Slow enough that a kill lands anywhere in the transfer: ~50 ms for the weights.
  hub.set_fault("model.safetensors", MockFault{.chunk_delay_ms = 3});
  hub.set_fault("tokenizer.json", MockFault{.chunk_delay_ms = 3});
  const auto start = Clock::now();
  ASSERT_EQ(Helper(hub, cache, "org/tiny", "--snapshot").wait(), 0);
  const int full_run_ms = static_cast<int>(seconds_since(start) * 1000);
  const uint64_t total_bytes = files["config.json"].size() + files["tokenizer.json"].size() +
                               files["model.safetensors"].size();

  std::mt19937 rng(30);
  int killed_mid_way = 0;
  for (int i = 0; i < 100; ++i) {
    SCOPED_TRACE("kill " + std::to_string(i));
    fs::remove_all(cache);
    // Every fifth round the re-run is killed too before the last run completes.
    for (int kill = 0; kill < (i % 5 == 4 ? 2 : 1); ++kill) {
      Helper run(hub, cache, "org/tiny", "--snapshot");
      if (i % 2 == 0) {
        // A random time...
        std::this_thread::sleep_for(std::chrono::milliseconds(rng() % (full_run_ms + 1)));
      } else {
        // ... or a random number of bytes on disk.
        const uint64_t at = rng() % total_bytes;
        for (int t = 0; t < 2000; ++t) {
          uint64_t on_disk = 0;
          std::error_code ec;
          for (auto it = fs::recursive_directory_iterator(cache, ec); !ec && it != fs::recursive_directory_iterator();
               it.increment(ec))
            if (it->is_regular_file(ec)) on_disk += it->file_size(ec);
          if (on_disk >= at) break;
          std::this_thread::sleep_for(std::chrono::microseconds(500));
        }
      }
      run.kill();
      if (run.wait() == 128 + SIGKILL) ++killed_mid_way;
      expect_cache_valid(false);
    }
    Helper rerun(hub, cache, "org/tiny", "--snapshot");
    ASSERT_EQ(rerun.wait(), 0) << rerun.error_output();
    expect_cache_valid(true);
    if (HasFailure()) break;
  }
  EXPECT_GE(killed_mid_way, 60) << "most kills must land before the run ended";
  std::cout << "[ faults  ] " << killed_mid_way << " of 120 kills landed mid-run; the cache was valid after each\n";
}

// Several rounds, each into an empty cache: the processes race to create the same refs, locks,
// blobs and snapshot links, and a race that loses one round in twenty-five still shows.
TEST_F(FaultTest, FourProcessesDownloadingOneRepoShareEachBlob) {
  hub.set_fault("model.safetensors", MockFault{.chunk_delay_ms = 5});
  const fs::path caches = dir / "rounds";
  for (size_t round = 1; round <= 8 && !HasFailure(); ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    cache = caches / std::to_string(round);
    std::vector<std::unique_ptr<Helper>> runs;
    for (int i = 0; i < 4; ++i) runs.push_back(std::make_unique<Helper>(hub, cache, "org/tiny", "--snapshot"));
    for (auto& run : runs) EXPECT_EQ(run->wait(), 0) << run->error_output();
    expect_cache_valid(true);
    EXPECT_EQ(hub.count("GET", "/lfs/"), round) << "one download of the weights per round";
    EXPECT_EQ(hub.count("GET", "/resolve/" + commit + "/config.json"), round);
    EXPECT_EQ(hub.count("GET", "/resolve/" + commit + "/tokenizer.json"), round);
    size_t blobs = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(storage("org/tiny") / "blobs")) ++blobs;
    EXPECT_EQ(blobs, files.size());
  }
}

// A full disk: HF_HUB_CACHE on a 512 KiB tmpfs; on tmpfs mounts with room for only 1 to 24
// files and folders (every mkdir, lock file, ref, symlink and blob can be the one refused); and a
// 512 KiB file size limit (what is left where mounting is refused). Each run ends in a clear error
// or in success, the cache valid either way; with room again, the next run completes.
TEST_F(FaultTest, DiskFullIsAClearErrorAndTheCacheStaysValid) {
  const fs::path small = dir / "small";
  fs::create_directories(small);
  cache = small / "cache";
  struct Unmount {
    const fs::path& at;
    ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
  } unmount{small};
  auto remount = [&](const std::string& options) {
    ::umount2(small.c_str(), MNT_DETACH);
    return ::mount("tmpfs", small.c_str(), "tmpfs", 0, options.c_str()) == 0;
  };
  auto room_again_completes = [&] {
    Helper again(hub, cache, "org/tiny", "--snapshot");
    EXPECT_EQ(again.wait(), 0) << again.error_output();
    expect_cache_valid(true);
  };

  if (remount("size=512k")) {
    Helper full(hub, cache, "org/tiny", "--snapshot");
    EXPECT_EQ(full.wait(), 1);
    const std::string err = full.error_output();
    EXPECT_NE(err.find("cannot write"), std::string::npos) << err;
    EXPECT_NE(err.find("No space left on device"), std::string::npos) << err;
    EXPECT_TRUE(nothing_cached("model.safetensors"));
    expect_cache_valid(false);
    std::cout << "[ faults  ] 512 KiB tmpfs: " << err;
    ASSERT_EQ(::mount("tmpfs", small.c_str(), "tmpfs", MS_REMOUNT, "size=8m"), 0);
    room_again_completes();

    int failed = 0;
    for (int inodes = 1; inodes <= 24; ++inodes) {
      SCOPED_TRACE("nr_inodes=" + std::to_string(inodes));
      ASSERT_TRUE(remount("size=8m,nr_inodes=" + std::to_string(inodes)));
      Helper run(hub, cache, "org/tiny", "--snapshot");
      const int code = run.wait();
      if (code != 0) {
        ++failed;
        EXPECT_EQ(code, 1);
        EXPECT_NE(run.error_output().find("No space left on device"), std::string::npos) << run.error_output();
        expect_cache_valid(false);
        ASSERT_EQ(::mount("tmpfs", small.c_str(), "tmpfs", MS_REMOUNT, "size=8m,nr_inodes=1000"), 0);
      }
      room_again_completes();
    }
    EXPECT_GE(failed, 10) << "most inode budgets are too small for the repo";
    std::cout << "[ faults  ] " << failed << " of 24 inode budgets ran out mid-download; each a clear error\n";
  } else {
    std::cout << "[ faults  ] mounting a tmpfs was refused; only the file size limit is tested\n";
  }

  // A file size limit (EFBIG instead of ENOSPC).
  cache = dir / "limited";
  Helper limited(hub, cache, "org/tiny", "--snapshot", 512 * 1024);
  EXPECT_EQ(limited.wait(), 1);
  const std::string err = limited.error_output();
  EXPECT_NE(err.find("cannot write"), std::string::npos) << err;
  EXPECT_NE(err.find("File too large"), std::string::npos) << err;
  EXPECT_TRUE(nothing_cached("model.safetensors"));
  expect_cache_valid(false);
  room_again_completes();
}

}  // namespace
}  // namespace plugformer::testing
