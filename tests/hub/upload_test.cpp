// push_to_hub's commit API against the mock Hub: create_repo, preupload, LFS batch (basic and
// multipart) + verify, NDJSON commit, create_pr, private repos, tokens.
#include "hub_test_util.h"
#include "plugformer/error.h"

namespace plugformer::testing {
namespace {

class UploadTest : public HubTest {
 protected:
  void SetUp() override {
    HubTest::SetUp();
    hub.set_lfs_threshold(64 * 1024);
    folder = dir / "to_upload";
    weights = binary_blob(200 * 1024, 3);
    write_text(folder / "config.json", "{\"model_type\": \"llama\"}");
    write_text(folder / "model.safetensors", weights);
    write_text(folder / "tokenizer" / "tokenizer.json", "{\"version\": \"1.0\"}");
    write_text(folder / "notes.bin", std::string("ab\0cd", 5));  // small but binary -> LFS
    write_text(folder / ".git" / "HEAD", "ref: refs/heads/main\n");  // never uploaded
    write_text(folder / ".cache" / "huggingface" / "x", "cache");      // never uploaded
    uopts.token = MockHub::kWriteToken;
    uopts.endpoint = hub.endpoint();
  }
  fs::path folder;
  std::string weights;
  hub::UploadOptions uopts;
};

TEST_F(UploadTest, UploadFolderCreatesRepoUploadsLfsAndCommits) {
  uopts.commit_message = "Upload model";
  hub::CommitInfo info = hub::upload_folder("me/model", folder, uopts);
  ASSERT_TRUE(hub.has_repo("me/model"));
  EXPECT_FALSE(hub.is_private("me/model"));
  EXPECT_EQ(info.commit_oid, hub.ref("me/model", "main"));
  EXPECT_EQ(info.commit_url, hub.endpoint() + "/me/model/commit/" + info.commit_oid);
  EXPECT_TRUE(info.pr_url.empty());
  EXPECT_EQ(info.uploaded_files,
            (std::vector<std::string>{"config.json", "model.safetensors", "notes.bin", "tokenizer/tokenizer.json"}));
  MockCommit c = hub.commit("me/model", info.commit_oid);
  EXPECT_EQ(c.summary, "Upload model");
  EXPECT_EQ(c.files["config.json"], "{\"model_type\": \"llama\"}");
  EXPECT_EQ(c.files["model.safetensors"], weights);
  EXPECT_EQ(c.files["notes.bin"], std::string("ab\0cd", 5));
  EXPECT_EQ(c.files["tokenizer/tokenizer.json"], "{\"version\": \"1.0\"}");
  EXPECT_EQ(c.files.count(".git/HEAD"), 0u);
  EXPECT_EQ(c.files.count(".cache/huggingface/x"), 0u);
  EXPECT_EQ(c.files.count(".gitattributes"), 1u);  // from the repo's initial commit
  // The two LFS files went through the batch API, PUT to the CDN (no token there), verify.
  EXPECT_EQ(hub.lfs_objects(), (std::set<std::string>{MockHub::sha256_hex(weights),
                                                      MockHub::sha256_hex(std::string("ab\0cd", 5))}));
  EXPECT_EQ(hub.count("POST", "/api/models/me/model/preupload/main"), 1u);
  EXPECT_EQ(hub.count("POST", "/me/model.git/info/lfs/objects/batch"), 1u);
  EXPECT_EQ(hub.count("PUT", "/lfs-upload/"), 2u);
  EXPECT_EQ(hub.count("POST", "/lfs-verify/"), 2u);
  EXPECT_EQ(hub.count("POST", "/api/models/me/model/commit/main"), 1u);
  for (const auto& r : hub.requests())
    if (r.server == "cdn") EXPECT_EQ(r.authorization, "");

  // What was pushed downloads back identically.
  EXPECT_EQ(read_text(hub::hf_hub_download("me/model", "model.safetensors", opts)), weights);
}

TEST_F(UploadTest, SecondPushSkipsLfsObjectsAlreadyOnTheHub) {
  hub::upload_folder("me/model", folder, uopts);
  hub.clear_requests();
  write_text(folder / "config.json", "{\"model_type\": \"llama\", \"v\": 2}");
  hub::CommitInfo info = hub::upload_folder("me/model", folder, uopts);  // repo exists: 409 is fine
  EXPECT_EQ(hub.count("PUT", "/lfs-upload/"), 0u);
  EXPECT_EQ(hub.commit("me/model", info.commit_oid).files["config.json"], "{\"model_type\": \"llama\", \"v\": 2}");
}

TEST_F(UploadTest, CreatePrAndPrivateRepo) {
  uopts.private_repo = true;
  hub::upload_folder("me/private-model", folder, uopts);
  EXPECT_TRUE(hub.is_private("me/private-model"));
  const std::string main_before = hub.ref("me/private-model", "main");
  write_text(folder / "config.json", "{\"changed\": true}");
  uopts.create_pr = true;
  uopts.commit_message = "Propose a change";
  hub::CommitInfo pr = hub::upload_folder("me/private-model", folder, uopts);
  EXPECT_EQ(pr.pr_url, hub.endpoint() + "/me/private-model/discussions/1");
  EXPECT_EQ(hub.ref("me/private-model", "main"), main_before);  // main untouched
  EXPECT_EQ(hub.ref("me/private-model", "refs/pr/1"), pr.commit_oid);
  EXPECT_EQ(hub.count("POST", "/commit/main?create_pr=1"), 1u);
  // The PR revision downloads (with a token: the repo is private).
  opts.token = MockHub::kReadToken;
  opts.revision = "refs/pr/1";
  EXPECT_EQ(read_text(hub::hf_hub_download("me/private-model", "config.json", opts)), "{\"changed\": true}");
}

TEST_F(UploadTest, MultipartLfsUpload) {
  hub.set_multipart_chunk(64 * 1024);
  hub::CommitInfo info = hub::upload_folder("me/model", folder, uopts);
  EXPECT_EQ(hub.count("PUT", "/lfs-part/" + MockHub::sha256_hex(weights)), 4u);  // 200 KiB / 64 KiB
  EXPECT_EQ(hub.count("POST", "/lfs-complete/"), 1u);
  EXPECT_EQ(hub.commit("me/model", info.commit_oid).files["model.safetensors"], weights);
}

TEST_F(UploadTest, PatternsPathInRepoAndUploadFile) {
  uopts.allow_patterns = {"*.json"};
  uopts.ignore_patterns = {"tokenizer/"};
  uopts.path_in_repo = "v2";
  hub::CommitInfo info = hub::upload_folder("me/model", folder, uopts);
  EXPECT_EQ(info.uploaded_files, std::vector<std::string>{"v2/config.json"});

  hub::UploadOptions one = uopts;
  one.commit_message = "one file";
  hub::CommitInfo f = hub::upload_file("me/model", folder / "notes.bin", "extra/notes.bin", one);
  EXPECT_EQ(hub.commit("me/model", f.commit_oid).files["extra/notes.bin"], std::string("ab\0cd", 5));
  EXPECT_EQ(hub.commit("me/model", f.commit_oid).files["v2/config.json"], "{\"model_type\": \"llama\"}");

  hub::CommitInfo d = hub::create_commit("me/model", {{"mem.txt", {}, std::string("in memory")}}, {"v2/config.json"}, one);
  auto files = hub.commit("me/model", d.commit_oid).files;
  EXPECT_EQ(files["mem.txt"], "in memory");
  EXPECT_EQ(files.count("v2/config.json"), 0u);
}

TEST_F(UploadTest, ErrorsAreTyped) {
  hub::UploadOptions no_token = uopts;
  no_token.token = "";
  EXPECT_THROW(hub::upload_folder("me/model", folder, no_token), HubError);
  hub::UploadOptions read_only = uopts;
  read_only.token = MockHub::kReadToken;
  try {
    hub::upload_folder("me/model", folder, read_only);
    FAIL() << "a read token could create a repo";
  } catch (const HttpError& e) {
    EXPECT_EQ(e.status(), 403);
  }
  EXPECT_FALSE(hub.has_repo("me/model"));
  hub::UploadOptions no_create = uopts;
  no_create.create_repo = false;
  EXPECT_THROW(hub::upload_folder("me/absent", folder, no_create), RepositoryNotFoundError);
  hub::upload_folder("me/model", folder, uopts);
  hub::UploadOptions bad_branch = uopts;
  bad_branch.revision = "no-branch";
  EXPECT_THROW(hub::upload_folder("me/model", folder, bad_branch), RevisionNotFoundError);
  EXPECT_THROW(hub::upload_folder("me/model", dir / "nope", uopts), FileNotFoundError);
  EXPECT_THROW(hub::create_commit("me/model", {{"../x", {}, std::string("x")}}, {}, uopts), InvalidInputError);
  EXPECT_THROW(hub::upload_folder("me/../model", folder, uopts), InvalidInputError);
}

}  // namespace
}  // namespace plugformer::testing
