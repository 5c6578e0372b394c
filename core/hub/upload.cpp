// push_to_hub: create_repo, create_commit (preupload -> LFS batch upload -> NDJSON commit),
// upload_folder and upload_file, as huggingface_hub's hf_api.py and _commit_api.py.
#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "hub/http.h"
#include "hub/internal.h"
#include "plugformer/error.h"
#include "plugformer/hub.h"
#include "plugformer/log.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace plugformer::hub {

using detail::HttpRequest;
using detail::HttpResponse;

namespace {

const std::vector<std::string> kDefaultIgnore = {
    ".git", ".git/*", "*/.git", "**/.git/**",
    ".cache/huggingface", ".cache/huggingface/*", "*/.cache/huggingface", "**/.cache/huggingface/**"};

struct PreparedFile {
  std::string path_in_repo;
  std::string local_path;  // empty when content is in memory
  std::string content;
  uint64_t size = 0;
  std::string sha256;
  std::string sample;  // first 512 bytes
  std::string upload_mode = "regular";
  bool should_ignore = false;
};

PreparedFile prepare(const CommitOperationAdd& op) {
  validate_repo_path(op.path_in_repo, "path_in_repo");
  PreparedFile f;
  f.path_in_repo = op.path_in_repo;
  if (op.content) {
    f.content = *op.content;
    f.size = f.content.size();
    detail::Sha256 h;
    h.update(f.content.data(), f.content.size());
    f.sha256 = h.hex_digest();
    f.sample = f.content.substr(0, 512);
  } else {
    std::error_code ec;
    if (!fs::is_regular_file(op.local_path, ec))
      throw FileNotFoundError("cannot upload " + op.local_path.string() + ": not a file");
    f.local_path = op.local_path.string();
    f.size = fs::file_size(op.local_path);
    f.sha256 = detail::sha256_file(f.local_path);
    std::ifstream in(op.local_path, std::ios::binary);
    f.sample.resize(512);
    in.read(f.sample.data(), 512);
    f.sample.resize(static_cast<size_t>(in.gcount()));
  }
  return f;
}

std::string read_all(const PreparedFile& f) {
  if (f.local_path.empty()) return f.content;
  std::ifstream in(f.local_path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in && !in.eof()) throw IOError("cannot read " + f.local_path);
  return ss.str();
}

json parse_json(const HttpResponse& r, const std::string& what) {
  try {
    return json::parse(r.body);
  } catch (const json::exception& e) {
    throw HubError("invalid JSON from the Hub for " + what + ": " + e.what());
  }
}

HttpRequest api_request(const std::string& method, const std::string& url, const std::optional<std::string>& token) {
  HttpRequest req;
  req.method = method;
  req.url = url;
  req.token = token;
  req.total_timeout_s = 0;
  req.stall_timeout_s = 60;
  return req;
}

std::string repo_api(const UploadOptions& o, const std::string& repo_id) {
  return detail::endpoint_of(o.endpoint) + "/api/" + detail::repo_type_api_plural(o.repo_type) + "/" + repo_id;
}

std::string join_repo_path(const std::string& folder, const std::string& rel) {
  if (folder.empty()) return rel;
  std::string f = folder;
  while (!f.empty() && f.back() == '/') f.pop_back();
  return f.empty() ? rel : f + "/" + rel;
}

// Uploads one LFS object following the batch API's actions (basic PUT or multipart).
void upload_lfs_object(const PreparedFile& f, const json& object, const std::string& hub_origin,
                       const std::optional<std::string>& token) {
  const std::string what = "LFS upload of " + f.path_in_repo;
  if (object.contains("error")) {
    const auto& err = object["error"];
    throw HubError(what + " refused by the Hub: " + err.value("message", std::string("unknown error")) + " (code " +
                   std::to_string(err.value("code", 0)) + ")");
  }
  if (!object.contains("actions") || !object["actions"].is_object()) return;  // already on the Hub
  const json& actions = object["actions"];
  if (!actions.contains("upload")) return;
  const json& upload = actions["upload"];
  const std::string href = upload.value("href", "");
  if (href.empty()) throw HubError(what + ": the Hub sent no upload URL");
  json header = upload.contains("header") && upload["header"].is_object() ? upload["header"] : json::object();

  auto put_slice = [&](const std::string& url, uint64_t offset, uint64_t length) {
    HttpRequest put = api_request("PUT", url, std::nullopt);  // presigned: never the token
    if (!f.local_path.empty()) {
      put.upload_file = f.local_path;
      put.upload_offset = offset;
      put.upload_length = length;
    } else {
      put.body = f.content.substr(offset, length);
    }
    HttpResponse r = detail::perform_with_retries(put);
    detail::raise_for_status(r, what);
    return r;
  };

  if (header.contains("chunk_size")) {
    // Multipart: header has chunk_size and one presigned URL per part number.
    uint64_t chunk = header["chunk_size"].is_string() ? std::stoull(header["chunk_size"].get<std::string>())
                                                      : header["chunk_size"].get<uint64_t>();
    if (chunk == 0) throw HubError(what + ": invalid chunk_size 0");
    std::vector<std::pair<int, std::string>> parts;
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "chunk_size") continue;
      int n = 0;
      try {
        n = std::stoi(it.key());
      } catch (...) {
        continue;
      }
      parts.emplace_back(n, it.value().get<std::string>());
    }
    std::sort(parts.begin(), parts.end());
    if (parts.size() != (f.size + chunk - 1) / chunk)
      throw HubError(what + ": the Hub asked for " + std::to_string(parts.size()) + " parts of " +
                     std::to_string(chunk) + " bytes for a file of " + std::to_string(f.size) + " bytes");
    json completion = {{"oid", f.sha256}, {"parts", json::array()}};
    for (size_t i = 0; i < parts.size(); ++i) {
      uint64_t off = static_cast<uint64_t>(i) * chunk;
      HttpResponse r = put_slice(parts[i].second, off, std::min(chunk, f.size - off));
      std::string etag = r.header("etag");
      if (etag.empty()) throw HubError(what + ": part " + std::to_string(parts[i].first) + " returned no ETag");
      completion["parts"].push_back({{"partNumber", parts[i].first}, {"etag", etag}});
    }
    HttpRequest done = api_request("POST", href, detail::url_origin(href) == hub_origin ? token : std::nullopt);
    done.headers = {{"Content-Type", "application/vnd.git-lfs+json"}, {"Accept", "application/vnd.git-lfs+json"}};
    done.body = completion.dump();
    HttpResponse r = detail::perform_with_retries(done);
    detail::raise_for_status(r, what + " (multipart completion)");
  } else {
    HttpRequest put = api_request("PUT", href, std::nullopt);
    for (auto it = header.begin(); it != header.end(); ++it)
      if (it.value().is_string()) put.headers.emplace_back(it.key(), it.value().get<std::string>());
    if (!f.local_path.empty()) {
      put.upload_file = f.local_path;
      put.upload_offset = 0;
      put.upload_length = f.size;
    } else {
      put.body = f.content;
    }
    HttpResponse r = detail::perform_with_retries(put);
    detail::raise_for_status(r, what);
  }

  if (actions.contains("verify")) {
    const json& verify = actions["verify"];
    const std::string vhref = verify.value("href", "");
    HttpRequest v = api_request("POST", vhref, detail::url_origin(vhref) == hub_origin ? token : std::nullopt);
    v.headers = {{"Content-Type", "application/vnd.git-lfs+json"}, {"Accept", "application/vnd.git-lfs+json"}};
    if (verify.contains("header") && verify["header"].is_object())
      for (auto it = verify["header"].begin(); it != verify["header"].end(); ++it)
        if (it.value().is_string()) v.headers.emplace_back(it.key(), it.value().get<std::string>());
    v.body = json{{"oid", f.sha256}, {"size", f.size}}.dump();
    HttpResponse r = detail::perform_with_retries(v);
    detail::raise_for_status(r, what + " (verify)");
  }
}

}  // namespace

