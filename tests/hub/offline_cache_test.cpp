// A cache built by hand exactly as huggingface_hub lays it out, then resolved offline (no server).
#include "hub_test_util.h"
#include "plugformer/error.h"

namespace plugformer::testing {
namespace {

class OfflineCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = make_temp_dir("offline");
    cache = dir / "hub";
    env.set("HF_HOME", (dir / "home").string());
    env.set("HF_HUB_CACHE", cache.string());
    env.set("HF_TOKEN", std::nullopt);
    env.set("HF_HUB_OFFLINE", "1");
    env.set("HF_ENDPOINT", "http://127.0.0.1:1");  // nothing there: any request would fail
    env.set("PLUGFORMER_HUB_RETRY_BASE_MS", "1");
    // models--google--bert_uncased: two revisions sharing a blob, a nested file, a .no_exist marker.
    repo = cache / "models--google--bert_uncased";
    write_text(repo / "blobs" / cfg_etag, "{\"model_type\": \"bert\"}");
    write_text(repo / "blobs" / weights_etag, "WEIGHTS");
    write_text(repo / "blobs" / vocab_etag, "[PAD]\n[UNK]\n");
    write_text(repo / "blobs" / old_cfg_etag, "{\"model_type\": \"bert\", \"old\": true}");
    link(commit, "config.json", cfg_etag);
    link(commit, "model.safetensors", weights_etag);
    link(commit, "tokenizer/vocab.txt", vocab_etag);
    link(old_commit, "config.json", old_cfg_etag);
    link(old_commit, "model.safetensors", weights_etag);
    write_text(repo / "refs" / "main", commit);
    write_text(repo / "refs" / "v1", old_commit);
    write_text(repo / ".no_exist" / commit / "generation_config.json", "");
  }
  void TearDown() override { fs::remove_all(dir); }

  void link(const std::string& c, const std::string& file, const std::string& etag) {
    fs::path p = repo / "snapshots" / c / file;
    fs::create_directories(p.parent_path());
    fs::create_symlink((repo / "blobs" / etag).lexically_relative(p.parent_path()), p);
  }

  EnvGuard env;
  fs::path dir, cache, repo;
  const std::string commit = "0123456789abcdef0123456789abcdef01234567";
  const std::string old_commit = "fedcba9876543210fedcba9876543210fedcba98";
  const std::string cfg_etag = "45d2a2f6a26a2d0b3c4f1b62e2a0a6bd04e2f8c1";
  const std::string old_cfg_etag = "55d2a2f6a26a2d0b3c4f1b62e2a0a6bd04e2f8c1";
  const std::string vocab_etag = "65d2a2f6a26a2d0b3c4f1b62e2a0a6bd04e2f8c1";
  const std::string weights_etag = "a3f1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80";
};

TEST_F(OfflineCacheTest, ResolvesBranchTagAndCommitFromTheCacheAlone) {
  hub::HubOptions o;
  EXPECT_TRUE(hub::offline_mode());
  fs::path p = hub::hf_hub_download("google/bert_uncased", "config.json", o);
  EXPECT_EQ(p, repo / "snapshots" / commit / "config.json");
  EXPECT_EQ(read_text(p), "{\"model_type\": \"bert\"}");
  o.revision = "v1";
  EXPECT_EQ(read_text(hub::hf_hub_download("google/bert_uncased", "config.json", o)),
            "{\"model_type\": \"bert\", \"old\": true}");
  o.revision = old_commit;
  EXPECT_EQ(read_text(hub::hf_hub_download("google/bert_uncased", "model.safetensors", o)), "WEIGHTS");
  o.revision = "main";
  o.subfolder = "tokenizer";
  EXPECT_EQ(read_text(hub::hf_hub_download("google/bert_uncased", "vocab.txt", o)), "[PAD]\n[UNK]\n");
}

TEST_F(OfflineCacheTest, MissingFilesGiveClearErrorsOrNullopt) {
  hub::HubOptions o;
  try {
    hub::hf_hub_download("google/bert_uncased", "tokenizer.json", o);
    FAIL() << "expected LocalEntryNotFoundError";
  } catch (const LocalEntryNotFoundError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("tokenizer.json"), std::string::npos) << m;
    EXPECT_NE(m.find("google/bert_uncased"), std::string::npos) << m;
    EXPECT_NE(m.find("HF_HUB_OFFLINE"), std::string::npos) << m;
  }
  EXPECT_THROW(hub::hf_hub_download("google/other", "config.json", o), LocalEntryNotFoundError);
  o.revision = "dev";
  EXPECT_THROW(hub::hf_hub_download("google/bert_uncased", "config.json", o), LocalEntryNotFoundError);
  o.revision = "main";
  // cached_file: optional files give nullopt (the .no_exist marker or simply not cached).
  EXPECT_EQ(hub::cached_file("google/bert_uncased", "generation_config.json", o, true), std::nullopt);
  EXPECT_EQ(hub::cached_file("google/bert_uncased", "tokenizer.json", o, true), std::nullopt);
  EXPECT_THROW(hub::cached_file("google/bert_uncased", "generation_config.json", o, false), EntryNotFoundError);
  EXPECT_THROW(hub::cached_file("google/bert_uncased", "tokenizer.json", o, false), LocalEntryNotFoundError);
  auto cfg = hub::cached_file("google/bert_uncased", "config.json", o);
  ASSERT_TRUE(cfg);
  EXPECT_EQ(*cfg, repo / "snapshots" / commit / "config.json");
}

