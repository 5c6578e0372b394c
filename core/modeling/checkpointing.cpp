// Activation checkpointing (torch.utils.checkpoint, reentrant flavour) and the training switches
// of PreTrainedModel that go with it.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include "matmul.h"
#include "worker_team.h"
#include "plugformer/error.h"
#include "plugformer/modeling.h"

namespace plugformer {

namespace {

using LayerFn = std::function<at::Tensor(const at::Tensor&)>;

// The backward of a checkpointed segment: recompute the segment with autograd on, then
// backpropagate through it. Parameter gradients accumulate during that inner backward (as in
// PyTorch's reentrant checkpoint); the input's gradient is handed on to the outer graph.
class CheckpointBackward : public torch::autograd::Node {
 public:
  CheckpointBackward(LayerFn fn, at::Tensor input, at::Tensor rng_state)
      : fn_(std::move(fn)), input_(std::move(input)), rng_state_(std::move(rng_state)) {}

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    if (!fn_) throw Error("checkpoint: backward through a checkpointed layer a second time");
    if (!grads.at(0).defined()) return {at::Tensor()};
    at::Tensor x = input_.detach().requires_grad_(true);
    at::Tensor y;
    {
      // Replay the first run's random numbers (dropout masks) without disturbing the caller's.
      at::Generator generator = at::detail::getDefaultCPUGenerator();
      const at::Tensor current = generator.get_state();
      generator.set_state(rng_state_);
      at::AutoGradMode grad_mode(true);
      try {
        y = fn_(x);
      } catch (...) {
        generator.set_state(current);
        throw;
      }
      generator.set_state(current);
    }
    torch::autograd::backward({y}, {grads[0]});
    return {x.grad()};
  }

  std::string name() const override { return "CheckpointBackward"; }
  void release_variables() override {
    fn_ = nullptr;
    input_.reset();
  }

 private:
  LayerFn fn_;
  at::Tensor input_, rng_state_;
};

}  // namespace

at::Tensor checkpoint(const LayerFn& fn, const at::Tensor& input) {
  // Nothing to recompute for: no graph is being recorded, or no gradient flows through the input
  // (run directly then, so parameters inside fn still get their gradients).
  if (!at::GradMode::is_enabled() || !input.requires_grad()) return fn(input);
  const at::Tensor rng_state = at::detail::getDefaultCPUGenerator().get_state();
  at::Tensor output;
  {
    at::NoGradGuard no_grad;
    TrainingPassGuard same_kernels_as_the_recomputation;
    output = fn(input);
  }
  std::shared_ptr<CheckpointBackward> node(new CheckpointBackward(fn, input.detach(), rng_state),
                                           torch::autograd::deleteNode);
  node->set_next_edges(torch::autograd::collect_next_edges(input));
  torch::autograd::set_history(output, node);
  return output;
}

void PreTrainedModel::gradient_checkpointing_enable() {
  std::vector<PreTrainedModel*> models{this};
  for (const auto& m : modules(/*include_self=*/false))
    if (auto* p = dynamic_cast<PreTrainedModel*>(m.get())) models.push_back(p);
  const bool supported =
      std::any_of(models.begin(), models.end(), [](const PreTrainedModel* m) { return m->supports_gradient_checkpointing(); });
  if (!supported) throw Error(class_name() + " does not support gradient checkpointing.");
  for (auto* m : models) m->gradient_checkpointing_ = true;
}

void PreTrainedModel::gradient_checkpointing_disable() {
  gradient_checkpointing_ = false;
  for (const auto& m : modules(/*include_self=*/false))
    if (auto* p = dynamic_cast<PreTrainedModel*>(m.get())) p->gradient_checkpointing_ = false;
}

bool PreTrainedModel::checkpointing_active() const {
  return gradient_checkpointing_ && is_training() && at::GradMode::is_enabled();
}

at::Tensor PreTrainedModel::run_layers(int64_t count, const LayerStep& layer, at::Tensor hidden, bool want_hidden,
                                       bool want_attn, ModelOutput& out) const {
  const bool checkpointed = !want_attn && checkpointing_active();
  auto all_layers = [&] {
    for (int64_t i = 0; i < count; ++i) {
      if (want_hidden) out.hidden_states.push_back(hidden);
      if (checkpointed) {
        hidden = checkpoint([layer, i](const at::Tensor& h) { return layer(i, h, nullptr); }, hidden);
      } else if (want_attn) {
        at::Tensor probs;
        hidden = layer(i, hidden, &probs);
        out.attentions.push_back(probs);
      } else {
        hidden = layer(i, hidden, nullptr);
      }
    }
  };
  // A decode step (up to 8 rows, every product streamed by the kernels) forks the threads once
  // for all its layers instead of once per product (worker_team.h).
  const int64_t rows = hidden.dim() > 0 ? hidden.numel() / std::max<int64_t>(1, hidden.size(-1)) : 0;
  if (inference_only() && rows <= 8 && cpu_has_avx2_fma())
    with_worker_team(all_layers);
  else
    all_layers();
  return hidden;
}

void PreTrainedModel::enable_input_require_grads() { get_input_embeddings()->output_requires_grad = true; }

void PreTrainedModel::disable_input_require_grads() { get_input_embeddings()->output_requires_grad = false; }

}  // namespace plugformer
