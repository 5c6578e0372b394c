// hf_hub_download, cached_file, snapshot_download: huggingface_hub's file_download.py and
// _snapshot_download.py semantics over libcurl.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "hub/http.h"
#include "hub/internal.h"
#include "plugformer/error.h"
#include "plugformer/hub.h"
#include "plugformer/log.h"

namespace fs = std::filesystem;

namespace plugformer::hub {

using detail::HttpRequest;
using detail::HttpResponse;

namespace {

// Exclusive lock on a lock file (flock, as Python's filelock on Unix): serialises processes and
// threads downloading the same blob.
class FileLock {
 public:
  explicit FileLock(const fs::path& path) : path_(path) {
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (ec) throw IOError("cannot create the lock folder " + path.parent_path().string() + ": " + ec.message());
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw IOError("cannot open lock file " + path.string() + ": " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      logger().info("hub: waiting for lock {} (another process is downloading this file)", path.string());
      while (::flock(fd_, LOCK_EX) != 0) {
        if (errno != EINTR) {
          ::close(fd_);
          throw IOError("cannot lock " + path.string() + ": " + std::strerror(errno));
        }
      }
    }
  }
  ~FileLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  fs::path path_;
  int fd_ = -1;
};

std::string strip_etag(std::string etag) {
  if (etag.rfind("W/", 0) == 0) etag = etag.substr(2);
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
  return etag;
}

bool is_sha256(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// An etag is used as a file name in blobs/: refuse anything a hostile server could use to
// escape (separators, dots only, control characters).
void validate_etag(const std::string& etag, const std::string& what) {
  bool ok = !etag.empty() && etag.size() <= 128 && etag != "." && etag != "..";
  for (char c : etag)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) ok = false;
  if (!ok) throw HubError("the Hub sent an invalid ETag for " + what + "; refusing to use it as a cache file name");
}

// A name beside `path` unique to this process and call, so concurrent writers never share a temp file.
fs::path unique_temp_name(const fs::path& path) {
  static std::atomic<unsigned> counter{0};
  fs::path tmp = path;
  tmp += ".tmp" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  return tmp;
}

void write_text_if_changed(const fs::path& path, const std::string& text) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    std::ifstream in(path);
    std::string current((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (current == text) return;
  }
  fs::create_directories(path.parent_path());
  const fs::path tmp = unique_temp_name(path);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) {
      const int error = errno;
      fs::remove(tmp, ec);
      throw IOError("cannot write " + path.string() + ": " + std::strerror(error));
    }
  }
  ec.clear();
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw IOError("cannot write " + path.string() + ": " + ec.message());
  }
}

// refs/<revision> = commit, as huggingface_hub writes it (no newline).
void cache_commit_hash(const fs::path& storage, const std::string& revision, const std::string& commit) {
  if (revision == commit) return;
  write_text_if_changed(storage / "refs" / revision, commit);
}

void touch(const fs::path& path) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::app);
}

// Relative symlink pointer -> blob (a copy where the filesystem has no symlinks). A link already
// there to the same blob is kept, not removed and made again: another process may have just made
// it and be reading through it. Anything else under the name is replaced. (No temp link renamed
// over it: a kill between the two would leave a stray name in the snapshot.)
void link_pointer(const fs::path& blob, const fs::path& pointer) {
  std::error_code ec;
  fs::create_directories(pointer.parent_path());
  const fs::path rel = blob.lexically_relative(pointer.parent_path());
  for (int attempt = 0; attempt < 3; ++attempt) {
    fs::create_symlink(rel, pointer, ec);
    if (!ec || ec != std::errc::file_exists) break;
    std::error_code read_ec;
    if (fs::read_symlink(pointer, read_ec) == rel && !read_ec) return;
    fs::remove(pointer, read_ec);
  }
  if (!ec) return;
  if (ec != std::errc::operation_not_permitted && ec != std::errc::operation_not_supported)
    throw IOError("cannot link " + pointer.string() + " to its blob: " + ec.message());
  logger().debug("hub: symlink {} failed ({}); copying instead", pointer.string(), ec.message());
  // Copied beside the pointer and renamed, so a failed copy never shows under the file's name.
  const fs::path tmp = unique_temp_name(pointer);
  fs::copy_file(blob, tmp, fs::copy_options::overwrite_existing, ec);
  if (!ec) fs::rename(tmp, pointer, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw IOError("cannot copy " + blob.string() + " to " + pointer.string() + ": " + ec.message());
  }
}

