// hf_hub_download / cached_file / snapshot_download against the mock Hub: layout, LFS, errors,
// retries, resume, truncation, concurrency, a killed download.
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <thread>

#include "hub_test_util.h"
#include "plugformer/error.h"

extern char** environ;

namespace plugformer::testing {
namespace {

using hub::HubOptions;

class DownloadTest : public HubTest {
 protected:
  void SetUp() override {
    HubTest::SetUp();
    weights = binary_blob(300 * 1024, 7);
    commit = hub.add_commit("org/tiny", {{"config.json", config},
                                         {"model.safetensors", weights},
                                         {"sub/tokenizer.json", "{\"model\":{}}"},
                                         {"README.md", "# tiny\n"}});
  }
  std::string config = "{\"model_type\": \"llama\", \"hidden_size\": 8}";
  std::string weights;
  std::string commit;
};

TEST_F(DownloadTest, RegularFileLandsInHuggingfaceHubLayout) {
  fs::path p = hub::hf_hub_download("org/tiny", "config.json", opts);
  const fs::path st = storage("org/tiny");
  EXPECT_EQ(p, st / "snapshots" / commit / "config.json");
  EXPECT_EQ(read_text(p), config);
  ASSERT_TRUE(fs::is_symlink(p));
  const std::string etag = MockHub::git_sha1_hex(config);
  EXPECT_EQ(fs::read_symlink(p), fs::path("../../blobs") / etag);  // relative, as huggingface_hub
  EXPECT_EQ(read_text(st / "blobs" / etag), config);
  EXPECT_EQ(read_text(st / "refs" / "main"), commit);  // no trailing newline
  EXPECT_FALSE(fs::exists(st / "blobs" / (etag + ".incomplete")));
  EXPECT_TRUE(fs::exists(cache / ".locks" / "models--org--tiny" / (etag + ".lock")));
}

TEST_F(DownloadTest, LfsFileFollowsRedirectToCdnWithoutToken) {
  opts.token = MockHub::kReadToken;
  fs::path p = hub::hf_hub_download("org/tiny", "model.safetensors", opts);
  EXPECT_EQ(read_text(p), weights);
  const std::string sha = MockHub::sha256_hex(weights);
  EXPECT_EQ(fs::read_symlink(p), fs::path("../../blobs") / sha);  // blob named by the sha256
  bool saw_cdn = false;
  for (const auto& r : hub.requests()) {
    if (r.server == "cdn") {
      saw_cdn = true;
      EXPECT_EQ(r.authorization, "") << "the token must not travel to the CDN";
    } else {
      EXPECT_EQ(r.authorization, std::string("Bearer ") + MockHub::kReadToken);
    }
  }
  EXPECT_TRUE(saw_cdn);
  EXPECT_EQ(hub.count("HEAD", "/resolve/main/model.safetensors"), 1u);
}

TEST_F(DownloadTest, NestedFileAndSubfolderOption) {
  opts.subfolder = "sub";
  fs::path p = hub::hf_hub_download("org/tiny", "tokenizer.json", opts);
  EXPECT_EQ(p, storage("org/tiny") / "snapshots" / commit / "sub" / "tokenizer.json");
  EXPECT_EQ(fs::read_symlink(p).string().rfind("../../../blobs/", 0), 0u);
  EXPECT_EQ(read_text(p), "{\"model\":{}}");
}

TEST_F(DownloadTest, SecondCallUsesCacheAndCommitHashNeedsNoNetwork) {
  hub::hf_hub_download("org/tiny", "model.safetensors", opts);
  hub.clear_requests();
  fs::path again = hub::hf_hub_download("org/tiny", "model.safetensors", opts);
  EXPECT_EQ(read_text(again), weights);
  EXPECT_EQ(hub.count("GET", ""), 0u);  // HEAD only
  EXPECT_EQ(hub.count("HEAD", ""), 1u);
  hub.clear_requests();
  HubOptions pinned = opts;
  pinned.revision = commit;
  EXPECT_EQ(hub::hf_hub_download("org/tiny", "model.safetensors", pinned), again);
  EXPECT_TRUE(hub.requests().empty());
}

TEST_F(DownloadTest, NewCommitOnBranchGivesNewSnapshotAndSharedBlobs) {
  hub::hf_hub_download("org/tiny", "config.json", opts);
  std::string c2 = hub.add_commit("org/tiny", {{"config.json", config}, {"model.safetensors", weights}});
  fs::path p = hub::hf_hub_download("org/tiny", "config.json", opts);
  EXPECT_EQ(p, storage("org/tiny") / "snapshots" / c2 / "config.json");
  EXPECT_EQ(read_text(storage("org/tiny") / "refs" / "main"), c2);
  EXPECT_EQ(hub.count("GET", "config.json"), 1u) << "same etag: the blob is reused, not downloaded again";
}

TEST_F(DownloadTest, ForceDownloadFetchesAgain) {
  hub::hf_hub_download("org/tiny", "config.json", opts);
  opts.force_download = true;
  fs::path p = hub::hf_hub_download("org/tiny", "config.json", opts);
  EXPECT_EQ(read_text(p), config);
  EXPECT_EQ(hub.count("GET", "config.json"), 2u);
}

TEST_F(DownloadTest, TagsAndPrRefsAreRevisions) {
  std::string c2 = hub.add_commit("org/tiny", {{"config.json", "{\"v\": 2}"}}, "refs/pr/1");
  hub.add_ref("org/tiny", "v1.0", commit);
  HubOptions o = opts;
  o.revision = "refs/pr/1";
  fs::path p = hub::hf_hub_download("org/tiny", "config.json", o);
  EXPECT_EQ(read_text(p), "{\"v\": 2}");
  EXPECT_EQ(read_text(storage("org/tiny") / "refs" / "refs" / "pr" / "1"), c2);
  EXPECT_EQ(hub.count("HEAD", "/resolve/refs%2Fpr%2F1/config.json"), 1u) << "revision is fully quoted";
  o.revision = "v1.0";
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "config.json", o)), config);
}

