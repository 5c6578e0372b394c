#include "mock_hub.h"

#include <chrono>
#include <fstream>
#include <sstream>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

namespace plugformer::testing {

using json = nlohmann::json;

namespace {

std::string hex(const unsigned char* d, unsigned n) {
  static const char* h = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    out += h[d[i] >> 4];
    out += h[d[i] & 15];
  }
  return out;
}

std::string digest(const EVP_MD* md, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_Digest(data.data(), data.size(), out, &n, md, nullptr);
  return hex(out, n);
}

std::string pct_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string b64decode(const std::string& s) {
  if (s.empty()) return {};
  std::string out(3 * s.size() / 4 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (n < 0) return {};
  size_t len = static_cast<size_t>(n);
  if (s.back() == '=') --len;
  if (s.size() > 1 && s[s.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

struct Repo {
  std::string id, type = "model";
  bool is_private = false, gated = false;
  std::map<std::string, std::string> refs;  // branch/tag/refs/pr/N -> commit
  std::map<std::string, MockCommit> commits;
  std::set<std::string> lfs_paths;          // files served through LFS
  int next_pr = 1;
};

}  // namespace

struct MockHub::Impl {
  MockHub* owner = nullptr;
  httplib::Server hub, cdn;
  std::thread hub_thread, cdn_thread;
  int hub_port = -1, cdn_port = -1;
  mutable std::mutex mu;
  std::map<std::string, Repo> repos;  // key: type + ":" + id
  std::map<std::string, std::string> renames;
  std::map<std::string, MockFault> faults;
  std::map<std::string, std::shared_ptr<const std::string>> blobs;  // sha256 -> content (LFS store, CDN)
  std::map<std::string, std::string> blob_names;  // sha256 -> file name (for faults)
  std::set<std::string> uploaded;  // LFS objects received by PUT / multipart
  std::map<std::string, std::map<int, std::string>> parts;  // multipart uploads in progress
  std::vector<MockRequest> log;
  int counter = 0;

  static std::string key(const std::string& type, const std::string& id) { return type + ":" + id; }

  void record(const std::string& server, const httplib::Request& req) {
    std::lock_guard<std::mutex> lock(mu);
    log.push_back({server, req.method, req.target, req.get_header_value("Range"), req.get_header_value("Authorization")});
  }

  std::string token_of(const httplib::Request& req) {
    std::string a = req.get_header_value("Authorization");
    if (a.rfind("Bearer ", 0) == 0) return a.substr(7);
    return {};
  }
  bool valid_token(const std::string& t) { return t == kReadToken || t == kWriteToken; }

  static void error(httplib::Response& res, int status, const std::string& code, const std::string& message,
                    const std::string& commit = "") {
    res.status = status;
    if (!code.empty()) res.set_header("X-Error-Code", code);
    res.set_header("X-Error-Message", message);
    if (!commit.empty()) res.set_header("X-Repo-Commit", commit);
    res.set_content(json{{"error", message}}.dump(), "application/json");
  }

  // Access checks shared by all read endpoints; returns the repo or answers with an error.
  Repo* access(const std::string& type, const std::string& id, const httplib::Request& req, httplib::Response& res) {
    auto it = repos.find(key(type, id));
    const std::string token = token_of(req);
    if (it == repos.end() || (it->second.is_private && !valid_token(token))) {
      if (token.empty() || !valid_token(token))
        error(res, 401, "RepoNotFound", "Invalid username or password.");
      else
        error(res, 404, "RepoNotFound", "Repository not found");
      return nullptr;
    }
    if (it->second.gated && token != kWriteToken) {  // only the write token's user was granted access
      error(res, 403, "GatedRepo",
            "Access to model " + id + " is restricted. You must have access to it and be authenticated to access it.");
      return nullptr;
    }
    return &it->second;
  }

  std::string resolve_rev(Repo& r, const std::string& rev) {
    auto it = r.refs.find(rev);
    if (it != r.refs.end()) return it->second;
    if (r.commits.count(rev)) return rev;
    return {};
  }

  // The file's fault (a default one when none is set).
  MockFault fault_of(const std::string& file) const {
    auto it = faults.find(file);
    return it == faults.end() ? MockFault{} : it->second;
  }

  // Answers with the file's failure status when its fail_5xx count is not used up yet.
  bool failed(const httplib::Request& req, const std::string& file, httplib::Response& res) {
    if (!take(&MockFault::fail_5xx, file) && !(req.method == "GET" && take(&MockFault::fail_get, file))) return false;
    const MockFault f = fault_of(file);
    error(res, f.fail_status, "", f.fail_status == 429 ? "Too Many Requests" : "Service Unavailable");
    if (!f.retry_after.empty()) res.set_header("Retry-After", f.retry_after);
    return true;
  }

  // Consumes one unit of a counted fault; true if it applies.
  bool take(int MockFault::*field, const std::string& file) {
    auto it = faults.find(file);
    if (it == faults.end() || it->second.*field <= 0) return false;
    --(it->second.*field);
    return true;
  }

  void serve_body(const httplib::Request& req, httplib::Response& res, std::shared_ptr<const std::string> content,
                  const std::string& file) {
    MockFault f;
    bool truncate = false;
    int stall = 0;
    {
      // mu is held by the caller.
      auto it = faults.find(file);
      if (it != faults.end()) f = it->second;
      truncate = take(&MockFault::truncate_times, file);
      // httplib applies req.ranges itself; a misbehaving server is simulated by rewriting them.
      auto& ranges = const_cast<httplib::Request&>(req).ranges;
      if (!ranges.empty() && take(&MockFault::ignore_range, file)) ranges.clear();
      else if (!ranges.empty() && take(&MockFault::wrong_range, file)) ranges = {{0, -1}};
      if (it != faults.end() && it->second.stall_ms_once > 0) {
        stall = it->second.stall_ms_once;
        it->second.stall_ms_once = 0;
      }
    }
    std::shared_ptr<const std::string> body = content;
    if (f.corrupt && !body->empty()) {
      auto copy = std::make_shared<std::string>(*content);
      (*copy)[copy->size() / 2] ^= 0x5a;
      body = copy;
    }
    const size_t chunk = f.trickle ? 1 : body->size() > (8u << 20) ? (1u << 20) : (64u << 10);
    const int delay_ms = f.trickle ? 1000 : f.chunk_delay_ms;
    auto first = std::make_shared<bool>(true);
    res.set_content_provider(
        body->size(), "application/octet-stream",
        [body, truncate, stall, first, delay = delay_ms, chunk](size_t offset, size_t length,
                                                                httplib::DataSink& sink) {
          if (stall > 0 && *first) std::this_thread::sleep_for(std::chrono::milliseconds(stall));
          *first = false;
          if (truncate) {
            // Half of what was asked, then the connection is dropped.
            sink.write(body->data() + offset, length / 2);
            return false;
          }
          size_t n = std::min(chunk, length);
          if (delay > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
          return sink.write(body->data() + offset, n);
        });
  }

  void handle_hub_get(const httplib::Request& req, httplib::Response& res) {
    record("hub", req);
    std::string target = req.target.substr(0, req.target.find('?'));
    std::lock_guard<std::mutex> lock(mu);
    // /api/{models,datasets,spaces}/{repo}/revision/{rev}
    if (target.rfind("/api/", 0) == 0) {
      std::string rest = target.substr(5);
      auto slash = rest.find('/');
      std::string plural = rest.substr(0, slash);
      std::string type = plural.substr(0, plural.size() - 1);
      rest = rest.substr(slash + 1);
      auto pos = rest.find("/revision/");
      if (pos == std::string::npos) return error(res, 404, "", "Not found");
      std::string id = rest.substr(0, pos);
      std::string rev = pct_decode(rest.substr(pos + 10));
      Repo* r = access(type, id, req, res);
      if (!r) return;
      std::string commit = resolve_rev(*r, rev);
      if (commit.empty()) return error(res, 404, "RevisionNotFound", "Invalid rev id: " + rev);
      json j = {{"id", id}, {"sha", commit}, {"private", r->is_private}, {"gated", r->gated}, {"siblings", json::array()}};
      for (const auto& [path, _] : r->commits[commit].files) j["siblings"].push_back({{"rfilename", path}});
      res.set_content(j.dump(), "application/json");
      return;
    }
    // /[datasets/]{repo}/resolve/{rev}/{file}
    auto pos = target.find("/resolve/");
    if (pos == std::string::npos) return error(res, 404, "", "Not found");
    std::string id = target.substr(1, pos - 1);
    std::string type = "model";
    if (id.rfind("datasets/", 0) == 0) {
      type = "dataset";
      id = id.substr(9);
    } else if (id.rfind("spaces/", 0) == 0) {
      type = "space";
      id = id.substr(7);
    }
    std::string rest = target.substr(pos + 9);
    auto s = rest.find('/');
    if (s == std::string::npos) return error(res, 404, "", "Not found");
    std::string rev = pct_decode(rest.substr(0, s));
    std::string file = pct_decode(rest.substr(s + 1));
    auto rn = renames.find(id);
    if (rn != renames.end()) {
      res.status = 307;
      res.set_header("Location", "/" + rn->second + "/resolve/" + rest);
      return;
    }
    if (failed(req, file, res)) return;
    Repo* r = access(type, id, req, res);
    if (!r) return;
    std::string commit = resolve_rev(*r, rev);
    if (commit.empty()) return error(res, 404, "RevisionNotFound", "Invalid rev id: " + rev);
    auto& files = r->commits[commit].files;
    auto fit = files.find(file);
    if (fit == files.end()) return error(res, 404, "EntryNotFound", "Entry not found", commit);
    const std::string content = fit->second;
    const MockFault f = fault_of(file);
    if (f.redirect_loop && !r->lfs_paths.count(file)) {
      res.status = 302;
      res.set_header("Location", req.target);
      return;
    }
    if (req.method == "HEAD" && !f.changed_content.empty()) {
      // Someone pushes a new version right after this HEAD was answered.
      auto changed = files;
      changed[file] = f.changed_content;
      r->refs["main"] = new_commit(*r, changed, "update " + file, {});
      faults[file].changed_content.clear();
    }
    res.set_header("X-Repo-Commit", f.override_commit.empty() ? commit : f.override_commit);
    res.set_header("Accept-Ranges", "bytes");
    if (r->lfs_paths.count(file)) {
      const std::string sha = sha256_hex(content);
      const std::string pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + sha +
                                  "\nsize " + std::to_string(content.size()) + "\n";
      res.status = 302;
      res.set_header("ETag", "\"" + git_sha1_hex(pointer) + "\"");
      res.set_header("X-Linked-Etag", "\"" + (f.override_etag.empty() ? sha : f.override_etag) + "\"");
      res.set_header("X-Linked-Size", std::to_string(content.size()));
      res.set_header("Location", "http://127.0.0.1:" + std::to_string(cdn_port) + "/lfs/" + sha +
                                     "?X-Amz-Signature=mock&response-content-disposition=attachment");
      return;
    }
    const std::string& body = req.method == "GET" && !f.served_instead.empty() ? f.served_instead : content;
    res.set_header("ETag", "\"" + (f.override_etag.empty() ? git_sha1_hex(body) : f.override_etag) + "\"");
    serve_body(req, res, std::make_shared<const std::string>(body), file);
  }

  void handle_cdn_get(const httplib::Request& req, httplib::Response& res) {
    record("cdn", req);
    std::lock_guard<std::mutex> lock(mu);
    std::string target = req.target.substr(0, req.target.find('?'));
    if (target.rfind("/lfs/", 0) != 0) return error(res, 404, "", "Not found");
    std::string sha = target.substr(5);
    auto it = blobs.find(sha);
    if (it == blobs.end()) return error(res, 404, "", "No such object");
    const std::string file = blob_names[sha];
    if (failed(req, file, res)) return;
    const MockFault f = fault_of(file);
    if (f.redirect_loop) {
      res.status = 302;
      res.set_header("Location", "http://127.0.0.1:" + std::to_string(cdn_port) + req.target);
      return;
    }
    res.set_header("ETag", "\"" + sha + "\"");
    res.set_header("Accept-Ranges", "bytes");
    serve_body(req, res, f.served_instead.empty() ? it->second : std::make_shared<const std::string>(f.served_instead),
               file);
  }

  std::string new_commit(Repo& r, std::map<std::string, std::string> files, const std::string& summary,
                         const std::set<std::string>& lfs) {
    MockCommit c;
    c.oid = git_sha1_hex(r.id + ":" + std::to_string(counter++) + ":" + summary);
    c.summary = summary;
    c.files = std::move(files);
    for (const auto& [path, content] : c.files) {
      bool is_lfs = lfs.count(path) || r.lfs_paths.count(path) ||
                    (path.size() > 12 && path.substr(path.size() - 12) == ".safetensors") ||
                    (path.size() > 4 && path.substr(path.size() - 4) == ".bin");
      if (is_lfs) {
        r.lfs_paths.insert(path);
        const std::string sha = sha256_hex(content);
        if (!blobs.count(sha)) blobs[sha] = std::make_shared<const std::string>(content);
        blob_names[sha] = path;
      }
    }
    r.commits[c.oid] = c;
    return c.oid;
  }

  bool can_write(const httplib::Request& req, httplib::Response& res) {
    const std::string t = token_of(req);
    if (t == kWriteToken) return true;
    if (t == kReadToken) {
      error(res, 403, "", "You don't have the rights to write to this repo (read-only token)");
      return false;
    }
    error(res, 401, "", "Invalid username or password.");
    return false;
  }

  void handle_hub_post(const httplib::Request& req, httplib::Response& res) {
    record("hub", req);
    std::string target = req.target.substr(0, req.target.find('?'));
    const bool create_pr = req.target.find("create_pr=1") != std::string::npos;
    std::lock_guard<std::mutex> lock(mu);
    if (target == "/api/repos/create") {
      if (!can_write(req, res)) return;
      json body = json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.contains("name")) return error(res, 400, "", "Bad request");
      std::string type = body.value("type", "model");
      std::string id = body["name"].get<std::string>();
      if (body.contains("organization") && body["organization"].is_string())
        id = body["organization"].get<std::string>() + "/" + id;
      if (repos.count(key(type, id))) return error(res, 409, "", "You already created this model repo");
      Repo r;
      r.id = id;
      r.type = type;
      r.is_private = body.value("private", false);
      r.refs["main"] = new_commit(r, {{".gitattributes", "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}},
                                  "initial commit", {});
      repos[key(type, id)] = r;
      res.set_content(json{{"url", "http://127.0.0.1:" + std::to_string(hub_port) + "/" + id}}.dump(), "application/json");
      return;
    }
    if (target.rfind("/api/", 0) == 0) {
      std::string rest = target.substr(5);
      auto slash = rest.find('/');
      std::string plural = rest.substr(0, slash);
      std::string type = plural.substr(0, plural.size() - 1);
      rest = rest.substr(slash + 1);
      bool is_preupload = rest.find("/preupload/") != std::string::npos;
      auto pos = rest.find(is_preupload ? "/preupload/" : "/commit/");
      if (pos == std::string::npos) return error(res, 404, "", "Not found");
      std::string id = rest.substr(0, pos);
      std::string rev = pct_decode(rest.substr(pos + (is_preupload ? 11 : 8)));
      if (!can_write(req, res)) return;
      Repo* r = access(type, id, req, res);
      if (!r) return;
      std::string parent = resolve_rev(*r, rev);
      if (parent.empty()) return error(res, 404, "RevisionNotFound", "Invalid rev id: " + rev);
      if (is_preupload) {
        json body = json::parse(req.body, nullptr, false);
        if (body.is_discarded() || !body.contains("files")) return error(res, 400, "", "Bad request");
        json out = {{"files", json::array()}};
        for (const auto& f : body["files"]) {
          std::string sample = b64decode(f.value("sample", ""));
          size_t size = f.value("size", size_t{0});
          std::string path = f.value("path", "");
          bool lfs = size >= owner->lfs_threshold_ || sample.find('\0') != std::string::npos ||
                     (path.size() > 12 && path.substr(path.size() - 12) == ".safetensors");
          out["files"].push_back({{"path", path}, {"uploadMode", lfs ? "lfs" : "regular"},
                                  {"shouldIgnore", path == ".DS_Store"}});
        }
        res.set_content(out.dump(), "application/json");
        return;
      }
      // NDJSON commit.
      if (req.get_header_value("Content-Type") != "application/x-ndjson")
        return error(res, 400, "", "Commit must be application/x-ndjson");
      std::map<std::string, std::string> files = r->commits[parent].files;
      std::set<std::string> lfs;
      std::string summary;
      std::istringstream lines(req.body);
      std::string line;
      bool saw_header = false;
      while (std::getline(lines, line)) {
        if (line.empty()) continue;
        json j = json::parse(line, nullptr, false);
        if (j.is_discarded()) return error(res, 400, "", "Invalid NDJSON line");
        const std::string k = j.value("key", "");
        const json& v = j["value"];
        if (k == "header") {
          saw_header = true;
          summary = v.value("summary", "");
        } else if (k == "file") {
          if (v.value("encoding", "") != "base64") return error(res, 400, "", "Unsupported encoding");
          files[v.value("path", "")] = b64decode(v.value("content", ""));
        } else if (k == "lfsFile") {
          const std::string oid = v.value("oid", "");
          if (!uploaded.count(oid) || !blobs.count(oid) || blobs[oid]->size() != v.value("size", size_t{0}))
            return error(res, 422, "", "LFS object " + oid + " was not uploaded");
          files[v.value("path", "")] = *blobs[oid];
          lfs.insert(v.value("path", ""));
        } else if (k == "deletedFile") {
          files.erase(v.value("path", ""));
        } else {
          return error(res, 400, "", "Unknown key " + k);
        }
      }
      if (!saw_header || summary.empty()) return error(res, 400, "", "Missing commit header / summary");
      std::string oid = new_commit(*r, files, summary, lfs);
      json out = {{"commitUrl", "http://127.0.0.1:" + std::to_string(hub_port) + "/" + id + "/commit/" + oid},
                  {"commitOid", oid}};
      if (create_pr) {
        int n = r->next_pr++;
        r->refs["refs/pr/" + std::to_string(n)] = oid;
        out["pullRequestUrl"] = "http://127.0.0.1:" + std::to_string(hub_port) + "/" + id + "/discussions/" + std::to_string(n);
      } else {
        r->refs[rev] = oid;
      }
      res.set_content(out.dump(), "application/json");
      return;
    }
    // LFS batch: /{repo}.git/info/lfs/objects/batch
    auto pos = target.find(".git/info/lfs/objects/batch");
    if (pos != std::string::npos) {
      if (!can_write(req, res)) return;
      if (req.get_header_value("Content-Type") != "application/vnd.git-lfs+json")
        return error(res, 415, "", "LFS batch needs application/vnd.git-lfs+json");
      json body = json::parse(req.body, nullptr, false);
      if (body.is_discarded() || body.value("operation", "") != "upload") return error(res, 400, "", "Bad request");
      json out = {{"transfer", "basic"}, {"objects", json::array()}};
      const std::string cdn_base = "http://127.0.0.1:" + std::to_string(cdn_port);
      const std::string hub_base = "http://127.0.0.1:" + std::to_string(hub_port);
      for (const auto& o : body["objects"]) {
        std::string oid = o.value("oid", "");
        size_t size = o.value("size", size_t{0});
        json obj = {{"oid", oid}, {"size", size}};
        if (!uploaded.count(oid)) {
          json upload = {{"href", cdn_base + "/lfs-upload/" + oid + "?X-Amz-Signature=mock"}};
          if (owner->multipart_chunk_ > 0 && size > owner->multipart_chunk_) {
            json header = {{"chunk_size", std::to_string(owner->multipart_chunk_)}};
            size_t n = (size + owner->multipart_chunk_ - 1) / owner->multipart_chunk_;
            for (size_t i = 1; i <= n; ++i)
              header[std::to_string(i)] = cdn_base + "/lfs-part/" + oid + "/" + std::to_string(i);
            upload = {{"href", cdn_base + "/lfs-complete/" + oid}, {"header", header}};
          }
          obj["actions"] = {{"upload", upload},
                            {"verify", {{"href", hub_base + "/lfs-verify/" + oid}, {"header", {{"X-Verify", "1"}}}}}};
        }
        out["objects"].push_back(obj);
      }
      res.set_content(out.dump(), "application/vnd.git-lfs+json");
      return;
    }
    if (target.rfind("/lfs-verify/", 0) == 0) {
      if (!can_write(req, res)) return;
      std::string oid = target.substr(12);
      json body = json::parse(req.body, nullptr, false);
      if (!uploaded.count(oid) || body.is_discarded() || body.value("oid", "") != oid)
        return error(res, 404, "", "Object not uploaded");
      res.set_content("{}", "application/json");
      return;
    }
    error(res, 404, "", "Not found");
  }

  void handle_cdn_put(const httplib::Request& req, httplib::Response& res) {
    record("cdn", req);
    std::string target = req.target.substr(0, req.target.find('?'));
    std::lock_guard<std::mutex> lock(mu);
    if (target.rfind("/lfs-upload/", 0) == 0) {
      std::string oid = target.substr(12);
      if (sha256_hex(req.body) != oid) return error(res, 400, "", "sha256 mismatch");
      blobs[oid] = std::make_shared<const std::string>(req.body);
      uploaded.insert(oid);
      res.set_content("", "text/plain");
      return;
    }
    if (target.rfind("/lfs-part/", 0) == 0) {
      std::string rest = target.substr(10);
      std::string oid = rest.substr(0, rest.find('/'));
      int n = std::stoi(rest.substr(rest.find('/') + 1));
      parts[oid][n] = req.body;
      res.set_header("ETag", "\"part-" + std::to_string(n) + "-" + git_sha1_hex(req.body).substr(0, 8) + "\"");
      res.set_content("", "text/plain");
      return;
    }
    error(res, 404, "", "Not found");
  }

  void handle_cdn_post(const httplib::Request& req, httplib::Response& res) {
    record("cdn", req);
    std::string target = req.target.substr(0, req.target.find('?'));
    std::lock_guard<std::mutex> lock(mu);
    if (target.rfind("/lfs-complete/", 0) == 0) {
      std::string oid = target.substr(14);
      json body = json::parse(req.body, nullptr, false);
      if (body.is_discarded() || body.value("oid", "") != oid) return error(res, 400, "", "Bad completion");
      std::string all;
      int expect = 1;
      for (const auto& p : body["parts"]) {
        int n = p.value("partNumber", 0);
        if (n != expect++ || !parts[oid].count(n)) return error(res, 400, "", "Missing part");
        std::string etag = "\"part-" + std::to_string(n) + "-" + git_sha1_hex(parts[oid][n]).substr(0, 8) + "\"";
        if (p.value("etag", "") != etag) return error(res, 400, "", "Bad part etag");
        all += parts[oid][n];
      }
      if (sha256_hex(all) != oid) return error(res, 400, "", "sha256 mismatch");
      blobs[oid] = std::make_shared<const std::string>(all);
      uploaded.insert(oid);
      res.set_content("{}", "application/json");
      return;
    }
    error(res, 404, "", "Not found");
  }
};

MockHub::MockHub() : impl_(std::make_unique<Impl>()) {
  impl_->owner = this;
  auto* impl = impl_.get();
  impl->hub.Get(".*", [impl](const httplib::Request& q, httplib::Response& r) { impl->handle_hub_get(q, r); });
  impl->hub.Post(".*", [impl](const httplib::Request& q, httplib::Response& r) { impl->handle_hub_post(q, r); });
  impl->cdn.Get(".*", [impl](const httplib::Request& q, httplib::Response& r) { impl->handle_cdn_get(q, r); });
  impl->cdn.Put(".*", [impl](const httplib::Request& q, httplib::Response& r) { impl->handle_cdn_put(q, r); });
  impl->cdn.Post(".*", [impl](const httplib::Request& q, httplib::Response& r) { impl->handle_cdn_post(q, r); });
  impl->hub.set_read_timeout(30, 0);
  impl->cdn.set_read_timeout(30, 0);
  impl->hub_port = impl->hub.bind_to_any_port("127.0.0.1");
  impl->cdn_port = impl->cdn.bind_to_any_port("127.0.0.1");
  if (impl->hub_port <= 0 || impl->cdn_port <= 0) throw std::runtime_error("mock hub: cannot bind 127.0.0.1");
  impl->hub_thread = std::thread([impl] { impl->hub.listen_after_bind(); });
  impl->cdn_thread = std::thread([impl] { impl->cdn.listen_after_bind(); });
  for (int i = 0; i < 500 && !(impl->hub.is_running() && impl->cdn.is_running()); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

MockHub::~MockHub() {
  impl_->hub.stop();
  impl_->cdn.stop();
  if (impl_->hub_thread.joinable()) impl_->hub_thread.join();
  if (impl_->cdn_thread.joinable()) impl_->cdn_thread.join();
}

std::string MockHub::endpoint() const { return "http://127.0.0.1:" + std::to_string(impl_->hub_port); }
std::string MockHub::cdn_origin() const { return "http://127.0.0.1:" + std::to_string(impl_->cdn_port); }

std::string MockHub::add_commit(const std::string& repo_id, const std::map<std::string, std::string>& files,
                                const std::string& branch, const std::string& repo_type,
                                const std::set<std::string>& lfs) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Repo& r = impl_->repos[Impl::key(repo_type, repo_id)];
  r.id = repo_id;
  r.type = repo_type;
  std::string oid = impl_->new_commit(r, files, "commit", lfs);
  r.refs[branch] = oid;
  return oid;
}

void MockHub::add_ref(const std::string& repo_id, const std::string& ref, const std::string& commit,
                      const std::string& repo_type) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->repos[Impl::key(repo_type, repo_id)].refs[ref] = commit;
}

void MockHub::set_private(const std::string& repo_id, bool value) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->repos[Impl::key("model", repo_id)].is_private = value;
}
void MockHub::set_gated(const std::string& repo_id, bool value) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->repos[Impl::key("model", repo_id)].gated = value;
}
void MockHub::rename(const std::string& old_id, const std::string& new_id) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->renames[old_id] = new_id;
}
void MockHub::set_fault(const std::string& filename, const MockFault& fault) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->faults[filename] = fault;
}
void MockHub::clear_faults() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->faults.clear();
}

std::vector<MockRequest> MockHub::requests() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->log;
}
void MockHub::clear_requests() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->log.clear();
}
size_t MockHub::count(const std::string& method, const std::string& needle) const {
  size_t n = 0;
  for (const auto& r : requests())
    if (r.method == method && r.path.find(needle) != std::string::npos) ++n;
  return n;
}

