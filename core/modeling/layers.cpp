#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "plugformer/error.h"
#include "peft/lora.h"
#include "plugformer/layers.h"

#include "fused_ops.h"
#include "matmul.h"
#include "torch_errors.h"

namespace plugformer {

namespace {

// Weights start uninitialised: they are replaced by checkpoint tensors (or initialised by the
// loader when missing), so filling them here would only cost time.
at::Tensor uninitialised(at::IntArrayRef sizes) { return at::empty(sizes, at::kFloat); }

}  // namespace

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias) {
  weight = register_parameter("weight", uninitialised({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", uninitialised({out_features}));
}

namespace {

// PyTorch's module repr: "Linear(in_features=64, out_features=256)".
std::string linear_repr(const char* type, int64_t in, int64_t out) {
  return std::string(type) + "(in_features=" + std::to_string(in) + ", out_features=" + std::to_string(out) + ")";
}

}  // namespace

void throw_computation_error(const c10::Error& error, const std::string& module, c10::ScalarType dtype) {
  const std::string message = error.what_without_backtrace();
  throw ComputationError(module + " in " + c10::toString(dtype) + ": " + message.substr(0, message.find('\n')));
}

at::Tensor Linear::forward(const at::Tensor& x) const {
  try {
    if (lora) return lora->forward(x, base_forward(x));
    return base_forward(x);
  } catch (const c10::Error& e) {
    throw_computation_error(e, linear_repr("Linear", weight.size(1), weight.size(0)), x.scalar_type());
  }
}

at::Tensor Linear::base_forward(const at::Tensor& x) const {
  return linear_product(x, weight, bias, int8_row_scale(*this, weight));
}

Conv1D::Conv1D(int64_t in_features, int64_t out_features) {
  weight = register_parameter("weight", uninitialised({in_features, out_features}));
  bias = register_parameter("bias", uninitialised({out_features}));
}

at::Tensor Conv1D::forward(const at::Tensor& x) const {
  try {
    if (lora) return lora->forward(x, base_forward(x));
    return base_forward(x);
  } catch (const c10::Error& e) {
    throw_computation_error(e, linear_repr("Conv1D", weight.size(0), weight.size(1)), x.scalar_type());
  }
}

at::Tensor Conv1D::base_forward(const at::Tensor& x) const {
  return linear_product(x, weight, bias, int8_row_scale(*this, weight), /*weight_in_out=*/true);
}

Embedding::Embedding(int64_t num_embeddings, int64_t embedding_dim) {
  weight = register_parameter("weight", uninitialised({num_embeddings, embedding_dim}));
}

at::Tensor Embedding::forward(const at::Tensor& ids) const {
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= weight.size(0))
      throw InvalidInputError("input id " + std::to_string(lo < 0 ? lo : hi) + " is outside the vocabulary [0, " +
                              std::to_string(weight.size(0)) + ")");
  }
  at::Tensor out;
  try {
    out = at::embedding(weight, ids);
  } catch (const c10::Error& e) {
    throw_computation_error(e, "Embedding(" + std::to_string(weight.size(0)) + ", " + std::to_string(weight.size(1)) + ")",
                            weight.scalar_type());
  }
  if (output_requires_grad && at::GradMode::is_enabled() && !out.requires_grad()) out.requires_grad_(true);
  return out;
}

LayerNorm::LayerNorm(int64_t dim, double eps_, bool with_bias) : eps(eps_) {
  weight = register_parameter("weight", uninitialised({dim}));
  if (with_bias) bias = register_parameter("bias", uninitialised({dim}));
}

namespace {

// f(x) for fp32 / fp64 x; for bf16 / fp16 x, f computed in fp32 and rounded once to x's type, as
// PyTorch 2 computes norms and activations of 2-byte types. libtorch 1.13's own bf16 kernels round
// intermediate values (about 40% of its bf16 layer_norm / gelu / silu outputs are not the nearest
// bf16 of the exact result), and it has none of these for fp16 on CPU.
template <class F>
at::Tensor computed_in_fp32(const at::Tensor& x, F&& f) {
  if (x.scalar_type() != at::kBFloat16 && x.scalar_type() != at::kHalf) return f(x);
  return f(x.to(at::kFloat)).to(x.scalar_type());
}

}  // namespace

at::Tensor LayerNorm::forward(const at::Tensor& x) const {
  try {
    return computed_in_fp32(x, [&](const at::Tensor& h) {
      const c10::optional<at::Tensor> b = bias.defined() ? c10::optional<at::Tensor>(bias.to(h.scalar_type())) : c10::nullopt;
      return at::layer_norm(h, {weight.size(0)}, weight.to(h.scalar_type()), b, eps);
    });
  } catch (const c10::Error& e) {
    throw_computation_error(e, "LayerNorm((" + std::to_string(weight.size(0)) + ",))", x.scalar_type());
  }
}

RMSNorm::RMSNorm(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", uninitialised({dim}));
}

at::Tensor RMSNorm::forward(const at::Tensor& x) const {
  try {
    if (fused_rms_norm_applies(x, weight)) return fused_rms_norm(x, weight, eps);
    at::Tensor h = x.to(at::kFloat);
    h = h * at::rsqrt(h.pow(2).mean(-1, true) + eps);
    return weight * h.to(x.scalar_type());
  } catch (const c10::Error& e) {
    throw_computation_error(e, "RMSNorm((" + std::to_string(weight.size(0)) + ",))", x.scalar_type());
  }
}

Activation get_activation(const std::string& name) {
  // Each activation is one PyTorch op except quick_gelu, which transformers spells as two (its
  // product rounds separately).
  auto in_fp32 = [](at::Tensor (*f)(const at::Tensor&)) -> Activation {
    return [f](const at::Tensor& x) { return computed_in_fp32(x, f); };
  };
  if (name == "gelu") return in_fp32([](const at::Tensor& x) { return at::gelu(x); });
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast")
    return in_fp32([](const at::Tensor& x) { return at::gelu(x, "tanh"); });
  if (name == "quick_gelu")
    return [](const at::Tensor& x) {
      return x * computed_in_fp32(1.702 * x, [](const at::Tensor& h) { return at::sigmoid(h); });
    };
  if (name == "relu") return in_fp32([](const at::Tensor& x) { return at::relu(x); });
  if (name == "relu6") return in_fp32([](const at::Tensor& x) { return at::hardtanh(x, 0, 6); });
  if (name == "silu" || name == "swish") return in_fp32([](const at::Tensor& x) { return at::silu(x); });
  if (name == "tanh") return in_fp32([](const at::Tensor& x) { return at::tanh(x); });
  if (name == "sigmoid") return in_fp32([](const at::Tensor& x) { return at::sigmoid(x); });
  if (name == "mish") return in_fp32([](const at::Tensor& x) { return at::mish(x); });
  if (name == "linear") return [](const at::Tensor& x) { return x; };
  throw ConfigError("unknown activation function '" + name +
                    "' (known: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, relu, relu6, silu, swish, "
                    "tanh, sigmoid, mish, linear)");
}

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, double rope_theta, const json& rope_scaling,
                                 int64_t max_position_embeddings, double partial_rotary_factor)
    : dim_(int64_t(head_dim * partial_rotary_factor)),
      base_(rope_theta),
      max_position_embeddings_(max_position_embeddings),
      original_max_position_embeddings_(max_position_embeddings) {
  auto number = [&](const char* key, double fallback) {
    if (!rope_scaling.contains(key) || rope_scaling[key].is_null()) return fallback;
    if (!rope_scaling[key].is_number())
      throw ConfigError(std::string("config.json: field 'rope_scaling.") + key + "' must be a number");
    return rope_scaling[key].get<double>();
  };
  if (rope_scaling.is_object()) {
    // Legacy configs say "type"; transformers copies it to "rope_type".
    const char* key = rope_scaling.contains("rope_type") ? "rope_type" : "type";
    if (rope_scaling.contains(key)) {
      if (!rope_scaling[key].is_string()) throw ConfigError("config.json: field 'rope_scaling.rope_type' must be a string");
      rope_type_ = rope_scaling[key].get<std::string>();
    }
    factor_ = number("factor", 1.0);
  } else if (!rope_scaling.is_null()) {
    throw ConfigError("config.json: field 'rope_scaling' must be an object or null");
  }
  if (dim_ <= 0 || dim_ % 2 != 0) throw ConfigError("config.json: rotary dimension must be even and positive, got " + std::to_string(dim_));
  at::Tensor inv_freq =
      1.0 / at::pow(base_, at::arange(0, dim_, 2, at::kLong).to(at::kFloat) / double(dim_));
  if (rope_type_ == "default") {
  } else if (rope_type_ == "linear") {
    inv_freq = inv_freq / factor_;
  } else if (rope_type_ == "dynamic") {
    original_max_position_embeddings_ = int64_t(number("original_max_position_embeddings", double(max_position_embeddings)));
  } else if (rope_type_ == "llama3") {
    const double low_freq_factor = number("low_freq_factor", 1.0), high_freq_factor = number("high_freq_factor", 4.0);
    const double old_context = number("original_max_position_embeddings", 8192);
    const double low_freq_wavelen = old_context / low_freq_factor, high_freq_wavelen = old_context / high_freq_factor;
    at::Tensor wavelen = 2 * M_PI / inv_freq;
    at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / factor_, inv_freq);
    at::Tensor smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / factor_ + smooth * scaled;
    at::Tensor is_medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
    inv_freq = at::where(is_medium, smoothed, scaled);
  } else {
    throw ConfigError("config.json: rope_scaling type '" + rope_type_ +
                      "' is not supported (supported: default, linear, dynamic, llama3)");
  }
  inv_freq_ = inv_freq;
}