std::string describe(const std::string& repo_id, const std::string& file, const std::string& revision,
                     const std::string& repo_type) {
  std::string d = "file '" + file + "' of " + (repo_type == "model" ? std::string() : repo_type + " ") +
                  "repo '" + repo_id + "' at revision '" + revision + "'";
  return d;
}

// The pointer is returned only if it (after symlinks) stays inside the repo folder.
fs::path checked_pointer(const fs::path& pointer, const fs::path& storage) {
  if (!detail::stays_inside(pointer, storage))
    throw HubError("cached file " + pointer.string() + " resolves outside the cache folder " +
                   storage.string() + "; refusing to use it");
  return pointer;
}

bool exists_no_follow_ok(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);  // follows symlinks: a broken link is "absent"
}

class ProgressBar {
 public:
  ProgressBar(std::string name, uint64_t total, uint64_t initial)
      : name_(std::move(name)), total_(total), start_(std::chrono::steady_clock::now()), initial_(initial) {
    const char* off = std::getenv("HF_HUB_DISABLE_PROGRESS_BARS");
    enabled_ = ::isatty(STDERR_FILENO) && !(off && *off && std::string(off) != "0");
  }
  void update(uint64_t done) {
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? static_cast<double>(done - std::min(done, initial_)) / secs / 1e6 : 0.0;
    if (total_ > 0)
      std::fprintf(stderr, "\r%s: %3d%% %.1f/%.1f MB %.1f MB/s", name_.c_str(),
                   static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total_)),
                   static_cast<double>(done) / 1e6, static_cast<double>(total_) / 1e6, rate);
    else
      std::fprintf(stderr, "\r%s: %.1f MB %.1f MB/s", name_.c_str(), static_cast<double>(done) / 1e6, rate);
    std::fflush(stderr);
    drawn_ = true;
  }
  ~ProgressBar() {
    if (drawn_) std::fprintf(stderr, "\n");
  }

 private:
  std::string name_;
  uint64_t total_;
  std::chrono::steady_clock::time_point start_, last_{};
  uint64_t initial_;
  bool enabled_ = false;
  bool drawn_ = false;
};

bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// sha256 of a download as it streams in. For large files the hashing runs on a worker thread
// fed with copies of the received buffers, so it overlaps the transfer instead of adding to it.
class StreamHasher {
 public:
  explicit StreamHasher(bool async) : async_(async) {
    if (async_) worker_ = std::thread([this] { run(); });
  }
  ~StreamHasher() { stop(); }
  StreamHasher(const StreamHasher&) = delete;
  StreamHasher& operator=(const StreamHasher&) = delete;

  void update(const char* data, size_t size) {
    if (!async_) {
      sha_->update(data, size);
      return;
    }
    while (size > 0) {
      if (pending_.capacity() < kChunk) take_buffer();
      size_t n = std::min(size, kChunk - pending_.size());
      pending_.insert(pending_.end(), data, data + n);
      data += n;
      size -= n;
      if (pending_.size() == kChunk) flush();
    }
  }
  // Forget everything hashed so far (the server restarted the body from byte 0).
  void reset() {
    if (!async_) {
      sha_ = std::make_unique<detail::Sha256>();
      return;
    }
    pending_.clear();
    push(Item{true, {}});
  }
  std::string hex_digest() {
    if (async_) {
      flush();
      stop();
    }
    return sha_->hex_digest();
  }

 private:
  static constexpr size_t kChunk = 1 << 20;
  static constexpr size_t kMaxQueued = 64;  // at most 64 MiB waiting
  struct Item {
    bool reset = false;
    std::vector<char> data;
  };
  void flush() {
    if (pending_.empty()) return;
    push(Item{false, std::move(pending_)});
    pending_ = {};
  }
  // Buffers go round between the two threads instead of being allocated (and page-faulted)
  // for every MiB.
  void take_buffer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        pending_ = std::move(free_.back());
        free_.pop_back();
        pending_.clear();
        return;
      }
    }
    pending_.reserve(kChunk);
  }
  void push(Item item) {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return queue_.size() < kMaxQueued; });
    queue_.push_back(std::move(item));
    ready_.notify_one();
  }
  void run() {
    for (;;) {
      Item item;
      {
        std::unique_lock<std::mutex> lock(mu_);
        ready_.wait(lock, [&] { return !queue_.empty() || done_; });
        if (queue_.empty()) return;
        item = std::move(queue_.front());
        queue_.pop_front();
        space_.notify_one();
      }
      if (item.reset) sha_ = std::make_unique<detail::Sha256>();
      else sha_->update(item.data.data(), item.data.size());
      if (item.data.capacity() >= kChunk) {
        std::lock_guard<std::mutex> lock(mu_);
        free_.push_back(std::move(item.data));
      }
    }
  }
  void stop() {
    if (!worker_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      ready_.notify_one();
    }
    worker_.join();
  }

  bool async_;
  std::unique_ptr<detail::Sha256> sha_ = std::make_unique<detail::Sha256>();
  std::vector<char> pending_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<Item> queue_;
  std::vector<std::vector<char>> free_;
  bool done_ = false;
  std::thread worker_;
};

