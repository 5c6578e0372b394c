#include "plugformer/heads.h"

#include <ATen/ATen.h>

#include "plugformer/error.h"

namespace plugformer {

at::Tensor token_cross_entropy(const at::Tensor& logits, const at::Tensor& labels) {
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), labels.reshape({-1}).to(at::kLong),
                                {}, at::Reduction::Mean, -100);
}

at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels) {
  const int64_t len = logits.size(1);
  if (labels.sizes() != logits.sizes().slice(0, 2))
    throw InvalidInputError("labels must have the shape of input_ids");
  return token_cross_entropy(logits.narrow(1, 0, len - 1), labels.narrow(1, 1, len - 1));
}

at::Tensor sequence_classification_loss(const PretrainedConfig& config, const at::Tensor& logits, const at::Tensor& labels) {
  const int64_t num_labels = config.num_labels();
  std::string problem = config.problem_type.value_or("");
  if (problem.empty()) {
    if (num_labels == 1) problem = "regression";
    else if (labels.scalar_type() == at::kLong || labels.scalar_type() == at::kInt) problem = "single_label_classification";
    else problem = "multi_label_classification";
  }
  if (problem == "regression") {
    if (num_labels == 1) return at::mse_loss(logits.squeeze().to(at::kFloat), labels.squeeze().to(at::kFloat));
    return at::mse_loss(logits.to(at::kFloat), labels.to(at::kFloat));
  }
  if (problem == "single_label_classification")
    return at::cross_entropy_loss(logits.reshape({-1, num_labels}).to(at::kFloat), labels.reshape({-1}).to(at::kLong));
  if (problem == "multi_label_classification")
    return at::binary_cross_entropy_with_logits(logits.to(at::kFloat), labels.to(at::kFloat));
  throw ConfigError("config.json: field 'problem_type' must be regression, single_label_classification or "
                    "multi_label_classification, got '" + problem + "'");
}

at::Tensor pool_last_non_pad_token(const at::Tensor& logits, const at::Tensor& input_ids,
                                   std::optional<int64_t> pad_token_id) {
  const int64_t batch = logits.size(0), len = logits.size(1);
  if (!pad_token_id && batch != 1)
    throw InvalidInputError("cannot handle batch sizes > 1 if no padding token is defined (config.pad_token_id)");
  at::Tensor last;
  if (!pad_token_id) {
    last = at::full({batch}, len - 1, at::kLong);
  } else {
    // transformers >= 4.48: the rightmost token that is not padding.
    at::Tensor positions = at::arange(len, at::kLong).view({1, len});
    last = (positions * (input_ids != *pad_token_id).to(at::kLong)).argmax(-1);
  }
  return logits.index({at::arange(batch, at::kLong), last});
}

void question_answering_outputs(const at::Tensor& logits, const ModelInputs& inputs, ModelOutput& out) {
  if (logits.dim() != 3 || logits.size(-1) != 2)
    throw ConfigError("question answering needs 2 outputs per token (start, end), got " +
                      std::to_string(logits.size(-1)) + " (config num_labels)");
  auto parts = logits.to(at::kFloat).split(1, -1);
  at::Tensor start = parts[0].squeeze(-1).contiguous(), end = parts[1].squeeze(-1).contiguous();
  if (inputs.has("start_positions") && inputs.has("end_positions")) {
    const int64_t ignored = start.size(1);
    at::Tensor s = inputs.get("start_positions"), e = inputs.get("end_positions");
    if (s.dim() > 1) s = s.squeeze(-1);
    if (e.dim() > 1) e = e.squeeze(-1);
    if (s.dim() != 1 || e.dim() != 1 || s.size(0) != start.size(0) || e.size(0) != start.size(0))
      throw InvalidInputError("start_positions and end_positions must be [batch]");
    s = s.to(at::kLong).clamp(0, ignored);
    e = e.to(at::kLong).clamp(0, ignored);
    auto ce = [&](const at::Tensor& l, const at::Tensor& t) {
      return at::cross_entropy_loss(l, t, {}, at::Reduction::Mean, ignored);
    };
    out.set("loss", (ce(start, s) + ce(end, e)) / 2.0);
  }
  out.set("start_logits", start);
  out.set("end_logits", end);
}

ModelOutput last_token_classification_outputs(const at::Tensor& logits, const ModelInputs& inputs,
                                              const PretrainedConfig& config, ModelOutput& base) {
  at::Tensor pooled = pool_last_non_pad_token(logits, inputs.get("input_ids"), config.pad_token_id).to(at::kFloat);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", sequence_classification_loss(config, pooled, inputs.get("labels")));
  out.set("logits", pooled);
  move_base_outputs(out, base);
  return out;
}

void resize_vocabulary_bias(at::Tensor& bias, int64_t vocab_size) {
  at::NoGradGuard no_grad;
  at::Tensor resized = at::zeros({vocab_size}, bias.options());
  const int64_t kept = std::min(vocab_size, bias.size(0));
  resized.narrow(0, 0, kept).copy_(bias.narrow(0, 0, kept));
  bias.set_data(resized);
}

void move_base_outputs(ModelOutput& out, ModelOutput& base) {
  out.set("last_hidden_state", base["last_hidden_state"]);
  out.past_key_values = base.past_key_values;
  out.hidden_states = std::move(base.hidden_states);
  out.attentions = std::move(base.attentions);
}

}  // namespace plugformer