std::string create_repo(const std::string& repo_id, const UploadOptions& options, bool exist_ok) {
  validate_repo_id(repo_id);
  const std::string endpoint = detail::endpoint_of(options.endpoint);
  auto token = resolve_token(options.token);
  if (!token) throw HubError("creating repo '" + repo_id + "' needs a token (pass one or set HF_TOKEN)");
  json body;
  auto slash = repo_id.find('/');
  if (slash == std::string::npos) {
    body["name"] = repo_id;
    body["organization"] = nullptr;
  } else {
    body["organization"] = repo_id.substr(0, slash);
    body["name"] = repo_id.substr(slash + 1);
  }
  body["private"] = options.private_repo;
  if (options.repo_type != "model") {
    detail::repo_type_url_prefix(options.repo_type);
    body["type"] = options.repo_type;
  }
  HttpRequest req = api_request("POST", endpoint + "/api/repos/create", token);
  req.headers = {{"Content-Type", "application/json"}};
  req.body = body.dump();
  HttpResponse r = detail::perform_with_retries(req);
  const std::string url = endpoint + "/" + detail::repo_type_url_prefix(options.repo_type) + repo_id;
  if (r.status == 409 && exist_ok) return url;
  detail::raise_for_status(r, "creation of repo '" + repo_id + "'");
  try {
    auto j = json::parse(r.body);
    if (j.contains("url") && j["url"].is_string()) return j["url"].get<std::string>();
  } catch (const json::exception&) {
  }
  return url;
}

