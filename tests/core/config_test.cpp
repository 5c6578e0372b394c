#include <gtest/gtest.h>
#include <unistd.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>

#include "test_util.h"

using namespace plugformer;

namespace {

// A family config with an alias, as gpt2 has (n_embd -> hidden_size).
class AliasConfig : public PretrainedConfig {
 public:
  AliasConfig() { model_type_ = "alias-test"; }
  std::string model_type() const override { return "alias-test"; }
  std::map<std::string, std::string> attribute_map() const override { return {{"n_embd", "hidden_size"}}; }
  void visit_fields(ConfigFieldVisitor& v) override {
    PretrainedConfig::visit_fields(v);
    v.field("hidden_size", hidden_size);
    v.field("scale", scale);
  }
  int64_t hidden_size = 16;
  double scale = 1.0;
};

json stories_config() { return read_json_file(test::kStories + "/config.json"); }

}  // namespace

TEST(Config, ParsesLlamaConfigWithDefaults) {
  auto config = AutoConfig::from_pretrained(test::kStories);
  EXPECT_EQ(config->model_type(), "llama");
  EXPECT_EQ(config->get("hidden_size").get<int64_t>(), 64);
  EXPECT_EQ(config->get("num_key_value_heads").get<int64_t>(), 4);
  EXPECT_EQ(config->architectures, std::vector<std::string>{"LlamaForCausalLM"});
  EXPECT_EQ(config->bos_token_id, 1);
  EXPECT_EQ(config->eos_token_id, std::vector<int64_t>{2});
  EXPECT_TRUE(config->tie_word_embeddings);
  EXPECT_EQ(config->num_labels(), 2);
}

TEST(Config, AttributeMapAliasesAndRoundTripOfUnknownKeys) {
  AliasConfig config;
  config.update_from_json(json::parse(R"({"n_embd": 48, "scale": 2, "my_custom": {"a": [1, 2]}, "id2label": {"0": "NEG", "1": "POS"}})"));
  EXPECT_EQ(config.hidden_size, 48);
  EXPECT_EQ(config.get("n_embd").get<int64_t>(), 48);
  EXPECT_DOUBLE_EQ(config.scale, 2.0);
  EXPECT_EQ(config.num_labels(), 2);
  EXPECT_EQ(config.label2id.at("POS"), 1);
  test::TempDir dir("config-roundtrip");
  config.save_pretrained(dir.path());
  const json saved = read_json_file(dir / "config.json");
  EXPECT_EQ(saved["my_custom"], json::parse(R"({"a": [1, 2]})"));
  EXPECT_EQ(saved["hidden_size"], 48);
  EXPECT_FALSE(saved.contains("n_embd"));
  EXPECT_FALSE(saved.contains("output_attentions"));  // default common fields are left out, as transformers does
  AliasConfig again;
  again.update_from_json(saved);
  EXPECT_EQ(again.to_json(), config.to_json());
}

TEST(Config, OverridesReturnUnusedKwargs) {
  PretrainedOptions options;
  options.config_overrides = {{"rms_norm_eps", 1e-6}, {"not_an_attribute", 3}};
  json unused;
  auto config = AutoConfig::from_pretrained(test::kStories, options, &unused);
  EXPECT_DOUBLE_EQ(config->get("rms_norm_eps").get<double>(), 1e-6);
  EXPECT_EQ(unused, json({{"not_an_attribute", 3}}));
  // Without return_unused_kwargs an unknown override is an error.
  EXPECT_THROW(AutoConfig::from_pretrained(test::kStories, options), ConfigError);
}

TEST(Config, WrongTypeNamesFileAndField) {
  test::TempDir dir("config-wrong-type");
  json c = stories_config();
  c["hidden_size"] = "sixty-four";
  write_json_file(dir / "config.json", c);
  try {
    AutoConfig::from_pretrained(dir.path().string());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'hidden_size' must be an integer"), std::string::npos) << e.what();
  }
}

TEST(Config, InvalidValuesAreRejected) {
  test::TempDir dir("config-invalid");
  json c = stories_config();
  c["num_key_value_heads"] = 3;  // 8 heads are not a multiple of 3
  write_json_file(dir / "config.json", c);
  EXPECT_THROW(AutoConfig::from_pretrained(dir.path().string()), ConfigError);
}

TEST(Config, NotJsonNamesTheFile) {
  test::TempDir dir("config-not-json");
  test::write_file(dir / "config.json", "{ this is not json");
  try {
    AutoConfig::from_pretrained(dir.path().string());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "config.json").string()), std::string::npos) << e.what();
  }
}

TEST(Config, NumberBeyondDoubleRangeIsAConfigError) {
  // Found by fuzzing the JSON readers: nlohmann's out_of_range (406) escaped untyped.
  test::TempDir dir("config-huge-number");
  test::write_file(dir / "config.json", R"({"model_type": "llama", "rope_theta": 2e7777777})");
  try {
    AutoConfig::from_pretrained(dir.path().string());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
}

TEST(Config, MissingDirectoryAndFile) {
  EXPECT_THROW(AutoConfig::from_pretrained("/nonexistent/plugformer/model"), FileNotFoundError);
  test::TempDir dir("config-missing-file");
  EXPECT_THROW(AutoConfig::from_pretrained(dir.path().string()), FileNotFoundError);
}

TEST(Config, UnknownModelTypeListsRegisteredTypes) {
  test::TempDir dir("config-unknown-type");
  json c = stories_config();
  c["model_type"] = "no-such-family";
  write_json_file(dir / "config.json", c);
  try {
    AutoConfig::from_pretrained(dir.path().string());
    FAIL() << "expected UnknownModelTypeError";
  } catch (const UnknownModelTypeError& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-family"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("llama"), std::string::npos) << e.what();
  }
}

TEST(Config, NamePatternFallbackWithoutModelType) {
  test::TempDir root("config-pattern");
  json c = stories_config();
  c.erase("model_type");
  std::filesystem::create_directories(root / "tiny-llama-chat");
  write_json_file(root / "tiny-llama-chat/config.json", c);
  EXPECT_EQ(AutoConfig::from_pretrained((root / "tiny-llama-chat").string())->model_type(), "llama");
  std::filesystem::create_directories(root / "mystery");
  write_json_file(root / "mystery/config.json", c);
  EXPECT_THROW(AutoConfig::from_pretrained((root / "mystery").string()), ConfigError);
}

TEST(Config, WeightShapeDisagreeingWithConfigNamesKeyAndFile) {
  test::TempDir dir("config-shape");
  test::copy_model(test::kStories, dir.path());
  json c = stories_config();
  c["vocab_size"] = 500;
  write_json_file(dir / "config.json", c);
  try {
    AutoModelForCausalLM::from_pretrained(dir.path().string());
    FAIL() << "expected CheckpointError";
  } catch (const CheckpointError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("model.safetensors"), std::string::npos) << what;
    EXPECT_NE(what.find("model.embed_tokens.weight"), std::string::npos) << what;
  }
}