struct DownloadTarget {
  std::string url;
  std::optional<std::string> token;  // only when the URL is on the Hub's host
  std::optional<uint64_t> expected_size;
  std::optional<std::string> expected_sha256;
  std::string display_name;
  std::string what;
  // A response from the Hub itself (not a CDN) that names an ETag must name this one: the HEAD
  // announced it, and the blob is stored under it.
  std::string hub_origin;
  std::string expected_etag;
};

// Downloads to `incomplete` (resuming what is there), checks size and sha256, then renames to
// `destination`. A killed run leaves only the .incomplete file, never a blob.
void download_to_tmp_and_move(const fs::path& incomplete, const fs::path& destination,
                              const DownloadTarget& target, bool force_download) {
  std::error_code ec;
  if (fs::exists(destination, ec) && !force_download) return;
  if (force_download) fs::remove(incomplete, ec);
  fs::create_directories(destination.parent_path());

  int fd = ::open(incomplete.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd < 0) throw IOError("cannot create " + incomplete.string() + ": " + std::strerror(errno));
  struct FdGuard {
    int fd;
    ~FdGuard() { ::close(fd); }
  } guard{fd};

  auto current_size = [&]() -> uint64_t {
    struct stat st {};
    return ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  };
  uint64_t resume = current_size();
  if (target.expected_size && resume > *target.expected_size) {
    if (::ftruncate(fd, 0) != 0) throw IOError("cannot truncate " + incomplete.string());
    resume = 0;
  }
  std::unique_ptr<StreamHasher> hash;
  if (target.expected_sha256) {
    hash = std::make_unique<StreamHasher>(target.expected_size.value_or(0) >= (16u << 20));
    if (resume > 0) {
      std::ifstream in(incomplete, std::ios::binary);
      std::vector<char> buf(1 << 20);
      uint64_t left = resume;
      while (left > 0 && in) {
        in.read(buf.data(), static_cast<std::streamsize>(std::min<uint64_t>(left, buf.size())));
        auto got = static_cast<uint64_t>(in.gcount());
        if (got == 0) break;
        hash->update(buf.data(), got);
        left -= got;
      }
    }
  }
  if (resume > 0) logger().info("hub: resuming download of {} from byte {}", target.display_name, resume);

  const bool complete_already = target.expected_size && resume == *target.expected_size && resume > 0;
  if (!complete_already) {
    ProgressBar bar(target.display_name, target.expected_size.value_or(0), resume);
    uint64_t range_start = resume;
    auto set_range = [&](HttpRequest& r) {
      r.headers = {{"Accept-Encoding", "identity"}};
      if (range_start > 0) r.headers.emplace_back("Range", "bytes=" + std::to_string(range_start) + "-");
    };
    auto restart_from_zero = [&] {
      if (::ftruncate(fd, 0) != 0) throw IOError("cannot truncate " + incomplete.string());
      if (hash) hash->reset();
      range_start = 0;
    };
    HttpRequest req;
    req.method = "GET";
    req.url = target.url;
    req.token = target.token;
    req.redirects = detail::Redirects::kAll;
    req.stall_timeout_s = detail::env_seconds("HF_HUB_DOWNLOAD_TIMEOUT", 10);
    set_range(req);
    // A 200 answer to a Range request carries the whole file: start over. A 206 must start
    // exactly where the file stands, or it is refused and the download restarts from zero.
    bool range_mismatch = false;
    std::string changed_etag;
    req.on_start = [&](const HttpResponse& r) {
      if (!target.expected_etag.empty() && detail::url_origin(r.url) == target.hub_origin) {
        const std::string etag = strip_etag(r.has_header("x-linked-etag") ? r.header("x-linked-etag") : r.header("etag"));
        if (!etag.empty() && etag != target.expected_etag) {
          changed_etag = etag;
          return false;
        }
      }
      const long status = r.status;
      if (status == 200 && range_start > 0) {
        logger().debug("hub: server ignored the Range request for {}; restarting", target.display_name);
        restart_from_zero();
      } else if (status == 206) {
        unsigned long long start = ~0ull;
        if (r.has_header("content-range")) std::sscanf(r.header("content-range").c_str(), "bytes %llu-", &start);
        if (start != range_start) {
          logger().warn("hub: server answered a Range request for {} from byte {} instead of {}; restarting",
                        target.display_name, start, range_start);
          range_mismatch = true;
          return false;
        }
      }
      return true;
    };
    int write_errno = 0;
    req.on_data = [&](const char* data, size_t size) {
      if (!write_all(fd, data, size)) {
        write_errno = errno;
        return false;
      }
      if (hash) hash->update(data, size);
      return true;
    };
    req.on_progress = [&](uint64_t got, uint64_t) { bar.update(range_start + got); };
    auto before_retry = [&](HttpRequest& r) {
      range_start = current_size();  // resume after a cut connection
      set_range(r);
    };
    auto fetch = [&] {
      try {
        HttpResponse r = detail::perform_with_retries(req, before_retry);
        if (!changed_etag.empty())
          throw HubError(target.what + " changed on the Hub during the download: the metadata request announced ETag " +
                         target.expected_etag + ", the download answered " + changed_etag +
                         "; nothing was stored, run again to get the current version");
        return r;
      } catch (const IOError&) {
        if (write_errno == 0) throw;
        // Disk full, quota, file size limit: the bytes written so far stay for the next run.
        throw IOError("cannot write " + incomplete.string() + ": " + std::strerror(write_errno) +
                      "; the partial download is kept and resumed next time (free some space, or point "
                      "HF_HUB_CACHE / HF_HOME at a larger disk)");
      }
    };
    HttpResponse resp = fetch();
    if (resp.rejected && range_mismatch) {
      range_mismatch = false;
      restart_from_zero();
      set_range(req);
      resp = fetch();
      if (resp.rejected) throw HubError("the server keeps answering with the wrong byte range for " + target.what);
    }
    if (resp.status == 416 && range_start > 0) {
      // Range not satisfiable: what we have is not a prefix of this file. Start over once.
      restart_from_zero();
      set_range(req);
      resp = fetch();
    }
    detail::raise_for_status(resp, target.what);
  }

  const uint64_t final_size = current_size();
  if (target.expected_size && final_size != *target.expected_size) {
    if (final_size > *target.expected_size) fs::remove(incomplete, ec);
    throw HubError("consistency check failed for " + target.what + ": the file should be " +
                   std::to_string(*target.expected_size) + " bytes but " + std::to_string(final_size) +
                   " were received; the partial download is kept as " + incomplete.string() +
                   " and resumed next time (or use force_download)");
  }
  if (hash) {
    std::string got = hash->hex_digest();
    if (got != *target.expected_sha256) {
      fs::remove(incomplete, ec);
      throw HubError("sha256 mismatch for " + target.what + ": expected " + *target.expected_sha256 +
                     ", got " + got + "; the corrupt download was deleted");
    }
  }
  fs::rename(incomplete, destination);
}

