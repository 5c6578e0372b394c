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
#include <plugformer/peft.h>
#include <plugformer/sentence_transformers.h>

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

TEST(HubLoading, PushToHubThenLoadBack) {
  plugformer::testing::MockHub hub;
  const auto cache = std::filesystem::path(PLUGFORMER_BINARY_DIR) / "test_tmp" / ("hub-push-" + std::to_string(::getpid()));
  std::filesystem::remove_all(cache);
  ::setenv("HF_ENDPOINT", hub.endpoint().c_str(), 1);
  ::setenv("HF_HUB_CACHE", cache.c_str(), 1);
  auto model = AutoModelForCausalLM::from_pretrained(kStories);
  PushToHubOptions options;
  options.token = plugformer::testing::MockHub::kWriteToken;
  options.tags = {"tinystories"};
  options.save.max_shard_size = 600'000;  // two shards + index
  const std::string url = push_to_hub(*model, "me/stories-copy", options);
  EXPECT_NE(url.find("me/stories-copy"), std::string::npos) << url;
  const auto commit = hub.commit("me/stories-copy", hub.ref("me/stories-copy", "main"));
  EXPECT_TRUE(commit.files.count("config.json"));
  EXPECT_TRUE(commit.files.count("model.safetensors.index.json"));
  EXPECT_TRUE(commit.files.count("model-00002-of-00002.safetensors"));
  ASSERT_TRUE(commit.files.count("README.md"));
  EXPECT_NE(commit.files.at("README.md").find("tinystories"), std::string::npos);
  EXPECT_NE(commit.files.at("README.md").find("plugformer"), std::string::npos);
  auto back = AutoModelForCausalLM::from_pretrained("me/stories-copy");
  EXPECT_TRUE(at::equal(logits(*model), logits(*back)));
  EXPECT_THROW(push_to_hub(*model, "../escape", options), Error);
  ::unsetenv("HF_ENDPOINT");
  ::unsetenv("HF_HUB_CACHE");
  std::filesystem::remove_all(cache);
}

TEST(HubLoading, PeftAdapterFromAHubRepo) {
  // A LoRA adapter saved here, served as "someone/stories-lora", loaded by repo id.
  auto base = AutoModelForCausalLM::from_pretrained(kStories);
  PeftConfig config;
  config.target_modules = {"q_proj", "v_proj"};
  config.init_lora_weights = "false";
  auto trained = get_peft_model(base, config);
  const auto dir = std::filesystem::path(PLUGFORMER_BINARY_DIR) / "test_tmp" / ("hub-adapter-" + std::to_string(::getpid()));
  trained->save_pretrained(dir);
  plugformer::testing::MockHub hub;
  std::map<std::string, std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files[e.path().filename().string()] = read(e.path());
  hub.add_commit("someone/stories-lora", files);
  const auto cache = std::filesystem::path(PLUGFORMER_BINARY_DIR) / "test_tmp" / ("hub-cache-peft-" + std::to_string(::getpid()));
  std::filesystem::remove_all(cache);
  ::setenv("HF_ENDPOINT", hub.endpoint().c_str(), 1);
  ::setenv("HF_HUB_CACHE", cache.c_str(), 1);
  ::unsetenv("HF_HUB_OFFLINE");
  auto loaded = PeftModel::from_pretrained(AutoModelForCausalLM::from_pretrained(kStories), "someone/stories-lora");
  EXPECT_TRUE(at::allclose(logits(*loaded), logits(*trained)));
  EXPECT_TRUE(std::filesystem::is_directory(cache / "models--someone--stories-lora" / "snapshots"));
  std::filesystem::remove_all(cache);
  std::filesystem::remove_all(dir);
}

TEST(HubLoading, SentenceTransformerFromAHubRepoWithModuleFolders) {
  // A sentence-transformers folder (modules in subfolders, a Normalize listed without a folder)
  // served as "someone/minilm", loaded by repo id: the same embeddings as from the folder.
  const std::filesystem::path dir = std::string(PLUGFORMER_FIXTURES_DIR) + "/sentence_transformers/mean-dense-tanh";
  plugformer::testing::MockHub hub;
  std::map<std::string, std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files[std::filesystem::relative(e.path(), dir).string()] = read(e.path());
  hub.add_commit("someone/minilm", files);
  const auto cache = std::filesystem::path(PLUGFORMER_BINARY_DIR) / "test_tmp" / ("hub-cache-st-" + std::to_string(::getpid()));
  std::filesystem::remove_all(cache);
  ::setenv("HF_ENDPOINT", hub.endpoint().c_str(), 1);
  ::setenv("HF_HUB_CACHE", cache.c_str(), 1);
  ::unsetenv("HF_HUB_OFFLINE");
  const std::vector<std::string> texts = {"Hello world", "A second, longer sentence to embed."};
  const at::Tensor local = SentenceTransformer::from_pretrained(dir.string())->encode(texts);
  const at::Tensor remote = SentenceTransformer::from_pretrained("someone/minilm")->encode(texts);
  EXPECT_TRUE(at::allclose(local, remote));
  EXPECT_TRUE(std::filesystem::exists(cache / "models--someone--minilm"));
  ::unsetenv("HF_ENDPOINT");
  ::unsetenv("HF_HUB_CACHE");
  std::filesystem::remove_all(cache);
}