TEST_F(DownloadTest, DatasetRepoType) {
  std::string c = hub.add_commit("org/data", {{"train.csv", "a,b\n1,2\n"}}, "main", "dataset");
  opts.repo_type = "dataset";
  fs::path p = hub::hf_hub_download("org/data", "train.csv", opts);
  EXPECT_EQ(p, cache / "datasets--org--data" / "snapshots" / c / "train.csv");
  EXPECT_EQ(hub.count("HEAD", "/datasets/org/data/resolve/main/train.csv"), 1u);
}

TEST_F(DownloadTest, RenamedRepoRelativeRedirectIsFollowed) {
  hub.rename("old-org/tiny", "org/tiny");
  fs::path p = hub::hf_hub_download("old-org/tiny", "config.json", opts);
  EXPECT_EQ(read_text(p), config);
  EXPECT_EQ(p, storage("old-org/tiny") / "snapshots" / commit / "config.json");
}

TEST_F(DownloadTest, TypedErrorsForMissingRepoRevisionFileAndAccess) {
  EXPECT_THROW(hub::hf_hub_download("org/nope", "config.json", opts), RepositoryNotFoundError);
  HubOptions bad_rev = opts;
  bad_rev.revision = "no-such-branch";
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", bad_rev), RevisionNotFoundError);
  try {
    hub::hf_hub_download("org/tiny", "missing.json", opts);
    FAIL() << "expected EntryNotFoundError";
  } catch (const EntryNotFoundError& e) {
    EXPECT_EQ(e.status(), 404);
    EXPECT_NE(std::string(e.what()).find("missing.json"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("org/tiny"), std::string::npos);
  }
  // The absence is recorded as huggingface_hub does.
  EXPECT_TRUE(fs::is_regular_file(storage("org/tiny") / ".no_exist" / commit / "missing.json"));

  hub.add_commit("org/private", {{"config.json", "{}"}});
  hub.set_private("org/private", true);
  try {
    hub::hf_hub_download("org/private", "config.json", opts);
    FAIL() << "expected RepositoryNotFoundError";
  } catch (const RepositoryNotFoundError& e) {
    EXPECT_EQ(e.status(), 401);
  }
  hub.add_commit("org/gated", {{"config.json", "{}"}});
  hub.set_gated("org/gated", true);
  opts.token = MockHub::kReadToken;
  try {
    hub::hf_hub_download("org/gated", "config.json", opts);
    FAIL() << "expected GatedRepoError";
  } catch (const GatedRepoError& e) {
    EXPECT_EQ(e.status(), 403);
    EXPECT_NE(std::string(e.what()).find("org/gated"), std::string::npos);
  }
  opts.token = MockHub::kWriteToken;  // the mock grants this user access
  EXPECT_EQ(read_text(hub::hf_hub_download("org/gated", "config.json", opts)), "{}");
}

TEST_F(DownloadTest, TokenFromArgumentEnvironmentAndTokenFile) {
  hub.set_private("org/tiny", true);
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", opts), RepositoryNotFoundError);
  HubOptions with_arg = opts;
  with_arg.token = MockHub::kReadToken;
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "config.json", with_arg)), config);

  fs::remove_all(cache);
  env.set("HF_TOKEN", MockHub::kReadToken);
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "config.json", opts)), config);
  HubOptions no_token = opts;
  no_token.token = "";  // explicitly none
  no_token.force_download = true;
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", no_token), RepositoryNotFoundError);
  env.set("HF_TOKEN", std::nullopt);

  fs::remove_all(cache);
  write_text(dir / "hf_home" / "token", std::string(MockHub::kReadToken) + "\n");
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "config.json", opts)), config);
  fs::remove(dir / "hf_home" / "token");

  fs::remove_all(cache);
  write_text(dir / "elsewhere" / "tok", MockHub::kReadToken);
  env.set("HF_TOKEN_PATH", (dir / "elsewhere" / "tok").string());
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "config.json", opts)), config);
}