// The resolve URL of `url` at `commit` instead of `revision`.
std::string pin_to_commit(const std::string& url, const std::string& revision, const std::string& commit) {
  const std::string from = "/resolve/" + detail::url_quote(revision, "") + "/";
  const auto at = url.find(from);
  if (at == std::string::npos) return url;
  return url.substr(0, at) + "/resolve/" + commit + "/" + url.substr(at + from.size());
}

// HEAD of a file, relative redirects followed (renamed repos), absolute ones reported.
struct NoExistMarker {
  fs::path storage;
  std::string revision;
  std::string relative;
};

FileMetadata metadata_request(const std::string& url, const std::optional<std::string>& token,
                              const std::string& what, const NoExistMarker* marker = nullptr) {
  HttpRequest req;
  req.method = "HEAD";
  req.url = url;
  req.token = token;
  req.headers = {{"Accept-Encoding", "identity"}};
  req.redirects = detail::Redirects::kRelativeOnly;
  req.total_timeout_s = detail::env_seconds("HF_HUB_ETAG_TIMEOUT", 10);
  HttpResponse r = detail::perform_with_retries(req);
  if (marker && r.status == 404 && r.header("x-error-code") == "EntryNotFound") {
    // Remember the absence under the commit the Hub named (huggingface_hub's .no_exist).
    const std::string commit = r.header("x-repo-commit");
    if (is_commit_hash(commit)) {
      try {
        touch(marker->storage / ".no_exist" / commit / marker->relative);
        cache_commit_hash(marker->storage, marker->revision, commit);
      } catch (const std::exception& e) {
        logger().debug("hub: cannot write .no_exist marker: {}", e.what());
      }
    }
  }
  if (r.status < 300 || r.status > 399) detail::raise_for_status(r, what);
  FileMetadata m;
  m.commit_hash = r.header("x-repo-commit");
  m.etag = strip_etag(r.has_header("x-linked-etag") ? r.header("x-linked-etag") : r.header("etag"));
  m.location = r.has_header("location") ? r.header("location") : r.url;
  if (!m.location.empty() && m.location.find("://") == std::string::npos) {
    // Should not happen (relative redirects were followed) but keep it absolute.
    m.location = r.url;
  }
  std::string size = r.has_header("x-linked-size") ? r.header("x-linked-size") : r.header("content-length");
  if (!size.empty()) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(size.c_str(), &end, 10);
    if (end && *end == '\0') m.size = v;
  }
  return m;
}

