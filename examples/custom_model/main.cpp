// custom_model: a host application that adds its own model family at run time, without a
// plugin, the way transformers users write
//
//   AutoConfig.register("new-model", NewModelConfig)
//   AutoModel.register(NewModelConfig, NewModel)
//
// It builds a NewModel with fresh weights through AutoModel::from_config, saves it with
// save_pretrained (config.json with model_type "new-model" + model.safetensors) into a temp
// directory, loads it back with AutoModel::from_pretrained and checks that the reloaded model
// is the same: class, config fields, weights and outputs. Exits 1 when anything disagrees.
//
//   ./custom_model [--keep]      (--keep leaves the saved model directory in place)
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/layers.h>
#include <plugformer/plugin.h>

namespace {

// ---- the family -----------------------------------------------------------------------------

class NewModelConfig : public plugformer::PretrainedConfig {
 public:
  NewModelConfig() { model_type_ = "new-model"; }
  std::string model_type() const override { return "new-model"; }
  // Checkpoints may call the width "d_model".
  std::map<std::string, std::string> attribute_map() const override { return {{"d_model", "hidden_size"}}; }

  void visit_fields(plugformer::ConfigFieldVisitor& v) override {
    PretrainedConfig::visit_fields(v);
    v.field("vocab_size", vocab_size);
    v.field("hidden_size", hidden_size);
    v.field("hidden_act", hidden_act);
    v.field("layer_norm_eps", layer_norm_eps);
    v.field("initializer_range", initializer_range);
  }

  void validate() const override {
    PretrainedConfig::validate();
    if (vocab_size <= 0) throw plugformer::ConfigError("new-model: vocab_size must be positive");
    if (hidden_size <= 0) throw plugformer::ConfigError("new-model: hidden_size must be positive");
    plugformer::get_activation(hidden_act);  // ConfigError for an unknown name
  }

  int64_t vocab_size = 1000;
  int64_t hidden_size = 64;
  std::string hidden_act = "gelu";
  double layer_norm_eps = 1e-5;
  double initializer_range = 0.02;
};

// embeddings -> dense -> activation -> LayerNorm, all SDK layers, transformers' parameter names.
class NewModel : public plugformer::PreTrainedModel {
 public:
  explicit NewModel(std::shared_ptr<NewModelConfig> config)
      : PreTrainedModel(config), act_(plugformer::get_activation(config->hidden_act)) {
    embeddings_ = register_module("embeddings",
                                  std::make_shared<plugformer::Embedding>(config->vocab_size, config->hidden_size));
    dense_ = register_module("dense", std::make_shared<plugformer::Linear>(config->hidden_size, config->hidden_size));
    norm_ = register_module("norm", std::make_shared<plugformer::LayerNorm>(config->hidden_size, config->layer_norm_eps));
  }

  std::string class_name() const override { return "NewModel"; }

  plugformer::ModelOutput forward(const plugformer::ModelInputs& inputs) override {
    const at::Tensor ids = inputs.require("input_ids");
    if (ids.dim() != 2) throw plugformer::InvalidInputError("input_ids must be [batch, seq_len]");
    at::Tensor hidden = norm_->forward(act_(dense_->forward(embeddings_->forward(ids))));
    plugformer::ModelOutput out;
    out.set("last_hidden_state", hidden);
    return out;
  }

 private:
  std::shared_ptr<plugformer::Embedding> embeddings_;
  std::shared_ptr<plugformer::Linear> dense_;
  std::shared_ptr<plugformer::LayerNorm> norm_;
  plugformer::Activation act_;
};

// ---- checks ---------------------------------------------------------------------------------

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::cout << (ok ? "  ok    " : "  FAIL  ") << what << "\n";
  if (!ok) ++failures;
}

std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// A fresh, empty directory under the system temp dir.
std::filesystem::path make_temp_dir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "plugformer-custom-model-XXXXXX").string();
  if (!mkdtemp(pattern.data())) throw plugformer::IOError("cannot create a temp directory from " + pattern);
  return pattern;
}

struct RemoveOnExit {
  std::filesystem::path dir;
  bool keep = false;
  ~RemoveOnExit() {
    std::error_code ec;
    if (!dir.empty() && !keep) std::filesystem::remove_all(dir, ec);
  }
};

