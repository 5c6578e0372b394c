// A mock Hugging Face Hub on 127.0.0.1 (cpp-httplib, random ports) speaking the real protocol:
//   GET  /api/{models,datasets}/{repo}/revision/{rev}       repo info (sha, siblings)
//   HEAD/GET /[datasets/]{repo}/resolve/{rev}/{file}           ETag, X-Repo-Commit, Range; LFS files
//        answer 302 to a second "CDN" server (another origin) with X-Linked-Etag / X-Linked-Size
//   401 for private repos without a token, 403 GatedRepo, 404 with X-Error-Code RepoNotFound /
//   RevisionNotFound / EntryNotFound (the latter with X-Repo-Commit), relative 307 for renamed repos
//   POST /api/repos/create, /api/models/{repo}/preupload/{rev}, /{repo}.git/info/lfs/objects/batch,
//        /api/models/{repo}/commit/{rev} (NDJSON); LFS PUT / multipart / verify on the CDN.
// Faults per file name: 5xx / 429 n times (with Retry-After), truncated bodies, slow bodies, a stall,
// a one-byte-per-second trickle, corrupt bytes, a redirect loop, a push between HEAD and GET, bytes
// that do not match the announced ETag, hostile ETag / commit headers.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Server;
}

namespace plugformer::testing {

struct MockFault {
  int fail_5xx = 0;            // answer `fail_status` this many times (HEAD and GET of the file)
  int fail_status = 503;       // 500, 502, 503, 429...
  int fail_get = 0;            // the same for GETs only (the download, not the HEAD)
  std::string retry_after;     // Retry-After header of those answers
  bool redirect_loop = false;  // every request for the file redirects to itself (the CDN's for LFS files)
  bool trickle = false;        // bodies crawl at one byte per second
  std::string changed_content; // pushed to main as a new commit right after the file's first HEAD
  std::string served_instead;  // GET bodies are these bytes with their own ETag (HEAD tells the truth)
  int truncate_times = 0;      // GET bodies cut halfway this many times
  int chunk_delay_ms = 0;      // sleep between 64 KiB chunks of the body
  int stall_ms_once = 0;       // sleep before the first body byte, once
  bool corrupt = false;        // flip a byte of the served body (same size)
  int ignore_range = 0;        // answer Range requests with 200 and the whole body, this many times
  int wrong_range = 0;         // answer Range requests with 206 from byte 0, this many times
  std::string override_etag;   // hostile ETag / X-Linked-Etag
  std::string override_commit; // hostile X-Repo-Commit
};

struct MockRequest {
  std::string server;  // "hub" or "cdn"
  std::string method;
  std::string path;
  std::string range;
  std::string authorization;
};

struct MockCommit {
  std::string oid;
  std::string summary;
  std::map<std::string, std::string> files;  // path -> content
};

class MockHub {
 public:
  MockHub();
  ~MockHub();
  MockHub(const MockHub&) = delete;
  MockHub& operator=(const MockHub&) = delete;

  std::string endpoint() const;   // http://127.0.0.1:<port>
  std::string cdn_origin() const; // http://127.0.0.1:<other port>

  static constexpr const char* kReadToken = "hf_mockREADtoken0123456789abcdef";
  static constexpr const char* kWriteToken = "hf_mockWRITEtoken0123456789abcdef";

  // Adds a commit to `branch` of the repo (created if needed) with exactly `files`; returns its
  // hash. Files that are LFS: names ending in .safetensors / .bin, or listed in `lfs`.
  std::string add_commit(const std::string& repo_id, const std::map<std::string, std::string>& files,
                         const std::string& branch = "main", const std::string& repo_type = "model",
                         const std::set<std::string>& lfs = {});
  void add_ref(const std::string& repo_id, const std::string& ref, const std::string& commit,
               const std::string& repo_type = "model");
  void set_private(const std::string& repo_id, bool value);
  void set_gated(const std::string& repo_id, bool value);
  void rename(const std::string& old_id, const std::string& new_id);
  void set_fault(const std::string& filename, const MockFault& fault);
  void clear_faults();
  void set_lfs_threshold(size_t bytes) { lfs_threshold_ = bytes; }
  void set_multipart_chunk(size_t bytes) { multipart_chunk_ = bytes; }

  std::vector<MockRequest> requests() const;
  void clear_requests();
  // Requests whose method matches and whose path contains `needle`.
  size_t count(const std::string& method, const std::string& needle) const;

  // Repo state (for upload tests).
  bool has_repo(const std::string& repo_id, const std::string& repo_type = "model") const;
  bool is_private(const std::string& repo_id) const;
  std::string ref(const std::string& repo_id, const std::string& ref, const std::string& repo_type = "model") const;
  MockCommit commit(const std::string& repo_id, const std::string& oid, const std::string& repo_type = "model") const;
  std::set<std::string> lfs_objects() const;  // sha256 of uploaded LFS objects

  static std::string sha256_hex(const std::string& data);
  static std::string git_sha1_hex(const std::string& data);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  size_t lfs_threshold_ = 10 * 1024 * 1024;
  size_t multipart_chunk_ = 0;  // 0 = basic uploads only
  friend struct Impl;
};

// A self-signed certificate for 127.0.0.1 written to `dir` (cert.pem, key.pem) and an HTTPS
// server serving GET/HEAD of any path with 200 "tls-ok". Used by the TLS verification test.
class MockTlsServer {
 public:
  explicit MockTlsServer(const std::string& dir);
  ~MockTlsServer();
  std::string endpoint() const;  // https://127.0.0.1:<port>
  std::string cert_path() const { return cert_path_; }
  bool ok() const { return port_ > 0; }

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = -1;
  std::string cert_path_;
};

}  // namespace plugformer::testing