TEST_F(DownloadTest, EndpointFromEnvironment) {
  env.set("HF_ENDPOINT", hub.endpoint() + "/");
  HubOptions o;
  o.cache_dir = cache;
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "config.json", o)), config);
  EXPECT_EQ(hub::hf_hub_url("org/tiny", "a b.json", o), hub.endpoint() + "/org/tiny/resolve/main/a%20b.json");
}

TEST_F(DownloadTest, CacheDirFromHfHubCacheAndHfHome) {
  HubOptions o;
  env.set("HF_HUB_CACHE", (dir / "hubcache").string());
  fs::path p = hub::hf_hub_download("org/tiny", "config.json", o);
  EXPECT_EQ(p, dir / "hubcache" / "models--org--tiny" / "snapshots" / commit / "config.json");
  env.set("HF_HUB_CACHE", std::nullopt);
  p = hub::hf_hub_download("org/tiny", "config.json", o);
  EXPECT_EQ(p, dir / "hf_home" / "hub" / "models--org--tiny" / "snapshots" / commit / "config.json");
}

TEST_F(DownloadTest, ServerErrorsAreRetriedThenSucceed) {
  hub.set_fault("config.json", MockFault{.fail_5xx = 2});
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "config.json", opts)), config);
  EXPECT_EQ(hub.count("HEAD", "config.json"), 3u);
  // On the CDN leg too.
  hub.set_fault("model.safetensors", MockFault{.fail_5xx = 3});
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "model.safetensors", opts)), weights);
}

TEST_F(DownloadTest, PersistentServerErrorWithoutCacheIsLocalEntryNotFound) {
  hub.set_fault("config.json", MockFault{.fail_5xx = 100});
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", opts), LocalEntryNotFoundError);
  EXPECT_EQ(hub.count("HEAD", "config.json"), 6u);  // 1 + 5 retries
}

TEST_F(DownloadTest, HubDownFallsBackToCachedFile) {
  fs::path p = hub::hf_hub_download("org/tiny", "config.json", opts);
  HubOptions down = opts;
  down.endpoint = "http://127.0.0.1:1";  // nothing listens there
  EXPECT_EQ(hub::hf_hub_download("org/tiny", "config.json", down), p);
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "README.md", down), LocalEntryNotFoundError);
}

