// Qwen2, Qwen3, Mistral, Gemma, Gemma 2 and Phi-3 parity on the hfref fixtures (sliding windows
// shorter than the sequences, head_dim unlike hidden / heads, q / k norms, (1 + w) norms, soft-caps,
// fused projections, longrope in both regimes), in fp32, and in bf16 / fp16 against fp32.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <plugformer/auto.h>
#include <plugformer/decoder.h>
#include <plugformer/error.h>
#include <plugformer/generation.h>

#include "../core/test_util.h"
#include "fixture_runner.h"

namespace {

const std::vector<std::string> kFixtures = {"qwen2-tiny",        "qwen2-tiny-seqcls",  "qwen2-tiny-tokcls", "qwen3-tiny",
                                 "qwen3-tiny-seqcls", "mistral-tiny-window", "mistral-tiny-seqcls", "gemma-tiny",
                                 "gemma2-tiny",       "phi3-tiny-longrope", "phi3-tiny-seqcls",  "phi3-tiny-tokcls"};

class DecoderFamilyFixture : public ::testing::TestWithParam<std::string> {};

std::string test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

}  // namespace

TEST_P(DecoderFamilyFixture, MatchesTheGoldenOutputsAndGreedyTokens) {
  plugformer::testing::check_model_fixture(GetParam());
}

TEST_P(DecoderFamilyFixture, Bfloat16AndFloat16AgreeWithFloat32) {
  plugformer::testing::check_reduced_precision_agreement(GetParam(), {"float16"});
}

INSTANTIATE_TEST_SUITE_P(Families, DecoderFamilyFixture, ::testing::ValuesIn(kFixtures), test_name);

// --- Real checkpoints' configs (tests/fixtures/real_configs): the models they describe ---

namespace {

using namespace plugformer;

struct RealCheckpoint {
  std::string folder, architecture;
  int64_t parameters;   // the exact count (the same as keras-hub's for these models)
  double card_billions; // the model card's figure, to its precision (0: the card names a size class only)
  double card_precision;
  std::string rope_type;
  std::string windows;  // "full", "all W" or "even W" (Gemma 2: even layers slide)
};

const std::vector<RealCheckpoint> kRealCheckpoints = {
    {"Qwen--Qwen2.5-0.5B-Instruct", "Qwen2ForCausalLM", 494032768, 0.49, 0.01, "default", "full"},
    {"Qwen--Qwen2.5-1.5B-Instruct", "Qwen2ForCausalLM", 1543714304, 1.54, 0.01, "default", "full"},
    {"Qwen--Qwen3-0.6B", "Qwen3ForCausalLM", 596049920, 0.6, 0.1, "default", "full"},
    {"Qwen--Qwen3-1.7B", "Qwen3ForCausalLM", 1720574976, 1.7, 0.1, "default", "full"},
    {"mistralai--Mistral-7B-v0.1", "MistralForCausalLM", 7241732096, 7.0, 1.0, "default", "all 4096"},
    {"mistralai--Mistral-7B-Instruct-v0.3", "MistralForCausalLM", 7248023552, 7.0, 1.0, "default", "full"},
    {"google--gemma-2b", "GemmaForCausalLM", 2506172416, 0, 0, "default", "full"},
    {"google--gemma-7b", "GemmaForCausalLM", 8537680896, 0, 0, "default", "full"},
    {"google--gemma-2-2b-it", "Gemma2ForCausalLM", 2614341888, 0, 0, "default", "even 4096"},
    {"google--gemma-2-9b-it", "Gemma2ForCausalLM", 9241705984, 0, 0, "default", "even 4096"},
    {"microsoft--Phi-3.5-mini-instruct", "Phi3ForCausalLM", 3821079552, 3.8, 0.1, "longrope", "all 262144"},
    {"microsoft--Phi-3-mini-4k-instruct", "Phi3ForCausalLM", 3821079552, 3.8, 0.1, "default", "all 2047"},
};

std::string real_config_dir(const std::string& folder) {
  return std::string(PLUGFORMER_FIXTURES_DIR) + "/real_configs/" + folder;
}

// The model a config describes, built without touching its weights' memory (at::empty pages).
ModelPtr structure_of(ConfigPtr config) {
  auto entry = Registry::instance().find_architecture(config->architectures.at(0));
  if (!entry) throw RegistryError("unregistered " + config->architectures.at(0));
  ModelPtr model = Registry::instance().make_model(*entry, config);
  model->tie_weights();
  return model;
}

}  // namespace