at::Tensor RotaryEmbedding::inv_freq_for(int64_t seq_len) const {
  if (rope_type_ != "dynamic" || seq_len <= original_max_position_embeddings_) return inv_freq_;
  // NTK-aware scaling: the base grows with the sequence length.
  const double base = base_ * std::pow(factor_ * double(seq_len) / double(original_max_position_embeddings_) - (factor_ - 1),
                                       double(dim_) / double(dim_ - 2));
  return 1.0 / at::pow(base, at::arange(0, dim_, 2, at::kLong).to(at::kFloat) / double(dim_));
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::forward(const at::Tensor& position_ids, c10::ScalarType dtype) const {
  const int64_t seq_len = position_ids.numel() ? position_ids.max().item<int64_t>() + 1 : 0;
  const at::Tensor inv_freq = inv_freq_for(seq_len);
  // [batch, seq, dim/2] in fp32, then duplicated for the rotate_half layout.
  at::Tensor freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv_freq.view({1, 1, -1});
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos(), sin = emb.sin();
  if (attention_scaling_ != 1.0) {
    cos = cos * attention_scaling_;
    sin = sin * attention_scaling_;
  }
  return {cos.to(dtype), sin.to(dtype)};
}

namespace {
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}
at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t rot = cos.size(-1);
  if (rot == x.size(-1)) return x * cos + rotate_half(x) * sin;
  at::Tensor head = x.narrow(-1, 0, rot);
  return at::cat({head * cos + rotate_half(head) * sin, x.narrow(-1, rot, x.size(-1) - rot)}, -1);
}
}  // namespace