TEST_F(DownloadTest, PartialDownloadIsResumedWithRange) {
  const std::string sha = MockHub::sha256_hex(weights);
  const fs::path blob = storage("org/tiny") / "blobs" / sha;
  fs::path incomplete = blob;
  incomplete += ".incomplete";
  write_text(incomplete, weights.substr(0, 100000));  // what a killed run left behind
  fs::path p = hub::hf_hub_download("org/tiny", "model.safetensors", opts);
  EXPECT_EQ(read_text(p), weights);
  EXPECT_FALSE(fs::exists(incomplete));
  bool ranged = false;
  for (const auto& r : hub.requests())
    if (r.server == "cdn" && r.range == "bytes=100000-") ranged = true;
  EXPECT_TRUE(ranged);
  EXPECT_EQ(hub.count("GET", "/lfs/"), 1u);
}

TEST_F(DownloadTest, ServerIgnoringOrMisansweringRangeRestartsFromZero) {
  const std::string sha = MockHub::sha256_hex(weights);
  fs::path incomplete = storage("org/tiny") / "blobs" / (sha + ".incomplete");
  // 200 with the whole body to a Range request: the partial file must not be kept in front.
  write_text(incomplete, std::string(100000, 'x'));
  hub.set_fault("model.safetensors", MockFault{.ignore_range = 1});
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "model.safetensors", opts)), weights);
  EXPECT_EQ(hub.requests().back().range, "bytes=100000-");
  // 206 from the wrong offset: refused, then downloaded from zero.
  fs::remove_all(cache);
  write_text(incomplete, weights.substr(0, 50000));
  hub.clear_requests();
  hub.set_fault("model.safetensors", MockFault{.wrong_range = 1});
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "model.safetensors", opts)), weights);
  std::vector<std::string> ranges;
  for (const auto& r : hub.requests())
    if (r.server == "cdn") ranges.push_back(r.range);
  EXPECT_EQ(ranges, (std::vector<std::string>{"bytes=50000-", ""}));
  // Same for a regular (non-LFS, no sha256) file: the size check alone would not catch it.
  const std::string etag = MockHub::git_sha1_hex(config);
  write_text(storage("org/tiny") / "blobs" / (etag + ".incomplete"), config.substr(0, 10));
  hub.set_fault("config.json", MockFault{.wrong_range = 1});
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "config.json", opts)), config);
}

TEST_F(DownloadTest, TruncatedResponseIsResumed) {
  hub.set_fault("model.safetensors", MockFault{.truncate_times = 1});
  fs::path p = hub::hf_hub_download("org/tiny", "model.safetensors", opts);
  EXPECT_EQ(read_text(p), weights);
  EXPECT_EQ(hub.count("GET", "/lfs/"), 2u);
  const auto reqs = hub.requests();
  EXPECT_EQ(reqs.back().range, "bytes=" + std::to_string(weights.size() / 2) + "-");
}

TEST_F(DownloadTest, TruncatedForeverLeavesNothingThatLooksComplete) {
  hub.set_fault("config.json", MockFault{.truncate_times = 1000});
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", opts), HubError);
  const fs::path st = storage("org/tiny");
  const std::string etag = MockHub::git_sha1_hex(config);
  EXPECT_FALSE(fs::exists(st / "blobs" / etag));
  EXPECT_FALSE(fs::exists(st / "snapshots" / commit / "config.json"));
  EXPECT_EQ(hub::try_to_load_from_cache("org/tiny", "config.json", opts).kind, hub::CacheLookup::Kind::kNotCached);
  HubOptions offline = opts;
  offline.local_files_only = true;
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", offline), LocalEntryNotFoundError);
  // The next run (network fixed) resumes and completes.
  hub.clear_faults();
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "config.json", opts)), config);
}

TEST_F(DownloadTest, CorruptLfsBodyFailsSha256AndIsDeleted) {
  hub.set_fault("model.safetensors", MockFault{.corrupt = true});
  try {
    hub::hf_hub_download("org/tiny", "model.safetensors", opts);
    FAIL() << "expected a sha256 mismatch";
  } catch (const HubError& e) {
    EXPECT_NE(std::string(e.what()).find("sha256"), std::string::npos) << e.what();
  }
  const fs::path blobs = storage("org/tiny") / "blobs";
  EXPECT_TRUE(!fs::exists(blobs) || fs::is_empty(blobs));
  EXPECT_FALSE(fs::exists(storage("org/tiny") / "snapshots" / commit / "model.safetensors"));
  hub.clear_faults();
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "model.safetensors", opts)), weights);
}

