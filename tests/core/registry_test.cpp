#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/layers.h>
#include <plugformer/plugin.h>
#include <plugformer/plugin_loader.h>

#include "test_util.h"

using namespace plugformer;

namespace {

class TinyConfig : public PretrainedConfig {
 public:
  TinyConfig() { model_type_ = "tiny-registry-test"; }
  std::string model_type() const override { return "tiny-registry-test"; }
  void visit_fields(ConfigFieldVisitor& v) override {
    PretrainedConfig::visit_fields(v);
    v.field("width", width);
  }
  int64_t width = 4;
};

template <int Variant>
class TinyModel : public PreTrainedModel {
 public:
  explicit TinyModel(std::shared_ptr<TinyConfig> c) : PreTrainedModel(c) {
    proj = register_module("proj", std::make_shared<Linear>(c->width, c->width));
  }
  std::string class_name() const override { return Variant == 0 ? "TinyModel" : "TinyOtherModel"; }
  ModelOutput forward(const ModelInputs& inputs) override {
    ModelOutput out;
    out.set("last_hidden_state", proj->forward(inputs.require("inputs_embeds")));
    return out;
  }
  std::shared_ptr<Linear> proj;
};

void register_tiny() {
  AutoConfig::register_("tiny-registry-test", config_factory<TinyConfig>(), true);
  AutoModel::register_("tiny-registry-test", "TinyModel", model_factory<TinyModel<0>, TinyConfig>(), true);
  AutoModel::register_("tiny-registry-test", "TinyOtherModel", model_factory<TinyModel<1>, TinyConfig>(), true);
}

}  // namespace

TEST(Registry, ExistOkSemantics) {
  register_tiny();
  EXPECT_THROW(AutoConfig::register_("tiny-registry-test", config_factory<TinyConfig>()), RegistryError);
  EXPECT_NO_THROW(AutoConfig::register_("tiny-registry-test", config_factory<TinyConfig>(), true));
  EXPECT_THROW(AutoModel::register_("tiny-registry-test", "TinyModel", model_factory<TinyModel<0>, TinyConfig>()),
               RegistryError);
}

TEST(Registry, ArchitecturesPickTheClassAndFromConfigWorks) {
  register_tiny();
  test::TempDir dir("registry-arch");
  auto config = AutoConfig::for_model("tiny-registry-test", {{"width", 6}});
  auto first = AutoModel::from_config(config);
  EXPECT_EQ(first->class_name(), "TinyModel");  // first registered
  first->save_pretrained(dir.path());
  json c = read_json_file(dir / "config.json");
  EXPECT_EQ(c["architectures"], json::array({"TinyModel"}));
  c["architectures"] = {"TinyOtherModel"};
  write_json_file(dir / "config.json", c);
  auto other = AutoModel::from_pretrained(dir.path().string());
  EXPECT_EQ(other->class_name(), "TinyOtherModel");
  EXPECT_EQ(load_model_for_architecture(dir.path().string())->class_name(), "TinyOtherModel");
  at::Tensor x = at::randn({1, 2, 6});
  ModelInputs in;
  in.tensors["inputs_embeds"] = x;
  EXPECT_TRUE(at::allclose(first->forward(in)["last_hidden_state"], other->forward(in)["last_hidden_state"]));
  // No class of this type for the task: a clear error.
  EXPECT_THROW(AutoModelForCausalLM::from_pretrained(dir.path().string()), RegistryError);
}

TEST(Registry, QueryApiNamesThePluginFiles) {
  PluginLoader::load_default_plugins();
  register_tiny();
  const auto& r = Registry::instance();
  bool llama_causal = false, tiny_host = false;
  for (const auto& m : r.models()) {
    if (m.architecture == "LlamaForCausalLM" && m.task == tasks::kCausalLM)
      llama_causal = m.source.find("libplugformer_llama.so") != std::string::npos;
    if (m.architecture == "TinyModel") tiny_host = m.source == "<host>";
  }
  EXPECT_TRUE(llama_causal);
  EXPECT_TRUE(tiny_host);
  bool llama_tok = false;
  for (const auto& t : r.tokenizers()) llama_tok |= t.class_name == "LlamaTokenizer";
  EXPECT_TRUE(llama_tok);
  ASSERT_TRUE(r.tokenizer_mapping("llama"));
  EXPECT_EQ(r.tokenizer_mapping("llama")->slow_class, "LlamaTokenizer");
  bool plugin_listed = false;
  for (const auto& p : r.plugins()) plugin_listed |= p.name == "llama";
  EXPECT_TRUE(plugin_listed);
  EXPECT_EQ(tasks::all().size(), 11u);
}