std::pair<at::Tensor, at::Tensor> apply_rotary_pos_emb(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                                       const at::Tensor& sin) {
  if (fused_rotary_applies(q, cos, sin) && fused_rotary_applies(k, cos, sin))
    return {fused_rotary(q, cos, sin), fused_rotary(k, cos, sin)};
  const at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);  // broadcast over heads
  return {rotate(q, c, s), rotate(k, c, s)};
}

namespace {

// softmax(scores * scale + mask) in fp32, rounded to `type`: the element-wise part of eager
// attention, shared by the whole-tensor and the per-head paths so both compute the same.
at::Tensor attention_probs(at::Tensor scores, const at::Tensor& mask, double scale, c10::ScalarType type) {
  if (scale != 1.0) scores = scores * scale;
  if (mask.defined()) scores = scores + mask;
  return at::softmax(scores, -1, at::kFloat).to(type);
}

// Many queries, inference: the heads are spread over the threads, each head's scores, softmax
// and product computed while they sit in cache, and written straight into the [batch, q_len,
// heads, dim] layout merge_heads wants. The whole-tensor path instead copies q, k and v into
// batched matmuls that libtorch 1.13 runs one head at a time, each product threaded on its own
// (bert-base 8 x 128: 25 -> 10 ms per layer alone; llama prefill of 512 tokens ~+15% in all).
// Below ~32 x 32 scores per head the ops per head cost more than they save.
bool per_head_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  return q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.size(0) * q.size(1) >= at::get_num_threads() &&
         q.size(2) * k.size(2) >= 32 * 32 &&
         q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type() && q.is_cpu() &&
         !trains_through({q, k, v, mask});
}

