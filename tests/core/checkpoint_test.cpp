// Whole-model loading and saving: .bin, shards, dtypes, loading info, key conventions.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/safetensors.h>

#include "checkpoint/checkpoint.h"
#include "test_util.h"

using namespace plugformer;

namespace {
at::Tensor logits_of(PreTrainedModel& model) {
  c10::InferenceMode guard;
  ModelInputs inputs;
  inputs.tensors["input_ids"] = at::tensor(std::vector<int64_t>{1, 403, 407, 261, 378}, at::kLong).unsqueeze(0);
  return model.forward(inputs)["logits"];
}
}  // namespace

TEST(Checkpoint, ReadsTorchSaveFromPython) {
  auto state = load_torch_bin(std::string(PLUGFORMER_FIXTURES_DIR) + "/checkpoints/torch_save.bin");
  ASSERT_EQ(state.size(), 3u);
  EXPECT_TRUE(at::equal(state.at("weight"), at::arange(6, at::kFloat).reshape({2, 3})));
  EXPECT_TRUE(at::equal(state.at("bias"), at::tensor({1.5f, -2.0f})));
  EXPECT_EQ(state.at("steps").item<int64_t>(), 7);
}

TEST(Checkpoint, GarbageBinIsATypedError) {
  test::TempDir dir("ckpt-bad-bin");
  test::write_file(dir / "pytorch_model.bin", "definitely not a zip archive");
  EXPECT_THROW(load_torch_bin(dir / "pytorch_model.bin"), CheckpointError);
}

TEST(Checkpoint, SaveAsBinAndReload) {
  auto model = AutoModelForCausalLM::from_pretrained(test::kStories);
  test::TempDir dir("ckpt-bin");
  SaveOptions save;
  save.safe_serialization = false;
  model->save_pretrained(dir.path(), save);
  EXPECT_TRUE(std::filesystem::exists(dir / "pytorch_model.bin"));
  EXPECT_TRUE(std::filesystem::exists(dir / "generation_config.json"));
  PretrainedOptions options;
  options.use_safetensors = false;
  auto again = AutoModelForCausalLM::from_pretrained(dir.path().string(), options);
  EXPECT_TRUE(at::equal(logits_of(*model), logits_of(*again)));
  options.use_safetensors = true;
  EXPECT_THROW(AutoModelForCausalLM::from_pretrained(dir.path().string(), options), FileNotFoundError);
}

TEST(Checkpoint, ShardedSaveReloadsIdentically) {
  auto model = AutoModelForCausalLM::from_pretrained(test::kStories);
  test::TempDir dir("ckpt-shards");
  SaveOptions save;
  save.max_shard_size = 200'000;
  model->save_pretrained(dir.path(), save);
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors"));
  const json index = read_json_file(dir / "model.safetensors.index.json");
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), 260032 * 4);
  EXPECT_TRUE(std::filesystem::exists(dir / "model-00001-of-00006.safetensors"));
  EXPECT_FALSE(index["weight_map"].contains("lm_head.weight"));  // tied alias left out, as transformers does
  auto again = AutoModelForCausalLM::from_pretrained(dir.path().string());
  for (const auto& [name, t] : model->state_dict()) {
    bool found = false;
    for (const auto& [n2, t2] : again->state_dict())
      if (n2 == name) found = at::equal(t, t2);
    EXPECT_TRUE(found) << name;
  }
  EXPECT_TRUE(at::equal(logits_of(*model), logits_of(*again)));
  // Saving again unsharded removes the stale shards and index.
  model->save_pretrained(dir.path());
  EXPECT_FALSE(std::filesystem::exists(dir / "model-00001-of-00006.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors.index.json"));
}

TEST(Checkpoint, VariantAndDtypes) {
  PretrainedOptions bf16;
  bf16.torch_dtype = "bfloat16";
  auto model = AutoModelForCausalLM::from_pretrained(test::kStories, bf16);
  test::TempDir dir("ckpt-variant");
  SaveOptions save;
  save.variant = "bf16";
  model->save_pretrained(dir.path(), save);
  EXPECT_TRUE(std::filesystem::exists(dir / "model.bf16.safetensors"));
  EXPECT_EQ(read_json_file(dir / "config.json")["torch_dtype"], "bfloat16");
  PretrainedOptions load;
  load.variant = "bf16";
  load.torch_dtype = "auto";
  EXPECT_EQ(AutoModelForCausalLM::from_pretrained(dir.path().string(), load)->dtype(), at::kBFloat16);
  load.torch_dtype = "";
  EXPECT_EQ(AutoModelForCausalLM::from_pretrained(dir.path().string(), load)->dtype(), at::kFloat);
  load.torch_dtype = "int3";
  EXPECT_THROW(AutoModelForCausalLM::from_pretrained(dir.path().string(), load), ConfigError);
  EXPECT_THROW(AutoModelForCausalLM::from_pretrained(dir.path().string()), FileNotFoundError);  // no plain file
}

TEST(Checkpoint, BaseModelFromHeadCheckpointAndBack) {
  LoadingInfo info;
  PretrainedOptions options;
  options.loading_info = &info;
  auto base = AutoModel::from_pretrained(test::kStories, options);  // strips "model."
  EXPECT_EQ(base->class_name(), "LlamaModel");
  EXPECT_TRUE(info.missing_keys.empty());
  test::TempDir dir("ckpt-base");
  base->save_pretrained(dir.path());
  // A head model from a base checkpoint: the prefix is added; lm_head is tied, so nothing is missing.
  auto head = AutoModelForCausalLM::from_pretrained(dir.path().string(), options);
  EXPECT_TRUE(info.missing_keys.empty());
  EXPECT_TRUE(info.unexpected_keys.empty());
  auto reference = AutoModelForCausalLM::from_pretrained(test::kStories);
  EXPECT_TRUE(at::equal(logits_of(*head), logits_of(*reference)));
}

TEST(Checkpoint, MissingUnexpectedAndKeyMapping) {
  test::TempDir dir("ckpt-keys");
  test::copy_model(test::kStories, dir.path());
  auto file = SafetensorsFile::open(test::kStories + "/model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& key : file->keys()) {
    if (key == "model.norm.weight") continue;  // missing
    std::string name = key;
    if (name.find("model.layers.0.mlp.") == 0) name = "old_mlp0." + name.substr(19);  // renamed
    tensors.emplace_back(name, file->get(key));
  }
  tensors.emplace_back("extra.buffer", at::zeros({2}));
  save_safetensors(dir / "model.safetensors", tensors);
  LoadingInfo info;
  PretrainedOptions options;
  options.loading_info = &info;
  options.key_mapping = {{"^old_mlp0\\.", "model.layers.0.mlp."}};
  auto model = AutoModelForCausalLM::from_pretrained(dir.path().string(), options);
  EXPECT_EQ(info.missing_keys, std::vector<std::string>{"model.norm.weight"});
  EXPECT_EQ(info.unexpected_keys, std::vector<std::string>{"extra.buffer"});
  options.key_mapping.clear();
  AutoModelForCausalLM::from_pretrained(dir.path().string(), options);
  EXPECT_EQ(info.missing_keys.size(), 4u);  // norm + gate/up/down of layer 0
}

TEST(Checkpoint, NoWeightsFile) {
  test::TempDir dir("ckpt-none");
  std::filesystem::copy_file(test::kStories + "/config.json", dir / "config.json");
  EXPECT_THROW(AutoModelForCausalLM::from_pretrained(dir.path().string()), FileNotFoundError);
}