struct Target {
  std::string repo_id, relative, revision, repo_type;
  fs::path cache, storage, locks;
  std::string what;
};

Target make_target(const std::string& repo_id, const std::string& filename, const HubOptions& o) {
  validate_repo_id(repo_id);
  validate_repo_path(filename, "filename");
  if (!o.subfolder.empty()) validate_repo_path(o.subfolder, "subfolder");
  validate_revision(o.revision);
  Target t;
  t.repo_id = repo_id;
  t.relative = o.subfolder.empty() ? filename : o.subfolder + "/" + filename;
  t.revision = o.revision;
  t.repo_type = o.repo_type;
  t.cache = detail::cache_dir_of(o.cache_dir);
  const std::string folder = repo_folder_name(repo_id, o.repo_type);
  t.storage = t.cache / folder;
  t.locks = t.cache / ".locks" / folder;
  t.what = describe(repo_id, t.relative, o.revision, o.repo_type);
  return t;
}

}  // namespace

FileMetadata get_hf_file_metadata(const std::string& repo_id, const std::string& filename,
                                  const HubOptions& options) {
  Target t = make_target(repo_id, filename, options);
  HubOptions o = options;
  return metadata_request(hf_hub_url(repo_id, filename, o), resolve_token(options.token), t.what);
}

CacheLookup try_to_load_from_cache(const std::string& repo_id, const std::string& filename,
                                   const HubOptions& options) {
  Target t = make_target(repo_id, filename, options);
  CacheLookup out;
  std::error_code ec;
  if (!fs::is_directory(t.storage, ec)) return out;
  std::string commit = t.revision;
  if (auto ref = detail::read_ref(t.storage, t.revision)) commit = *ref;
  if (!is_commit_hash(commit)) return out;
  if (fs::is_regular_file(t.storage / ".no_exist" / commit / t.relative, ec)) {
    out.kind = CacheLookup::Kind::kNoExist;
    return out;
  }
  fs::path pointer = t.storage / "snapshots" / commit / t.relative;
  if (fs::is_regular_file(pointer, ec)) {
    out.kind = CacheLookup::Kind::kFound;
    out.path = checked_pointer(pointer, t.storage);
  }
  return out;
}