at::Tensor per_head_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                              double scale) {
  const int64_t batch = q.size(0), heads = q.size(1), q_len = q.size(2), groups = heads / k.size(1);
  const int64_t dim = v.size(3), kv_len = k.size(2);
  const at::Tensor m = mask.defined() ? mask.expand({batch, heads, q_len, kv_len}) : mask;
  at::Tensor out = at::empty({batch, q_len, heads, dim}, q.options());
  char* const base = static_cast<char*>(out.data_ptr());
  const int64_t row_bytes = dim * int64_t(out.element_size());
  const c10::ScalarType type = q.scalar_type();
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    c10::InferenceMode no_autograd;  // per-thread state: the temporaries need no autograd bookkeeping
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / heads, h = i % heads;
      const at::Tensor qh = q[b][h], kh = k[b][h / groups], vh = v[b][h / groups];
      const at::Tensor scores = matmul_any_precision(qh, kh.t());
      const at::Tensor probs = attention_probs(scores, m.defined() ? m[b][h] : m, scale, type);
      const at::Tensor head = matmul_any_precision(probs, vh).contiguous();
      const char* src = static_cast<const char*>(head.data_ptr());
      for (int64_t t = 0; t < q_len; ++t)
        std::memcpy(base + ((b * q_len + t) * heads + h) * row_bytes, src + t * row_bytes, size_t(row_bytes));
    }
  });
  return out.transpose(1, 2);
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     double scale, at::Tensor* probs) {
  const int64_t heads = q.size(1), kv_heads = k.size(1);
  if (heads % kv_heads != 0)
    throw InvalidInputError("attention: " + std::to_string(heads) + " query heads are not a multiple of " +
                            std::to_string(kv_heads) + " key/value heads");
  const int64_t groups = heads / kv_heads;
  try {
    if (!probs && single_query_attention_applies(q, k, v, mask)) return single_query_attention(q, k, v, mask, scale);
    if (!probs && per_head_attention_applies(q, k, v, mask)) return per_head_attention(q, k, v, mask, scale);
    const int64_t batch = q.size(0), q_len = q.size(2), dim = q.size(3), kv_len = k.size(2);
    // Grouped-query attention without copying k/v: fold each group of query heads into rows.
    at::Tensor qg = q.reshape({batch, kv_heads, groups * q_len, dim});
    at::Tensor scores = matmul_any_precision(qg, k.transpose(-1, -2)).view({batch, heads, q_len, kv_len});
    at::Tensor p = attention_probs(scores, mask, scale, q.scalar_type());
    if (probs) *probs = p;
    at::Tensor out = matmul_any_precision(p.view({batch, kv_heads, groups * q_len, kv_len}), v);
    return out.view({batch, heads, q_len, v.size(3)});
  } catch (const c10::Error& e) {
    throw_computation_error(e, "attention(" + std::to_string(heads) + " heads, " + std::to_string(kv_heads) + " key/value heads)",
                            q.scalar_type());
  }
}

double finfo_min(c10::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return double(std::numeric_limits<float>::lowest());
    case at::kBFloat16: return -3.3895313892515355e+38;
    case at::kHalf: return -65504.0;
    default: return std::numeric_limits<double>::lowest();
  }
}

at::Tensor causal_attention_mask(const at::Tensor& attention_mask, int64_t batch, int64_t q_len, int64_t past_len,
                                 c10::ScalarType dtype) {
  const int64_t kv_len = past_len + q_len;
  const double min = finfo_min(dtype);
  // key j is visible to query i (absolute position past_len + i) when j <= past_len + i.
  at::Tensor q_pos = at::arange(past_len, kv_len, at::kLong).view({q_len, 1});
  at::Tensor k_pos = at::arange(0, kv_len, at::kLong).view({1, kv_len});
  at::Tensor blocked = (k_pos > q_pos).view({1, 1, q_len, kv_len});
  if (attention_mask.defined()) {
    if (attention_mask.dim() != 2 || attention_mask.size(0) != batch || attention_mask.size(1) != kv_len)
      throw InvalidInputError("attention_mask has shape [" + std::to_string(attention_mask.size(0)) + ", " +
                              std::to_string(attention_mask.dim() > 1 ? attention_mask.size(1) : -1) +
                              "] but the inputs need [" + std::to_string(batch) + ", " + std::to_string(kv_len) + "]");
    blocked = blocked.logical_or((attention_mask == 0).view({batch, 1, 1, kv_len}));
  }
  return at::zeros(blocked.sizes(), at::TensorOptions().dtype(dtype)).masked_fill_(blocked, min);
}

at::Tensor padding_attention_mask(const at::Tensor& attention_mask, c10::ScalarType dtype) {
  const double min = finfo_min(dtype);
  // (1 - mask) * min, as transformers builds it.
  return (1.0 - attention_mask.to(dtype).view({attention_mask.size(0), 1, 1, attention_mask.size(1)})) * min;
}

at::Tensor split_heads(const at::Tensor& x, int64_t heads) {
  return x.view({x.size(0), x.size(1), heads, -1}).transpose(1, 2);
}

at::Tensor merge_heads(const at::Tensor& x) {
  return x.transpose(1, 2).reshape({x.size(0), x.size(2), -1});
}

}  // namespace plugformer
