#include "hub/http.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <thread>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "plugformer/error.h"
#include "plugformer/hub.h"
#include "plugformer/log.h"

namespace plugformer::hub::detail {

namespace {

constexpr const char* kUserAgent = "plugformer/0.1; hf_hub/0.26.0-compatible";
constexpr int kMaxRedirects = 10;
constexpr long kMinBytesPerSecond = 1024;
// Longest Retry-After honoured (the Hub's rate-limit windows are 5 minutes).
constexpr long kMaxRetryAfterSeconds = 300;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

struct Transfer {
  const HttpRequest* request = nullptr;
  HttpResponse* response = nullptr;
  CURL* curl = nullptr;
  bool status_checked = false;
  bool stream = false;  // 2xx and on_data set
  bool aborted_by_sink = false;
  bool rejected = false;
  uint64_t received = 0;
  uint64_t content_length = 0;
  FILE* upload = nullptr;
  uint64_t upload_left = 0;
};

size_t header_cb(char* buffer, size_t size, size_t nitems, void* userdata) {
  auto* t = static_cast<Transfer*>(userdata);
  const size_t n = size * nitems;
  std::string line(buffer, n);
  if (line.rfind("HTTP/", 0) == 0) {
    t->response->headers.clear();  // a new response (e.g. after 100 Continue)
    t->status_checked = false;
    return n;
  }
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    t->response->headers[lower(trim(line.substr(0, colon)))] = trim(line.substr(colon + 1));
  }
  return n;
}

size_t write_cb(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* t = static_cast<Transfer*>(userdata);
  const size_t n = size * nmemb;
  if (!t->status_checked) {
    long status = 0;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
    t->stream = t->request->on_data && status >= 200 && status < 300;
    t->status_checked = true;
    auto cl = t->response->header("content-length");
    t->content_length = cl.empty() ? 0 : std::strtoull(cl.c_str(), nullptr, 10);
    t->response->status = status;
    if (t->stream && t->request->on_start && !t->request->on_start(*t->response)) {
      t->rejected = true;
      return 0;
    }
  }
  t->received += n;
  if (t->stream) {
    if (!t->request->on_data(ptr, n)) {
      t->aborted_by_sink = true;
      return 0;
    }
    if (t->request->on_progress) t->request->on_progress(t->received, t->content_length);
  } else {
    if (t->response->body.size() < (64u << 20)) t->response->body.append(ptr, n);
  }
  return n;
}

size_t read_cb(char* buffer, size_t size, size_t nitems, void* userdata) {
  auto* t = static_cast<Transfer*>(userdata);
  size_t want = std::min<uint64_t>(size * nitems, t->upload_left);
  if (want == 0) return 0;
  size_t got = std::fread(buffer, 1, want, t->upload);
  if (got == 0) return CURL_READFUNC_ABORT;
  t->upload_left -= got;
  return got;
}

// Resolves `location` against `base` with libcurl's URL parser.
std::string resolve_url(const std::string& base, const std::string& location) {
  CURLU* h = curl_url();
  std::string out;
  if (curl_url_set(h, CURLUPART_URL, base.c_str(), 0) == CURLUE_OK &&
      curl_url_set(h, CURLUPART_URL, location.c_str(), 0) == CURLUE_OK) {
    char* s = nullptr;
    if (curl_url_get(h, CURLUPART_URL, &s, 0) == CURLUE_OK) {
      out = s;
      curl_free(s);
    }
  }
  curl_url_cleanup(h);
  return out;
}

bool is_relative_location(const std::string& location) {
  // No scheme and no authority: "/path", "path", "?q".
  if (location.rfind("//", 0) == 0) return false;
  auto colon = location.find(':');
  auto slash = location.find('/');
  return colon == std::string::npos || (slash != std::string::npos && slash < colon);
}

HttpResponse perform_once(const HttpRequest& req, const std::string& url, bool send_token) {
  global_init();
  CURL* curl = curl_easy_init();
  if (!curl) throw HubConnectionError("libcurl could not create a handle for " + url);
  HttpResponse response;
  response.url = url;
  Transfer t;
  t.request = &req;
  t.response = &response;
  t.curl = curl;

  struct curl_slist* headers = nullptr;
  std::string auth;
  for (const auto& [k, v] : req.headers) headers = curl_slist_append(headers, (k + ": " + v).c_str());
  if (send_token && req.token && !req.token->empty()) {
    auth = "Authorization: Bearer " + *req.token;
    headers = curl_slist_append(headers, auth.c_str());
  }
  headers = curl_slist_append(headers, "Expect:");

  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_USERAGENT, kUserAgent);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  // TLS verification is never turned off; an extra CA file may be added.
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  for (const char* var : {"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}) {
    const char* ca = std::getenv(var);
    if (ca && *ca) {
      curl_easy_setopt(curl, CURLOPT_CAINFO, ca);
      break;
    }
  }
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
  if (req.total_timeout_s > 0) curl_easy_setopt(curl, CURLOPT_TIMEOUT, req.total_timeout_s);
  if (req.stall_timeout_s > 0) {
    // Slower than kMinBytesPerSecond for the whole window counts as stalled: a server that
    // trickles a byte now and then would otherwise hold a download open forever.
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, kMinBytesPerSecond);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, req.stall_timeout_s);
  }
  char curl_error[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_error);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, 512L * 1024L);

  if (req.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (req.method == "GET") {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  } else if (!req.upload_file.empty()) {
    t.upload = std::fopen(req.upload_file.c_str(), "rb");
    if (!t.upload) {
      curl_slist_free_all(headers);
      curl_easy_cleanup(curl);
      throw IOError("cannot read " + req.upload_file + " for upload");
    }
    std::fseek(t.upload, static_cast<long>(req.upload_offset), SEEK_SET);
    t.upload_left = req.upload_length;
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(curl, CURLOPT_READDATA, &t);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(req.upload_length));
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  } else {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req.body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    if (req.method != "POST") curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }

  CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  response.status = status;
  if (t.upload) std::fclose(t.upload);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (t.rejected) {
    response.rejected = true;
    return response;
  }
  if (rc != CURLE_OK) {
    if (t.aborted_by_sink) throw IOError("download of " + url + " aborted: could not write the data");
    std::string msg = "network error for " + url + ": " + (curl_error[0] ? curl_error : curl_easy_strerror(rc));
    if (t.received > 0) msg += " (after " + std::to_string(t.received) + " bytes)";
    throw HubConnectionError(msg);
  }
  return response;
}

}  // namespace

