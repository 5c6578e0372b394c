// `plugformer download` and `plugformer cache ls | rm`: the Hub client from the command line.
// Wire into the CLI with:  void add_hub_commands(CLI::App& app);  add_hub_commands(app);
// Errors are thrown as plugformer::Error subclasses from the subcommand callbacks.
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include <CLI/CLI.hpp>

#include "plugformer/hub.h"

namespace {

std::string human_size(uint64_t bytes) {
  const char* units[] = {"B", "K", "M", "G", "T"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000.0 && u < 4) {
    v /= 1000.0;
    ++u;
  }
  std::ostringstream os;
  if (u == 0) os << bytes << "B";
  else os << std::fixed << std::setprecision(1) << v << units[u];
  return os.str();
}

std::string age(std::filesystem::file_time_type t) {
  using namespace std::chrono;
  auto now = std::filesystem::file_time_type::clock::now();
  auto secs = duration_cast<seconds>(now - t).count();
  if (secs < 0) secs = 0;
  if (secs < 60) return "a few seconds ago";
  if (secs < 3600) return std::to_string(secs / 60) + " minutes ago";
  if (secs < 86400) return std::to_string(secs / 3600) + " hours ago";
  return std::to_string(secs / 86400) + " days ago";
}

struct DownloadArgs {
  std::string repo_id;
  std::vector<std::string> filenames;
  std::string revision = "main";
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  std::string cache_dir;
  std::string token;
  std::string repo_type = "model";
  bool force = false;
  bool local_only = false;
};

struct CacheArgs {
  std::string cache_dir;
  bool verbose = false;
  std::string repo_id;
  std::string revision;
  std::string repo_type = "model";
};

}  // namespace