TEST(RealCheckpoints, ParameterCountsAndSettingsMatchTheModelCards) {
  for (const auto& real : kRealCheckpoints) {
    SCOPED_TRACE(real.folder);
    ConfigPtr config = AutoConfig::from_pretrained(real_config_dir(real.folder));
    ModelPtr model = structure_of(config);
    EXPECT_EQ(model->class_name(), real.architecture);
    EXPECT_EQ(model->num_parameters(), real.parameters);
    if (real.card_billions > 0)
      EXPECT_NEAR(double(model->num_parameters()) / 1e9, real.card_billions, real.card_precision / 2 + 1e-9);
    EXPECT_EQ(config->torch_dtype.value_or(""), "bfloat16");
    const DecoderLayout layout = std::dynamic_pointer_cast<DecoderConfig>(config)->decoder_layout();
    EXPECT_EQ(RotaryEmbedding(layout.head_dim, layout.rope_theta, layout.rope_scaling, layout.max_position_embeddings,
                              layout.partial_rotary_factor, layout.original_max_position_embeddings)
                  .rope_type(),
              real.rope_type);
    for (size_t i = 0; i < layout.sliding_windows.size(); ++i) {
      const auto& w = layout.sliding_windows[i];
      const std::string got = w ? std::to_string(*w) : "full";
      if (real.windows == "full") EXPECT_EQ(got, "full") << "layer " << i;
      else if (real.windows.starts_with("all ")) EXPECT_EQ(got, real.windows.substr(4)) << "layer " << i;
      else EXPECT_EQ(got, i % 2 == 0 ? real.windows.substr(5) : "full") << "layer " << i;
    }
  }
}

TEST(RealCheckpoints, SmallQwenModelsRunWithRandomWeights) {
  for (const char* folder : {"Qwen--Qwen2.5-0.5B-Instruct", "Qwen--Qwen3-0.6B"}) {
    SCOPED_TRACE(folder);
    auto model = AutoModelForCausalLM::from_config(AutoConfig::from_pretrained(real_config_dir(folder)));
    c10::InferenceMode guard;
    const at::Tensor ids = at::tensor(std::vector<int64_t>{9707, 11, 1879, 0}).view({1, 4});
    const at::Tensor logits = model->forward(ModelInputs{{"input_ids", ids}})["logits"];
    EXPECT_EQ(logits.sizes(), at::IntArrayRef({1, 4, 151936}));
    EXPECT_TRUE(at::isfinite(logits).all().item<bool>());
  }
}

// --- Bad configs and checkpoints: typed errors naming the file and the field ---

namespace {

// A copy of fixture `name` with config.json changed by `edit`, in a fresh folder.
std::string edited_fixture(const std::string& name, const std::function<void(json&)>& edit) {
  namespace fs = std::filesystem;
  static const test::TempDir scratch("decoder_families_test");  // removed when the program ends
  const fs::path dir = scratch / ("bad_" + name);
  fs::remove_all(dir);
  fs::copy(plugformer::testing::fixture(name), dir, fs::copy_options::recursive);
  json config = read_json_file(dir / "config.json");
  edit(config);
  write_json_file(dir / "config.json", config);
  return dir.string();
}

template <class E>
std::string error_loading(const std::string& dir) {
  try {
    load_model_for_architecture(dir, {});
  } catch (const E& e) {
    return e.what();
  }
  return "(no error of the expected type)";
}

}  // namespace

TEST(DecoderBadInput, LayerTypesOfTheWrongLengthOrKind) {
  const std::string short_list = edited_fixture("gemma2-tiny", [](json& c) { c["layer_types"] = {"sliding_attention"}; });
  std::string message = error_loading<ConfigError>(short_list);
  EXPECT_NE(message.find(short_list + "/config.json"), std::string::npos) << message;
  EXPECT_NE(message.find("'layer_types' has 1 entries but num_hidden_layers is 2"), std::string::npos) << message;

  const std::string unknown =
      edited_fixture("qwen2-tiny", [](json& c) { c["layer_types"] = {"full_attention", "chunked_attention"}; });
  message = error_loading<ConfigError>(unknown);
  EXPECT_NE(message.find("'layer_types[1]' is 'chunked_attention'"), std::string::npos) << message;
}