HttpResponse perform(const HttpRequest& req) {
  std::string url = req.url;
  const std::string origin = url_origin(req.url);
  for (int hop = 0;; ++hop) {
    // The token only goes to the host it was meant for.
    HttpResponse r = perform_once(req, url, url_origin(url) == origin);
    if (r.status < 300 || r.status > 399 || req.redirects == Redirects::kNone) return r;
    const std::string location = r.header("location");
    if (location.empty()) return r;
    if (req.redirects == Redirects::kRelativeOnly && !is_relative_location(location)) return r;
    // Not a connection error: retrying a redirect loop would only loop again.
    if (hop >= kMaxRedirects)
      throw HubError("redirect loop: more than " + std::to_string(kMaxRedirects) + " redirects for " + req.url +
                     " (last Location: " + location + ")");
    std::string next = resolve_url(url, location);
    if (next.empty()) throw HubConnectionError("invalid redirect Location from " + url);
    logger().debug("hub: redirect {} -> {}", url, next);
    url = next;
  }
}

int retry_base_ms() {
  const char* v = std::getenv("PLUGFORMER_HUB_RETRY_BASE_MS");
  if (v && *v) {
    long ms = std::strtol(v, nullptr, 10);
    if (ms >= 0 && ms < 60000) return static_cast<int>(ms);
  }
  return 1000;
}

long env_seconds(const char* name, long fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  double d = std::strtod(v, &end);
  if (end == v || d <= 0) return fallback;
  return std::max(1L, static_cast<long>(d + 0.5));
}

namespace {

// Seconds a 429 / 503 asks the client to wait (Retry-After: delta-seconds or an HTTP date).
std::optional<long> retry_after_seconds(const HttpResponse& r) {
  const std::string v = r.header("retry-after");
  if (v.empty()) return std::nullopt;
  char* end = nullptr;
  const long seconds = std::strtol(v.c_str(), &end, 10);
  if (end != v.c_str() && *end == '\0') return std::clamp(seconds, 0L, kMaxRetryAfterSeconds);
  const time_t when = curl_getdate(v.c_str(), nullptr);
  if (when < 0) return std::nullopt;
  return std::clamp(static_cast<long>(when - std::time(nullptr)), 0L, kMaxRetryAfterSeconds);
}

}  // namespace

