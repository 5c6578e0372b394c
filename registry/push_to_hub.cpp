#include <unistd.h>

#include <random>

#include "plugformer/auto.h"
#include "plugformer/hub.h"

namespace plugformer {

std::string push_to_hub(const PreTrainedModel& model, const std::string& repo_id, const PushToHubOptions& options) {
  hub::validate_repo_id(repo_id);
  // A private staging folder, removed whatever happens.
  std::random_device rd;
  const auto staging = std::filesystem::temp_directory_path() /
                       ("plugformer-push-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  struct Cleanup {
    std::filesystem::path dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{staging};
  model.save_pretrained(staging, options.save);
  std::vector<std::string> tags = model.model_tags();
  tags.insert(tags.end(), options.tags.begin(), options.tags.end());
  tags.insert(tags.begin(), "plugformer");
  hub::add_model_tags(staging, tags);

  hub::UploadOptions upload;
  upload.token = options.token;
  upload.revision = options.revision;
  upload.commit_message = options.commit_message;
  upload.create_pr = options.create_pr;
  upload.private_repo = options.private_repo;
  const hub::CommitInfo info = hub::upload_folder(repo_id, staging, upload);
  return options.create_pr && !info.pr_url.empty() ? info.pr_url : info.commit_url;
}

}  // namespace plugformer
