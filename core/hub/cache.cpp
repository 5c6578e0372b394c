// Cache scanning and deletion: huggingface_hub's utils/_cache_manager.py (scan_cache_dir,
// delete_revisions), over the same layout.
#include <algorithm>
#include <map>
#include <set>

#include "hub/internal.h"
#include "plugformer/error.h"
#include "plugformer/hub.h"
#include "plugformer/log.h"

namespace fs = std::filesystem;

namespace plugformer::hub {

namespace {

// "models--org--name" -> ("model", "org/name"); false for other folder names.
bool parse_repo_folder(const std::string& name, std::string& repo_type, std::string& repo_id) {
  auto sep = name.find("--");
  if (sep == std::string::npos) return false;
  std::string plural = name.substr(0, sep);
  if (plural != "models" && plural != "datasets" && plural != "spaces") return false;
  repo_type = plural.substr(0, plural.size() - 1);
  std::string rest = name.substr(sep + 2);
  if (rest.empty()) return false;
  repo_id.clear();
  size_t start = 0;
  while (true) {
    auto p = rest.find("--", start);
    repo_id += rest.substr(start, p == std::string::npos ? std::string::npos : p - start);
    if (p == std::string::npos) break;
    repo_id += '/';
    start = p + 2;
  }
  return true;
}

CachedRepoInfo scan_repo(const fs::path& repo_path, const std::string& repo_type, const std::string& repo_id,
                         std::vector<std::string>& warnings) {
  CachedRepoInfo repo;
  repo.repo_id = repo_id;
  repo.repo_type = repo_type;
  repo.repo_path = repo_path;
  std::error_code ec;
  const fs::path snapshots = repo_path / "snapshots";
  const fs::path refs_dir = repo_path / "refs";
  const fs::path blobs_dir = repo_path / "blobs";

  // refs: nested names such as refs/pr/1 are files under refs/refs/pr/1.
  std::map<std::string, std::vector<std::string>> refs_by_commit;
  if (fs::is_directory(refs_dir, ec)) {
    for (auto it = fs::recursive_directory_iterator(refs_dir, ec); it != fs::recursive_directory_iterator(); ++it) {
      if (!it->is_regular_file(ec)) continue;
      std::string ref = it->path().lexically_relative(refs_dir).generic_string();
      if (auto commit = detail::read_ref(repo_path, ref)) refs_by_commit[*commit].push_back(ref);
    }
  }

  std::map<fs::path, uint64_t> blob_sizes;
  repo.last_modified = fs::last_write_time(repo_path, ec);
  if (fs::is_directory(snapshots, ec)) {
    for (const auto& entry : fs::directory_iterator(snapshots, ec)) {
      if (!entry.is_directory(ec)) {
        warnings.push_back("snapshots folder of " + repo_id + " contains a file: " + entry.path().string());
        continue;
      }
      CachedRevisionInfo rev;
      rev.commit_hash = entry.path().filename().string();
      rev.snapshot_path = entry.path();
      std::set<fs::path> rev_blobs;
      for (auto it = fs::recursive_directory_iterator(entry.path(), ec); it != fs::recursive_directory_iterator(); ++it) {
        if (it->is_directory(ec)) continue;
        CachedFileInfo f;
        f.file_name = it->path().lexically_relative(entry.path()).generic_string();
        f.file_path = it->path();
        if (it->is_symlink(ec)) {
          fs::path target = fs::read_symlink(it->path(), ec);
          f.blob_path = (target.is_absolute() ? target : (it->path().parent_path() / target)).lexically_normal();
        } else {
          f.blob_path = it->path();
        }
        f.size_on_disk = fs::is_regular_file(f.blob_path, ec) ? fs::file_size(f.blob_path, ec) : 0;
        if (!ec) {
          blob_sizes[f.blob_path] = f.size_on_disk;
          if (rev_blobs.insert(f.blob_path).second) rev.size_on_disk += f.size_on_disk;
        }
        ec.clear();
        auto mtime = fs::last_write_time(f.blob_path, ec);
        if (!ec && mtime > repo.last_modified) repo.last_modified = mtime;
        ec.clear();
        rev.files.push_back(std::move(f));
      }
      std::sort(rev.files.begin(), rev.files.end(),
                [](const CachedFileInfo& a, const CachedFileInfo& b) { return a.file_name < b.file_name; });
      auto r = refs_by_commit.find(rev.commit_hash);
      if (r != refs_by_commit.end()) rev.refs = r->second;
      std::sort(rev.refs.begin(), rev.refs.end());
      repo.revisions.push_back(std::move(rev));
    }
  }
  // Every blob counts in the repo's size, referenced or not (as huggingface_hub counts them).
  if (fs::is_directory(blobs_dir, ec)) {
    for (const auto& b : fs::directory_iterator(blobs_dir, ec)) {
      if (!b.is_regular_file(ec)) continue;
      if (b.path().extension() == ".incomplete") continue;
      blob_sizes[b.path().lexically_normal()] = b.file_size(ec);
    }
  }
  repo.nb_files = blob_sizes.size();
  for (const auto& [_, size] : blob_sizes) repo.size_on_disk += size;
  std::sort(repo.revisions.begin(), repo.revisions.end(),
            [](const CachedRevisionInfo& a, const CachedRevisionInfo& b) { return a.commit_hash < b.commit_hash; });
  return repo;
}

}  // namespace

CacheInfo scan_cache_dir(const std::optional<fs::path>& cache_dir) {
  CacheInfo info;
  info.cache_dir = detail::cache_dir_of(cache_dir);
  std::error_code ec;
  if (!fs::is_directory(info.cache_dir, ec))
    throw FileNotFoundError("cache directory " + info.cache_dir.string() + " does not exist (set HF_HUB_CACHE or --cache-dir)");
  for (const auto& entry : fs::directory_iterator(info.cache_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == ".locks") continue;
    std::string type, id;
    if (!entry.is_directory(ec) || entry.is_symlink(ec) || !parse_repo_folder(name, type, id)) {
      info.warnings.push_back("not a cached repo: " + entry.path().string());
      continue;
    }
    info.repos.push_back(scan_repo(entry.path(), type, id, info.warnings));
    info.size_on_disk += info.repos.back().size_on_disk;
  }
  std::sort(info.repos.begin(), info.repos.end(), [](const CachedRepoInfo& a, const CachedRepoInfo& b) {
    return std::tie(a.repo_type, a.repo_id) < std::tie(b.repo_type, b.repo_id);
  });
  return info;
}

namespace {

uint64_t remove_counting(const fs::path& p) {
  std::error_code ec;
  uint64_t freed = 0;
  if (fs::is_symlink(p, ec)) {
    fs::remove(p, ec);
    return 0;
  }
  if (fs::is_regular_file(p, ec)) {
    freed = fs::file_size(p, ec);
    fs::remove(p, ec);
    return ec ? 0 : freed;
  }
  if (fs::is_directory(p, ec)) {
    for (auto it = fs::recursive_directory_iterator(p, ec); it != fs::recursive_directory_iterator(); ++it)
      if (!it->is_symlink(ec) && it->is_regular_file(ec)) freed += it->file_size(ec);
    fs::remove_all(p, ec);
    if (ec) throw IOError("cannot delete " + p.string() + ": " + ec.message());
  }
  return freed;
}

void remove_empty_parents(fs::path dir, const fs::path& stop) {
  std::error_code ec;
  while (dir != stop && dir.string().size() > stop.string().size() && fs::is_empty(dir, ec) && !ec) {
    fs::remove(dir, ec);
    dir = dir.parent_path();
  }
}

}  // namespace

uint64_t delete_cache(const std::string& repo_id, const std::optional<std::string>& revision,
                      const std::string& repo_type, const std::optional<fs::path>& cache_dir) {
  validate_repo_id(repo_id);
  const fs::path cache = detail::cache_dir_of(cache_dir);
  const std::string folder = repo_folder_name(repo_id, repo_type);
  const fs::path storage = cache / folder;
  std::error_code ec;
  if (!fs::is_directory(storage, ec) || fs::is_symlink(storage, ec))
    throw FileNotFoundError(repo_type + " repo '" + repo_id + "' is not in the cache " + cache.string());

  if (!revision) {
    // Freed = the blobs (as huggingface_hub's expected_freed_size), not refs or links.
    std::vector<std::string> ignored;
    const uint64_t freed = scan_repo(storage, repo_type, repo_id, ignored).size_on_disk;
    remove_counting(storage);
    remove_counting(cache / ".locks" / folder);
    logger().info("hub: deleted {} from the cache ({} bytes)", repo_id, freed);
    return freed;
  }

  validate_revision(*revision);
  std::vector<std::string> warnings;
  CachedRepoInfo repo = scan_repo(storage, repo_type, repo_id, warnings);
  std::string commit = *revision;
  if (!is_commit_hash(commit)) {
    auto ref = detail::read_ref(storage, *revision);
    if (!ref) throw FileNotFoundError("revision '" + *revision + "' of '" + repo_id + "' is not in the cache");
    commit = *ref;
  }
  auto it = std::find_if(repo.revisions.begin(), repo.revisions.end(),
                         [&](const CachedRevisionInfo& r) { return r.commit_hash == commit; });
  if (it == repo.revisions.end())
    throw FileNotFoundError("revision '" + *revision + "' of '" + repo_id + "' is not in the cache");
  if (repo.revisions.size() == 1) {
    // The last revision: the whole repo goes, as huggingface_hub's delete strategy does.
    return delete_cache(repo_id, std::nullopt, repo_type, cache_dir);
  }
  std::set<fs::path> kept_blobs;
  for (const auto& r : repo.revisions)
    if (r.commit_hash != commit)
      for (const auto& f : r.files) kept_blobs.insert(f.blob_path);
  uint64_t freed = 0;
  const fs::path blobs = (storage / "blobs").lexically_normal();
  for (const auto& f : it->files) {
    // Only blobs inside this repo's blobs/ folder are ever deleted.
    if (kept_blobs.count(f.blob_path) || f.blob_path.parent_path() != blobs) continue;
    kept_blobs.insert(f.blob_path);
    freed += remove_counting(f.blob_path);
  }
  freed += remove_counting(it->snapshot_path);
  for (const auto& ref : it->refs) {
    fs::remove(storage / "refs" / ref, ec);
    remove_empty_parents((storage / "refs" / ref).parent_path(), storage / "refs");
  }
  remove_counting(storage / ".no_exist" / commit);
  logger().info("hub: deleted revision {} of {} from the cache ({} bytes)", commit, repo_id, freed);
  return freed;
}

}  // namespace plugformer::hub
