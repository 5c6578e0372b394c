#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "plugformer/error.h"
#include "distributed/tensor_parallel.h"
#include "peft/lora.h"
#include "plugformer/layers.h"
#include "plugformer/modeling.h"

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
  if (!parallel) return linear_product(x, weight, bias, int8_row_scale(*this, weight));
  const bool rowwise = parallel->style == ParallelStyle::rowwise;
  return finish_parallel_linear(*parallel, linear_product(x, weight, rowwise ? at::Tensor() : bias, int8_row_scale(*this, weight)),
                                bias);
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
  const bool rowwise = parallel && parallel->style == ParallelStyle::rowwise;
  at::Tensor out = linear_product(x, weight, rowwise ? at::Tensor() : bias, int8_row_scale(*this, weight), /*weight_in_out=*/true);
  return parallel ? finish_parallel_linear(*parallel, std::move(out), bias) : out;
}

Embedding::Embedding(int64_t num_embeddings, int64_t embedding_dim) {
  weight = register_parameter("weight", uninitialised({num_embeddings, embedding_dim}));
}

at::Tensor Embedding::forward(const at::Tensor& ids) const {
  const int64_t rows = parallel ? parallel->full_size : weight.size(0);
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= rows)
      throw InvalidInputError("input id " + std::to_string(lo < 0 ? lo : hi) + " is outside the vocabulary [0, " +
                              std::to_string(rows) + ")");
  }
  at::Tensor out;
  try {
    out = parallel ? parallel_embedding(*parallel, weight, ids) : at::embedding(weight, ids);
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

RMSNorm::RMSNorm(int64_t dim, double eps_, bool unit_offset_) : eps(eps_), unit_offset(unit_offset_) {
  weight = register_parameter("weight", uninitialised({dim}));
}

at::Tensor RMSNorm::forward(const at::Tensor& x) const {
  try {
    if (fused_rms_norm_applies(x, weight)) return fused_rms_norm(x, weight, eps, unit_offset);
    at::Tensor h = x.to(at::kFloat);
    h = h * at::rsqrt(h.pow(2).mean(-1, true) + eps);
    if (unit_offset) return (h * (1.0 + weight.to(at::kFloat))).to(x.scalar_type());
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

namespace {

// rope_scaling's number `key`, or `fallback` when absent or null.
double rope_number(const json& rope_scaling, const char* key, std::optional<double> fallback) {
  const bool absent = !rope_scaling.is_object() || !rope_scaling.contains(key) || rope_scaling[key].is_null();
  if (absent && fallback) return *fallback;
  if (absent)
    throw ConfigError(std::string("field 'rope_scaling.") + key + "' is required for this rope type");
  if (!rope_scaling[key].is_number())
    throw ConfigError(std::string("field 'rope_scaling.") + key + "' must be a number");
  return rope_scaling[key].get<double>();
}

// theta^(2i / dim) for i < dim / 2, in fp32 as transformers computes it.
at::Tensor rope_powers(double base, int64_t dim) {
  return at::pow(base, at::arange(0, dim, 2, at::kLong).to(at::kFloat) / double(dim));
}

// longrope's rescaled frequencies: 1 / (factor_i * theta^(2i / dim)).
at::Tensor longrope_inv_freq(const json& rope_scaling, const char* key, double base, int64_t dim) {
  const json& factors = rope_scaling.contains(key) ? rope_scaling[key] : json();
  if (!factors.is_array() || int64_t(factors.size()) != dim / 2)
    throw ConfigError(std::string("field 'rope_scaling.") + key + "' must be a list of " +
                      std::to_string(dim / 2) + " numbers (rotary dimension / 2)");
  std::vector<float> values;
  for (const auto& f : factors) {
    if (!f.is_number()) throw ConfigError(std::string("field 'rope_scaling.") + key + "' must hold numbers");
    values.push_back(f.get<float>());
  }
  return 1.0 / (at::tensor(values, at::kFloat) * rope_powers(base, dim));
}

// YaRN: interpolated frequencies (divided by the factor) for long wavelengths, the original ones
// for short wavelengths, a linear ramp between the correction dimensions of beta_fast / beta_slow.
at::Tensor yarn_inv_freq(const json& rope_scaling, double base, int64_t dim, double factor, double original_context) {
  // transformers reads them as `value or default`: 0 means the default too.
  double beta_fast = rope_number(rope_scaling, "beta_fast", 32.0), beta_slow = rope_number(rope_scaling, "beta_slow", 1.0);
  if (beta_fast == 0) beta_fast = 32;
  if (beta_slow == 0) beta_slow = 1;
  bool truncate = true;
  if (rope_scaling.contains("truncate") && !rope_scaling["truncate"].is_null()) {
    if (!rope_scaling["truncate"].is_boolean())
      throw ConfigError("field 'rope_scaling.truncate' must be true or false");
    truncate = rope_scaling["truncate"].get<bool>();
  }
  auto correction_dim = [&](double rotations) {
    return double(dim) * std::log(original_context / (rotations * 2 * M_PI)) / (2 * std::log(base));
  };
  double low = correction_dim(beta_fast), high = correction_dim(beta_slow);
  if (truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0), high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;  // avoids a zero-width ramp
  const at::Tensor ramp = ((at::arange(dim / 2, at::kFloat) - low) / (high - low)).clamp(0, 1);
  const at::Tensor extrapolation_weight = 1 - ramp;
  const at::Tensor powers = rope_powers(base, dim);
  const at::Tensor extrapolated = 1.0 / powers, interpolated = 1.0 / (factor * powers);
  return interpolated * (1 - extrapolation_weight) + extrapolated * extrapolation_weight;
}

double yarn_mscale(double scale, double mscale = 1.0) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

}  // namespace

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, double rope_theta, const json& rope_scaling,
                                 int64_t max_position_embeddings, double partial_rotary_factor,
                                 std::optional<int64_t> original_max_position_embeddings)
    : dim_(int64_t(double(head_dim) * partial_rotary_factor)),
      base_(rope_theta),
      max_position_embeddings_(max_position_embeddings),
      original_max_position_embeddings_(max_position_embeddings) {
  auto number = [&](const char* key, double fallback) { return rope_number(rope_scaling, key, fallback); };
  if (rope_scaling.is_object()) {
    // Legacy configs say "type"; transformers copies it to "rope_type".
    const char* key = rope_scaling.contains("rope_type") ? "rope_type" : "type";
    if (rope_scaling.contains(key)) {
      if (!rope_scaling[key].is_string()) throw ConfigError("field 'rope_scaling.rope_type' must be a string");
      rope_type_ = rope_scaling[key].get<std::string>();
    }
    factor_ = number("factor", 1.0);
  } else if (!rope_scaling.is_null()) {
    throw ConfigError("field 'rope_scaling' must be an object or null");
  }
  if (dim_ <= 0 || dim_ % 2 != 0) throw ConfigError("rotary dimension must be even and positive, got " + std::to_string(dim_));
  at::Tensor inv_freq = 1.0 / rope_powers(base_, dim_);
  if (rope_type_ == "default") {
  } else if (rope_type_ == "linear") {
    rope_number(rope_scaling, "factor", std::nullopt);
    inv_freq = inv_freq / factor_;
  } else if (rope_type_ == "dynamic") {
    rope_number(rope_scaling, "factor", std::nullopt);
    original_max_position_embeddings_ = int64_t(number("original_max_position_embeddings", double(max_position_embeddings)));
  } else if (rope_type_ == "llama3") {
    rope_number(rope_scaling, "factor", std::nullopt);
    const double low_freq_factor = rope_number(rope_scaling, "low_freq_factor", std::nullopt);
    const double high_freq_factor = rope_number(rope_scaling, "high_freq_factor", std::nullopt);
    const double old_context = rope_number(rope_scaling, "original_max_position_embeddings", std::nullopt);
    const double low_freq_wavelen = old_context / low_freq_factor, high_freq_wavelen = old_context / high_freq_factor;
    at::Tensor wavelen = 2 * M_PI / inv_freq;
    at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / factor_, inv_freq);
    at::Tensor smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / factor_ + smooth * scaled;
    at::Tensor is_medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
    inv_freq = at::where(is_medium, smoothed, scaled);
  } else if (rope_type_ == "yarn") {
    // As transformers 4.56+: the factor is the one given (4.50-4.55 replaced it by max_position_embeddings /
    // original_max_position_embeddings, which turned Qwen2.5's YaRN off).
    const double factor = rope_number(rope_scaling, "factor", std::nullopt);
    const double original = number("original_max_position_embeddings", double(max_position_embeddings));
    const double mscale = number("mscale", 0), mscale_all_dim = number("mscale_all_dim", 0);
    attention_scaling_ = mscale != 0 && mscale_all_dim != 0 ? yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
                                                            : yarn_mscale(factor);
    attention_scaling_ = number("attention_factor", attention_scaling_);
    inv_freq = yarn_inv_freq(rope_scaling, base_, dim_, factor, original);
  } else if (rope_type_ == "longrope") {
    double factor = factor_;
    if (original_max_position_embeddings) {
      original_max_position_embeddings_ = *original_max_position_embeddings;
      factor = double(max_position_embeddings) / double(*original_max_position_embeddings);
    }
    attention_scaling_ = factor <= 1 ? 1.0 : std::sqrt(1 + std::log(factor) / std::log(double(original_max_position_embeddings_)));
    attention_scaling_ = number("attention_factor", attention_scaling_);
    inv_freq = longrope_inv_freq(rope_scaling, "short_factor", base_, dim_);
    long_inv_freq_ = longrope_inv_freq(rope_scaling, "long_factor", base_, dim_);
  } else {
    throw ConfigError("field 'rope_scaling': type '" + rope_type_ +
                      "' is not supported (supported: default, linear, dynamic, llama3, yarn, longrope)");
  }
  inv_freq_ = inv_freq;
}

at::Tensor RotaryEmbedding::inv_freq_for(int64_t seq_len) const {
  if (rope_type_ == "longrope") return seq_len > original_max_position_embeddings_ ? long_inv_freq_ : inv_freq_;
  if (rope_type_ != "dynamic" || seq_len <= original_max_position_embeddings_) return inv_freq_;
  // NTK-aware scaling: the base grows with the sequence length.
  const double base = base_ * std::pow(factor_ * double(seq_len) / double(original_max_position_embeddings_) - (factor_ - 1),
                                       double(dim_) / double(dim_ - 2));
  return 1.0 / rope_powers(base, dim_);
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
at::Tensor attention_probs(at::Tensor scores, const at::Tensor& mask, double scale, double softcap,
                           c10::ScalarType type) {
  if (scale != 1.0) scores = scores * scale;
  // In fp32 and rounded once, as the norms and activations (libtorch 1.13 has no fp16 tanh).
  if (softcap > 0) scores = (at::tanh(scores.to(at::kFloat) / softcap) * softcap).to(scores.scalar_type());
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
                              double scale, double softcap) {
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
      const at::Tensor probs = attention_probs(scores, m.defined() ? m[b][h] : m, scale, softcap, type);
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
                     double scale, at::Tensor* probs, double softcap) {
  const int64_t heads = q.size(1), kv_heads = k.size(1);
  if (heads % kv_heads != 0)
    throw InvalidInputError("attention: " + std::to_string(heads) + " query heads are not a multiple of " +
                            std::to_string(kv_heads) + " key/value heads");
  const int64_t groups = heads / kv_heads;
  try {
    if (!probs && single_query_attention_applies(q, k, v, mask))
      return single_query_attention(q, k, v, mask, scale, softcap);
    if (!probs && per_head_attention_applies(q, k, v, mask)) return per_head_attention(q, k, v, mask, scale, softcap);
    const int64_t batch = q.size(0), q_len = q.size(2), dim = q.size(3), kv_len = k.size(2);
    // Grouped-query attention without copying k/v: fold each group of query heads into rows.
    at::Tensor qg = q.reshape({batch, kv_heads, groups * q_len, dim});
    at::Tensor scores = matmul_any_precision(qg, k.transpose(-1, -2)).view({batch, heads, q_len, kv_len});
    at::Tensor p = attention_probs(scores, mask, scale, softcap, q.scalar_type());
    if (probs) *probs = p;
    at::Tensor out = matmul_any_precision(p.view({batch, kv_heads, groups * q_len, kv_len}), v);
    return out.view({batch, heads, q_len, v.size(3)});
  } catch (const c10::Error& e) {
    throw_computation_error(e, "attention(" + std::to_string(heads) + " heads, " + std::to_string(kv_heads) + " key/value heads)",
                            q.scalar_type());
  }
}

std::pair<at::Tensor, at::Tensor> keys_in_window(const at::Tensor& k, const at::Tensor& v, std::optional<int64_t> window) {
  if (!window || k.size(2) <= *window) return {k, v};
  const int64_t drop = k.size(2) - *window;
  return {k.narrow(2, drop, *window), v.narrow(2, drop, *window)};
}

at::Tensor attention_over_cache_rows(size_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     KVCache& cache, double scale, std::optional<int64_t> window, double softcap) {
  const auto& rows = cache.batch_rows();
  if (q.size(0) != int64_t(rows.size()) || q.size(2) != 1)
    throw InvalidInputError("a cache batch of " + std::to_string(rows.size()) + " rows takes one new token per row, got [" +
                            std::to_string(q.size(0)) + " rows, " + std::to_string(q.size(2)) + " tokens]");
  std::vector<at::Tensor> outputs;
  outputs.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t r = int64_t(i);
    auto [keys, values] = rows[i]->update(layer, k.narrow(0, r, 1), v.narrow(0, r, 1));
    std::tie(keys, values) = keys_in_window(keys, values, window);
    outputs.push_back(attention(q.narrow(0, r, 1), keys, values, at::Tensor(), scale, nullptr, softcap));
  }
  return at::cat(outputs, 0);
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
                                 c10::ScalarType dtype, std::optional<int64_t> sliding_window) {
  const int64_t kv_len = past_len + q_len;
  const double min = finfo_min(dtype);
  // key j is visible to query i (absolute position past_len + i) when j <= past_len + i.
  at::Tensor q_pos = at::arange(past_len, kv_len, at::kLong).view({q_len, 1});
  at::Tensor k_pos = at::arange(0, kv_len, at::kLong).view({1, kv_len});
  at::Tensor blocked = k_pos > q_pos;
  if (sliding_window) blocked = blocked.logical_or(k_pos <= q_pos - *sliding_window);
  blocked = blocked.view({1, 1, q_len, kv_len});
  if (attention_mask.defined()) {
    if (attention_mask.dim() != 2 || attention_mask.size(0) != batch || attention_mask.size(1) != kv_len)
      throw InvalidInputError("attention_mask has shape [" + std::to_string(attention_mask.size(0)) + ", " +
                              std::to_string(attention_mask.dim() > 1 ? attention_mask.size(1) : -1) +
                              "] but the inputs need [" + std::to_string(batch) + ", " + std::to_string(kv_len) + "]");
    blocked = blocked.logical_or((attention_mask == 0).view({batch, 1, 1, kv_len}));
  }
  return at::zeros(blocked.sizes(), at::TensorOptions().dtype(dtype)).masked_fill_(blocked, min);
}

at::Tensor relative_position_bucket(const at::Tensor& relative_position, bool bidirectional, int64_t num_buckets,
                                    int64_t max_distance) {
  at::Tensor buckets = at::zeros_like(relative_position);
  at::Tensor distance;
  if (bidirectional) {
    num_buckets /= 2;
    buckets = buckets + (relative_position > 0).to(at::kLong) * num_buckets;
    distance = relative_position.abs();
  } else {
    distance = -relative_position.clamp_max(0);  // the decoder only looks back
  }
  const int64_t max_exact = num_buckets / 2;
  // Logarithmic buckets beyond max_exact, computed in fp32 as transformers does (the clamp only
  // avoids log(0) at positions that take the exact bucket anyway).
  at::Tensor scaled = at::log(distance.clamp_min(1).to(at::kFloat) / double(max_exact)) /
                      std::log(double(max_distance) / double(max_exact)) * double(num_buckets - max_exact);
  at::Tensor large = (scaled.to(at::kLong) + max_exact).clamp_max(num_buckets - 1);
  return buckets + at::where(distance < max_exact, distance, large);
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
