// PEFT LoRA on the tiny fixtures: outputs against the LoRA formula computed here, merge / unmerge,
// PEFT's file names and keys, hand-written adapter files, several adapters, training with AdamW,
// bias / modules_to_save / layers_to_transform / regex targets, and bad input.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/optim/adamw.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/generation.h>
#include <plugformer/peft.h>
#include <plugformer/safetensors.h>

#include <cmath>
#include <filesystem>

#include <unistd.h>

#include "../core/test_util.h"

using namespace plugformer;

namespace {

std::string fixture(const std::string& name) { return std::string(PLUGFORMER_FIXTURES_DIR) + "/models/" + name; }

ModelPtr load(const std::string& name) { return load_model_for_architecture(fixture(name)); }

std::filesystem::path scratch(const std::string& tag) {
  auto dir = std::filesystem::temp_directory_path() / ("peft_test_" + tag + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

at::Tensor param(torch::nn::Module& m, const std::string& name) {
  for (const auto& p : m.named_parameters(true))
    if (p.key() == name) return p.value();
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

bool has_param(torch::nn::Module& m, const std::string& part) {
  for (const auto& p : m.named_parameters(true))
    if (p.key().find(part) != std::string::npos) return true;
  return false;
}

const at::Tensor kIds = at::tensor({1, 17, 200, 33, 4, 90, 12, 5}, at::kLong).view({2, 4});

at::Tensor logits(PreTrainedModel& m, const at::Tensor& ids = kIds) {
  c10::InferenceMode guard;
  return m.forward({{"input_ids", ids}})["logits"];
}

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

PeftConfig lora(std::vector<std::string> targets, int64_t r = 4, double alpha = 8) {
  PeftConfig c;
  c.r = r;
  c.lora_alpha = alpha;
  c.target_modules = std::move(targets);
  c.init_lora_weights = "false";  // random B: the adapter changes the outputs
  c.task_type = "CAUSAL_LM";
  return c;
}

// The base model with every adapted weight replaced by W + scale * B A, built from the adapter
// matrices read out of the PEFT model: the LoRA formula, computed independently of LoraLayer.
ModelPtr merged_by_hand(const std::string& fixture_name, PeftModel& peft, double scale, bool transposed = false) {
  auto base = load(fixture_name);
  torch::NoGradGuard no_grad;
  for (const auto& p : peft.named_parameters(true)) {
    const std::string& key = p.key();
    const auto at = key.find(".lora_A.default.weight");
    if (at == std::string::npos) continue;
    const std::string module = key.substr(std::string("base_model.model.").size(), at - std::string("base_model.model.").size());
    const at::Tensor A = p.value(), B = param(peft, key.substr(0, at) + ".lora_B.default.weight");
    at::Tensor delta = at::matmul(B, A) * scale;
    param(*base, module + ".weight").add_(transposed ? delta.t() : delta);
  }
  return base;
}

}  // namespace

TEST(Lora, OutputsFollowTheFormulaAndMergeAgrees) {
  at::manual_seed(11);  // random adapter matrices: the same ones on every run
  auto peft = get_peft_model(load("llama-tiny"), lora({"q_proj", "v_proj"}, 4, 8));
  EXPECT_EQ(peft->class_name(), "PeftModelForCausalLM");
  const at::Tensor base = logits(*load("llama-tiny")), adapted = logits(*peft);
  EXPECT_GT(max_diff(base, adapted), 1e-3);  // the adapter does something
  EXPECT_LE(max_diff(adapted, logits(*merged_by_hand("llama-tiny", *peft, 8.0 / 4))), 1e-5);
  // One layer directly: W x + (B A x) * alpha / r.
  auto q = std::dynamic_pointer_cast<Linear>(peft->get_base_model()->named_modules()["model.layers.1.self_attn.q_proj"]);
  ASSERT_TRUE(q);
  const at::Tensor x = at::randn({3, 64});
  const at::Tensor A = param(*q, "lora_A.default.weight"), B = param(*q, "lora_B.default.weight");
  {
    c10::InferenceMode guard;
    EXPECT_LE(max_diff(q->forward(x), at::matmul(x, q->weight.t()) + at::matmul(at::matmul(x, A.t()), B.t()) * 2.0), 1e-5);
  }
  // Merged and unmerged agree; unmerging restores the base weights.
  const at::Tensor before = q->weight.clone();
  peft->merge_adapter();
  EXPECT_LE(max_diff(logits(*peft), adapted), 1e-5);
  EXPECT_GT(max_diff(q->weight, before), 1e-4);
  peft->unmerge_adapter();
  EXPECT_LE(max_diff(q->weight, before), 1e-6);  // rounding of + then - delta
  EXPECT_LE(max_diff(logits(*peft), adapted), 1e-5);
  // merge_and_unload: the plain model, no LoRA parameters left, same outputs.
  ModelPtr plain = peft->merge_and_unload();
  EXPECT_FALSE(has_param(*plain, "lora_"));
  EXPECT_LE(max_diff(logits(*plain), adapted), 1e-5);
}

TEST(Lora, EveryDecoderFamilyTakesPeftsDefaultTargets) {
  // PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING for these model types.
  const std::vector<std::pair<std::string, std::vector<std::string>>> families = {
      {"qwen2-tiny", {"q_proj", "v_proj"}},         {"qwen3-tiny", {"q_proj", "v_proj"}},
      {"mistral-tiny-window", {"q_proj", "v_proj"}}, {"gemma-tiny", {"q_proj", "v_proj"}},
      {"gemma2-tiny", {"q_proj", "v_proj"}}};
  for (const auto& [name, targets] : families) {
    SCOPED_TRACE(name);
    at::manual_seed(5);
    auto peft = get_peft_model(load(name), lora({}, 4, 8));
    std::vector<std::string> chosen = peft->peft_config().target_modules;
    std::sort(chosen.begin(), chosen.end());
    std::vector<std::string> expected = targets;
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(chosen, expected);
    const at::Tensor adapted = logits(*peft);
    EXPECT_GT(max_diff(logits(*load(name)), adapted), 1e-3);
    EXPECT_LE(max_diff(adapted, logits(*merged_by_hand(name, *peft, 8.0 / 4))), 1e-5);
    // Greedy decoding with the KV cache through the adapter equals the merged model's.
    GenerationConfig config;
    config.max_new_tokens = 6;
    const at::Tensor through_adapter = generate(*peft, kIds, at::Tensor(), config).sequences;
    EXPECT_TRUE(at::equal(through_adapter, generate(*merged_by_hand(name, *peft, 2.0), kIds, at::Tensor(), config).sequences));
  }
  // PEFT has no default for phi3 (its projections are fused): it asks for target_modules, and the
  // fused ones take adapters like any Linear.
  EXPECT_THROW(get_peft_model(load("phi3-tiny-longrope"), lora({})), ConfigError);
  at::manual_seed(5);
  auto phi3 = get_peft_model(load("phi3-tiny-longrope"), lora({"qkv_proj", "gate_up_proj"}));
  // The adapted fused projections feed every head and the whole MLP: fp32 rounding of the two
  // orders of summation reaches ~1e-5 on these logits.
  EXPECT_LE(max_diff(logits(*phi3), logits(*merged_by_hand("phi3-tiny-longrope", *phi3, 2.0))), 1e-4);
}

TEST(Lora, RsLoraScalesBySquareRootOfRank) {
  at::manual_seed(6);  // random adapter matrices: the same ones on every run
  PeftConfig c = lora({"q_proj"}, 4, 8);
  c.use_rslora = true;
  auto peft = get_peft_model(load("llama-tiny"), c);
  EXPECT_DOUBLE_EQ(c.scaling(), 8.0 / 2.0);
  EXPECT_LE(max_diff(logits(*peft), logits(*merged_by_hand("llama-tiny", *peft, 4.0))), 1e-5);
}

TEST(Lora, Gpt2Conv1DWithFanInFanOut) {
  auto peft = get_peft_model(load("gpt2-tiny-lm"), lora({"c_attn"}, 2, 4));
  EXPECT_TRUE(has_param(*peft, "base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight"));
  // Conv1D stores [in, out]: the update is (B A)^T.
  EXPECT_LE(max_diff(logits(*peft), logits(*merged_by_hand("gpt2-tiny-lm", *peft, 2.0, true))), 1e-5);
  const at::Tensor adapted = logits(*peft);
  peft->merge_adapter();
  EXPECT_LE(max_diff(logits(*peft), adapted), 1e-5);
}

TEST(Lora, SaveWritesPeftNamesAndReloads) {
  auto peft = get_peft_model(load("llama-tiny"), lora({"q_proj", "v_proj"}));
  const auto dir = scratch("save");
  peft->save_pretrained(dir);
  ASSERT_TRUE(std::filesystem::exists(dir / "adapter_model.safetensors"));
  ASSERT_TRUE(std::filesystem::exists(dir / "README.md"));
  const json config = read_json_file(dir / "adapter_config.json");
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["task_type"], "CAUSAL_LM");
  EXPECT_EQ(config["r"], 4);
  EXPECT_EQ(config["lora_alpha"], 8.0);
  EXPECT_EQ(config["target_modules"], json({"q_proj", "v_proj"}));
  EXPECT_EQ(config["inference_mode"], true);
  EXPECT_EQ(config["bias"], "none");
  auto file = SafetensorsFile::open(dir / "adapter_model.safetensors");
  std::vector<std::string> keys = file->keys();
  std::sort(keys.begin(), keys.end());
  ASSERT_EQ(keys.size(), 8u);  // 2 layers x (q, v) x (A, B)
  EXPECT_EQ(keys[0], "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(keys[1], "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  EXPECT_EQ(file->get(keys[0]).sizes(), at::IntArrayRef({4, 64}));
  auto reloaded = PeftModel::from_pretrained(load("llama-tiny"), dir.string());
  EXPECT_LE(max_diff(logits(*reloaded), logits(*peft)), 1e-6);
  EXPECT_EQ(reloaded->get_nb_trainable_parameters().first, 0);  // not is_trainable
  // The same through adapter_model.bin (safe_serialization = false).
  const auto bin = scratch("bin");
  peft->save_pretrained(bin, {}, false);
  ASSERT_TRUE(std::filesystem::exists(bin / "adapter_model.bin"));
  EXPECT_LE(max_diff(logits(*PeftModel::from_pretrained(load("llama-tiny"), bin.string())), logits(*peft)), 1e-6);
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(bin);
}

TEST(Lora, HandWrittenAdapterFilesMatchTheFormula) {
  // adapter_config.json and adapter_model.safetensors written here as PEFT writes them.
  const auto dir = scratch("hand");
  write_json_file(dir / "adapter_config.json",
                  {{"peft_type", "LORA"}, {"task_type", "CAUSAL_LM"}, {"r", 2}, {"lora_alpha", 6},
                   {"target_modules", {"o_proj"}}, {"lora_dropout", 0.1}, {"bias", "none"},
                   {"base_model_name_or_path", "llama-tiny"}, {"fan_in_fan_out", false}, {"use_rslora", false},
                   {"modules_to_save", nullptr}, {"layers_to_transform", nullptr}, {"rank_pattern", json::object()},
                   {"alpha_pattern", json::object()}, {"use_dora", false}, {"revision", nullptr}});
  at::manual_seed(3);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> ab;
  for (int layer : {0, 1}) {
    const std::string m = "model.layers." + std::to_string(layer) + ".self_attn.o_proj";
    ab[m] = {at::randn({2, 64}) * 0.1, at::randn({64, 2}) * 0.1};
    tensors.emplace_back("base_model.model." + m + ".lora_A.weight", ab[m].first);
    tensors.emplace_back("base_model.model." + m + ".lora_B.weight", ab[m].second);
  }
  save_safetensors(dir / "adapter_model.safetensors", tensors);
  auto peft = PeftModel::from_pretrained(load("llama-tiny"), dir.string());
  auto expected = load("llama-tiny");
  {
    torch::NoGradGuard no_grad;
    for (auto& [m, w] : ab) param(*expected, m + ".weight").add_(at::matmul(w.second, w.first) * 3.0);
  }
  EXPECT_LE(max_diff(logits(*peft), logits(*expected)), 1e-5);  // dropout is off at inference
  std::filesystem::remove_all(dir);
}

TEST(Lora, SeveralAdaptersSwitchDisableAndDelete) {
  auto peft = get_peft_model(load("llama-tiny"), lora({"q_proj"}), "first");
  peft->add_adapter("second", lora({"v_proj"}, 2, 2));
  EXPECT_EQ(peft->active_adapter(), "first");
  const at::Tensor base = logits(*load("llama-tiny")), first = logits(*peft);
  peft->set_adapter("second");
  const at::Tensor second = logits(*peft);
  EXPECT_GT(max_diff(first, second), 1e-3);
  {
    auto guard = peft->disable_adapter();
    EXPECT_LE(max_diff(logits(*peft), base), 1e-6);
  }
  EXPECT_LE(max_diff(logits(*peft), second), 1e-6);
  // Saved side by side: "first" and "second" in folders of their names.
  const auto dir = scratch("multi");
  peft->save_pretrained(dir);
  EXPECT_TRUE(std::filesystem::exists(dir / "first" / "adapter_model.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(dir / "second" / "adapter_config.json"));
  auto other = PeftModel::from_pretrained(load("llama-tiny"), (dir / "first").string());
  PeftLoadOptions options;
  other->load_adapter((dir / "second").string(), "second", options);
  other->set_adapter("second");
  EXPECT_LE(max_diff(logits(*other), second), 1e-6);
  peft->delete_adapter("second");
  EXPECT_FALSE(has_param(*peft, ".second."));
  EXPECT_EQ(peft->active_adapter(), "first");
  EXPECT_LE(max_diff(logits(*peft), first), 1e-6);
  EXPECT_THROW(peft->set_adapter("second"), InvalidInputError);
  std::filesystem::remove_all(dir);
}

TEST(Lora, OnlyTheAdapterTrainsWithAdamW) {
  PeftConfig c = lora({"q_proj", "v_proj"});
  c.init_lora_weights = "true";  // B = 0: starts as the base model
  auto peft = get_peft_model(load("llama-tiny"), c);
  EXPECT_LE(max_diff(logits(*peft), logits(*load("llama-tiny"))), 1e-6);
  // Two layers of q_proj (A [4, 64], B [64, 4]) and v_proj (A [4, 64], B [32, 4]).
  EXPECT_EQ(peft->get_nb_trainable_parameters().first, 2 * (4 * 64 + 64 * 4 + 4 * 64 + 32 * 4));
  std::vector<at::Tensor> params;
  for (const auto& p : peft->parameters())
    if (p.requires_grad()) params.push_back(p);
  const at::Tensor frozen = param(*peft, "base_model.model.model.layers.0.self_attn.q_proj.weight").clone();
  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(1e-2));
  at::Tensor ids = at::randint(0, 256, {4, 16}, at::kLong);
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    optimizer.zero_grad();
    at::Tensor loss = peft->forward({{"input_ids", ids}, {"labels", ids}})["loss"];
    loss.backward();
    optimizer.step();
    if (step == 0) first = loss.item<double>();
    last = loss.item<double>();
  }
  EXPECT_LT(last, first - 0.1);
  EXPECT_TRUE(at::equal(frozen, param(*peft, "base_model.model.model.layers.0.self_attn.q_proj.weight")));
  EXPECT_NE(peft->trainable_parameters_summary().find("trainable params: "), std::string::npos);
}

TEST(Lora, TrainableSummaryInPeftWording) {
  auto peft = get_peft_model(load("llama-tiny"), lora({"q_proj"}));
  const auto [trainable, all] = peft->get_nb_trainable_parameters();
  EXPECT_EQ(trainable, 2 * (4 * 64 + 64 * 4));  // two layers, q_proj: A [4, 64] and B [64, 4]
  EXPECT_EQ(all, load("llama-tiny")->num_parameters() + trainable);
  char percent[32];
  std::snprintf(percent, sizeof percent, "%.4f", 100.0 * double(trainable) / double(all));
  auto with_commas = [](int64_t n) {
    std::string d = std::to_string(n), out;
    for (size_t i = 0; i < d.size(); ++i) out += (i && (d.size() - i) % 3 == 0 ? "," : "") + std::string(1, d[i]);
    return out;
  };
  EXPECT_EQ(peft->trainable_parameters_summary(), "trainable params: " + with_commas(trainable) +
                                                      " || all params: " + with_commas(all) + " || trainable%: " + percent);
}

TEST(Lora, TiedWeightsCountOnce) {
  auto peft = get_peft_model(load("gpt2-tiny-lm"), lora({"c_attn"}, 2, 4));  // lm_head is tied to wte
  EXPECT_EQ(peft->get_nb_trainable_parameters().second,
            load("gpt2-tiny-lm")->num_parameters() + peft->get_nb_trainable_parameters().first);
}

TEST(Lora, BiasModulesToSaveLayersAndRegexTargets) {
  // Sequence classification: the classifier head is trained and saved with the adapter.
  PeftConfig c = lora({"query", "value"});
  c.bias = "lora_only";
  auto peft = PeftModelForSequenceClassification::create(load("bert-tiny-seqcls"), c);  // adds the classifier
  EXPECT_EQ(peft->class_name(), "PeftModelForSequenceClassification");
  EXPECT_TRUE(param(*peft, "base_model.model.classifier.weight").requires_grad());
  EXPECT_TRUE(param(*peft, "base_model.model.bert.encoder.layer.0.attention.self.query.bias").requires_grad());
  EXPECT_FALSE(param(*peft, "base_model.model.bert.encoder.layer.0.attention.self.key.bias").requires_grad());
  std::set<std::string> keys;
  for (const auto& [k, t] : peft->adapter_state_dict()) keys.insert(k);
  EXPECT_TRUE(keys.count("base_model.model.classifier.weight"));
  EXPECT_TRUE(keys.count("base_model.model.bert.encoder.layer.0.attention.self.query.bias"));
  EXPECT_FALSE(keys.count("base_model.model.bert.encoder.layer.0.attention.self.key.bias"));
  EXPECT_TRUE(keys.count("base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight"));

  PeftConfig layers = lora({"q_proj"});
  layers.layers_to_transform = {1};
  auto only_one = get_peft_model(load("llama-tiny"), layers);
  EXPECT_FALSE(has_param(*only_one, "layers.0.self_attn.q_proj.lora_A"));
  EXPECT_TRUE(has_param(*only_one, "layers.1.self_attn.q_proj.lora_A"));

  PeftConfig regex = lora({});
  regex.target_modules_regex = R"(.*\.(k|o)_proj)";
  auto by_regex = get_peft_model(load("llama-tiny"), regex);
  EXPECT_TRUE(has_param(*by_regex, "k_proj.lora_A") && has_param(*by_regex, "o_proj.lora_B"));
  EXPECT_FALSE(has_param(*by_regex, "q_proj.lora_A"));
}

TEST(Lora, GenerateThroughTheAdapterEqualsTheMergedModel) {
  auto peft = get_peft_model(load("llama-tiny"), lora({"q_proj", "v_proj", "down_proj"}));
  GenerationConfig config = GenerationConfig::from_model_config(peft->config());
  config.max_new_tokens = 8;
  config.eos_token_id.clear();
  auto a = generate(*peft, kIds, {}, config);
  auto merged = merged_by_hand("llama-tiny", *peft, 2.0);
  auto b = generate(*merged, kIds, {}, config);
  EXPECT_TRUE(at::equal(a.sequences, b.sequences));
}

TEST(LoraBadInput, TargetsMatchingNothingListTheCandidates) {
  try {
    get_peft_model(load("llama-tiny"), lora({"query", "value"}));
    FAIL();
  } catch (const InvalidInputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("query"), std::string::npos) << m;
    EXPECT_NE(m.find("q_proj"), std::string::npos) << m;  // what the model has
    EXPECT_NE(m.find("down_proj"), std::string::npos) << m;
  }
  EXPECT_THROW(get_peft_model(load("llama-tiny"), lora({"embed_tokens"})), InvalidInputError);  // not a Linear
}

TEST(LoraBadInput, RankDisagreesWithTheSavedTensors) {
  auto peft = get_peft_model(load("llama-tiny"), lora({"q_proj"}, 4));
  const auto dir = scratch("rank");
  peft->save_pretrained(dir);
  json config = read_json_file(dir / "adapter_config.json");
  config["r"] = 8;
  write_json_file(dir / "adapter_config.json", config);
  try {
    PeftModel::from_pretrained(load("llama-tiny"), dir.string());
    FAIL();
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("r = 8"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(LoraBadInput, AdapterForAnotherArchitecture) {
  auto peft = get_peft_model(load("llama-tiny"), lora({"q_proj"}));
  const auto dir = scratch("arch");
  peft->save_pretrained(dir);
  // GPT-2 has no q_proj: the error names what it has.
  try {
    PeftModel::from_pretrained(load("gpt2-tiny-lm"), dir.string());
    FAIL();
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("c_attn"), std::string::npos) << e.what();
  }
  // Keys naming modules the model lacks are refused too (targets written by hand to match).
  json config = read_json_file(dir / "adapter_config.json");
  config["target_modules"] = json::array({"c_attn"});
  write_json_file(dir / "adapter_config.json", config);
  EXPECT_THROW(PeftModel::from_pretrained(load("gpt2-tiny-lm"), dir.string()), CheckpointError);
  std::filesystem::remove_all(dir);
}

TEST(LoraBadInput, TargetModulesThatAreNoRegexAreConfigErrors) {
  // A target_modules string is a regex: an invalid one escaped as std::regex_error when the adapter
  // was injected. Now adapter_config.json names the field, and a config made in code is a ConfigError.
  try {
    PeftConfig::from_json({{"peft_type", "LORA"}, {"target_modules", "(q|v_proj"}}, "adapter_config.json");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("adapter_config.json: field 'target_modules' must be a list of module names or "
                                         "a valid regular expression"),
              std::string::npos) << e.what();
  }
  PeftConfig config = lora({});
  config.target_modules_regex = "[q_proj";
  EXPECT_THROW(get_peft_model(load("llama-tiny"), config), ConfigError);
  // fuzz/adapter_config: libstdc++ overflowed a long reading a back-reference number (undefined
  // behaviour inside std::regex); numbers longer than any layer index are refused before it.
  for (const char* pattern : {R"(.*\.attn\8888888888888888888888)", "q_proj{99999999999}"}) {
    try {
      PeftConfig::from_json({{"peft_type", "LORA"}, {"target_modules", pattern}}, "adapter_config.json");
      ADD_FAILURE() << pattern;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("a number of more than 9 digits"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(PeftConfig::from_json({{"peft_type", "LORA"}, {"target_modules", R"(.*\.layers\.(0|12)\.q_proj)"}}));
}

TEST(LoraBadInput, UnknownPeftTypeAndMissingFiles) {
  const auto dir = scratch("bad");
  write_json_file(dir / "adapter_config.json", {{"peft_type", "IA3"}, {"target_modules", {"q_proj"}}});
  try {
    PeftModel::from_pretrained(load("llama-tiny"), dir.string());
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("IA3"), std::string::npos) << e.what();
  }
  write_json_file(dir / "adapter_config.json", {{"peft_type", "LORA"}, {"r", 4}, {"target_modules", {"q_proj"}}});
  EXPECT_THROW(PeftModel::from_pretrained(load("llama-tiny"), dir.string()), FileNotFoundError);  // no weights
  std::filesystem::remove(dir / "adapter_config.json");
  EXPECT_THROW(PeftModel::from_pretrained(load("llama-tiny"), dir.string()), FileNotFoundError);  // no config
  write_json_file(dir / "adapter_config.json", {{"peft_type", "LORA"}, {"r", 0}});
  EXPECT_THROW(PeftModel::from_pretrained(load("llama-tiny"), dir.string()), ConfigError);
  write_json_file(dir / "adapter_config.json", {{"peft_type", "LORA"}, {"use_dora", true}});
  EXPECT_THROW(PeftModel::from_pretrained(load("llama-tiny"), dir.string()), ConfigError);
  std::filesystem::remove_all(dir);
}

TEST(LoraCli, GenerateWithAdapterEqualsTheApi) {
  auto peft = get_peft_model(AutoModelForCausalLM::from_pretrained(test::kStories), lora({"q_proj", "v_proj"}, 4, 64));
  const auto dir = scratch("cli");
  peft->save_pretrained(dir);
  auto r = test::run_cli("generate " + test::kStories + " --adapter " + dir.string() + " --ids 1,403,407 --max-new-tokens 12 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const json result = json::parse(r.out.substr(r.out.find('{')));
  GenerationConfig config = GenerationConfig::from_model_config(peft->config());
  config.update_from_json(read_json_file(test::kStories + "/generation_config.json"));
  config.max_new_tokens = 12;
  auto out = generate(*peft, at::tensor({1, 403, 407}, at::kLong).unsqueeze(0), {}, config);
  at::Tensor fresh = out.sequences[0].narrow(0, 3, out.sequences.size(1) - 3).contiguous();
  const std::vector<int64_t> expected(fresh.data_ptr<int64_t>(), fresh.data_ptr<int64_t>() + fresh.numel());
  EXPECT_EQ(result["generated_ids"].get<std::vector<int64_t>>(), expected);
  // Without the adapter the continuation differs (the adapter is large enough to change it).
  auto plain = test::run_cli("generate " + test::kStories + " --ids 1,403,407 --max-new-tokens 12 --json");
  EXPECT_NE(json::parse(plain.out.substr(plain.out.find('{')))["generated_ids"], result["generated_ids"]);
  std::filesystem::remove_all(dir);
}

namespace {

PeftConfig prompt(const std::string& type, int64_t tokens) {
  PeftConfig c;
  c.peft_type = type;
  c.num_virtual_tokens = tokens;
  c.task_type = "CAUSAL_LM";
  return c;
}

}  // namespace

TEST(PromptTuning, VirtualTokensArePrependedEmbeddings) {
  auto peft = get_peft_model(load("llama-tiny"), prompt("PROMPT_TUNING", 3));
  const at::Tensor out = logits(*peft);
  ASSERT_EQ(out.sizes(), at::IntArrayRef({2, 7, 256}));  // PEFT returns the virtual positions too
  // By hand: the base model on [P; embed(ids)].
  auto base = load("llama-tiny");
  const at::Tensor P = param(*peft, "prompt_encoder.default.embedding.weight");
  at::Tensor expected;
  {
    c10::InferenceMode guard;
    at::Tensor embeds = at::cat({P.unsqueeze(0).expand({2, 3, 64}), base->get_input_embeddings()->forward(kIds)}, 1);
    expected = base->forward({{"inputs_embeds", embeds}})["logits"];
  }
  EXPECT_LE(max_diff(out, expected), 1e-6);
  // Generation: with and without the cache, the same tokens.
  GenerationConfig config = GenerationConfig::from_model_config(peft->config());
  config.max_new_tokens = 6;
  config.eos_token_id.clear();
  auto cached = generate(*peft, kIds, at::ones_like(kIds), config);
  config.use_cache = false;
  auto uncached = generate(*peft, kIds, at::ones_like(kIds), config);
  EXPECT_TRUE(at::equal(cached.sequences, uncached.sequences));
  EXPECT_THROW(peft->merge_and_unload(), InvalidInputError);
}

TEST(PrefixTuning, PrefixKeysAndValuesInTheCache) {
  for (const std::string name : {"llama-tiny", "gpt2-tiny-lm", "qwen2-tiny", "phi3-tiny-longrope"}) {
    SCOPED_TRACE(name);
    auto peft = get_peft_model(load(name), prompt("PREFIX_TUNING", 2));
    const PeftConfig& c = peft->peft_config();
    const at::Tensor out = logits(*peft);
    ASSERT_EQ(out.size(1), 4);  // the prefix lives in the cache, not in the logits
    // By hand: each layer's keys / values from the [n, layers * 2 * token_dim] table.
    auto base = load(name);
    const at::Tensor table = param(*peft, "prompt_encoder.default.embedding.weight");
    const int64_t heads = c.num_attention_heads, dim = c.token_dim / heads;
    auto cache = std::make_shared<KVCache>();
    for (int64_t layer = 0; layer < c.num_layers; ++layer) {
      auto part = [&](int64_t which) {
        at::Tensor t = table.view({2, c.num_layers * 2, heads, dim}).select(1, 2 * layer + which);  // [n, heads, dim]
        return t.permute({1, 0, 2}).unsqueeze(0).expand({2, heads, 2, dim}).contiguous();
      };
      cache->update(size_t(layer), part(0), part(1));
    }
    ModelInputs inputs{{"input_ids", kIds}, {"attention_mask", at::ones({2, 6}, at::kLong)}};
    inputs.past_key_values = cache;
    at::Tensor expected;
    {
      c10::InferenceMode guard;
      expected = base->forward(inputs)["logits"];
    }
    EXPECT_LE(max_diff(out, expected), 1e-6);
    EXPECT_GT(max_diff(out, logits(*base)), 1e-4);
    GenerationConfig config = GenerationConfig::from_model_config(peft->config());
    config.max_new_tokens = 6;
    config.eos_token_id.clear();
    auto cached = generate(*peft, kIds, at::ones_like(kIds), config);
    config.use_cache = false;
    EXPECT_TRUE(at::equal(cached.sequences, generate(*peft, kIds, at::ones_like(kIds), config).sequences));
  }
}

TEST(PromptLearning, SaveReloadAndTrain) {
  for (const std::string type : {"PROMPT_TUNING", "PREFIX_TUNING"}) {
    SCOPED_TRACE(type);
    PeftConfig c = prompt(type, 4);
    c.prefix_projection = type == "PREFIX_TUNING";  // the MLP trains; the saved prefix is its output
    c.encoder_hidden_size = 16;
    auto peft = get_peft_model(load("llama-tiny"), c);
    std::vector<at::Tensor> params;
    for (const auto& p : peft->parameters())
      if (p.requires_grad()) params.push_back(p);
    ASSERT_FALSE(params.empty());
    torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(5e-2));
    const at::Tensor ids = at::randint(0, 256, {4, 12}, at::kLong);
    double first = 0, last = 0;
    for (int step = 0; step < 15; ++step) {
      optimizer.zero_grad();
      at::Tensor loss = peft->forward({{"input_ids", ids}, {"labels", ids}})["loss"];
      loss.backward();
      optimizer.step();
      (step == 0 ? first : last) = loss.item<double>();
    }
    EXPECT_LT(last, first);
    const auto dir = scratch("prompt");
    peft->save_pretrained(dir);
    const json saved = read_json_file(dir / "adapter_config.json");
    EXPECT_EQ(saved["peft_type"], type);
    EXPECT_EQ(saved["num_virtual_tokens"], 4);
    EXPECT_EQ(saved["num_layers"], 2);
    auto file = SafetensorsFile::open(dir / "adapter_model.safetensors");
    EXPECT_EQ(file->keys(), std::vector<std::string>{"prompt_embeddings"});
    auto reloaded = PeftModel::from_pretrained(load("llama-tiny"), dir.string());
    EXPECT_LE(max_diff(logits(*reloaded), logits(*peft)), 1e-5);
    std::filesystem::remove_all(dir);
  }
}

TEST(PromptLearningBadInput, EncodersAndWrongShapes) {
  EXPECT_THROW(get_peft_model(load("bert-tiny-mlm"), prompt("PROMPT_TUNING", 2)), InvalidInputError);
  auto peft = get_peft_model(load("llama-tiny"), prompt("PROMPT_TUNING", 3));
  const auto dir = scratch("prompt_bad");
  peft->save_pretrained(dir);
  json config = read_json_file(dir / "adapter_config.json");
  config["num_virtual_tokens"] = 5;
  write_json_file(dir / "adapter_config.json", config);
  EXPECT_THROW(PeftModel::from_pretrained(load("llama-tiny"), dir.string()), CheckpointError);
  std::filesystem::remove_all(dir);
}