bool MockHub::has_repo(const std::string& repo_id, const std::string& repo_type) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->repos.count(Impl::key(repo_type, repo_id)) > 0;
}
bool MockHub::is_private(const std::string& repo_id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->repos.find(Impl::key("model", repo_id));
  return it != impl_->repos.end() && it->second.is_private;
}
std::string MockHub::ref(const std::string& repo_id, const std::string& ref, const std::string& repo_type) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->repos.find(Impl::key(repo_type, repo_id));
  if (it == impl_->repos.end()) return {};
  auto r = it->second.refs.find(ref);
  return r == it->second.refs.end() ? std::string() : r->second;
}
MockCommit MockHub::commit(const std::string& repo_id, const std::string& oid, const std::string& repo_type) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->repos.find(Impl::key(repo_type, repo_id));
  if (it == impl_->repos.end() || !it->second.commits.count(oid)) return {};
  return it->second.commits.at(oid);
}
std::set<std::string> MockHub::lfs_objects() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->uploaded;
}

std::string MockHub::sha256_hex(const std::string& data) { return digest(EVP_sha256(), data); }
std::string MockHub::git_sha1_hex(const std::string& data) {
  return digest(EVP_sha1(), "blob " + std::to_string(data.size()) + std::string(1, '\0') + data);
}