TEST(DecoderBadInput, UnknownRopeTypeAndMissingRopeKeys) {
  const std::string unknown =
      edited_fixture("qwen3-tiny", [](json& c) { c["rope_scaling"] = {{"rope_type", "ntk-by-parts"}, {"factor", 2.0}}; });
  std::string message = error_loading<ConfigError>(unknown);
  EXPECT_NE(message.find(unknown + "/config.json"), std::string::npos) << message;
  EXPECT_NE(message.find("'ntk-by-parts' is not supported"), std::string::npos) << message;

  const std::string no_factor = edited_fixture("qwen2-tiny", [](json& c) { c["rope_scaling"] = {{"type", "yarn"}}; });
  message = error_loading<ConfigError>(no_factor);
  EXPECT_NE(message.find("'rope_scaling.factor' is required"), std::string::npos) << message;

  const std::string no_long = edited_fixture("phi3-tiny-longrope", [](json& c) { c["rope_scaling"].erase("long_factor"); });
  message = error_loading<ConfigError>(no_long);
  EXPECT_NE(message.find("rope_scaling.long_factor"), std::string::npos) << message;
}

TEST(DecoderBadInput, HeadDimThatDisagreesWithTheCheckpoint) {
  const std::string dir = edited_fixture("qwen3-tiny", [](json& c) { c["head_dim"] = 16; });
  const std::string message = error_loading<CheckpointError>(dir);
  EXPECT_NE(message.find(dir), std::string::npos) << message;
  EXPECT_NE(message.find("model.layers.0.self_attn.q_proj.weight' has shape [96, 64]"), std::string::npos) << message;
}

TEST(DecoderBadInput, KeyValueHeadsThatDoNotDivideTheHeads) {
  const std::string dir = edited_fixture("mistral-tiny-window", [](json& c) { c["num_key_value_heads"] = 3; });
  const std::string message = error_loading<ConfigError>(dir);
  EXPECT_NE(message.find(dir + "/config.json"), std::string::npos) << message;
  EXPECT_NE(message.find("'num_attention_heads' (4) must be a multiple of 'num_key_value_heads' (3)"), std::string::npos)
      << message;
}