namespace {

// The cache's own file operations (directories, links, renames) fail as IOError, e.g. on a full disk.
template <class Body>
fs::path filesystem_errors_as_io_errors(Body&& body) {
  try {
    return body();
  } catch (const fs::filesystem_error& e) {
    throw IOError(std::string("hub cache: ") + e.what());
  }
}

fs::path download_file(const std::string& repo_id, const std::string& filename, const HubOptions& options) {
  Target t = make_target(repo_id, filename, options);
  const bool offline = options.local_files_only || offline_mode();

  // A commit hash already in the cache needs no network at all.
  if (is_commit_hash(t.revision) && !options.force_download) {
    fs::path pointer = t.storage / "snapshots" / t.revision / t.relative;
    if (exists_no_follow_ok(pointer)) return checked_pointer(pointer, t.storage);
  }

  const std::optional<std::string> token = resolve_token(options.token);
  const std::string url = hf_hub_url(repo_id, filename, options);
  std::optional<FileMetadata> meta;
  std::exception_ptr head_error;
  bool head_error_is_auth = false;
  if (!offline) {
    try {
      NoExistMarker marker{t.storage, t.revision, t.relative};
      meta = metadata_request(url, token, t.what, &marker);
    } catch (const EntryNotFoundError&) {
      throw;  // the .no_exist marker was written by metadata_request
    } catch (const RevisionNotFoundError&) {
      throw;
    } catch (const RepositoryNotFoundError&) {
      head_error = std::current_exception();
      head_error_is_auth = true;
    } catch (const GatedRepoError&) {
      head_error = std::current_exception();
      head_error_is_auth = true;
    } catch (const HttpError&) {
      head_error = std::current_exception();
    } catch (const HubConnectionError&) {
      head_error = std::current_exception();
    }
  }

  if (!meta) {
    // No metadata: the cache is the only source.
    if (!options.force_download) {
      std::optional<std::string> commit;
      if (is_commit_hash(t.revision)) commit = t.revision;
      else commit = detail::read_ref(t.storage, t.revision);
      if (commit) {
        fs::path pointer = t.storage / "snapshots" / *commit / t.relative;
        if (exists_no_follow_ok(pointer)) return checked_pointer(pointer, t.storage);
      }
    }
    if (offline) {
      if (options.force_download)
        throw LocalEntryNotFoundError("cannot use force_download together with offline mode (" + t.what + ")");
      throw LocalEntryNotFoundError(
          "cannot find " + t.what + " in the local cache " + t.cache.string() +
          ", and outgoing traffic has been disabled (HF_HUB_OFFLINE=1 or local_files_only). "
          "Download it once online, or unset HF_HUB_OFFLINE.");
    }
    if (options.force_download || head_error_is_auth) std::rethrow_exception(head_error);
    try {
      std::rethrow_exception(head_error);
    } catch (const std::exception& e) {
      throw LocalEntryNotFoundError("an error happened while trying to locate " + t.what +
                                    " on the Hub, and it is not in the local cache " + t.cache.string() +
                                    ": " + e.what());
    }
  }

  if (!is_commit_hash(meta->commit_hash))
    throw HubError("the server did not return a valid commit hash (X-Repo-Commit) for " + t.what +
                   "; is HF_ENDPOINT (" + detail::endpoint_of(options.endpoint) + ") a Hugging Face Hub?");
  if (meta->etag.empty())
    throw HubError("the server did not return an ETag for " + t.what +
                   "; is HF_ENDPOINT a Hugging Face Hub?");
  validate_etag(meta->etag, t.what);
  if (!meta->size)
    throw HubError("the server did not return the size of " + t.what);

  cache_commit_hash(t.storage, t.revision, meta->commit_hash);
  const fs::path pointer = t.storage / "snapshots" / meta->commit_hash / t.relative;
  const fs::path blob = t.storage / "blobs" / meta->etag;
  std::error_code ec;
  if (!options.force_download) {
    if (exists_no_follow_ok(pointer)) return checked_pointer(pointer, t.storage);
    if (fs::is_regular_file(blob, ec)) {
      link_pointer(blob, pointer);
      return checked_pointer(pointer, t.storage);
    }
  }

  DownloadTarget dl;
  dl.url = meta->location.empty() ? url : meta->location;
  dl.hub_origin = detail::url_origin(url);
  // The token only travels to the Hub itself, never to a CDN the Hub redirects to.
  if (detail::url_origin(dl.url) == dl.hub_origin) {
    dl.token = token;
    // Ask for the commit the HEAD named, not the branch: a push between the two requests
    // cannot change the bytes (a CDN URL is pinned the same way, by the object's sha256).
    dl.url = pin_to_commit(dl.url, t.revision, meta->commit_hash);
    dl.expected_etag = meta->etag;
  }
  dl.expected_size = meta->size;
  if (is_sha256(meta->etag)) dl.expected_sha256 = meta->etag;  // LFS: the etag is the sha256
  dl.display_name = t.relative;
  dl.what = t.what;

  fs::create_directories(blob.parent_path());
  {
    FileLock lock(t.locks / (meta->etag + ".lock"));
    fs::path incomplete = blob;
    incomplete += ".incomplete";
    download_to_tmp_and_move(incomplete, blob, dl, options.force_download);
    if (options.force_download || !exists_no_follow_ok(pointer)) link_pointer(blob, pointer);
  }
  logger().debug("hub: {} -> {}", t.what, pointer.string());
  return checked_pointer(pointer, t.storage);
}

}  // namespace

fs::path hf_hub_download(const std::string& repo_id, const std::string& filename, const HubOptions& options) {
  return filesystem_errors_as_io_errors([&] { return download_file(repo_id, filename, options); });
}