int run(bool keep) {
  using namespace plugformer;

  // 1. Register the family from the host.
  AutoConfig::register_("new-model", config_factory<NewModelConfig>());
  AutoModel::register_("new-model", "NewModel", model_factory<NewModel, NewModelConfig>());
  std::cout << "registered model_type 'new-model' -> NewModelConfig, AutoModel -> NewModel\n";

  // transformers' exist_ok semantics: a second registration is refused unless exist_ok.
  bool refused = false;
  try {
    AutoConfig::register_("new-model", config_factory<NewModelConfig>());
  } catch (const RegistryError& e) {
    refused = true;
    std::cout << "second registration refused as expected: " << e.what() << "\n";
  }
  expect(refused, "registering 'new-model' twice without exist_ok throws RegistryError");
  AutoConfig::register_("new-model", config_factory<NewModelConfig>(), /*exist_ok=*/true);

  // 2. A model with fresh weights from a config (non-default values, one given by its alias).
  const json values = {{"vocab_size", 97}, {"d_model", 24}, {"hidden_act", "gelu_new"}, {"layer_norm_eps", 1e-6},
                       {"initializer_range", 0.5}};
  ConfigPtr config = AutoConfig::for_model("new-model", values);
  auto typed = std::dynamic_pointer_cast<NewModelConfig>(config);
  expect(typed != nullptr, "AutoConfig::for_model(\"new-model\") gives a NewModelConfig");
  if (!typed) return 1;
  expect(typed->hidden_size == 24, "attribute_map alias d_model sets hidden_size");

  ModelPtr model = AutoModel::from_config(config);
  expect(model->class_name() == "NewModel", "AutoModel::from_config builds NewModel (got " + model->class_name() + ")");
  std::cout << "NewModel: " << model->num_parameters() << " parameters\n";

  const at::Tensor input_ids = at::randint(0, typed->vocab_size, {2, 7}, at::kLong);
  at::Tensor original;
  {
    c10::InferenceMode guard;
    original = model->forward(ModelInputs{{"input_ids", input_ids}})["last_hidden_state"];
  }

  // 3. save_pretrained, then check what is on disk.
  RemoveOnExit tmp{make_temp_dir(), keep};
  const auto dir = tmp.dir / "new-model-checkpoint";
  model->save_pretrained(dir);
  std::cout << "saved to " << dir.string() << "\n";
  expect(std::filesystem::is_regular_file(dir / "model.safetensors"), "model.safetensors written");
  const json saved = read_json_file(dir / "config.json");
  expect(saved.value("model_type", "") == "new-model", "config.json has model_type \"new-model\"");
  expect(saved.contains("architectures") && saved["architectures"] == json::array({"NewModel"}),
         "config.json has architectures [\"NewModel\"]");
  expect(saved.value("hidden_size", int64_t(0)) == 24 && saved.value("vocab_size", int64_t(0)) == 97,
         "config.json has hidden_size 24 and vocab_size 97");

  // 4. Load it back through the Auto class.
  LoadingInfo info;
  PretrainedOptions options;
  options.loading_info = &info;
  ModelPtr loaded = AutoModel::from_pretrained(dir.string(), options);
  expect(loaded->class_name() == "NewModel", "AutoModel::from_pretrained builds NewModel (got " + loaded->class_name() + ")");
  expect(info.missing_keys.empty() && info.unexpected_keys.empty() && info.mismatched_keys.empty(),
         "no missing, unexpected or mismatched keys");
  const auto* loaded_config = dynamic_cast<const NewModelConfig*>(&loaded->config());
  expect(loaded_config != nullptr, "the reloaded config is a NewModelConfig");
  if (loaded_config)
    expect(loaded_config->vocab_size == typed->vocab_size && loaded_config->hidden_size == typed->hidden_size &&
               loaded_config->hidden_act == typed->hidden_act &&
               loaded_config->layer_norm_eps == typed->layer_norm_eps &&
               loaded_config->initializer_range == typed->initializer_range,
           "the reloaded config fields equal the original's");

  const auto before = model->state_dict();
  const auto after = loaded->state_dict();
  bool same_weights = before.size() == after.size();
  for (size_t i = 0; same_weights && i < before.size(); ++i)
    same_weights = before[i].first == after[i].first && at::equal(before[i].second, after[i].second);
  expect(same_weights, "the reloaded weights equal the original's (" + std::to_string(before.size()) + " tensors)");

  at::Tensor reloaded;
  {
    c10::InferenceMode guard;
    reloaded = loaded->forward(ModelInputs{{"input_ids", input_ids}})["last_hidden_state"];
  }
  std::cout << "output last_hidden_state shape: " << shape_of(reloaded) << "\n";
  expect(reloaded.sizes() == at::IntArrayRef({2, 7, 24}), "output shape is [2, 7, 24]");
  const bool equal = original.sizes() == reloaded.sizes() && at::equal(original, reloaded);
  const double max_diff = original.sizes() == reloaded.sizes() ? (original - reloaded).abs().max().item<double>() : -1;
  expect(equal, "outputs of the reloaded model equal the original's (max abs diff " + std::to_string(max_diff) + ")");

  // The model really depends on its weights: a different input must give a different output.
  {
    c10::InferenceMode guard;
    at::Tensor other = loaded->forward(ModelInputs{{"input_ids", (input_ids + 1) % typed->vocab_size}})["last_hidden_state"];
    expect(!at::equal(other, reloaded), "a different input gives a different output");
  }

  std::cout << (failures == 0 ? "custom_model: all checks passed\n"
                              : "custom_model: " + std::to_string(failures) + " check(s) failed\n");
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--keep") keep = true;
    else {
      std::cerr << "usage: " << argv[0] << " [--keep]\n";
      return 2;
    }
  }
  try {
    return run(keep);
  } catch (const std::exception& e) {
    std::cerr << "custom_model: error: " << e.what() << "\n";
    return 1;
  }
}