HttpResponse perform_with_retries(const HttpRequest& request,
                                  const std::function<void(HttpRequest&)>& before_retry) {
  constexpr int kMaxRetries = 5;
  HttpRequest req = request;
  int wait_ms = retry_base_ms();
  for (int attempt = 0;; ++attempt) {
    std::string failure;
    long wait_now_ms = wait_ms;
    try {
      HttpResponse r = perform(req);
      r.attempts = attempt + 1;
      if (r.status != 429 && !(r.status >= 500 && r.status <= 599)) return r;
      if (attempt >= kMaxRetries) return r;
      failure = "HTTP " + std::to_string(r.status);
      if (auto after = retry_after_seconds(r)) {
        wait_now_ms = std::max(wait_now_ms, *after * 1000);
        failure += ", Retry-After " + std::to_string(*after) + " s";
      }
    } catch (const HubConnectionError& e) {
      if (attempt >= kMaxRetries)
        throw HubConnectionError(std::string(e.what()) + "; gave up after " + std::to_string(attempt + 1) + " attempts");
      failure = e.what();
    }
    logger().warn("hub: {} {} failed ({}); retrying in {} ms [{}/{}]", req.method, req.url, failure,
                  wait_now_ms, attempt + 1, kMaxRetries);
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_now_ms));
    wait_ms = std::min(wait_ms * 2, retry_base_ms() * 8);
    if (before_retry) before_retry(req);
  }
}

void raise_for_status(const HttpResponse& r, const std::string& what) {
  if (r.status >= 200 && r.status < 300) return;
  const std::string code = r.header("x-error-code");
  std::string server_message = r.header("x-error-message");
  if (server_message.size() > 300) server_message.resize(300);
  const std::string request_id = r.header("x-request-id");
  auto msg = [&](const std::string& head) {
    std::string m = std::to_string(r.status) + " " + head + ": " + what + " (url: " + r.url + ")";
    if (!server_message.empty()) m += ". Hub says: " + server_message;
    if (!request_id.empty()) m += " (Request ID: " + request_id + ")";
    if (r.attempts > 1) m += "; gave up after " + std::to_string(r.attempts) + " attempts";
    return m;
  };
  if (code == "RevisionNotFound") throw RevisionNotFoundError(msg("Revision Not Found"), r.status);
  if (code == "EntryNotFound") throw EntryNotFoundError(msg("Entry Not Found"), r.status);
  if (code == "GatedRepo")
    throw GatedRepoError(msg("Cannot access gated repo; request access on the Hub and pass a token"),
                         r.status);
  if (code == "RepoNotFound" || r.status == 401)
    throw RepositoryNotFoundError(
        msg("Repository Not Found; check the repo id and repo type, and if the repo is private "
            "make sure you are authenticated"),
        r.status);
  if (r.status == 403) throw HttpError(msg("Forbidden; the token has no access to this"), r.status);
  if (r.status == 404) throw HttpError(msg("Not Found"), r.status);
  if (r.status == 429) throw HttpError(msg("Too Many Requests (rate limited by the Hub)"), r.status);
  if (r.status >= 500) throw HttpError(msg("Server Error"), r.status);
  throw HttpError(msg("Client Error"), r.status);
}

std::string url_quote(const std::string& s, const std::string& safe) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        safe.find(static_cast<char>(c)) != std::string::npos) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string base64_encode(const std::string& data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string base64_decode(const std::string& data) {
  if (data.empty()) return {};
  if (data.size() % 4 != 0) throw InvalidInputError("invalid base64 (length not a multiple of 4)");
  std::string out(3 * data.size() / 4 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
  if (n < 0) throw InvalidInputError("invalid base64");
  size_t len = static_cast<size_t>(n);
  if (data[data.size() - 1] == '=') --len;
  if (data[data.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

std::string url_origin(const std::string& url) {
  CURLU* h = curl_url();
  std::string out;
  if (curl_url_set(h, CURLUPART_URL, url.c_str(), 0) == CURLUE_OK) {
    char* scheme = nullptr;
    char* host = nullptr;
    char* port = nullptr;
    curl_url_get(h, CURLUPART_SCHEME, &scheme, 0);
    curl_url_get(h, CURLUPART_HOST, &host, 0);
    curl_url_get(h, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
    if (scheme && host) out = lower(std::string(scheme) + "://" + host + ":" + (port ? port : ""));
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
  }
  curl_url_cleanup(h);
  return out;
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1)
    throw HubError("OpenSSL: cannot initialise sha256");
}
Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }
void Sha256::update(const void* data, size_t size) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size);
}
std::string Sha256::hex_digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &len);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IOError("cannot read " + path);
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw IOError("error reading " + path);
  return h.hex_digest();
}

}  // namespace plugformer::hub::detail