std::optional<fs::path> cached_file(const std::string& path_or_repo_id, const std::string& filename,
                                    const HubOptions& options, bool optional) {
  validate_repo_path(filename, "filename");
  if (!options.subfolder.empty()) validate_repo_path(options.subfolder, "subfolder");
  const std::string full = options.subfolder.empty() ? filename : options.subfolder + "/" + filename;
  std::error_code ec;
  if (!path_or_repo_id.empty() && fs::is_directory(path_or_repo_id, ec)) {
    fs::path p = fs::path(path_or_repo_id) / full;
    if (fs::is_regular_file(p, ec)) return p;
    if (optional) return std::nullopt;
    throw FileNotFoundError(path_or_repo_id + " does not appear to have a file named " + full);
  }
  try {
    validate_repo_id(path_or_repo_id);
  } catch (const InvalidInputError& e) {
    throw FileNotFoundError("'" + path_or_repo_id + "' is neither an existing local folder nor a valid repo id on the Hub (" +
                            e.what() + ")");
  }
  const bool offline = options.local_files_only || offline_mode();
  if ((is_commit_hash(options.revision) || offline) && !options.force_download) {
    CacheLookup hit = try_to_load_from_cache(path_or_repo_id, filename, options);
    if (hit.kind == CacheLookup::Kind::kFound) return hit.path;
    if (hit.kind == CacheLookup::Kind::kNoExist) {
      if (optional) return std::nullopt;
      throw EntryNotFoundError("could not locate " + full + " inside " + path_or_repo_id + " at revision '" +
                               options.revision + "' (the cache records it as absent)", 404);
    }
  }
  try {
    return hf_hub_download(path_or_repo_id, filename, options);
  } catch (const EntryNotFoundError& e) {
    if (optional) return std::nullopt;
    throw EntryNotFoundError(path_or_repo_id + " does not appear to have a file named " + full +
                             " at revision '" + options.revision + "'. Checkout '" +
                             detail::endpoint_of(options.endpoint) + "/" + path_or_repo_id + "/tree/" +
                             options.revision + "' for available files. (" + e.what() + ")", e.status());
  } catch (const LocalEntryNotFoundError&) {
    if (optional) return std::nullopt;
    throw;
  } catch (const RevisionNotFoundError& e) {
    throw RevisionNotFoundError("'" + options.revision + "' is not a valid git identifier (branch name, tag name or "
                                "commit id) that exists for repo '" + path_or_repo_id + "'. (" + e.what() + ")",
                                e.status());
  } catch (const RepositoryNotFoundError& e) {
    throw RepositoryNotFoundError("'" + path_or_repo_id + "' is not a local folder and is not a valid repo id on " +
                                  detail::endpoint_of(options.endpoint) +
                                  ". If this is a private repository, pass a token or set HF_TOKEN. (" + e.what() + ")",
                                  e.status());
  }
}