TEST_F(OfflineCacheTest, LocalFilesOnlyWithoutOfflineEnvironment) {
  env.set("HF_HUB_OFFLINE", std::nullopt);
  hub::HubOptions o;
  o.local_files_only = true;
  EXPECT_EQ(read_text(hub::hf_hub_download("google/bert_uncased", "config.json", o)), "{\"model_type\": \"bert\"}");
  EXPECT_THROW(hub::hf_hub_download("google/bert_uncased", "nope.json", o), LocalEntryNotFoundError);
}

TEST_F(OfflineCacheTest, TryToLoadFromCache) {
  hub::HubOptions o;
  auto hit = hub::try_to_load_from_cache("google/bert_uncased", "config.json", o);
  EXPECT_EQ(hit.kind, hub::CacheLookup::Kind::kFound);
  EXPECT_EQ(hit.path, repo / "snapshots" / commit / "config.json");
  EXPECT_EQ(hub::try_to_load_from_cache("google/bert_uncased", "generation_config.json", o).kind,
            hub::CacheLookup::Kind::kNoExist);
  EXPECT_EQ(hub::try_to_load_from_cache("google/bert_uncased", "x.json", o).kind, hub::CacheLookup::Kind::kNotCached);
  o.revision = "v1";
  EXPECT_EQ(hub::try_to_load_from_cache("google/bert_uncased", "generation_config.json", o).kind,
            hub::CacheLookup::Kind::kNotCached);
}

TEST_F(OfflineCacheTest, SnapshotDownloadOffline) {
  hub::HubOptions o;
  EXPECT_EQ(hub::snapshot_download("google/bert_uncased", o), repo / "snapshots" / commit);
  o.revision = "v1";
  EXPECT_EQ(hub::snapshot_download("google/bert_uncased", o), repo / "snapshots" / old_commit);
  o.revision = "nope";
  EXPECT_THROW(hub::snapshot_download("google/bert_uncased", o), LocalEntryNotFoundError);
}

TEST_F(OfflineCacheTest, ScanSeesTheHandBuiltCache) {
  hub::CacheInfo info = hub::scan_cache_dir();
  ASSERT_EQ(info.repos.size(), 1u);
  const auto& r = info.repos[0];
  EXPECT_EQ(r.repo_id, "google/bert_uncased");
  EXPECT_EQ(r.repo_type, "model");
  EXPECT_EQ(r.nb_files, 4u);
  const uint64_t total = 22 + 7 + 12 + 35;
  EXPECT_EQ(r.size_on_disk, total);
  ASSERT_EQ(r.revisions.size(), 2u);
  const auto& main_rev = r.revisions[0].commit_hash == commit ? r.revisions[0] : r.revisions[1];
  EXPECT_EQ(main_rev.refs, std::vector<std::string>{"main"});
  EXPECT_EQ(main_rev.files.size(), 3u);
  EXPECT_EQ(main_rev.files[2].file_name, "tokenizer/vocab.txt");
  EXPECT_EQ(main_rev.size_on_disk, 22u + 7u + 12u);
}

TEST_F(OfflineCacheTest, EnvironmentDefaults) {
  env.set("HF_HUB_CACHE", std::nullopt);
  env.set("HF_HOME", std::nullopt);
  env.set("XDG_CACHE_HOME", (dir / "xdg").string());
  EXPECT_EQ(hub::default_cache_dir(), dir / "xdg" / "huggingface" / "hub");
  env.set("HF_HOME", "~/hfhome");
  EXPECT_EQ(hub::hf_home(), fs::path(std::getenv("HOME")) / "hfhome");
  for (const char* v : {"1", "ON", "yes", "True"}) {
    env.set("HF_HUB_OFFLINE", v);
    EXPECT_TRUE(hub::offline_mode()) << v;
  }
  for (const char* v : {"0", "off", "", "no"}) {
    env.set("HF_HUB_OFFLINE", std::string(v));
    EXPECT_FALSE(hub::offline_mode()) << v;
  }
  env.set("HF_ENDPOINT", std::nullopt);
  EXPECT_EQ(hub::default_endpoint(), "https://huggingface.co");
  EXPECT_EQ(hub::repo_folder_name("org/name", "dataset"), "datasets--org--name");
  EXPECT_EQ(hub::repo_folder_name("gpt2"), "models--gpt2");
}

}  // namespace
}  // namespace plugformer::testing
