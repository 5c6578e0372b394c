// The "toy" family: a plugin written outside the plugformer tree. It has everything a family
// plugin has, only smaller: a config, a base model and a head, and the registration function
// named by PLUGFORMER_PLUGIN. It includes only the public SDK (<plugformer/...>).
//
// ToyModel:        embed_tokens -> one SiLU-gated MLP block with a residual -> RMSNorm
// ToyForCausalLM:  ToyModel ("model") + lm_head, tied to the embeddings by default
#include <ATen/ATen.h>

#include <memory>
#include <string>

#include <plugformer/error.h>
#include <plugformer/layers.h>
#include <plugformer/modeling.h>
#include <plugformer/plugin.h>

namespace toy {

class ToyConfig : public plugformer::PretrainedConfig {
 public:
  ToyConfig() { model_type_ = "toy"; }
  std::string model_type() const override { return "toy"; }
  std::map<std::string, std::string> attribute_map() const override { return {{"n_embd", "hidden_size"}}; }

  void visit_fields(plugformer::ConfigFieldVisitor& v) override {
    PretrainedConfig::visit_fields(v);
    v.field("vocab_size", vocab_size);
    v.field("hidden_size", hidden_size);
    v.field("intermediate_size", intermediate_size);
    v.field("rms_norm_eps", rms_norm_eps);
    v.field("initializer_range", initializer_range);
  }

  void validate() const override {
    PretrainedConfig::validate();
    for (auto [name, value] : {std::pair{"vocab_size", vocab_size}, std::pair{"hidden_size", hidden_size},
                               std::pair{"intermediate_size", intermediate_size}})
      if (value <= 0)
        throw plugformer::ConfigError(std::string("toy config: '") + name + "' must be positive, got " +
                                      std::to_string(value));
  }

  int64_t vocab_size = 256;
  int64_t hidden_size = 32;
  int64_t intermediate_size = 64;
  double rms_norm_eps = 1e-6;
  double initializer_range = 0.02;
};

class ToyMLP : public torch::nn::Module {
 public:
  explicit ToyMLP(const ToyConfig& c) : act_(plugformer::get_activation("silu")) {
    gate_proj_ = register_module("gate_proj", std::make_shared<plugformer::Linear>(c.hidden_size, c.intermediate_size, false));
    up_proj_ = register_module("up_proj", std::make_shared<plugformer::Linear>(c.hidden_size, c.intermediate_size, false));
    down_proj_ = register_module("down_proj", std::make_shared<plugformer::Linear>(c.intermediate_size, c.hidden_size, false));
  }
  at::Tensor forward(const at::Tensor& x) const {
    return down_proj_->forward(act_(gate_proj_->forward(x)) * up_proj_->forward(x));
  }

 private:
  std::shared_ptr<plugformer::Linear> gate_proj_, up_proj_, down_proj_;
  plugformer::Activation act_;
};

class ToyModel : public plugformer::PreTrainedModel {
 public:
  explicit ToyModel(std::shared_ptr<ToyConfig> config) : PreTrainedModel(config) {
    embed_tokens_ = register_module("embed_tokens",
                                    std::make_shared<plugformer::Embedding>(config->vocab_size, config->hidden_size));
    mlp_ = register_module("mlp", std::make_shared<ToyMLP>(*config));
    norm_ = register_module("norm", std::make_shared<plugformer::RMSNorm>(config->hidden_size, config->rms_norm_eps));
  }
  std::string class_name() const override { return "ToyModel"; }
  std::string base_model_prefix() const override { return "model"; }

  plugformer::ModelOutput forward(const plugformer::ModelInputs& inputs) override {
    const at::Tensor ids = inputs.require("input_ids");
    if (ids.dim() != 2) throw plugformer::InvalidInputError("toy: input_ids must be [batch, seq_len]");
    at::Tensor hidden = embed_tokens_->forward(ids);
    hidden = norm_->forward(hidden + mlp_->forward(hidden));
    plugformer::ModelOutput out;
    out.set("last_hidden_state", hidden);
    return out;
  }

 private:
  std::shared_ptr<plugformer::Embedding> embed_tokens_;
  std::shared_ptr<ToyMLP> mlp_;
  std::shared_ptr<plugformer::RMSNorm> norm_;
};

class ToyForCausalLM : public plugformer::PreTrainedModel {
 public:
  explicit ToyForCausalLM(std::shared_ptr<ToyConfig> config) : PreTrainedModel(config) {
    model_ = register_module("model", std::make_shared<ToyModel>(config));
    lm_head_ = register_module("lm_head",
                               std::make_shared<plugformer::Linear>(config->hidden_size, config->vocab_size, false));
  }
  std::string class_name() const override { return "ToyForCausalLM"; }
  std::string base_model_prefix() const override { return "model"; }
  std::vector<std::pair<std::string, std::string>> tied_weights() const override {
    return {{"lm_head.weight", "model.embed_tokens.weight"}};
  }

  plugformer::ModelOutput forward(const plugformer::ModelInputs& inputs) override {
    at::Tensor hidden = model_->forward(inputs)["last_hidden_state"];
    plugformer::ModelOutput out;
    out.set("logits", lm_head_->forward(hidden).to(at::kFloat));
    return out;
  }

 private:
  std::shared_ptr<ToyModel> model_;
  std::shared_ptr<plugformer::Linear> lm_head_;
};

void register_toy(plugformer::Registry& registry) {
  using namespace plugformer;
  registry.register_config("toy", config_factory<ToyConfig>());
  registry.register_model(tasks::kAutoModel, "toy", "ToyModel", model_factory<ToyModel, ToyConfig>());
  registry.register_model(tasks::kCausalLM, "toy", "ToyForCausalLM", model_factory<ToyForCausalLM, ToyConfig>());
}

}  // namespace toy

PLUGFORMER_PLUGIN("toy", "1.0.0", toy::register_toy)
