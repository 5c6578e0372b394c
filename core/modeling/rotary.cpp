// Rotary position embeddings with transformers' rope_scaling types (layers.h). Apart from layers.cpp
// because a decoder config builds one to check rope_scaling when it loads (fuzz/config_json compiles
// it without the modules).
#include <ATen/ATen.h>

#include <cmath>

#include "plugformer/error.h"
#include "plugformer/layers.h"

namespace plugformer {

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

// A count computed or read as a double (`what` names it): from 1 to `limit`, so that converting it
// is defined and what is built from it fits in memory.
int64_t count_from(double value, const std::string& what, double limit) {
  if (!(value >= 1 && value <= limit))
    throw ConfigError(what + " must be from 1 to " + std::to_string(int64_t(limit)) + ", got " + std::to_string(value));
  return int64_t(value);
}

}  // namespace

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, double rope_theta, const json& rope_scaling,
                                 int64_t max_position_embeddings, double partial_rotary_factor,
                                 std::optional<int64_t> original_max_position_embeddings)
    // The frequency table has dim / 2 entries: no model's heads are wider than 2^16.
    : dim_(count_from(double(head_dim) * partial_rotary_factor, "the rotary dimension (head_dim * partial_rotary_factor)",
                      65536)),
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
    original_max_position_embeddings_ = count_from(number("original_max_position_embeddings", double(max_position_embeddings)),
                                                   "field 'rope_scaling.original_max_position_embeddings'", 0x1p53);
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

}  // namespace plugformer