TEST(DecoderBadInput, Phi3RopeTypesOtherThanLongropeAndBidirectionalGemma) {
  const std::string linear = edited_fixture("phi3-tiny-seqcls", [](json& c) {
    c["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  });
  std::string message = error_loading<ConfigError>(linear);
  EXPECT_NE(message.find("Phi-3 takes only 'longrope'"), std::string::npos) << message;
  const std::string both_ways = edited_fixture("gemma2-tiny", [](json& c) { c["use_bidirectional_attention"] = true; });
  message = error_loading<ConfigError>(both_ways);
  EXPECT_NE(message.find("'use_bidirectional_attention' is true"), std::string::npos) << message;
  // The older names of longrope load as longrope.
  const std::string su = edited_fixture("phi3-tiny-longrope", [](json& c) {
    c["rope_scaling"]["type"] = "su";
    c["rope_scaling"].erase("rope_type");
  });
  EXPECT_NO_THROW(load_model_for_architecture(su, {}));
}

TEST(DecoderBadInput, HiddenSizeNotDivisibleWithoutHeadDim) {
  const std::string dir = edited_fixture("phi3-tiny-seqcls", [](json& c) { c["num_attention_heads"] = 3; c["num_key_value_heads"] = 3; });
  const std::string message = error_loading<ConfigError>(dir);
  EXPECT_NE(message.find("'hidden_size' (64) must be divisible by 'num_attention_heads' (3)"), std::string::npos)
      << message;
}

// --- The same generations through `plugformer generate --ids --json` ---

TEST(DecoderFamiliesCli, GenerateIdsAsJsonGivesTheFixturesGreedyTokens) {
  for (const char* name : {"qwen2-tiny", "qwen3-tiny", "mistral-tiny-window", "gemma-tiny", "gemma2-tiny",
                           "phi3-tiny-longrope"}) {
    SCOPED_TRACE(name);
    const std::string dir = plugformer::testing::fixture(name);
    const json spec = read_json_file(dir + "/expected.json");
    const json& single = spec["generate"].contains("single") ? spec["generate"]["single"] : spec["generate"]["long_single"];
    const at::Tensor ids = plugformer::testing::expected(name, single["inputs"]["input_ids"].get<std::string>());
    std::string list;
    for (int64_t i = 0; i < ids.size(1); ++i) list += (i ? "," : "") + std::to_string(ids[0][i].item<int64_t>());
    auto r = test::run_cli("generate " + dir + " --ids " + list + " --max-new-tokens 20 --json");
    ASSERT_EQ(r.status, 0) << r.out;
    const json result = json::parse(r.out.substr(r.out.find('{')));
    EXPECT_EQ(result["generated_ids"].get<std::vector<int64_t>>(), single["new_tokens"][0].get<std::vector<int64_t>>());
  }
}

// --- A model windowed on every layer keeps only the window in its cache ---

TEST(SlidingWindowCache, StopsGrowingAndGivesTheFullComputationsLogits) {
  auto model = plugformer::testing::load("mistral-tiny-window", "MistralForCausalLM");  // window 5, every layer
  c10::InferenceMode guard;
  at::Tensor ids = plugformer::testing::expected("mistral-tiny-window", "single.input_ids");
  ModelInputs prefill{{"input_ids", ids}};
  prefill.use_cache = true;
  ModelOutput out = model->forward(prefill);
  auto cache = out.past_key_values;
  ASSERT_TRUE(cache);
  EXPECT_EQ(cache->window(), std::optional<int64_t>(5));
  for (int step = 0; step < 12; ++step) {
    const at::Tensor next = out["logits"].select(1, -1).argmax(-1).view({1, 1});
    ids = at::cat({ids, next}, 1);
    ModelInputs inputs{{"input_ids", next}};
    inputs.past_key_values = cache;
    inputs.use_cache = true;
    out = model->forward(inputs);
    EXPECT_EQ(cache->seq_length(0), ids.size(1));
    EXPECT_EQ(cache->stored_length(0), 4);  // window - 1 positions kept between steps
    const at::Tensor full = model->forward(ModelInputs{{"input_ids", ids}})["logits"].select(1, -1);
    EXPECT_LE((out["logits"].select(1, -1) - full).abs().max().item<double>(), 1e-4) << "step " << step;
  }
  // A padded batch takes the same path: the mask covers only the stored slots.
  const at::Tensor batch_ids = plugformer::testing::expected("mistral-tiny-window", "left.input_ids");
  const at::Tensor batch_mask = plugformer::testing::expected("mistral-tiny-window", "left.attention_mask");
  GenerationConfig config;
  config.max_new_tokens = 10;
  config.pad_token_id = 0;
  config.use_cache = true;
  const at::Tensor cached = generate(*model, batch_ids, batch_mask, config).sequences;
  config.use_cache = false;
  EXPECT_TRUE(at::equal(cached, generate(*model, batch_ids, batch_mask, config).sequences));
}

// --- Phi-3 longrope: generation that crosses original_max_position_embeddings ---

TEST(LongropeGeneration, CrossingTheOriginalContextRecomputesTheCacheAsTransformers) {
  // Prompt of 10 tokens, original context 16: the 7th new token crosses into the long factors.
  // transformers drops the cache there and runs the whole sequence again; with the cache kept,
  // the keys cached so far would stay rotated by the short factors and the logits would differ.
  auto model = plugformer::testing::load("phi3-tiny-longrope", "Phi3ForCausalLM");
  const at::Tensor ids = plugformer::testing::expected("phi3-tiny-longrope", "single.input_ids");
  ASSERT_LT(ids.size(1), 16);
  GenerationConfig config;
  config.max_new_tokens = 14;
  config.use_cache = true;
  const auto cached = generate(*model, ids, at::Tensor(), config);
  config.use_cache = false;
  const auto full = generate(*model, ids, at::Tensor(), config);
  EXPECT_TRUE(at::equal(cached.sequences, full.sequences));
  ASSERT_EQ(cached.scores.size(), full.scores.size());
  for (size_t t = 0; t < cached.scores.size(); ++t)
    EXPECT_LE((cached.scores[t] - full.scores[t]).abs().max().item<double>(), 1e-4) << "step " << t;
  EXPECT_TRUE(model->reuses_cache(16, 15));
  EXPECT_FALSE(model->reuses_cache(17, 16));
  EXPECT_TRUE(model->reuses_cache(18, 17));
}
