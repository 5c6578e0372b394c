// The PreTrainedModel surface (embeddings, resize, sharded save, FLOPs, masks, gradient
// checkpointing, tags, auto classes) on every decoder family: Llama (untied head), GPT-2 (tied head) and
// the families on core's decoder (Gemma's tied head, Phi-3's fused projections, ...).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/function.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/safetensors.h>

#include "../core/test_util.h"

using namespace plugformer;

namespace {

const std::string kFixtures = std::string(PLUGFORMER_FIXTURES_DIR) + "/models/";

struct Family {
  std::string name, fixture;
};

class PerFamily : public ::testing::TestWithParam<Family> {
 protected:
  ModelPtr load(const std::string& path = "") {
    return AutoModelForCausalLM::from_pretrained(path.empty() ? kFixtures + GetParam().fixture : path);
  }
  static at::Tensor ids() { return at::tensor({5, 17, 42, 100, 7, 3, 250, 11}, at::kLong).view({2, 4}); }
};

at::Tensor logits(PreTrainedModel& model, const at::Tensor& input_ids) {
  at::NoGradGuard no_grad;
  return model.forward(ModelInputs{{"input_ids", input_ids}})["logits"];
}

std::string family_name(const ::testing::TestParamInfo<Family>& info) { return info.param.name; }
void PrintTo(const Family& family, std::ostream* os) { *os << family.name; }

}  // namespace

INSTANTIATE_TEST_SUITE_P(Families, PerFamily,
                         ::testing::Values(Family{"llama", "llama-tiny"}, Family{"gpt2", "gpt2-tiny-lm"},
                                           Family{"qwen2", "qwen2-tiny"}, Family{"qwen3", "qwen3-tiny"},
                                           Family{"mistral", "mistral-tiny-window"}, Family{"gemma", "gemma-tiny"},
                                           Family{"gemma2", "gemma2-tiny"}, Family{"phi3", "phi3-tiny-longrope"}),
                         family_name);

TEST_P(PerFamily, InputAndOutputEmbeddings) {
  auto model = load();
  auto embedding = model->get_input_embeddings();
  auto head = model->get_output_embeddings();
  ASSERT_TRUE(embedding && head);
  EXPECT_EQ(embedding->weight.size(0), 256);
  EXPECT_EQ(head->weight.size(0), 256);
  EXPECT_EQ(head->weight.data_ptr() == embedding->weight.data_ptr(), model->config().tie_word_embeddings);

  // Replacing the input embeddings changes what the model computes: all-zero embeddings make
  // every token look the same.
  model->set_input_embeddings(at::zeros_like(embedding->weight));
  at::Tensor out = logits(*model, ids());
  EXPECT_TRUE(at::allclose(out[0], out[1]));
  EXPECT_THROW(model->set_input_embeddings(at::zeros({10, 3})), InvalidInputError);

  // A class without an LM head has no output embeddings but the same input embeddings.
  PretrainedOptions options;
  options.architecture = "AutoModelForSequenceClassification";
  auto classifier = load_model_for_architecture(kFixtures + GetParam().fixture, options);
  EXPECT_EQ(classifier->get_output_embeddings(), nullptr);
  EXPECT_EQ(classifier->get_input_embeddings()->weight.size(0), 256);
}

