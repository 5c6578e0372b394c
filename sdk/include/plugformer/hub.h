// Hugging Face Hub client and cache, compatible with huggingface_hub.
//
// The cache layout is huggingface_hub's, so a cache filled by Python is used as is and the other
// way round:
//   $HF_HUB_CACHE (default $HF_HOME/hub, $HF_HOME default ~/.cache/huggingface)
//     models--org--name/
//       blobs/<etag>                       file contents (etag = git sha1, or sha256 for LFS files)
//       snapshots/<commit>/<file>          relative symlinks into ../../blobs/<etag>
//       refs/<revision>                    the commit a branch/tag resolved to
//       .no_exist/<commit>/<file>          markers for files known to be absent
//     .locks/models--org--name/<etag>.lock lock files serialising concurrent downloads
//
// Environment: HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN, HF_TOKEN_PATH, HF_HUB_OFFLINE,
// HF_HUB_DOWNLOAD_TIMEOUT, HF_HUB_ETAG_TIMEOUT, HF_HUB_DISABLE_PROGRESS_BARS,
// REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (extra CA file; TLS verification is never turned off).
//
// Errors are the typed ones of plugformer/error.h (RepositoryNotFoundError, GatedRepoError,
// RevisionNotFoundError, EntryNotFoundError, LocalEntryNotFoundError, HttpError, HubError,
// FileNotFoundError). Messages name the repo, file and revision, never the token.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "plugformer/error.h"

