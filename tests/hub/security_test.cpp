// Bad input and security: path traversal in repo ids / file names / revisions, hostile server
// headers, symlinks leading out of the cache, the token never in messages or logs, TLS on.
#include <spdlog/sinks/ostream_sink.h>

#include <sstream>

#include "hub_test_util.h"
#include "plugformer/error.h"
#include "plugformer/log.h"

namespace plugformer::testing {
namespace {

class SecurityTest : public HubTest {
 protected:
  void SetUp() override {
    HubTest::SetUp();
    commit = hub.add_commit("org/tiny", {{"config.json", "{}"}, {"model.safetensors", binary_blob(1000)}});
  }
  std::string commit;
};

TEST_F(SecurityTest, BadRepoIdsAreRefusedBeforeAnyRequest) {
  for (const std::string& bad : std::vector<std::string>{"../etc", "org/../x", "/abs/path", "org\\name", "a/b/c", "org--name", "name.git",
                                "", "org/", "/name", "-org/x", "org/.x", std::string(97, 'a'), "org/na me"}) {
    EXPECT_THROW(hub::hf_hub_download(bad, "config.json", opts), InvalidInputError) << bad;
    EXPECT_THROW(hub::snapshot_download(bad, opts), InvalidInputError) << bad;
    EXPECT_THROW(hub::validate_repo_id(bad), InvalidInputError) << bad;
  }
  EXPECT_NO_THROW(hub::validate_repo_id("gpt2"));
  EXPECT_NO_THROW(hub::validate_repo_id("meta-llama/Llama-3.2-1B_v1.0"));
  EXPECT_TRUE(hub.requests().empty());
}

TEST_F(SecurityTest, BadFileNamesSubfoldersAndRevisionsAreRefused) {
  for (const std::string& bad : std::vector<std::string>{"../config.json", "a/../../config.json", "/etc/passwd", "sub\\config.json",
                                "..\\..\\x", "", "a//b", "./config.json", "C:/x", std::string("a\0b", 3)}) {
    EXPECT_THROW(hub::hf_hub_download("org/tiny", bad, opts), InvalidInputError) << bad;
    EXPECT_THROW(hub::cached_file("org/tiny", bad, opts), InvalidInputError) << bad;
  }
  hub::HubOptions o = opts;
  for (const std::string bad : {"..", "../x", "/abs", "a\\b"}) {
    o.subfolder = bad;
    EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", o), InvalidInputError) << bad;
  }
  o = opts;
  for (const std::string bad : {"../../x", "..", "/main", "a\\b", "refs//pr", ""}) {
    o.revision = bad;
    EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", o), InvalidInputError) << bad;
    EXPECT_THROW(hub::snapshot_download("org/tiny", o), InvalidInputError) << bad;
  }
  EXPECT_TRUE(hub.requests().empty());
  // A local model folder is protected the same way.
  write_text(dir / "secret.txt", "secret");
  write_text(dir / "model" / "config.json", "{}");
  EXPECT_THROW(hub::cached_file((dir / "model").string(), "../secret.txt", opts), InvalidInputError);
  EXPECT_THROW(hub::delete_cache("../x", std::nullopt, "model", cache), InvalidInputError);
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", [&] {
                 hub::HubOptions t = opts;
                 t.repo_type = "../model";
                 return t;
               }()),
               InvalidInputError);
}

TEST_F(SecurityTest, HostileEtagOrCommitFromServerIsRefused) {
  hub.set_fault("config.json", MockFault{.override_etag = "../../../../escaped"});
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", opts), HubError);
  hub.set_fault("config.json", MockFault{.override_commit = "../../../escaped"});
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", opts), HubError);
  hub.set_fault("model.safetensors", MockFault{.override_etag = "a/b"});
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "model.safetensors", opts), HubError);
  // Nothing was written outside the cache, nor any blob inside it.
  EXPECT_FALSE(fs::exists(dir / "escaped"));
  EXPECT_FALSE(fs::exists(cache / "escaped"));
  EXPECT_FALSE(fs::exists(storage("org/tiny") / "blobs"));
}

TEST_F(SecurityTest, SymlinksLeadingOutOfTheCacheAreRefused) {
  write_text(dir / "outside.txt", "not a cache file");
  const fs::path snap = storage("org/tiny") / "snapshots" / commit;
  fs::create_directories(snap);
  fs::create_symlink("../../../../outside.txt", snap / "config.json");
  write_text(storage("org/tiny") / "refs" / "main", commit);
  ASSERT_EQ(read_text(snap / "config.json"), "not a cache file");  // the link works...
  hub::HubOptions offline = opts;
  offline.local_files_only = true;
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", offline), HubError);  // ...but is refused
  EXPECT_THROW(hub::try_to_load_from_cache("org/tiny", "config.json", offline), HubError);
  EXPECT_THROW(hub::snapshot_download("org/tiny", offline), HubError);
  hub::HubOptions pinned = opts;
  pinned.revision = commit;
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", pinned), HubError);
  // An absolute link out is refused too.
  fs::remove(snap / "config.json");
  fs::create_symlink(dir / "outside.txt", snap / "config.json");
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", offline), HubError);
}