CommitInfo create_commit(const std::string& repo_id, const std::vector<CommitOperationAdd>& additions,
                         const std::vector<std::string>& deletions, const UploadOptions& options) {
  validate_repo_id(repo_id);
  validate_revision(options.revision);
  for (const auto& d : deletions) validate_repo_path(d, "path to delete");
  if (options.commit_message.empty()) throw InvalidInputError("commit_message must not be empty");
  auto token = resolve_token(options.token);
  if (!token) throw HubError("committing to repo '" + repo_id + "' needs a token (pass one or set HF_TOKEN)");
  const std::string endpoint = detail::endpoint_of(options.endpoint);
  const std::string hub_origin = detail::url_origin(endpoint);
  const std::string rev_quoted = detail::url_quote(options.revision, "");
  const std::string what = "repo '" + repo_id + "' at revision '" + options.revision + "'";

  std::vector<PreparedFile> files;
  files.reserve(additions.size());
  for (const auto& op : additions) files.push_back(prepare(op));

  // 1. preupload: the Hub says which files go through LFS (and which it ignores).
  for (size_t start = 0; start < files.size(); start += 256) {
    json payload = {{"files", json::array()}};
    for (size_t i = start; i < std::min(files.size(), start + 256); ++i)
      payload["files"].push_back({{"path", files[i].path_in_repo},
                                  {"sample", detail::base64_encode(files[i].sample)},
                                  {"size", files[i].size},
                                  {"sha", files[i].sha256}});
    HttpRequest req = api_request("POST", repo_api(options, repo_id) + "/preupload/" + rev_quoted +
                                              (options.create_pr ? "?create_pr=1" : ""), token);
    req.headers = {{"Content-Type", "application/json"}};
    req.body = payload.dump();
    HttpResponse r = detail::perform_with_retries(req);
    detail::raise_for_status(r, "preupload to " + what);
    json j = parse_json(r, "preupload to " + what);
    if (!j.contains("files") || !j["files"].is_array()) throw HubError("preupload answer for " + what + " has no files");
    for (const auto& entry : j["files"]) {
      const std::string path = entry.value("path", "");
      for (auto& f : files) {
        if (f.path_in_repo != path) continue;
        f.upload_mode = entry.value("uploadMode", "regular");
        f.should_ignore = entry.value("shouldIgnore", false);
        if (f.upload_mode != "lfs" && f.upload_mode != "regular")
          throw HubError("preupload answer for " + what + ": unknown uploadMode '" + f.upload_mode + "'");
      }
    }
  }

  // 2. LFS batch upload of the large / binary files.
  std::vector<PreparedFile*> lfs;
  for (auto& f : files)
    if (f.upload_mode == "lfs" && !f.should_ignore) lfs.push_back(&f);
  for (size_t start = 0; start < lfs.size(); start += 256) {
    json payload = {{"operation", "upload"},
                    {"transfers", {"basic", "multipart"}},
                    {"objects", json::array()},
                    {"hash_algo", "sha256"},
                    {"ref", {{"name", options.revision}}}};
    std::map<std::string, PreparedFile*> by_oid;
    for (size_t i = start; i < std::min(lfs.size(), start + 256); ++i) {
      payload["objects"].push_back({{"oid", lfs[i]->sha256}, {"size", lfs[i]->size}});
      by_oid[lfs[i]->sha256] = lfs[i];
    }
    HttpRequest req = api_request("POST", endpoint + "/" + detail::repo_type_url_prefix(options.repo_type) + repo_id +
                                              ".git/info/lfs/objects/batch", token);
    req.headers = {{"Accept", "application/vnd.git-lfs+json"}, {"Content-Type", "application/vnd.git-lfs+json"}};
    req.body = payload.dump();
    HttpResponse r = detail::perform_with_retries(req);
    detail::raise_for_status(r, "LFS batch for " + what);
    json j = parse_json(r, "LFS batch for " + what);
    if (!j.contains("objects") || !j["objects"].is_array()) throw HubError("LFS batch answer for " + what + " has no objects");
    for (const auto& obj : j["objects"]) {
      auto it = by_oid.find(obj.value("oid", ""));
      if (it == by_oid.end()) throw HubError("LFS batch answer for " + what + " names an object that was not asked for");
      upload_lfs_object(*it->second, obj, hub_origin, token);
      logger().info("hub: uploaded {} ({} bytes) through LFS", it->second->path_in_repo, it->second->size);
    }
  }

  // 3. The commit itself, NDJSON.
  std::string ndjson;
  json header_value = {{"summary", options.commit_message}, {"description", options.commit_description}};
  ndjson += json{{"key", "header"}, {"value", header_value}}.dump() + "\n";
  CommitInfo info;
  for (const auto& f : files) {
    if (f.should_ignore) continue;
    info.uploaded_files.push_back(f.path_in_repo);
    if (f.upload_mode == "lfs") {
      ndjson += json{{"key", "lfsFile"},
                     {"value", {{"path", f.path_in_repo}, {"algo", "sha256"}, {"oid", f.sha256}, {"size", f.size}}}}
                    .dump() + "\n";
    } else {
      ndjson += json{{"key", "file"},
                     {"value", {{"content", detail::base64_encode(read_all(f))}, {"path", f.path_in_repo}, {"encoding", "base64"}}}}
                    .dump() + "\n";
    }
  }
  for (const auto& d : deletions)
    ndjson += json{{"key", d.back() == '/' ? "deletedFolder" : "deletedFile"}, {"value", {{"path", d}}}}.dump() + "\n";

  HttpRequest req = api_request("POST", repo_api(options, repo_id) + "/commit/" + rev_quoted +
                                            (options.create_pr ? "?create_pr=1" : ""), token);
  req.headers = {{"Content-Type", "application/x-ndjson"}};
  req.body = std::move(ndjson);
  HttpResponse r = detail::perform(req);  // not retried: a commit must not land twice
  detail::raise_for_status(r, "commit to " + what);
  json j = parse_json(r, "commit to " + what);
  info.commit_url = j.value("commitUrl", "");
  info.commit_oid = j.value("commitOid", "");
  if (j.contains("pullRequestUrl") && j["pullRequestUrl"].is_string()) info.pr_url = j["pullRequestUrl"].get<std::string>();
  logger().info("hub: committed {} files to {}: {}", info.uploaded_files.size(), what,
                info.pr_url.empty() ? info.commit_url : info.pr_url);
  return info;
}

