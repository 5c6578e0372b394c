// Environment variables, naming and input validation of the Hub client.
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "hub/http.h"
#include "hub/internal.h"
#include "plugformer/error.h"
#include "plugformer/hub.h"

namespace fs = std::filesystem;

namespace plugformer::hub {

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

fs::path expand_user(const std::string& p) {
  if (!p.empty() && p[0] == '~' && (p.size() == 1 || p[1] == '/')) {
    const char* home = std::getenv("HOME");
    if (home && *home) return fs::path(home) / p.substr(p.size() > 1 ? 2 : 1);
  }
  return fs::path(p);
}

std::string strip(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

bool is_word(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

}  // namespace

fs::path hf_home() {
  if (auto v = env("HF_HOME")) return expand_user(*v);
  if (auto xdg = env("XDG_CACHE_HOME")) return expand_user(*xdg) / "huggingface";
  return expand_user("~/.cache") / "huggingface";
}

fs::path default_cache_dir() {
  if (auto v = env("HF_HUB_CACHE")) return expand_user(*v);
  if (auto v = env("HUGGINGFACE_HUB_CACHE")) return expand_user(*v);
  return hf_home() / "hub";
}

std::string default_endpoint() {
  std::string e = env("HF_ENDPOINT").value_or("https://huggingface.co");
  while (!e.empty() && e.back() == '/') e.pop_back();
  return e;
}

bool offline_mode() {
  auto v = env("HF_HUB_OFFLINE");
  if (!v) return false;
  std::string s = detail::to_lower(strip(*v));
  return s == "1" || s == "on" || s == "yes" || s == "true";
}

std::optional<std::string> resolve_token(const std::optional<std::string>& explicit_token) {
  if (explicit_token) {
    std::string t = strip(*explicit_token);
    if (t.empty()) return std::nullopt;
    return t;
  }
  for (const char* name : {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}) {
    if (auto v = env(name)) {
      std::string t = strip(*v);
      if (!t.empty()) return t;
    }
  }
  fs::path token_path = env("HF_TOKEN_PATH") ? expand_user(*env("HF_TOKEN_PATH")) : hf_home() / "token";
  std::ifstream in(token_path);
  if (in) {
    std::stringstream ss;
    ss << in.rdbuf();
    std::string t = strip(ss.str());
    if (!t.empty()) return t;
  }
  return std::nullopt;
}

std::string repo_folder_name(const std::string& repo_id, const std::string& repo_type) {
  detail::repo_type_url_prefix(repo_type);  // validates
  std::string out = repo_type + "s";
  size_t start = 0;
  out += "--";
  for (size_t i = 0; i <= repo_id.size(); ++i) {
    if (i == repo_id.size() || repo_id[i] == '/') {
      out += repo_id.substr(start, i - start);
      if (i != repo_id.size()) out += "--";
      start = i + 1;
    }
  }
  return out;
}

std::string hf_hub_url(const std::string& repo_id, const std::string& filename, const HubOptions& options) {
  std::string path = options.subfolder.empty() ? filename : options.subfolder + "/" + filename;
  return detail::endpoint_of(options.endpoint) + "/" + detail::repo_type_url_prefix(options.repo_type) +
         repo_id + "/resolve/" + detail::url_quote(options.revision, "") + "/" + detail::url_quote(path, "/");
}

bool is_commit_hash(const std::string& s) {
  if (s.size() != 40) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

void validate_repo_id(const std::string& repo_id) {
  auto bad = [&](const std::string& why) {
    throw InvalidInputError("invalid repo id '" + repo_id + "': " + why +
                            " (expected 'name' or 'namespace/name' with letters, digits, '-', '_' "
                            "and '.', at most 96 characters)");
  };
  if (repo_id.empty()) bad("empty");
  if (repo_id.size() > 96) bad("longer than 96 characters");
  if (repo_id.find("..") != std::string::npos) bad("'..' is not allowed");
  if (repo_id.find("--") != std::string::npos) bad("'--' is not allowed");
  if (repo_id.size() >= 4 && repo_id.compare(repo_id.size() - 4, 4, ".git") == 0) bad("cannot end with '.git'");
  size_t slashes = 0;
  for (char c : repo_id) {
    if (c == '/') {
      ++slashes;
    } else if (!(is_word(c) || c == '-' || c == '.')) {
      bad(c == '\\' ? "backslashes are not allowed" : "character not allowed");
    }
  }
  if (slashes > 1) bad("more than one '/'");
  // Each part starts and ends with a word character (the \b of huggingface_hub's regex).
  size_t start = 0;
  for (size_t i = 0; i <= repo_id.size(); ++i) {
    if (i == repo_id.size() || repo_id[i] == '/') {
      if (i == start) bad("empty part");
      if (!is_word(repo_id[start]) || !is_word(repo_id[i - 1])) bad("parts must start and end with a letter, digit or '_'");
      start = i + 1;
    }
  }
}

void validate_repo_path(const std::string& path, const char* what) {
  auto bad = [&](const std::string& why) {
    throw InvalidInputError(std::string("invalid ") + what + " '" + path + "': " + why);
  };
  if (path.empty()) bad("empty");
  if (path.size() > 1024) bad("too long");
  if (path[0] == '/') bad("absolute paths are not allowed");
  for (char c : path) {
    if (c == '\\') bad("backslashes are not allowed");
    if (c == '\0' || c == '\n' || c == '\r') bad("control characters are not allowed");
  }
  if (path.size() >= 2 && path[1] == ':' && std::isalpha(static_cast<unsigned char>(path[0])))
    bad("drive letters are not allowed");
  size_t start = 0;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      std::string part = path.substr(start, i - start);
      if (part.empty()) bad("empty path component");
      if (part == "..") bad("'..' is not allowed");
      if (part == ".") bad("'.' components are not allowed");
      start = i + 1;
    }
  }
}

void validate_revision(const std::string& revision) {
  auto bad = [&](const std::string& why) {
    throw InvalidInputError("invalid revision '" + revision + "': " + why);
  };
  if (revision.empty()) bad("empty");
  if (revision.size() > 256) bad("too long");
  if (revision[0] == '/') bad("absolute paths are not allowed");
  for (char c : revision) {
    if (c == '\\') bad("backslashes are not allowed");
    if (static_cast<unsigned char>(c) < 0x20) bad("control characters are not allowed");
  }
  size_t start = 0;
  for (size_t i = 0; i <= revision.size(); ++i) {
    if (i == revision.size() || revision[i] == '/') {
      std::string part = revision.substr(start, i - start);
      if (part.empty() || part == "." || part == "..") bad("'..', '.' and empty components are not allowed");
      start = i + 1;
    }
  }
}

namespace detail {

std::string to_lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string endpoint_of(const std::optional<std::string>& endpoint) {
  if (!endpoint) return default_endpoint();
  std::string e = *endpoint;
  while (!e.empty() && e.back() == '/') e.pop_back();
  return e;
}

fs::path cache_dir_of(const std::optional<fs::path>& cache_dir) {
  if (cache_dir) return expand_user(cache_dir->string());
  return default_cache_dir();
}

std::string repo_type_url_prefix(const std::string& repo_type) {
  if (repo_type == "model") return "";
  if (repo_type == "dataset") return "datasets/";
  if (repo_type == "space") return "spaces/";
  throw InvalidInputError("invalid repo_type '" + repo_type + "' (expected model, dataset or space)");
}

std::string repo_type_api_plural(const std::string& repo_type) {
  repo_type_url_prefix(repo_type);
  return repo_type + "s";
}

std::optional<std::string> read_ref(const fs::path& storage, const std::string& revision) {
  std::error_code ec;
  fs::path ref = storage / "refs" / revision;
  if (!fs::is_regular_file(ref, ec)) return std::nullopt;
  std::ifstream in(ref);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string commit = strip(ss.str());
  if (!is_commit_hash(commit)) return std::nullopt;  // a corrupt or hostile ref is ignored
  return commit;
}

bool stays_inside(const fs::path& p, const fs::path& root) {
  std::error_code ec;
  fs::path target = fs::canonical(p, ec);
  if (ec) return false;
  fs::path base = fs::weakly_canonical(root, ec);
  if (ec) return false;
  auto t = target.begin();
  for (auto b = base.begin(); b != base.end(); ++b, ++t) {
    if (b->empty()) continue;  // trailing separator
    if (t == target.end() || *t != *b) return false;
  }
  return true;
}

}  // namespace detail
}  // namespace plugformer::hub
