#include <gtest/gtest.h>
#include <unistd.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/layers.h>

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

TEST(Config, IntegerFieldsBeyondInt64AreConfigErrors) {
  // fuzz/config_json: a whole number beyond int64 ("n_positions": 5.5e25) reached an undefined
  // float -> int64 conversion; an unsigned above 2^63 - 1 wrapped to a negative size.
  test::TempDir dir("config-huge-int");
  for (const char* value : {"55555555555555555555555564", "-1e19", "18446744073709551615"}) {
    test::write_file(dir / "config.json", std::string(R"({"model_type": "llama", "max_position_embeddings": )") + value + "}");
    try {
      AutoConfig::from_pretrained(dir.path().string());
      ADD_FAILURE() << "expected ConfigError for " << value;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("'max_position_embeddings' must be an integer within int64's range"),
                std::string::npos) << e.what();
    }
  }
}

TEST(Config, LayerCountsNoModelHasAreConfigErrors) {
  // fuzz/config_json: "num_hidden_layers": 22222220 built a window table per layer for seconds (and
  // larger counts ran out of memory with an untyped std::bad_alloc / length_error).
  test::TempDir dir("config-many-layers");
  for (const char* layers : {"22222220", "1000000000000000"}) {
    test::write_file(dir / "config.json", std::string(R"({"model_type": "llama", "num_hidden_layers": )") + layers + "}");
    try {
      AutoConfig::from_pretrained(dir.path().string());
      ADD_FAILURE() << "expected ConfigError for " << layers;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("field 'num_hidden_layers' is " + std::string(layers) + "; at most 4096"),
                std::string::npos) << e.what();
    }
  }
}

TEST(Config, RotaryTablesBeyondAnyModelAreConfigErrors) {
  // Reproduced with fuzz/config_json: head_dim 1e11 sized a 200 GB rotary table (an untyped
  // allocation failure); partial_rotary_factor and rope_scaling.original_max_position_embeddings of
  // 1e300 reached undefined double -> int64 conversions.
  test::TempDir dir("config-rotary");
  test::write_file(dir / "config.json", R"({"model_type": "llama", "head_dim": 100000000000})");
  try {
    AutoConfig::from_pretrained(dir.path().string());
    ADD_FAILURE() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("the rotary dimension (head_dim * partial_rotary_factor) must be from 1 to 65536"),
              std::string::npos) << e.what();
  }
  EXPECT_THROW(RotaryEmbedding(64, 10000, json(), 128, 1e300), ConfigError);
  EXPECT_THROW(RotaryEmbedding(64, 10000, json{{"rope_type", "dynamic"}, {"factor", 2.0},
                                               {"original_max_position_embeddings", 1e300}}, 128),
               ConfigError);
  EXPECT_NO_THROW(RotaryEmbedding(64, 10000, json{{"rope_type", "dynamic"}, {"factor", 2.0}}, 128, 0.5));
}

TEST(Config, ManyLabelsLoadSaveAndReload) {
  // fuzz/config_json (a Gemma config with "num_labels": 256000) ran past the 10 s limit: id2label /
  // label2id went through ordered_json's operator[], which searches all keys so far for every key,
  // for each of validate()'s get() calls; and reading such a file back was quadratic as well.
  test::TempDir dir("config-many-labels");
  test::write_file(dir / "config.json", R"({"model_type": "llama", "hidden_size": 2048, "num_labels": 256000})");
  auto config = AutoConfig::from_pretrained(dir.path().string());
  EXPECT_EQ(config->num_labels(), 256000);
  EXPECT_EQ(config->get("id2label")["255999"], "LABEL_255999");
  EXPECT_EQ(config->get("hidden_size"), 2048);
  config->save_pretrained(dir / "saved");
  auto again = AutoConfig::from_pretrained((dir / "saved").string());
  EXPECT_EQ(again->num_labels(), 256000);
  EXPECT_EQ(again->label2id.at("LABEL_12345"), 12345);
  EXPECT_EQ(again->to_json()["id2label"], config->to_json()["id2label"]);
  // Counts no model has are refused before any label is made up.
  for (const char* count : {"0", "1000001", "1000000000000000"}) {
    test::write_file(dir / "config.json", std::string(R"({"model_type": "llama", "num_labels": )") + count + "}");
    try {
      AutoConfig::from_pretrained(dir.path().string());
      ADD_FAILURE() << "expected ConfigError for " << count;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("config.json: field 'num_labels' must be from 1 to 1000000, got " + std::string(count)),
                std::string::npos) << e.what();
    }
  }
}

TEST(Config, ParseJsonTextEqualsNlohmannsParser) {
  // parse_json_text appends keys instead of searching them (indexing an object past 16 keys); it
  // must give what ordered_json::parse gives: key order, a repeated key in its first place with its
  // last value, nesting, and the same exceptions.
  std::string many = "{";
  for (int i = 0; i < 40; ++i) many += (i ? ", \"k" : "\"k") + std::to_string(i % 29) + "\": " + std::to_string(i);
  many += R"(, "nested": {"b": [1, {"z": 1, "a": 2, "z": 3}], "a": null}, "k3": {"x": []}})";
  for (const std::string& text : {many, std::string("[]"), std::string("{}"), std::string(" 3 "), std::string("\"s\""),
                                  std::string(R"([1, 2.5, -3, true, null, "x\u00e9", {"b": 1, "a": 2}, [[]]])"),
                                  std::string(R"({"a": 1, "a": {"x": 2}})"), std::string(R"({"a": {"x": 2}, "a": 1})"),
                                  std::string(R"({"u": 18446744073709551615, "i": -9223372036854775808})")}) {
    const json ours = parse_json_text(text), theirs = json::parse(text);
    EXPECT_EQ(ours, theirs) << text;
    EXPECT_EQ(ours.dump(), theirs.dump()) << text;  // the same key order
  }
  EXPECT_THROW(parse_json_text(R"({"a": 1,})"), json::parse_error);
  EXPECT_THROW(parse_json_text("[1] 2"), json::parse_error);
  EXPECT_THROW(parse_json_text(""), json::parse_error);
  EXPECT_THROW(parse_json_text("2e7777777"), json::out_of_range);
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