TEST_F(SecurityTest, HostileRefIsIgnored) {
  write_text(storage("org/tiny") / "refs" / "main", "../../../../etc");
  hub::HubOptions offline = opts;
  offline.local_files_only = true;
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", offline), LocalEntryNotFoundError);
  EXPECT_THROW(hub::snapshot_download("org/tiny", offline), LocalEntryNotFoundError);
}

TEST_F(SecurityTest, DeletingNeverFollowsLinksOutOfTheCache) {
  hub::hf_hub_download("org/tiny", "config.json", opts);
  std::string c2 = hub.add_commit("org/tiny", {{"config.json", "{\"v\":2}"}});
  hub::hf_hub_download("org/tiny", "config.json", opts);
  write_text(dir / "precious.txt", "keep me");
  fs::create_symlink(dir / "precious.txt", storage("org/tiny") / "snapshots" / commit / "evil");
  hub::delete_cache("org/tiny", commit, "model", cache);
  EXPECT_EQ(read_text(dir / "precious.txt"), "keep me");
  EXPECT_TRUE(fs::exists(storage("org/tiny") / "snapshots" / c2 / "config.json"));
}

TEST_F(SecurityTest, TokenNeverAppearsInErrorsOrLogs) {
  const std::string token = "hf_SUPERsecretTOKENvalue0123456789";
  auto stream = std::make_shared<std::ostringstream>();
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(*stream);
  logger().sinks().push_back(sink);
  const auto old_level = logger().level();
  logger().set_level(spdlog::level::trace);

  opts.token = token;
  hub.add_commit("org/private", {{"config.json", "{}"}});
  hub.set_private("org/private", true);
  hub.add_commit("org/gated", {{"config.json", "{}"}});
  hub.set_gated("org/gated", true);
  hub.set_fault("flaky.json", MockFault{.fail_5xx = 100});
  std::vector<std::string> messages;
  auto capture = [&](auto fn) {
    try {
      fn();
      messages.push_back("<no error>");
    } catch (const std::exception& e) {
      messages.push_back(e.what());
    }
  };
  capture([&] { hub::hf_hub_download("org/private", "config.json", opts); });          // 401
  capture([&] { hub::hf_hub_download("org/gated", "config.json", opts); });            // 403
  capture([&] { hub::hf_hub_download("org/tiny", "nope.json", opts); });               // 404
  capture([&] { hub::hf_hub_download("org/tiny", "flaky.json", opts); });              // 503 x6
  capture([&] { hub::repo_info("org/private", opts); });                               // 401 API
  capture([&] {
    hub::HubOptions down = opts;
    down.endpoint = "http://127.0.0.1:1";
    hub::hf_hub_download("org/tiny", "other.json", down);                              // refused
  });
  capture([&] {
    hub::UploadOptions u;
    u.token = token;
    hub::create_repo("org/new", u);                                                    // 401 write
  });
  capture([&] { hub::hf_hub_download("org/tiny", "model.safetensors", opts); });  // success, logs
  logger().set_level(old_level);
  logger().sinks().pop_back();

  ASSERT_EQ(messages.size(), 8u);
  for (size_t i = 0; i + 1 < messages.size(); ++i) {
    EXPECT_NE(messages[i], "<no error>") << i;
    EXPECT_EQ(messages[i].find(token), std::string::npos) << messages[i];
    EXPECT_EQ(messages[i].find("SUPERsecret"), std::string::npos) << messages[i];
  }
  const std::string log = stream->str();
  EXPECT_FALSE(log.empty());  // retries and redirects were logged
  EXPECT_EQ(log.find("SUPERsecret"), std::string::npos) << log;
  // The token did reach the hub (so the test could have seen it leak).
  bool sent = false;
  for (const auto& r : hub.requests()) sent = sent || r.authorization == "Bearer " + token;
  EXPECT_TRUE(sent);
}

TEST_F(SecurityTest, TlsVerificationStaysOn) {
  MockTlsServer tls(dir.string());
  ASSERT_TRUE(tls.ok());
  hub::HubOptions o = opts;
  o.endpoint = tls.endpoint();
  env.set("REQUESTS_CA_BUNDLE", std::nullopt);
  env.set("CURL_CA_BUNDLE", std::nullopt);
  // A self-signed certificate is refused...
  try {
    hub::get_hf_file_metadata("org/tiny", "config.json", o);
    FAIL() << "a self-signed certificate was accepted";
  } catch (const hub::HubConnectionError& e) {
    std::string m = e.what();
    EXPECT_TRUE(m.find("SSL") != std::string::npos || m.find("certificate") != std::string::npos) << m;
  }
  EXPECT_THROW(hub::hf_hub_download("org/tiny", "config.json", o), LocalEntryNotFoundError);
  // ...and accepted once its CA is trusted explicitly (verification on, with a CA bundle).
  env.set("REQUESTS_CA_BUNDLE", tls.cert_path());
  hub::FileMetadata m = hub::get_hf_file_metadata("org/tiny", "config.json", o);
  EXPECT_EQ(m.etag, "tls-etag");
}

}  // namespace
}  // namespace plugformer::testing