RepoInfo repo_info(const std::string& repo_id, const HubOptions& options) {
  validate_repo_id(repo_id);
  validate_revision(options.revision);
  HttpRequest req;
  req.method = "GET";
  req.url = detail::endpoint_of(options.endpoint) + "/api/" + detail::repo_type_api_plural(options.repo_type) + "/" +
            repo_id + "/revision/" + detail::url_quote(options.revision, "");
  req.token = resolve_token(options.token);
  req.total_timeout_s = 60;
  HttpResponse r = detail::perform_with_retries(req);
  const std::string what = options.repo_type + " repo '" + repo_id + "' at revision '" + options.revision + "'";
  detail::raise_for_status(r, what);
  RepoInfo info;
  try {
    auto j = nlohmann::json::parse(r.body);
    info.id = j.value("id", repo_id);
    info.sha = j.value("sha", "");
    info.is_private = j.value("private", false);
    if (j.contains("gated")) info.gated = j["gated"].is_string() || (j["gated"].is_boolean() && j["gated"].get<bool>());
    if (j.contains("siblings") && j["siblings"].is_array())
      for (const auto& s : j["siblings"])
        if (s.is_object() && s.contains("rfilename") && s["rfilename"].is_string())
          info.files.push_back(s["rfilename"].get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    throw HubError("invalid JSON from the Hub for " + what + ": " + e.what());
  }
  return info;
}

namespace {

bool fnmatch_impl(const char* p, const char* s) {
  while (*p) {
    if (*p == '*') {
      while (*p == '*') ++p;
      if (!*p) return true;
      for (const char* t = s;; ++t) {
        if (fnmatch_impl(p, t)) return true;
        if (!*t) return false;
      }
    }
    if (!*s) return false;
    if (*p == '?') {
      ++p;
      ++s;
      continue;
    }
    if (*p == '[') {
      const char* q = p + 1;
      bool negate = false;
      if (*q == '!') {
        negate = true;
        ++q;
      }
      bool matched = false;
      const char* start = q;
      while (*q && (*q != ']' || q == start)) {
        if (q[1] == '-' && q[2] && q[2] != ']') {
          if (*s >= q[0] && *s <= q[2]) matched = true;
          q += 3;
        } else {
          if (*s == *q) matched = true;
          ++q;
        }
      }
      if (*q != ']') {  // no closing bracket: a literal '['
        if (*s != '[') return false;
        ++p;
        ++s;
        continue;
      }
      if (matched == negate) return false;
      p = q + 1;
      ++s;
      continue;
    }
    if (*p != *s) return false;
    ++p;
    ++s;
  }
  return *s == '\0';
}

}  // namespace

bool match_pattern(const std::string& pattern, const std::string& path) {
  std::string p = pattern;
  if (!p.empty() && p.back() == '/') p += '*';
  return fnmatch_impl(p.c_str(), path.c_str());
}

namespace {

fs::path download_snapshot(const std::string& repo_id, const HubOptions& options,
                           const std::vector<std::string>& allow_patterns,
                           const std::vector<std::string>& ignore_patterns) {
  validate_repo_id(repo_id);
  validate_revision(options.revision);
  const fs::path cache = detail::cache_dir_of(options.cache_dir);
  const fs::path storage = cache / repo_folder_name(repo_id, options.repo_type);
  const bool offline = options.local_files_only || offline_mode();

  std::optional<RepoInfo> info;
  std::exception_ptr api_error;
  bool api_error_is_auth = false;
  if (!offline) {
    try {
      info = repo_info(repo_id, options);
    } catch (const RevisionNotFoundError&) {
      throw;
    } catch (const RepositoryNotFoundError&) {
      api_error = std::current_exception();
      api_error_is_auth = true;
    } catch (const GatedRepoError&) {
      api_error = std::current_exception();
      api_error_is_auth = true;
    } catch (const HttpError&) {
      api_error = std::current_exception();
    } catch (const HubConnectionError&) {
      api_error = std::current_exception();
    }
  }
  if (!info) {
    std::optional<std::string> commit;
    if (is_commit_hash(options.revision)) commit = options.revision;
    else commit = detail::read_ref(storage, options.revision);
    std::error_code ec;
    if (commit && fs::is_directory(storage / "snapshots" / *commit, ec)) {
      fs::path folder = storage / "snapshots" / *commit;
      for (auto it = fs::recursive_directory_iterator(folder, ec); it != fs::recursive_directory_iterator(); ++it) {
        if (it->is_symlink(ec)) checked_pointer(it->path(), storage);
      }
      return folder;
    }
    if (offline)
      throw LocalEntryNotFoundError("cannot find a cached snapshot of repo '" + repo_id + "' at revision '" +
                                    options.revision + "' in " + cache.string() +
                                    ", and outgoing traffic has been disabled (HF_HUB_OFFLINE=1 or local_files_only)");
    if (api_error_is_auth) std::rethrow_exception(api_error);
    try {
      std::rethrow_exception(api_error);
    } catch (const std::exception& e) {
      throw LocalEntryNotFoundError("an error happened while listing repo '" + repo_id + "' at revision '" +
                                    options.revision + "' on the Hub, and no snapshot is cached: " + e.what());
    }
  }
  if (!is_commit_hash(info->sha))
    throw HubError("the Hub returned no valid commit sha for repo '" + repo_id + "' at revision '" + options.revision + "'");
  cache_commit_hash(storage, options.revision, info->sha);
  const fs::path folder = storage / "snapshots" / info->sha;
  fs::create_directories(folder);

  HubOptions per_file = options;
  per_file.revision = info->sha;
  per_file.subfolder.clear();
  size_t n = 0;
  for (const std::string& file : info->files) {
    if (!allow_patterns.empty()) {
      bool ok = false;
      for (const auto& p : allow_patterns) ok = ok || match_pattern(p, file);
      if (!ok) continue;
    }
    bool ignored = false;
    for (const auto& p : ignore_patterns) ignored = ignored || match_pattern(p, file);
    if (ignored) continue;
    validate_repo_path(file, "file name listed by the Hub");
    hf_hub_download(repo_id, file, per_file);
    ++n;
  }
  logger().debug("hub: snapshot of {} at {} ({} files) in {}", repo_id, info->sha, n, folder.string());
  return folder;
}

}  // namespace

fs::path snapshot_download(const std::string& repo_id, const HubOptions& options,
                           const std::vector<std::string>& allow_patterns,
                           const std::vector<std::string>& ignore_patterns) {
  return filesystem_errors_as_io_errors(
      [&] { return download_snapshot(repo_id, options, allow_patterns, ignore_patterns); });
}

}  // namespace plugformer::hub
