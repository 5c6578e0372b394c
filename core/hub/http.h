// Internal: libcurl HTTP client of the Hub (no public API). Redirects are followed by hand so
// that the Authorization header is dropped when a redirect leaves the host (as huggingface_hub
// does for LFS CDN URLs); TLS verification is always on.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace plugformer::hub::detail {

enum class Redirects { kNone, kRelativeOnly, kAll };

struct HttpResponse;

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;  // besides auth and user agent
  std::optional<std::string> token;                          // sent as Bearer to the original host
  std::string body;                                          // for POST/PUT when no upload file
  // Stream a slice of a file as the body instead (PUT of LFS objects).
  std::string upload_file;
  uint64_t upload_offset = 0;
  uint64_t upload_length = 0;
  Redirects redirects = Redirects::kAll;
  long total_timeout_s = 0;   // whole request (0 = none)
  long stall_timeout_s = 10;  // abort when no byte moved for this long
  // Called once when a 2xx body starts (before the first on_data), with the response's status,
  // headers and URL; return false to drop the response (perform returns it with `rejected`
  // set, without throwing).
  std::function<bool(const HttpResponse& response)> on_start;
  // Body sink for 2xx responses; return false to abort. Without it the body is kept in memory.
  std::function<bool(const char* data, size_t size)> on_data;
  // Progress of the body: (bytes received so far in this response, Content-Length or 0).
  std::function<void(uint64_t, uint64_t)> on_progress;
};

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-case names, last value wins
  std::string body;                            // error bodies, or 2xx bodies without on_data
  std::string url;                             // the final URL after redirects
  bool rejected = false;                       // on_start refused the body
  int attempts = 1;                            // requests perform_with_retries made
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
  bool has_header(const std::string& lower_name) const { return headers.count(lower_name) > 0; }
};

// One attempt (plus redirects). Transport failures throw HubConnectionError (message names the
// URL and curl's reason, never the token). Does not throw on HTTP status codes.
HttpResponse perform(const HttpRequest& request);

// Retries transport failures, 429 and 5xx with exponential backoff (huggingface_hub's
// http_backoff: 5 retries, 1 s doubling up to 8 s; the base can be lowered with
// PLUGFORMER_HUB_RETRY_BASE_MS for tests), waiting at least what a Retry-After header asks
// (up to 5 minutes). `before_retry` runs before each new attempt.
HttpResponse perform_with_retries(const HttpRequest& request,
                                  const std::function<void(HttpRequest&)>& before_retry = {});

// huggingface_hub.hf_raise_for_status: throws the typed error for a non-2xx response.
// `what` names the object ("file config.json of repo org/name at revision main").
void raise_for_status(const HttpResponse& response, const std::string& what);

std::string url_quote(const std::string& s, const std::string& safe = "/");
std::string base64_encode(const std::string& data);
std::string base64_decode(const std::string& data);
// "scheme://host:port" of a URL, lower-cased ("" if unparsable).
std::string url_origin(const std::string& url);
int retry_base_ms();
// Reads an integer seconds value from the environment, or `fallback`.
long env_seconds(const char* name, long fallback);

// Incremental SHA-256 (OpenSSL EVP).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t size);
  std::string hex_digest();  // finalises
 private:
  void* ctx_;
};
// sha256 of the bytes of a file (throws IOError).
std::string sha256_file(const std::string& path);

}  // namespace plugformer::hub::detail