TEST_P(PerFamily, ResizeKeepsOldTokensAndStaysTied) {
  auto model = load();
  const at::Tensor before = logits(*model, ids());
  const at::Tensor old_rows = model->get_input_embeddings()->weight.detach().clone();

  auto embedding = model->resize_token_embeddings(270);
  EXPECT_EQ(embedding->weight.size(0), 270);
  EXPECT_EQ(model->config().get("vocab_size").get<int64_t>(), 270);
  EXPECT_EQ(model->get_output_embeddings()->weight.size(0), 270);
  if (model->config().tie_word_embeddings)
    EXPECT_EQ(model->get_output_embeddings()->weight.data_ptr(), embedding->weight.data_ptr());
  EXPECT_TRUE(at::equal(embedding->weight.narrow(0, 0, 256), old_rows));
  // mean_resizing: the new rows are the old mean up to noise of covariance 1e-9 * cov.
  const at::Tensor mean = old_rows.mean(0);
  EXPECT_LT((embedding->weight.narrow(0, 256, 14) - mean).abs().max().item<double>(), 1e-4);

  const at::Tensor after = logits(*model, ids());
  ASSERT_EQ(after.size(-1), 270);
  EXPECT_LE((after.narrow(-1, 0, 256) - before).abs().max().item<double>(), 1e-5);

  // Save and reload: same config, same outputs, including the new tokens.
  test::TempDir dir("resize-" + GetParam().name);
  model->save_pretrained(dir.path());
  auto reloaded = load(dir.path().string());
  EXPECT_EQ(reloaded->config().get("vocab_size").get<int64_t>(), 270);
  EXPECT_LE((logits(*reloaded, at::tensor({265, 3, 268}, at::kLong).view({1, 3})) -
             logits(*model, at::tensor({265, 3, 268}, at::kLong).view({1, 3})))
                .abs()
                .max()
                .item<double>(),
            1e-6);
}

TEST_P(PerFamily, ResizeRoundsShrinksAndInitialises) {
  auto model = load();
  EXPECT_EQ(model->resize_token_embeddings(std::nullopt, 64)->weight.size(0), 256);  // already a multiple
  EXPECT_EQ(model->resize_token_embeddings(300, 64)->weight.size(0), 320);
  EXPECT_THROW(model->resize_token_embeddings(300, 0), InvalidInputError);

  auto fresh = load();
  const at::Tensor old_rows = fresh->get_input_embeddings()->weight.detach().clone();
  auto shrunk = fresh->resize_token_embeddings(200);
  EXPECT_TRUE(at::equal(shrunk->weight, old_rows.narrow(0, 0, 200)));
  EXPECT_EQ(logits(*fresh, ids().clamp_max(199)).size(-1), 200);

  // Without mean_resizing new rows are drawn like fresh weights: N(0, initializer_range).
  auto grown = load()->resize_token_embeddings(256 + 4096, std::nullopt, /*mean_resizing=*/false);
  const double std = grown->weight.narrow(0, 256, 4096).std().item<double>();
  EXPECT_NEAR(std, 0.02, 0.002);
}

