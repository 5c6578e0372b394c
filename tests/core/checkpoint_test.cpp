// Whole-model loading and saving: .bin, shards, dtypes, loading info, key conventions.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <fstream>
#include <iterator>

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

std::vector<char> fixture_bin(const std::string& name) {
  std::ifstream in(std::string(PLUGFORMER_FIXTURES_DIR) + "/checkpoints/" + name, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// torch_save.bin with every `from` replaced by `to` (of the same length, so offsets stay).
std::vector<char> patched_bin(const std::string& from, const std::string& to) {
  std::vector<char> bytes = fixture_bin("torch_save.bin");
  EXPECT_EQ(from.size(), to.size());
  auto at = bytes.begin();
  int replaced = 0;
  while ((at = std::search(at, bytes.end(), from.begin(), from.end())) != bytes.end())
    at = std::copy(to.begin(), to.end(), at), ++replaced;
  EXPECT_GT(replaced, 0) << from;
  return bytes;
}

// The CheckpointError read_torch_bin raises ("" when it reads the file).
std::string bin_error(const std::vector<char>& bytes) {
  try {
    read_torch_bin(bytes, "hostile.bin");
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Checkpoint, ReadsTorchSaveFromPython) {
  auto state = load_torch_bin(std::string(PLUGFORMER_FIXTURES_DIR) + "/checkpoints/torch_save.bin");
  ASSERT_EQ(state.size(), 3u);
  EXPECT_TRUE(at::equal(state.at("weight"), at::arange(6, at::kFloat).reshape({2, 3})));
  EXPECT_TRUE(at::equal(state.at("bias"), at::tensor({1.5f, -2.0f})));
  EXPECT_EQ(state.at("steps").item<int64_t>(), 7);
}

TEST(Checkpoint, ReadsEveryTorchSaveLayout) {
  // PyTorch 1.13 (folder named after the file), ZIP64 records (files over 4 GiB), PyTorch 2's
  // archive/ folder with byteorder, dot files and aligned data, and libtorch's own pickle_save.
  for (const char* name : {"torch_save.bin", "zip64.bin", "pytorch2_layout.bin"}) {
    const auto state = read_torch_bin(fixture_bin(name), name);
    ASSERT_EQ(state.size(), 3u) << name;
    EXPECT_TRUE(at::equal(state.at("weight"), at::arange(6, at::kFloat).reshape({2, 3}))) << name;
  }
  const auto own = read_torch_bin(fixture_bin("libtorch_pickle_save.bin"), "libtorch_pickle_save.bin");
  EXPECT_TRUE(at::equal(own.at("w"), at::arange(6, at::kFloat).reshape({2, 3})));
  EXPECT_EQ(own.at("e").numel(), 0);
  // Every dtype the check admits, views sharing one storage, a 0-dim and an empty tensor.
  const auto t = read_torch_bin(fixture_bin("dtypes_and_views.bin"), "dtypes_and_views.bin");
  const at::Tensor w = at::arange(12, at::kFloat).reshape({3, 4});
  EXPECT_TRUE(at::equal(t.at("f32_t"), w.t()));
  EXPECT_TRUE(at::equal(t.at("row"), w[1]));
  EXPECT_EQ(t.at("scalar").item<float>(), 3.5f);
  EXPECT_EQ(t.at("empty").sizes(), (std::vector<int64_t>{0, 4}));
  for (const char* name : {"f16", "bf16", "f64", "i64", "i32", "i16", "u8"})
    EXPECT_TRUE(at::equal(t.at(name).to(at::kFloat), w)) << name;
  EXPECT_EQ(t.at("i8").scalar_type(), at::kChar);
  EXPECT_EQ(t.at("bool").scalar_type(), at::kBool);
}

TEST(Checkpoint, HostileBinsAreRejectedBeforeLibtorchReadsThem) {
  auto expect_error = [](const std::vector<char>& bytes, const std::string& wanted) {
    const std::string error = bin_error(bytes);
    EXPECT_NE(error.find("hostile.bin: "), std::string::npos) << wanted;
    EXPECT_NE(error.find(wanted), std::string::npos) << error;
  };
  std::vector<char> bytes = fixture_bin("torch_save.bin");
  // The ZIP archive.
  expect_error({bytes.begin(), bytes.end() - 1}, "not a ZIP archive");
  expect_error(std::vector<char>{'\x80', '\x02', '\x8a', '\x0a', 'l', 'e', 'g'}, "legacy format");
  expect_error(patched_bin("torch_save/data/2", "torch_savX/data/2"), "is outside the folder 'torch_save/'");
  expect_error(patched_bin("torch_save/version", "torch_save/versioX"), "'torch_save/versioX' is not one torch.save writes");
  expect_error(patched_bin("torch_save/data.pkl", "torch_save/.ata.pkl"), "has no torch_save/data.pkl");
  expect_error(patched_bin("3\nPK", "x\nPK"), "torch_save/version is not a version number");
  std::vector<char> compressed = bytes;  // the central directory entry of data.pkl says deflate
  const std::string central = "PK\x01\x02";
  auto entry = std::search(compressed.begin(), compressed.end(), central.begin(), central.end());
  ASSERT_NE(entry, compressed.end());
  entry[10] = 8;
  expect_error(compressed, "ZIP entry 'torch_save/data.pkl' is compressed (method 8)");
  std::vector<char> outside = bytes;  // ... and places it beyond the end of the file
  entry = std::search(outside.begin(), outside.end(), central.begin(), central.end());
  entry[42] = entry[43] = entry[44] = '\x7f';
  expect_error(outside, "ZIP entry 'torch_save/data.pkl' has no local header");
  std::vector<char> longer = bytes;  // ... and makes it longer than the space before the next entry
  entry = std::search(longer.begin(), longer.end(), central.begin(), central.end());
  entry[21] = entry[25] = 2;
  expect_error(longer, "ZIP entries overlap");
  // The pickle: globals, storages, tensors, the state dict.
  expect_error(patched_bin("_rebuild_tensor_v2", "_rebuild_parameter"),
               "GLOBAL 'torch._utils._rebuild_parameter' is not one a state dict of tensors uses");
  using namespace std::string_literals;  // BINUNICODE '0', the first storage's key
  expect_error(patched_bin("X\x01\x00\x00\x00" "0"s, "X\x01\x00\x00\x00" "7"s), "storage '7' has no entry data/7");
  expect_error(patched_bin("cpu", "gpu"), "is on device 'gpu'");
  expect_error(patched_bin("K\x06t", "K\x07t"), "storage '0' of 7 elements of 4 bytes does not fit its entry of 24 bytes");
  expect_error(patched_bin("K\x02K\x03\x86", "K\x02K\x04\x86"), "a tensor reaches past the 6 elements of its storage");
  expect_error(patched_bin("K\x03K\x01\x86", "K\x04K\x01\x86"), "a tensor reaches past the 6 elements of its storage");
  expect_error(patched_bin("\x89", "N"), "opcode 78 is not one torch.save writes");
  expect_error(patched_bin("h\x02", "h\xc8"), "memo slot 200 was never stored");
  expect_error(patched_bin("u.", ".."), "bytes after STOP");
  const std::string ordered = bin_error(fixture_bin("ordered_dict.bin"));
  EXPECT_NE(ordered.find("the state dict is a collections.OrderedDict, which libtorch's loader does not read"),
            std::string::npos) << ordered;
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