void add_hub_commands(CLI::App& app) {
  auto dl_args = std::make_shared<DownloadArgs>();
  CLI::App* dl = app.add_subcommand("download", "Download a repo (or some of its files) into the Hugging Face cache");
  dl->add_option("repo_id", dl_args->repo_id, "org/name on the Hub")->required();
  dl->add_option("filenames", dl_args->filenames, "Files to download (default: the whole repo)");
  dl->add_option("--revision", dl_args->revision, "Branch, tag or commit (default main)");
  dl->add_option("--include", dl_args->include, "Only files matching this glob (repeatable)")->allow_extra_args(false);
  dl->add_option("--exclude", dl_args->exclude, "Skip files matching this glob (repeatable)")->allow_extra_args(false);
  dl->add_option("--cache-dir", dl_args->cache_dir, "Cache directory (default HF_HUB_CACHE or HF_HOME/hub)");
  dl->add_option("--token", dl_args->token, "Hub token (default HF_TOKEN or the token file)");
  dl->add_option("--repo-type", dl_args->repo_type, "model, dataset or space")
      ->check(CLI::IsMember({"model", "dataset", "space"}));
  dl->add_flag("--force-download", dl_args->force, "Download again even if cached");
  dl->add_flag("--local-files-only", dl_args->local_only, "Resolve from the cache only");
  dl->callback([dl_args] {
    plugformer::hub::HubOptions o;
    o.revision = dl_args->revision;
    if (!dl_args->cache_dir.empty()) o.cache_dir = dl_args->cache_dir;
    if (!dl_args->token.empty()) o.token = dl_args->token;
    o.repo_type = dl_args->repo_type;
    o.force_download = dl_args->force;
    o.local_files_only = dl_args->local_only;
    if (dl_args->filenames.empty()) {
      std::cout << plugformer::hub::snapshot_download(dl_args->repo_id, o, dl_args->include, dl_args->exclude).string()
                << "\n";
    } else {
      for (const auto& f : dl_args->filenames)
        std::cout << plugformer::hub::hf_hub_download(dl_args->repo_id, f, o).string() << "\n";
    }
  });

  auto cache_args = std::make_shared<CacheArgs>();
  CLI::App* cache = app.add_subcommand("cache", "Inspect or clean the Hugging Face cache");
  cache->require_subcommand(1);
  CLI::App* ls = cache->add_subcommand("ls", "List cached repos (as huggingface-cli scan-cache)");
  ls->add_option("--cache-dir", cache_args->cache_dir, "Cache directory (default HF_HUB_CACHE or HF_HOME/hub)");
  ls->add_flag("-v,--verbose", cache_args->verbose, "One line per revision");
  ls->callback([cache_args] {
    std::optional<std::filesystem::path> dir;
    if (!cache_args->cache_dir.empty()) dir = cache_args->cache_dir;
    plugformer::hub::CacheInfo info = plugformer::hub::scan_cache_dir(dir);
    std::ostringstream out;
    if (!cache_args->verbose) {
      out << std::left << std::setw(40) << "REPO ID" << " " << std::setw(9) << "REPO TYPE" << " " << std::right
          << std::setw(12) << "SIZE ON DISK" << " " << std::setw(9) << "NB FILES" << " " << std::left << std::setw(20)
          << "LAST_MODIFIED" << " " << std::setw(16) << "REFS" << " LOCAL PATH\n";
      for (const auto& r : info.repos) {
        std::string refs;
        for (const auto& rev : r.revisions)
          for (const auto& ref : rev.refs) refs += (refs.empty() ? "" : ", ") + ref;
        out << std::left << std::setw(40) << r.repo_id << " " << std::setw(9) << r.repo_type << " " << std::right
            << std::setw(12) << human_size(r.size_on_disk) << " " << std::setw(9) << r.nb_files << " " << std::left
            << std::setw(20) << age(r.last_modified) << " " << std::setw(16) << refs << " " << r.repo_path.string()
            << "\n";
      }
    } else {
      out << std::left << std::setw(40) << "REPO ID" << " " << std::setw(9) << "REPO TYPE" << " " << std::setw(40)
          << "REVISION" << " " << std::right << std::setw(12) << "SIZE ON DISK" << " " << std::setw(9) << "NB FILES"
          << " " << std::left << std::setw(16) << "REFS" << " LOCAL PATH\n";
      for (const auto& r : info.repos)
        for (const auto& rev : r.revisions) {
          std::string refs;
          for (const auto& ref : rev.refs) refs += (refs.empty() ? "" : ", ") + ref;
          out << std::left << std::setw(40) << r.repo_id << " " << std::setw(9) << r.repo_type << " " << std::setw(40)
              << rev.commit_hash << " " << std::right << std::setw(12) << human_size(rev.size_on_disk) << " "
              << std::setw(9) << rev.files.size() << " " << std::left << std::setw(16) << refs << " "
              << rev.snapshot_path.string() << "\n";
        }
    }
    out << "\nDone in the cache " << info.cache_dir.string() << ": " << info.repos.size() << " repo(s) for a total of "
        << human_size(info.size_on_disk) << ".\n";
    for (const auto& w : info.warnings) out << "warning: " << w << "\n";
    std::cout << out.str();
  });

  CLI::App* rm = cache->add_subcommand("rm", "Delete a cached repo, or one revision of it");
  rm->add_option("repo_id", cache_args->repo_id, "org/name")->required();
  rm->add_option("--revision", cache_args->revision, "Branch, tag or commit hash to delete (default: the whole repo)");
  rm->add_option("--repo-type", cache_args->repo_type, "model, dataset or space")
      ->check(CLI::IsMember({"model", "dataset", "space"}));
  rm->add_option("--cache-dir", cache_args->cache_dir, "Cache directory (default HF_HUB_CACHE or HF_HOME/hub)");
  rm->callback([cache_args] {
    std::optional<std::filesystem::path> dir;
    if (!cache_args->cache_dir.empty()) dir = cache_args->cache_dir;
    std::optional<std::string> rev;
    if (!cache_args->revision.empty()) rev = cache_args->revision;
    uint64_t freed = plugformer::hub::delete_cache(cache_args->repo_id, rev, cache_args->repo_type, dir);
    std::cout << "Deleted " << cache_args->repo_id << (rev ? " revision " + *rev : std::string()) << ": freed "
              << human_size(freed) << "\n";
  });
}