TEST_F(DownloadTest, LargeLfsFileHashedWhileStreamingWithResumeAndCorruption) {
  // >= 16 MiB: the sha256 runs on a worker thread; resume and corruption must still be caught.
  const std::string big = binary_blob(20 * 1024 * 1024, 11);
  hub.add_commit("org/large", {{"model.safetensors", big}});
  hub.set_fault("model.safetensors", MockFault{.truncate_times = 1});
  fs::path p = hub::hf_hub_download("org/large", "model.safetensors", opts);
  EXPECT_EQ(read_text(p), big);
  EXPECT_EQ(hub.count("GET", "/lfs/"), 2u);
  hub.set_fault("model.safetensors", MockFault{.corrupt = true});
  opts.force_download = true;
  EXPECT_THROW(hub::hf_hub_download("org/large", "model.safetensors", opts), HubError);
  const fs::path incomplete = storage("org/large") / "blobs" / (MockHub::sha256_hex(big) + ".incomplete");
  EXPECT_FALSE(fs::exists(incomplete));
}

TEST_F(DownloadTest, SlowResponseCompletes) {
  hub.set_fault("model.safetensors", MockFault{.chunk_delay_ms = 20});
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "model.safetensors", opts)), weights);
}

TEST_F(DownloadTest, StalledResponseTimesOutAndIsRetried) {
  env.set("HF_HUB_DOWNLOAD_TIMEOUT", "1");
  hub.set_fault("model.safetensors", MockFault{.stall_ms_once = 4000});
  EXPECT_EQ(read_text(hub::hf_hub_download("org/tiny", "model.safetensors", opts)), weights);
  EXPECT_GE(hub.count("GET", "/lfs/"), 2u);
}

TEST_F(DownloadTest, ConcurrentDownloadsOfOneFileAreSerialised) {
  hub.set_fault("model.safetensors", MockFault{.chunk_delay_ms = 30});
  fs::path a, b;
  std::string err;
  std::thread t1([&] { a = hub::hf_hub_download("org/tiny", "model.safetensors", opts); });
  std::thread t2([&] { b = hub::hf_hub_download("org/tiny", "model.safetensors", opts); });
  t1.join();
  t2.join();
  EXPECT_EQ(a, b);
  EXPECT_EQ(read_text(a), weights);
  EXPECT_EQ(hub.count("GET", "/lfs/"), 1u) << "the second waits on the lock and finds the blob";
}

TEST_F(DownloadTest, TwoProcessesFetchingOneFileShareOneDownload) {
  hub.set_fault("model.safetensors", MockFault{.chunk_delay_ms = 40});
  std::string helper = HUB_DOWNLOAD_HELPER;
  std::string endpoint = hub.endpoint(), cache_s = cache.string();
  std::vector<char*> argv = {helper.data(), endpoint.data(), cache_s.data(), const_cast<char*>("org/tiny"),
                             const_cast<char*>("model.safetensors"), nullptr};
  pid_t a = 0, b = 0;
  ASSERT_EQ(posix_spawn(&a, helper.c_str(), nullptr, nullptr, argv.data(), environ), 0);
  ASSERT_EQ(posix_spawn(&b, helper.c_str(), nullptr, nullptr, argv.data(), environ), 0);
  int sa = 0, sb = 0;
  ::waitpid(a, &sa, 0);
  ::waitpid(b, &sb, 0);
  EXPECT_TRUE(WIFEXITED(sa) && WEXITSTATUS(sa) == 0);
  EXPECT_TRUE(WIFEXITED(sb) && WEXITSTATUS(sb) == 0);
  EXPECT_EQ(read_text(storage("org/tiny") / "snapshots" / commit / "model.safetensors"), weights);
  EXPECT_EQ(hub.count("GET", "/lfs/"), 1u) << "the second process waited on the lock and reused the blob";
}