TEST_P(PerFamily, ShardedSaveWithSizeStringReloadsIdenticalTensors) {
  auto model = load();
  test::TempDir dir("shards-" + GetParam().name);
  SaveOptions save;
  save.max_shard_size = parse_file_size("20KB");
  model->save_pretrained(dir.path(), save);
  EXPECT_TRUE(std::filesystem::exists(dir / "model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(dir / "model.safetensors"));
  const json index = read_json_file(dir / "model.safetensors.index.json");
  std::map<std::string, int> tensors_per_file;
  for (const auto& [name, file] : index["weight_map"].items()) ++tensors_per_file[file.get<std::string>()];
  EXPECT_GT(tensors_per_file.size(), 2u);
  // A shard stays under the limit unless one tensor alone is larger (it then gets its own shard).
  for (const auto& [file, count] : tensors_per_file) {
    const auto shard = SafetensorsFile::open(dir / file);
    int64_t bytes = 0;
    for (const auto& key : shard->keys()) bytes += shard->get(key).nbytes();
    EXPECT_TRUE(bytes <= 20'000 || count == 1) << file << ": " << bytes << " bytes in " << count << " tensors";
  }

  auto reloaded = load(dir.path().string());
  const auto original = model->state_dict();
  const auto loaded = reloaded->state_dict();
  ASSERT_EQ(original.size(), loaded.size());
  for (size_t i = 0; i < original.size(); ++i) {
    EXPECT_EQ(original[i].first, loaded[i].first);
    EXPECT_TRUE(at::equal(original[i].second, loaded[i].second)) << original[i].first;
  }
}

TEST_P(PerFamily, GradientCheckpointingGivesTheSameGradients) {
  auto model = load();
  model->train();
  const at::Tensor input_ids = ids();
  auto gradients = [&] {
    model->zero_grad();
    ModelInputs inputs{{"input_ids", input_ids}, {"labels", input_ids}};
    model->forward(inputs)["loss"].backward();
    std::vector<at::Tensor> grads;
    for (const auto& p : model->parameters()) grads.push_back(p.grad().clone());
    return grads;
  };
  const auto plain = gradients();
  model->gradient_checkpointing_enable();
  EXPECT_TRUE(model->is_gradient_checkpointing());

  // The layers really are checkpointed: their outputs hang off the recomputing backward node.
  ModelInputs probe{{"input_ids", input_ids}};
  probe.output_hidden_states = true;
  const auto out = model->forward(probe);
  ASSERT_GE(out.hidden_states.size(), 2u);
  ASSERT_TRUE(out.hidden_states[1].grad_fn());
  EXPECT_EQ(out.hidden_states[1].grad_fn()->name(), "CheckpointBackward");
  EXPECT_EQ(out.past_key_values, nullptr);  // no cache while checkpointing

  const auto checkpointed = gradients();
  ASSERT_EQ(plain.size(), checkpointed.size());
  for (size_t i = 0; i < plain.size(); ++i)
    EXPECT_LE((plain[i] - checkpointed[i]).abs().max().item<double>(), 1e-6) << "parameter " << i;

  // In eval mode nothing is checkpointed.
  model->eval();
  const auto eval_out = model->forward(probe);
  EXPECT_NE(eval_out.hidden_states[1].grad_fn()->name(), "CheckpointBackward");
  model->gradient_checkpointing_disable();
  EXPECT_FALSE(model->is_gradient_checkpointing());
}

TEST_P(PerFamily, InputRequireGradsForFrozenEmbeddings) {
  auto model = load();
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  auto embedding = model->get_input_embeddings();
  EXPECT_FALSE(embedding->forward(ids()).requires_grad());
  model->enable_input_require_grads();
  EXPECT_TRUE(embedding->forward(ids()).requires_grad());
  model->disable_input_require_grads();
  EXPECT_FALSE(embedding->forward(ids()).requires_grad());
}

TEST_P(PerFamily, FloatingPointOpsAreSixTimesTokensTimesParameters) {
  auto model = load();
  ModelInputs inputs{{"input_ids", ids()}};
  EXPECT_EQ(model->estimate_tokens(inputs), 8);
  EXPECT_DOUBLE_EQ(model->floating_point_ops(inputs), 6.0 * 8 * double(model->num_parameters(false, true)));
  EXPECT_DOUBLE_EQ(model->floating_point_ops(inputs, false), 6.0 * 8 * double(model->num_parameters()));
}

TEST(PreTrainedModelCounts, ParametersCountedByHandForLlamaTiny) {
  // hidden 64, 4 heads of 16, 2 kv heads, intermediate 96, 2 layers, vocab 256, untied head:
  // per layer q 4096 + k 2048 + v 2048 + o 4096 + 3 x 6144 MLP + 2 x 64 norms = 30848.
  auto model = AutoModelForCausalLM::from_pretrained(kFixtures + "llama-tiny");
  const int64_t without_embeddings = 2 * 30848 + 64 + 256 * 64;
  EXPECT_EQ(model->num_parameters(false, true), without_embeddings);
  EXPECT_EQ(model->num_parameters(), without_embeddings + 256 * 64);
  EXPECT_EQ(model->memory_footprint(), (without_embeddings + 256 * 64) * 4);
  ModelInputs one{{"input_ids", at::zeros({1, 1}, at::kLong)}};
  EXPECT_DOUBLE_EQ(model->floating_point_ops(one), 6.0 * without_embeddings);
}

TEST(PreTrainedModelMasks, ExtendedAndInvertedMasks) {
  auto encoder_like = AutoModelForCausalLM::from_pretrained(kFixtures + "llama-tiny");
  const float min = std::numeric_limits<float>::lowest();
  const at::Tensor mask = at::tensor({1, 1, 0}, at::kLong).view({1, 3});
  at::Tensor ext = encoder_like->get_extended_attention_mask(mask, {1, 3});
  ASSERT_EQ(ext.sizes(), at::IntArrayRef({1, 1, 1, 3}));
  EXPECT_EQ(ext[0][0][0][0].item<float>(), 0.f);
  EXPECT_EQ(ext[0][0][0][2].item<float>(), min);
  EXPECT_TRUE(at::equal(encoder_like->invert_attention_mask(mask), ext));
  EXPECT_THROW(encoder_like->get_extended_attention_mask(at::ones({3}), {3}), InvalidInputError);

  // As a decoder: causal over the 2 new tokens, the 1 past position visible to both.
  PretrainedOptions options;
  options.config_overrides = {{"is_decoder", true}};
  auto decoder = AutoModelForCausalLM::from_pretrained(kFixtures + "llama-tiny", options);
  at::Tensor causal = decoder->get_extended_attention_mask(at::ones({1, 3}, at::kLong), {1, 2});
  ASSERT_EQ(causal.sizes(), at::IntArrayRef({1, 1, 2, 3}));
  const at::Tensor expected = at::tensor({0.f, 0.f, min, 0.f, 0.f, 0.f}).view({1, 1, 2, 3});
  EXPECT_TRUE(at::equal(causal, expected)) << causal;
  // A 3-D mask is used as given.
  EXPECT_EQ(decoder->get_extended_attention_mask(at::ones({1, 2, 2}), {1, 2}).sizes(), at::IntArrayRef({1, 1, 2, 2}));
}

TEST(PreTrainedModelSave, SizeStringsAsTransformersParsesThem) {
  EXPECT_EQ(parse_file_size("5GB"), 5'000'000'000);
  EXPECT_EQ(parse_file_size("5GiB"), 5LL << 30);
  EXPECT_EQ(parse_file_size("5Gb"), 625'000'000);
  EXPECT_EQ(parse_file_size("200MB"), 200'000'000);
  EXPECT_EQ(parse_file_size("3MiB"), 3 << 20);
  EXPECT_EQ(parse_file_size("10KB"), 10'000);
  EXPECT_EQ(parse_file_size("10kib"), 10'240);
  EXPECT_EQ(parse_file_size("4096"), 4096);
  EXPECT_THROW(parse_file_size("five GB"), InvalidInputError);
  EXPECT_THROW(parse_file_size("5XB"), InvalidInputError);
}

TEST(PreTrainedModelSave, StateDictOverrideAndMainProcessOnly) {
  auto model = AutoModelForCausalLM::from_pretrained(kFixtures + "llama-tiny");
  test::TempDir dir("state-dict-override");
  SaveOptions save;
  save.state_dict = std::vector<std::pair<std::string, at::Tensor>>{{"lm_head.weight", at::ones({256, 64})}};
  model->save_pretrained(dir.path(), save);
  EXPECT_EQ(SafetensorsFile::open(dir / "model.safetensors")->keys(), std::vector<std::string>{"lm_head.weight"});

  test::TempDir other("not-main-process");
  std::filesystem::remove_all(other.path());
  SaveOptions worker;
  worker.is_main_process = false;
  model->save_pretrained(other.path(), worker);
  EXPECT_FALSE(std::filesystem::exists(other.path()));
}

TEST(PreTrainedModelHub, ModelTagsWithoutDuplicates) {
  auto model = AutoModelForCausalLM::from_pretrained(kFixtures + "llama-tiny");
  model->add_model_tags({"lora", "text-generation"});
  model->add_model_tags({"lora", "plugformer"});
  EXPECT_EQ(model->model_tags(), (std::vector<std::string>{"lora", "text-generation", "plugformer"}));
}

TEST(PreTrainedModelAutoClass, RegisteredClassIsWhatTheAutoClassLoadsBack) {
  auto model = AutoModelForCausalLM::from_pretrained(kFixtures + "llama-tiny");
  EXPECT_TRUE(model->can_generate());
  EXPECT_THROW(model->register_for_auto_class("AutoModelForNothing"), ConfigError);
  model->register_for_auto_class("AutoModel");
  test::TempDir dir("auto-class");
  model->save_pretrained(dir.path());
  EXPECT_EQ(read_json_file(dir / "config.json")["auto_map"]["AutoModel"], "LlamaForCausalLM");
  // AutoModel would build the bare LlamaModel; the auto_map entry asks for the LM class.
  auto loaded = AutoModel::from_pretrained(dir.path().string());
  EXPECT_EQ(loaded->class_name(), "LlamaForCausalLM");
  EXPECT_EQ(AutoModel::from_pretrained(kFixtures + "llama-tiny")->class_name(), "LlamaModel");
}

TEST(Checkpointing, RecomputesInBackward) {
  int calls = 0;
  at::Tensor w = at::randn({4, 4}).requires_grad_(true);
  at::Tensor x = at::randn({2, 4}).requires_grad_(true);
  auto layer = [&calls, w](const at::Tensor& h) {
    ++calls;
    return at::tanh(at::matmul(h, w)) * at::rand_like(h);  // random: the replay must reuse the draws
  };
  at::manual_seed(7);
  at::Tensor y = checkpoint(layer, x);
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(at::GradMode::is_enabled() && y.grad_fn() == nullptr);
  y.sum().backward();
  EXPECT_EQ(calls, 2);
  const at::Tensor gw = w.grad().clone(), gx = x.grad().clone();

  w.mutable_grad().reset();
  x.mutable_grad().reset();
  at::manual_seed(7);
  layer(x).sum().backward();
  EXPECT_TRUE(at::allclose(gw, w.grad()));
  EXPECT_TRUE(at::allclose(gx, x.grad()));
}

TEST(PreTrainedModelResize, BertMaskedLmBiasFollowsTheVocabulary) {
  auto model = AutoModelForMaskedLM::from_pretrained(kFixtures + "bert-tiny-mlm");
  const int64_t vocab = model->get_input_embeddings()->weight.size(0);
  const at::Tensor ids = at::tensor({2, 5, 9, 3}, at::kLong).view({1, 4});
  const at::Tensor before = logits(*model, ids);
  model->resize_token_embeddings(vocab + 6);
  EXPECT_EQ(model->get_output_embeddings()->weight.data_ptr(), model->get_input_embeddings()->weight.data_ptr());
  const at::Tensor after = logits(*model, ids);
  ASSERT_EQ(after.size(-1), vocab + 6);
  EXPECT_LE((after.narrow(-1, 0, vocab) - before).abs().max().item<double>(), 1e-5);

  test::TempDir dir("resize-bert");
  model->save_pretrained(dir.path());
  auto reloaded = AutoModelForMaskedLM::from_pretrained(dir.path().string());
  EXPECT_LE((logits(*reloaded, ids) - after).abs().max().item<double>(), 1e-6);
}

namespace {

struct PruneCase {
  std::string fixture, architecture;
  std::string output_projection;  // the attention output projection's path, {L} standing for the layer
  bool conv1d;                    // its weight is [in, out] (GPT-2's Conv1D) rather than [out, in]
  int64_t head_dim;
};

at::Tensor hidden_states(PreTrainedModel& model, const at::Tensor& ids) {
  at::NoGradGuard no_grad;
  return model.forward(ModelInputs{{"input_ids", ids}})["last_hidden_state"];
}

std::string layer_path(std::string pattern, int64_t layer) {
  return pattern.replace(pattern.find("{L}"), 3, std::to_string(layer));
}

// A pruned head contributes nothing: the reference zeroes its slice of the attention output
// projection's inputs in the unpruned model.
void check_pruning(const PruneCase& c) {
  PretrainedOptions options;
  options.architecture = c.architecture;
  const std::string path = kFixtures + c.fixture;
  auto reference = load_model_for_architecture(path, options);
  auto pruned = load_model_for_architecture(path, options);
  const std::map<int64_t, std::vector<int64_t>> heads = {{0, {0, 2}}, {1, {1}}};
  {
    at::NoGradGuard no_grad;
    for (const auto& [layer, list] : heads)
      for (const auto& item : reference->named_parameters())
        if (item.key() == layer_path(c.output_projection, layer) + ".weight") {
          at::Tensor w = item.value();
          for (int64_t h : list) w.narrow(c.conv1d ? 0 : 1, h * c.head_dim, c.head_dim).zero_();
        }
  }
  const at::Tensor ids = at::tensor({3, 14, 15, 9, 2, 6}, at::kLong).view({1, 6});
  const at::Tensor expected = hidden_states(*reference, ids);

  const int64_t before = pruned->num_parameters();
  pruned->prune_heads(heads);
  EXPECT_LE((hidden_states(*pruned, ids) - expected).abs().max().item<double>(), 1e-5);
  EXPECT_LT(pruned->num_parameters(), before);
  for (const auto& item : pruned->named_parameters())
    if (item.key() == layer_path(c.output_projection, 0) + ".weight")
      EXPECT_EQ(item.value().size(c.conv1d ? 0 : 1), reference->config().get("hidden_size").get<int64_t>() - 2 * c.head_dim);
  // Pruning again with an already pruned head only removes the new one.
  pruned->prune_heads({{1, {1, 3}}});
  EXPECT_EQ(pruned->config().get("pruned_heads"), (json{{"0", {0, 2}}, {"1", {1, 3}}}));

  // Saved and loaded back: built pruned from the config, same outputs.
  test::TempDir dir("prune-" + c.fixture);
  pruned->save_pretrained(dir.path());
  auto reloaded = load_model_for_architecture(dir.path().string(), options);
  EXPECT_EQ(reloaded->num_parameters(), pruned->num_parameters());
  EXPECT_LE((hidden_states(*reloaded, ids) - hidden_states(*pruned, ids)).abs().max().item<double>(), 1e-6);
}

}  // namespace

TEST(PruneHeads, Bert) {
  const auto config = AutoConfig::from_pretrained(kFixtures + "bert-tiny-mlm");
  const int64_t head_dim = config->get("hidden_size").get<int64_t>() / config->get("num_attention_heads").get<int64_t>();
  check_pruning({"bert-tiny-mlm", "BertModel", "encoder.layer.{L}.attention.output.dense", false, head_dim});
}

TEST(PruneHeads, Gpt2) { check_pruning({"gpt2-tiny-lm", "GPT2Model", "h.{L}.attn.c_proj", true, 32 / 4}); }

TEST(PruneHeads, FamiliesWithoutItSayWhich) {
  auto model = AutoModelForCausalLM::from_pretrained(kFixtures + "llama-tiny");
  EXPECT_THROW(model->prune_heads({{0, {1}}}), Error);
}

TEST(PruneHeads, BadInput) {
  // A layer the model does not have.
  auto model = AutoModel::from_pretrained(kFixtures + "bert-tiny-mlm");
  try {
    model->prune_heads({{7, {0}}});
    FAIL() << "pruned a layer that does not exist";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 7"), std::string::npos) << e.what();
  }
  // config.json whose pruned_heads is not {layer: [heads]}.
  test::TempDir dir("prune-bad-config");
  test::copy_model(kFixtures + "bert-tiny-mlm", dir.path());
  json config = read_json_file(dir / "config.json");
  config["pruned_heads"] = {{"0", "all"}};
  write_json_file(dir / "config.json", config);
  try {
    AutoModel::from_pretrained(dir.path().string());
    FAIL() << "loaded a config with malformed pruned_heads";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("pruned_heads"), std::string::npos) << e.what();
  }
}
