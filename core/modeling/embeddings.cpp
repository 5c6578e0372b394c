// get/set_input/output_embeddings and resize_token_embeddings, with transformers' semantics.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "plugformer/error.h"
#include "plugformer/modeling.h"

namespace plugformer {

std::shared_ptr<torch::nn::Module> PreTrainedModel::find_module(const std::string& path) const {
  for (const auto& item : named_modules("", /*include_self=*/false))
    if (item.key() == path) return item.value();
  return nullptr;
}

PreTrainedModel* PreTrainedModel::base_model() {
  if (!input_embeddings_name().empty() || base_model_prefix().empty()) return this;
  auto child = find_module(base_model_prefix());
  auto* base = dynamic_cast<PreTrainedModel*>(child.get());
  return base ? base : this;
}

std::shared_ptr<Embedding> PreTrainedModel::get_input_embeddings() {
  PreTrainedModel* base = base_model();
  const std::string name = base->input_embeddings_name();
  auto embedding = name.empty() ? nullptr : std::dynamic_pointer_cast<Embedding>(base->find_module(name));
  if (!embedding) throw Error(class_name() + " does not expose its input embeddings");
  return embedding;
}

std::shared_ptr<Linear> PreTrainedModel::get_output_embeddings() {
  const std::string name = output_embeddings_name();
  return name.empty() ? nullptr : std::dynamic_pointer_cast<Linear>(find_module(name));
}

namespace {

void check_matrix(const at::Tensor& weight, int64_t columns, const std::string& what) {
  if (!weight.defined() || weight.dim() != 2 || weight.size(1) != columns)
    throw InvalidInputError(what + " must be a [num_tokens, " + std::to_string(columns) + "] matrix");
}

// A copy of `old` with `rows` rows: the first rows kept, the added ones from `fill`.
at::Tensor with_rows(const at::Tensor& old, int64_t rows, const std::function<void(at::Tensor)>& fill) {
  auto sizes = old.sizes().vec();
  sizes[0] = rows;
  at::Tensor fresh = at::empty(sizes, old.options());
  const int64_t kept = std::min(rows, old.size(0));
  fresh.narrow(0, 0, kept).copy_(old.narrow(0, 0, kept));
  if (rows > kept) fill(fresh.narrow(0, kept, rows - kept));
  return fresh;
}

// transformers' _init_added_embeddings_weights_with_mean: samples from N(mean, 1e-9 * covariance)
// of the old rows when that covariance is positive definite, else the mean itself.
void fill_with_mean(const at::Tensor& old, at::Tensor added) {
  at::Tensor w = old.to(at::kFloat);
  at::Tensor mean = w.mean(0);
  at::Tensor centered = w - mean;
  at::Tensor covariance = at::matmul(centered.t(), centered) / double(w.size(0)) * 1e-9;
  auto [cholesky, info] = at::linalg_cholesky_ex(covariance);
  if (info.item<int64_t>() == 0 && at::allclose(covariance, covariance.t())) {
    at::Tensor z = at::randn({added.size(0), w.size(1)}, at::kFloat);
    added.copy_(mean + at::matmul(z, cholesky.t()));
  } else {
    added.copy_(mean.expand_as(added));
  }
}

}  // namespace

void PreTrainedModel::set_input_embeddings(const at::Tensor& weight) {
  auto embedding = get_input_embeddings();
  check_matrix(weight, embedding->weight.size(1), "set_input_embeddings: the weight");
  torch::NoGradGuard no_grad;
  embedding->weight.set_data(weight);
}

void PreTrainedModel::set_output_embeddings(const at::Tensor& weight) {
  auto head = get_output_embeddings();
  if (!head) throw Error(class_name() + " has no output embeddings");
  check_matrix(weight, head->weight.size(1), "set_output_embeddings: the weight");
  torch::NoGradGuard no_grad;
  head->weight.set_data(weight);
}

std::shared_ptr<Embedding> PreTrainedModel::resize_token_embeddings(std::optional<int64_t> new_num_tokens,
                                                                    std::optional<int64_t> pad_to_multiple_of,
                                                                    bool mean_resizing) {
  auto embedding = get_input_embeddings();
  if (!new_num_tokens && !pad_to_multiple_of) return embedding;
  const int64_t old_rows = embedding->weight.size(0);
  int64_t rows = new_num_tokens.value_or(old_rows);
  if (pad_to_multiple_of) {
    if (*pad_to_multiple_of <= 0)
      throw InvalidInputError("resize_token_embeddings: pad_to_multiple_of must be a positive integer, got " +
                              std::to_string(*pad_to_multiple_of));
    rows = (rows + *pad_to_multiple_of - 1) / *pad_to_multiple_of * *pad_to_multiple_of;
  }
  if (rows <= 0) throw InvalidInputError("resize_token_embeddings: new_num_tokens must be positive");
  if (rows == old_rows) return embedding;

  torch::NoGradGuard no_grad;
  const double range = config_->has("initializer_range") ? config_->get("initializer_range").get<double>() : 0.02;
  auto init_rows = [&](const at::Tensor& old) {
    return [&, old](at::Tensor added) {
      if (mean_resizing) fill_with_mean(old, added);
      else added.normal_(0.0, range);
    };
  };
  const at::Tensor old_embedding = embedding->weight.detach();
  embedding->weight.set_data(with_rows(old_embedding, rows, init_rows(old_embedding)));

  auto head = get_output_embeddings();
  if (head && !config_->tie_word_embeddings) {
    const at::Tensor old_head = head->weight.detach();
    head->weight.set_data(with_rows(old_head, rows, init_rows(old_head)));
  }
  if (head && head->bias.defined() && head->bias.size(0) != rows) {
    // _init_added_lm_head_bias_with_mean: N(mean, 1e-9 * std) of the old biases; zeros when tied.
    const at::Tensor old_bias = head->bias.detach();
    const bool from_mean = mean_resizing && !config_->tie_word_embeddings;
    head->bias.set_data(with_rows(old_bias, rows, [&](at::Tensor added) {
      if (from_mean) added.normal_(old_bias.mean().item<double>(), 1e-9 * old_bias.std().item<double>());
      else added.zero_();
    }));
  }
  resized_token_embeddings(rows);
  if (!config_->apply_overrides(json{{"vocab_size", rows}}).empty()) config_->extra["vocab_size"] = rows;
  tie_weights();
  return embedding;
}

}  // namespace plugformer