TEST_F(DownloadTest, KilledDownloadLeavesNoCompleteLookingFile) {
  const std::string big = binary_blob(4 * 1024 * 1024, 9);
  std::string c = hub.add_commit("org/big", {{"model.safetensors", big}});
  hub.set_fault("model.safetensors", MockFault{.chunk_delay_ms = 50});
  const std::string sha = MockHub::sha256_hex(big);
  const fs::path st = storage("org/big");
  fs::path incomplete = st / "blobs" / (sha + ".incomplete");

  pid_t pid = 0;
  std::string helper = HUB_DOWNLOAD_HELPER;
  std::string endpoint = hub.endpoint(), cache_s = cache.string();
  std::vector<char*> argv = {helper.data(), endpoint.data(), cache_s.data(), const_cast<char*>("org/big"),
                             const_cast<char*>("model.safetensors"), nullptr};
  ASSERT_EQ(posix_spawn(&pid, helper.c_str(), nullptr, nullptr, argv.data(), environ), 0);
  // Wait until some bytes are on disk, then kill -9.
  for (int i = 0; i < 3000; ++i) {
    std::error_code ec;
    if (fs::exists(incomplete, ec) && fs::file_size(incomplete, ec) > 100000) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(fs::exists(incomplete));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  const uint64_t partial = fs::file_size(incomplete);
  ASSERT_LT(partial, big.size());

  EXPECT_FALSE(fs::exists(st / "blobs" / sha));
  EXPECT_FALSE(fs::exists(st / "snapshots" / c / "model.safetensors"));
  HubOptions offline = opts;
  offline.local_files_only = true;
  EXPECT_THROW(hub::hf_hub_download("org/big", "model.safetensors", offline), LocalEntryNotFoundError);
  EXPECT_EQ(hub::cached_file("org/big", "model.safetensors", offline, /*optional=*/true), std::nullopt);

  hub.clear_faults();
  hub.clear_requests();
  fs::path p = hub::hf_hub_download("org/big", "model.safetensors", opts);
  EXPECT_EQ(read_text(p), big);
  const auto reqs = hub.requests();
  bool resumed = false;
  for (const auto& r : reqs)
    if (r.server == "cdn" && r.range == "bytes=" + std::to_string(partial) + "-") resumed = true;
  EXPECT_TRUE(resumed) << "the second run resumes from the partial file";
}

TEST_F(DownloadTest, CachedFileFromRepoAndFromLocalDirectory) {
  auto p = hub::cached_file("org/tiny", "config.json", opts);
  ASSERT_TRUE(p);
  EXPECT_EQ(read_text(*p), config);
  EXPECT_EQ(hub::cached_file("org/tiny", "generation_config.json", opts, true), std::nullopt);
  EXPECT_TRUE(fs::exists(storage("org/tiny") / ".no_exist" / commit / "generation_config.json"));
  EXPECT_THROW(hub::cached_file("org/tiny", "generation_config.json", opts, false), EntryNotFoundError);
  // A known commit with a .no_exist marker needs no request at all.
  hub.clear_requests();
  HubOptions pinned = opts;
  pinned.revision = commit;
  EXPECT_EQ(hub::cached_file("org/tiny", "generation_config.json", pinned, true), std::nullopt);
  EXPECT_TRUE(hub.requests().empty());

  const fs::path local = dir / "local_model";
  write_text(local / "config.json", "{}");
  write_text(local / "sub" / "tokenizer.json", "tok");
  EXPECT_EQ(hub::cached_file(local.string(), "config.json", opts), local / "config.json");
  HubOptions sub = opts;
  sub.subfolder = "sub";
  EXPECT_EQ(read_text(*hub::cached_file(local.string(), "tokenizer.json", sub)), "tok");
  EXPECT_EQ(hub::cached_file(local.string(), "missing.json", opts, true), std::nullopt);
  EXPECT_THROW(hub::cached_file(local.string(), "missing.json", opts), FileNotFoundError);
  EXPECT_THROW(hub::cached_file("org/nope", "config.json", opts), RepositoryNotFoundError);
  EXPECT_THROW(hub::cached_file((dir / "no" / "such" / "dir").string(), "config.json", opts), FileNotFoundError);
}

TEST_F(DownloadTest, SnapshotDownloadWithPatterns) {
  fs::path snap = hub::snapshot_download("org/tiny", opts, {"*.json"});
  EXPECT_EQ(snap, storage("org/tiny") / "snapshots" / commit);
  EXPECT_TRUE(fs::exists(snap / "config.json"));
  EXPECT_TRUE(fs::exists(snap / "sub" / "tokenizer.json"));  // '*' crosses '/' as in fnmatch
  EXPECT_FALSE(fs::exists(snap / "model.safetensors"));
  EXPECT_FALSE(fs::exists(snap / "README.md"));
  EXPECT_EQ(hub.count("GET", "/api/models/org/tiny/revision/main"), 1u);

  fs::path all = hub::snapshot_download("org/tiny", opts, {}, {"sub/"});
  EXPECT_TRUE(fs::exists(all / "model.safetensors"));
  EXPECT_TRUE(fs::exists(all / "README.md"));
  EXPECT_EQ(read_text(all / "model.safetensors"), weights);

  HubOptions offline = opts;
  offline.local_files_only = true;
  EXPECT_EQ(hub::snapshot_download("org/tiny", offline), snap);
  offline.revision = "other";
  EXPECT_THROW(hub::snapshot_download("org/tiny", offline), LocalEntryNotFoundError);
  HubOptions missing = opts;
  missing.revision = "nope";
  EXPECT_THROW(hub::snapshot_download("org/tiny", missing), RevisionNotFoundError);
  EXPECT_THROW(hub::snapshot_download("org/nope", opts), RepositoryNotFoundError);
}

TEST_F(DownloadTest, RepoInfoListsFiles) {
  hub::RepoInfo info = hub::repo_info("org/tiny", opts);
  EXPECT_EQ(info.sha, commit);
  EXPECT_EQ(info.files.size(), 4u);
  hub::FileMetadata m = hub::get_hf_file_metadata("org/tiny", "model.safetensors", opts);
  EXPECT_EQ(m.commit_hash, commit);
  EXPECT_EQ(m.etag, MockHub::sha256_hex(weights));
  ASSERT_TRUE(m.size);
  EXPECT_EQ(*m.size, weights.size());
  EXPECT_EQ(m.location.rfind(hub.cdn_origin(), 0), 0u);
}

// Runs fn with stderr redirected to `fd`; returns what could be read back from `read_fd`.
static std::string with_stderr(int fd, int read_fd, const std::function<void()>& fn) {
  std::fflush(stderr);
  int saved = ::dup(2);
  ::dup2(fd, 2);
  fn();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  ::fcntl(read_fd, F_SETFL, ::fcntl(read_fd, F_GETFL) | O_NONBLOCK);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(read_fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

TEST_F(DownloadTest, ProgressBarOnlyOnATerminal) {
  env.set("HF_HUB_DISABLE_PROGRESS_BARS", std::nullopt);
  int master = -1, slave = -1;
  ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  std::string tty = with_stderr(slave, master, [&] { hub::hf_hub_download("org/tiny", "model.safetensors", opts); });
  EXPECT_NE(tty.find("model.safetensors: 100%"), std::string::npos) << tty;
  ::close(master);
  ::close(slave);

  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  opts.force_download = true;
  std::string piped = with_stderr(p[1], p[0], [&] { hub::hf_hub_download("org/tiny", "model.safetensors", opts); });
  EXPECT_EQ(piped.find('%'), std::string::npos) << piped;
  EXPECT_EQ(hub.count("GET", "/lfs/"), 2u);  // the second download did happen, quietly
  ::close(p[0]);
  ::close(p[1]);
}

TEST(HubPatterns, FnmatchSemantics) {
  EXPECT_TRUE(hub::match_pattern("*.json", "config.json"));
  EXPECT_TRUE(hub::match_pattern("*.json", "sub/tokenizer.json"));
  EXPECT_FALSE(hub::match_pattern("*.json", "model.safetensors"));
  EXPECT_TRUE(hub::match_pattern("model-0000?-of-00002.safetensors", "model-00001-of-00002.safetensors"));
  EXPECT_TRUE(hub::match_pattern("sub/", "sub/a/b.txt"));
  EXPECT_FALSE(hub::match_pattern("sub/", "subway.txt"));
  EXPECT_TRUE(hub::match_pattern("[ab]*.txt", "b1.txt"));
  EXPECT_FALSE(hub::match_pattern("[!ab]*.txt", "b1.txt"));
  EXPECT_TRUE(hub::match_pattern("*", ""));
  EXPECT_FALSE(hub::match_pattern("?", ""));
}

}  // namespace
}  // namespace plugformer::testing
