// from_pretrained with a Hub repo id: download into huggingface_hub's cache from the mock Hub,
// then load offline from that cache.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <plugformer/auto.h>
#include <plugformer/error.h>

#include "mock_hub.h"

using namespace plugformer;

namespace {

const std::string kStories = std::string(PLUGFORMER_SOURCE_DIR) + "/models/stories260K";

std::string read(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

at::Tensor logits(PreTrainedModel& model) {
  c10::InferenceMode guard;
  ModelInputs inputs;
  inputs.tensors["input_ids"] = at::tensor(std::vector<int64_t>{1, 403, 407, 261, 378}, at::kLong).unsqueeze(0);
  return model.forward(inputs)["logits"];
}

}  // namespace

TEST(HubLoading, FromPretrainedDownloadsThenWorksOffline) {
  plugformer::testing::MockHub hub;
  std::map<std::string, std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(kStories)) files[e.path().filename().string()] = read(e.path());
  hub.add_commit("karpathy/stories260K", files);
  const auto cache = std::filesystem::path(PLUGFORMER_BINARY_DIR) / "test_tmp" / ("hub-cache-" + std::to_string(::getpid()));
  std::filesystem::remove_all(cache);
  ::setenv("HF_ENDPOINT", hub.endpoint().c_str(), 1);
  ::setenv("HF_HUB_CACHE", cache.c_str(), 1);
  ::unsetenv("HF_HUB_OFFLINE");

  auto local = AutoModelForCausalLM::from_pretrained(kStories);
  auto remote = AutoModelForCausalLM::from_pretrained("karpathy/stories260K");
  EXPECT_TRUE(at::equal(logits(*local), logits(*remote)));
  auto tokenizer = AutoTokenizer::from_pretrained("karpathy/stories260K");
  EXPECT_EQ(tokenizer->encode("Once upon a time").ids, (std::vector<int64_t>{1, 403, 407, 261, 378}));
  EXPECT_TRUE(std::filesystem::is_directory(cache / "models--karpathy--stories260K" / "blobs"));
  EXPECT_TRUE(std::filesystem::exists(cache / "models--karpathy--stories260K" / "refs" / "main"));

  ::setenv("HF_HUB_OFFLINE", "1", 1);
  const size_t before = hub.requests().size();
  auto offline = AutoModelForCausalLM::from_pretrained("karpathy/stories260K");
  EXPECT_TRUE(at::equal(logits(*local), logits(*offline)));
  EXPECT_EQ(hub.requests().size(), before);  // no network at all
  EXPECT_THROW(AutoModelForCausalLM::from_pretrained("karpathy/not-cached"), LocalEntryNotFoundError);
  ::unsetenv("HF_HUB_OFFLINE");
  EXPECT_THROW(AutoModelForCausalLM::from_pretrained("nobody/missing-repo"), RepositoryNotFoundError);

  ::unsetenv("HF_ENDPOINT");
  ::unsetenv("HF_HUB_CACHE");
  std::filesystem::remove_all(cache);
}