// ---- TLS ----------------------------------------------------------------------------------

MockTlsServer::MockTlsServer(const std::string& dir) {
  EVP_PKEY* key = EVP_RSA_gen(2048);
  X509* cert = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600L * 24);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, "IP:127.0.0.1"}, std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  X509_sign(cert, key, EVP_sha256());
  cert_path_ = dir + "/cert.pem";
  FILE* f = std::fopen(cert_path_.c_str(), "w");
  if (f) {
    PEM_write_X509(f, cert);
    std::fclose(f);
  }
  server_ = std::make_unique<httplib::SSLServer>(cert, key);
  X509_free(cert);
  EVP_PKEY_free(key);
  if (!server_->is_valid()) return;
  server_->Get(".*", [](const httplib::Request&, httplib::Response& res) {
    res.set_header("X-Repo-Commit", std::string(40, 'a'));
    res.set_header("ETag", "\"tls-etag\"");
    res.set_content("tls-ok", "text/plain");
  });
  port_ = server_->bind_to_any_port("127.0.0.1");
  auto* s = server_.get();
  thread_ = std::thread([s] { s->listen_after_bind(); });
  for (int i = 0; i < 500 && !server_->is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

MockTlsServer::~MockTlsServer() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::string MockTlsServer::endpoint() const { return "https://127.0.0.1:" + std::to_string(port_); }

}  // namespace plugformer::testing
