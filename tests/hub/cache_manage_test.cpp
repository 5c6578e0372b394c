// scan_cache_dir / delete_cache over a cache filled through the mock Hub.
#include "hub_test_util.h"
#include "plugformer/error.h"

namespace plugformer::testing {
namespace {

class CacheManageTest : public HubTest {
 protected:
  void SetUp() override {
    HubTest::SetUp();
    shared = binary_blob(50000, 5);
    c1 = hub.add_commit("org/a", {{"config.json", "{\"v\":1}"}, {"model.safetensors", shared}});
    hub::hf_hub_download("org/a", "config.json", opts);
    hub::hf_hub_download("org/a", "model.safetensors", opts);
    c2 = hub.add_commit("org/a", {{"config.json", "{\"v\":2}"}, {"model.safetensors", shared}});
    hub::HubOptions o = opts;
    o.revision = "main";
    hub::hf_hub_download("org/a", "config.json", o);
    hub::hf_hub_download("org/a", "model.safetensors", o);
    hub.add_commit("org/b", {{"x.txt", "hello"}}, "main", "dataset");
    hub::HubOptions d = opts;
    d.repo_type = "dataset";
    hub::hf_hub_download("org/b", "x.txt", d);
    fs::create_directories(cache / "not-a-repo");
  }
  std::string shared, c1, c2;
};

TEST_F(CacheManageTest, ScanReportsReposRevisionsRefsAndSizes) {
  hub::CacheInfo info = hub::scan_cache_dir(cache);
  ASSERT_EQ(info.repos.size(), 2u);
  EXPECT_EQ(info.repos[0].repo_type, "dataset");
  EXPECT_EQ(info.repos[0].repo_id, "org/b");
  EXPECT_EQ(info.repos[0].size_on_disk, 5u);
  const auto& a = info.repos[1];
  EXPECT_EQ(a.repo_id, "org/a");
  EXPECT_EQ(a.nb_files, 3u);  // two configs + one shared weights blob
  EXPECT_EQ(a.size_on_disk, 7u + 7u + 50000u);
  ASSERT_EQ(a.revisions.size(), 2u);
  for (const auto& r : a.revisions) {
    EXPECT_EQ(r.files.size(), 2u);
    EXPECT_EQ(r.size_on_disk, 50007u);
    if (r.commit_hash == c2) EXPECT_EQ(r.refs, std::vector<std::string>{"main"});
    else EXPECT_TRUE(r.refs.empty());
  }
  EXPECT_EQ(info.size_on_disk, 50019u);
  ASSERT_EQ(info.warnings.size(), 1u);
  EXPECT_NE(info.warnings[0].find("not-a-repo"), std::string::npos);
}

TEST_F(CacheManageTest, DeleteRevisionKeepsSharedBlobs) {
  const fs::path st = storage("org/a");
  uint64_t freed = hub::delete_cache("org/a", c1, "model", cache);
  EXPECT_EQ(freed, 7u);  // only the old config blob; the weights are shared with c2
  EXPECT_FALSE(fs::exists(st / "snapshots" / c1));
  EXPECT_TRUE(fs::exists(st / "snapshots" / c2 / "model.safetensors"));
  EXPECT_EQ(read_text(st / "snapshots" / c2 / "model.safetensors"), shared);
  // Deleting by ref name: the last revision -> the whole repo.
  freed = hub::delete_cache("org/a", std::string("main"), "model", cache);
  EXPECT_EQ(freed, 50007u);
  EXPECT_FALSE(fs::exists(st));
  EXPECT_FALSE(fs::exists(cache / ".locks" / "models--org--a"));
  EXPECT_THROW(hub::delete_cache("org/a", std::nullopt, "model", cache), FileNotFoundError);
}

TEST_F(CacheManageTest, DeleteWholeRepoAndUnknownRevision) {
  EXPECT_THROW(hub::delete_cache("org/b", std::string("nope"), "dataset", cache), FileNotFoundError);
  EXPECT_EQ(hub::delete_cache("org/b", std::nullopt, "dataset", cache), 5u);
  EXPECT_FALSE(fs::exists(cache / "datasets--org--b"));
  EXPECT_TRUE(fs::exists(storage("org/a")));
  EXPECT_THROW(hub::scan_cache_dir(dir / "no-cache"), FileNotFoundError);
}

}  // namespace
}  // namespace plugformer::testing
