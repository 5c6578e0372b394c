#include "peft/lora.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/init.h>

#include <cmath>

#include "plugformer/error.h"

namespace plugformer {

LoraLayer::LoraLayer(torch::nn::Module& owner, int64_t in_features, int64_t out_features, bool fan_in_fan_out,
                     std::shared_ptr<LoraState> state)
    : owner_(owner), in_(in_features), out_(out_features), fan_in_fan_out_(fan_in_fan_out), state_(std::move(state)) {
  lora_A_ = owner_.register_module("lora_A", std::make_shared<torch::nn::Module>());
  lora_B_ = owner_.register_module("lora_B", std::make_shared<torch::nn::Module>());
}

Linear& LoraLayer::A(const std::string& name) const { return *a_.at(name); }
Linear& LoraLayer::B(const std::string& name) const { return *b_.at(name); }

void LoraLayer::add(const std::string& name, int64_t r, double scaling, double dropout, const std::string& init) {
  if (has(name)) throw InvalidInputError("LoRA: adapter '" + name + "' exists already");
  torch::NoGradGuard no_grad;
  auto a = std::make_shared<Linear>(in_, r, false);
  auto b = std::make_shared<Linear>(r, out_, false);
  if (init == "gaussian") a->weight.normal_(0.0, 1.0 / double(r));
  else torch::nn::init::kaiming_uniform_(a->weight, std::sqrt(5.0));
  // B = 0 makes a new adapter start as the identity; init_lora_weights=false keeps B random.
  if (init == "false") torch::nn::init::kaiming_uniform_(b->weight, std::sqrt(5.0));
  else b->weight.zero_();
  a_[name] = lora_A_->register_module(name, a);
  b_[name] = lora_B_->register_module(name, b);
  scaling_[name] = scaling;
  dropout_[name] = dropout;
}

void LoraLayer::rebuild() {
  // libtorch cannot unregister a child: fresh containers hold the adapters that remain.
  auto a = std::make_shared<torch::nn::Module>(), b = std::make_shared<torch::nn::Module>();
  for (const auto& [name, m] : a_) a->register_module(name, m);
  for (const auto& [name, m] : b_) b->register_module(name, m);
  lora_A_ = owner_.replace_module("lora_A", a);
  lora_B_ = owner_.replace_module("lora_B", b);
}

void LoraLayer::remove(const std::string& name) {
  if (!has(name)) return;
  if (merged_.count(name)) throw InvalidInputError("LoRA: unmerge adapter '" + name + "' before deleting it");
  a_.erase(name);
  b_.erase(name);
  rebuild();
  scaling_.erase(name);
  dropout_.erase(name);
}

void LoraLayer::clear() {
  a_.clear();
  b_.clear();
  rebuild();
  scaling_.clear();
  dropout_.clear();
  merged_.clear();
}

at::Tensor LoraLayer::forward(const at::Tensor& x, const at::Tensor& base_out) {
  if (state_->disabled || !merged_.empty() || !has(state_->active)) return base_out;
  const std::string& name = state_->active;
  const Linear& a = A(name);
  at::Tensor input = x.to(a.weight.scalar_type());
  if (dropout_[name] > 0 && owner_.is_training()) input = at::dropout(input, dropout_[name], true);
  return base_out + (B(name).forward(a.forward(input)) * scaling_[name]).to(base_out.scalar_type());
}

at::Tensor LoraLayer::delta(const std::string& name) const {
  at::Tensor d = at::matmul(B(name).weight, A(name).weight) * scaling_.at(name);  // [out, in]
  return fan_in_fan_out_ ? d.t() : d;
}

void LoraLayer::merge(const std::string& name, at::Tensor& weight) {
  if (!has(name)) return;
  if (merged_.count(name)) return;
  if (!weight.is_floating_point())
    throw InvalidInputError("LoRA: adapter '" + name + "' cannot be merged into a quantized (" +
                            c10::toString(weight.scalar_type()) + ") weight; keep it unmerged");
  torch::NoGradGuard no_grad;
  weight.add_(delta(name).to(weight.scalar_type()));
  merged_.insert(name);
}

void LoraLayer::unmerge(at::Tensor& weight) {
  torch::NoGradGuard no_grad;
  for (const auto& name : merged_) weight.sub_(delta(name).to(weight.scalar_type()));
  merged_.clear();
}

}  // namespace plugformer