namespace plugformer::hub {

// The Hub could not be reached (DNS, refused connection, TLS failure, timeout after retries).
// Downloads fall back to the cache on this error, as huggingface_hub does.
class HubConnectionError : public HubError { using HubError::HubError; };

struct HubOptions {
  std::string revision = "main";
  std::optional<std::filesystem::path> cache_dir;  // default: HF_HUB_CACHE / HF_HOME/hub
  bool force_download = false;
  bool local_files_only = false;     // also implied by HF_HUB_OFFLINE=1
  std::optional<std::string> token;  // default: HF_TOKEN, then the token file; "" = send no token
  std::string subfolder;             // prefixed to the file name ("" = repo root)
  std::string repo_type = "model";   // model | dataset | space
  std::optional<std::string> endpoint;  // default: HF_ENDPOINT, then https://huggingface.co
};

// ---- Environment and naming --------------------------------------------------------------
std::filesystem::path hf_home();
std::filesystem::path default_cache_dir();
std::string default_endpoint();
bool offline_mode();  // HF_HUB_OFFLINE in {1, ON, YES, TRUE}
// The token to use: explicit (empty = none), else HF_TOKEN, else HF_TOKEN_PATH / HF_HOME/token.
std::optional<std::string> resolve_token(const std::optional<std::string>& explicit_token);
// "models--org--name" (datasets--..., spaces--...).
std::string repo_folder_name(const std::string& repo_id, const std::string& repo_type = "model");
// {endpoint}/{datasets/|spaces/}{repo_id}/resolve/{revision}/{filename}, revision and file quoted.
std::string hf_hub_url(const std::string& repo_id, const std::string& filename,
                       const HubOptions& options = {});
bool is_commit_hash(const std::string& s);  // 40 lowercase hex digits

// Validation (throw InvalidInputError): repo ids as huggingface_hub's validate_repo_id; file
// names / subfolders / revisions must be relative, without "..", backslashes or empty parts.
void validate_repo_id(const std::string& repo_id);
void validate_repo_path(const std::string& path, const char* what = "filename");
void validate_revision(const std::string& revision);

// ---- Download ----------------------------------------------------------------------------
// huggingface_hub.hf_hub_download: the path of the file inside snapshots/<commit>/ of the cache.
std::filesystem::path hf_hub_download(const std::string& repo_id, const std::string& filename,
                                      const HubOptions& options = {});

// transformers' cached_file. `path_or_repo_id` naming an existing directory -> that
// directory/subfolder/filename if present; otherwise a Hub repo id -> downloaded / cached.
// With `optional`, a file the repo does not have (404 EntryNotFound, a .no_exist marker, or
// offline and not cached) gives std::nullopt; everything else (missing repo, gated, network)
// still throws.
std::optional<std::filesystem::path> cached_file(const std::string& path_or_repo_id,
                                                 const std::string& filename,
                                                 const HubOptions& options = {},
                                                 bool optional = false);

// huggingface_hub.try_to_load_from_cache: no network at all.
struct CacheLookup {
  enum class Kind { kNotCached, kNoExist, kFound };
  Kind kind = Kind::kNotCached;
  std::filesystem::path path;  // when kFound
};
CacheLookup try_to_load_from_cache(const std::string& repo_id, const std::string& filename,
                                   const HubOptions& options = {});

// HEAD metadata of a file (huggingface_hub.get_hf_file_metadata).
struct FileMetadata {
  std::string commit_hash;  // X-Repo-Commit
  std::string etag;         // X-Linked-Etag or ETag, quotes and W/ removed
  std::string location;     // Location of a redirect (LFS CDN) or the url itself
  std::optional<uint64_t> size;  // X-Linked-Size or Content-Length
};
FileMetadata get_hf_file_metadata(const std::string& repo_id, const std::string& filename,
                                  const HubOptions& options = {});

// GET /api/{type}s/{repo_id}/revision/{revision}.
struct RepoInfo {
  std::string id;
  std::string sha;
  std::vector<std::string> files;  // siblings' rfilename
  bool is_private = false;
  bool gated = false;
};
RepoInfo repo_info(const std::string& repo_id, const HubOptions& options = {});

// fnmatch as huggingface_hub's filter_repo_objects uses it ('*' also matches '/'); a pattern
// ending in '/' matches everything under that folder.
bool match_pattern(const std::string& pattern, const std::string& path);

// huggingface_hub.snapshot_download: the snapshots/<commit> folder holding the matching files.
// Empty allow_patterns = every file.
std::filesystem::path snapshot_download(const std::string& repo_id, const HubOptions& options = {},
                                        const std::vector<std::string>& allow_patterns = {},
                                        const std::vector<std::string>& ignore_patterns = {});

// ---- Cache scanning and deletion (huggingface_hub.scan_cache_dir) ------------------------
struct CachedFileInfo {
  std::string file_name;  // relative to the snapshot, '/' separated
  std::filesystem::path file_path;
  std::filesystem::path blob_path;
  uint64_t size_on_disk = 0;
};
struct CachedRevisionInfo {
  std::string commit_hash;
  std::vector<std::string> refs;
  std::filesystem::path snapshot_path;
  std::vector<CachedFileInfo> files;
  uint64_t size_on_disk = 0;  // unique blobs of this revision
};
struct CachedRepoInfo {
  std::string repo_id;
  std::string repo_type;
  std::filesystem::path repo_path;
  uint64_t size_on_disk = 0;  // all blobs
  size_t nb_files = 0;        // number of blobs
  std::vector<CachedRevisionInfo> revisions;
  std::filesystem::file_time_type last_modified{};
};
struct CacheInfo {
  std::filesystem::path cache_dir;
  std::vector<CachedRepoInfo> repos;
  uint64_t size_on_disk = 0;
  std::vector<std::string> warnings;  // folders that are not valid cached repos
};
CacheInfo scan_cache_dir(const std::optional<std::filesystem::path>& cache_dir = std::nullopt);

// Deletes a cached repo, or one of its revisions (a ref name such as "main" or a commit hash):
// the snapshot, the refs pointing to it, its .no_exist markers and the blobs no other revision
// uses; a repo left without revisions is removed entirely. Returns the bytes freed.
// Throws FileNotFoundError if the repo (or revision) is not cached.
uint64_t delete_cache(const std::string& repo_id,
                      const std::optional<std::string>& revision = std::nullopt,
                      const std::string& repo_type = "model",
                      const std::optional<std::filesystem::path>& cache_dir = std::nullopt);

// ---- Upload (push_to_hub) ----------------------------------------------------------------
struct UploadOptions {
  std::optional<std::string> token;  // default as HubOptions
  std::string revision = "main";     // branch to commit to
  std::string repo_type = "model";
  std::optional<std::string> endpoint;
  std::string commit_message = "Upload folder using plugformer";
  std::string commit_description;
  bool create_pr = false;
  bool private_repo = false;  // used when the repo is created
  bool create_repo = true;    // create_repo(exist_ok=true) before committing
  std::string path_in_repo;   // folder inside the repo ("" = root)
  std::vector<std::string> allow_patterns;
  std::vector<std::string> ignore_patterns;  // added to the defaults (.git/, .cache/huggingface/)
};

// POST /api/repos/create. Returns the repo URL. An existing repo is fine when exist_ok.
std::string create_repo(const std::string& repo_id, const UploadOptions& options = {},
                        bool exist_ok = true);

struct CommitOperationAdd {
  std::string path_in_repo;
  std::filesystem::path local_path;   // file to upload, or
  std::optional<std::string> content;  // bytes to upload
};
struct CommitInfo {
  std::string commit_url;
  std::string commit_oid;
  std::string pr_url;  // set when create_pr
  std::vector<std::string> uploaded_files;  // paths in repo, after the Hub's shouldIgnore
};
// huggingface_hub.create_commit: preupload (which files go through LFS), LFS batch upload of
// those not on the Hub yet (basic or multipart, then verify), then the NDJSON commit.
CommitInfo create_commit(const std::string& repo_id, const std::vector<CommitOperationAdd>& additions,
                         const std::vector<std::string>& deletions, const UploadOptions& options = {});
// huggingface_hub.upload_folder (creates the repo first when options.create_repo).
CommitInfo upload_folder(const std::string& repo_id, const std::filesystem::path& folder,
                         const UploadOptions& options = {});
CommitInfo upload_file(const std::string& repo_id, const std::filesystem::path& local_file,
                       const std::string& path_in_repo, const UploadOptions& options = {});

// ---- Model cards -------------------------------------------------------------------------
// Adds `tags` (no duplicates, order kept) to the `tags:` list of a model card's YAML front matter.
// `folder_or_card` is a folder (its README.md) or the card file; a missing card is created with
// just the front matter. Other metadata and the card text are kept byte for byte.
void add_model_tags(const std::filesystem::path& folder_or_card, const std::vector<std::string>& tags);
// The `tags:` of a card (block list, flow list [a, b] or a single scalar); empty if none.
std::vector<std::string> read_model_tags(const std::filesystem::path& folder_or_card);

}  // namespace plugformer::hub