CommitInfo upload_folder(const std::string& repo_id, const fs::path& folder, const UploadOptions& options) {
  validate_repo_id(repo_id);
  if (!options.path_in_repo.empty()) validate_repo_path(options.path_in_repo, "path_in_repo");
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) throw FileNotFoundError("cannot upload " + folder.string() + ": not a folder");
  std::vector<CommitOperationAdd> ops;
  for (auto it = fs::recursive_directory_iterator(folder, ec); it != fs::recursive_directory_iterator(); ++it) {
    if (!it->is_regular_file(ec)) continue;
    const std::string rel = it->path().lexically_relative(folder).generic_string();
    bool ignored = false;
    for (const auto& p : kDefaultIgnore) ignored = ignored || match_pattern(p, rel);
    for (const auto& p : options.ignore_patterns) ignored = ignored || match_pattern(p, rel);
    if (ignored) continue;
    if (!options.allow_patterns.empty()) {
      bool ok = false;
      for (const auto& p : options.allow_patterns) ok = ok || match_pattern(p, rel);
      if (!ok) continue;
    }
    ops.push_back({join_repo_path(options.path_in_repo, rel), it->path(), std::nullopt});
  }
  if (ec) throw IOError("cannot list " + folder.string() + ": " + ec.message());
  std::sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.path_in_repo < b.path_in_repo; });
  if (options.create_repo) create_repo(repo_id, options, true);
  return create_commit(repo_id, ops, {}, options);
}

CommitInfo upload_file(const std::string& repo_id, const fs::path& local_file, const std::string& path_in_repo,
                       const UploadOptions& options) {
  validate_repo_id(repo_id);
  if (options.create_repo) create_repo(repo_id, options, true);
  return create_commit(repo_id, {{path_in_repo, local_file, std::nullopt}}, {}, options);
}

}  // namespace plugformer::hub
