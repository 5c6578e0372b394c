// The decoder-only model every decoder family declares through a DecoderLayout (decoder.h).
#include "plugformer/decoder.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>
#include <map>
#include <numeric>
#include <sstream>
#include <vector>

#include "plugformer/distributed.h"
#include "plugformer/error.h"
#include "plugformer/heads.h"

#include "matmul.h"

namespace plugformer {

namespace {

// Feature spans of a fused projection's output: [q heads | k heads | v heads] or [gate | up].
at::Tensor span(const at::Tensor& x, int64_t start, int64_t size) { return x.narrow(-1, start, size); }

}  // namespace

// q, k, v projections (separate or fused), optional per-head q/k norms, RoPE, the cache, attention
// with its window and soft-cap, and the output projection.
class DecoderAttention : public torch::nn::Module, public TensorParallelModule {
 public:
  DecoderAttention(const DecoderLayout& l, int64_t layer_idx)
      : layer_idx_(layer_idx), heads_(l.num_attention_heads), kv_heads_(l.num_key_value_heads), head_dim_(l.head_dim),
        scale_(l.attention_scale), softcap_(l.attn_logit_softcapping), window_(l.sliding_windows.at(size_t(layer_idx))) {
    const int64_t q_size = heads_ * head_dim_, kv_size = kv_heads_ * head_dim_;
    if (l.fused_qkv) {
      qkv_proj_ = register_module("qkv_proj", std::make_shared<Linear>(l.hidden_size, q_size + 2 * kv_size, l.qkv_bias));
    } else {
      q_proj_ = register_module("q_proj", std::make_shared<Linear>(l.hidden_size, q_size, l.qkv_bias));
      k_proj_ = register_module("k_proj", std::make_shared<Linear>(l.hidden_size, kv_size, l.qkv_bias));
      v_proj_ = register_module("v_proj", std::make_shared<Linear>(l.hidden_size, kv_size, l.qkv_bias));
    }
    o_proj_ = register_module("o_proj", std::make_shared<Linear>(q_size, l.hidden_size, l.o_proj_bias));
    if (l.qk_norm) {
      q_norm_ = register_module("q_norm", std::make_shared<RMSNorm>(head_dim_, l.rms_norm_eps, l.norm_unit_offset));
      k_norm_ = register_module("k_norm", std::make_shared<RMSNorm>(head_dim_, l.rms_norm_eps, l.norm_unit_offset));
    }
  }

  const std::optional<int64_t>& window() const { return window_; }

  // A rank holds its block of query heads and the key / value heads they read (DecoderModel's plan).
  void split_for(int64_t rank, int64_t world) override {
    heads_ = tensor_parallel_units(heads_, rank, world, "num_attention_heads").second;
    kv_heads_ = tensor_parallel_units(kv_heads_, rank, world, "num_key_value_heads").second;
  }

  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin, at::Tensor mask,
                     KVCache* cache, at::Tensor* probs) {
    at::Tensor q, k, v;
    if (qkv_proj_) {
      const at::Tensor qkv = qkv_proj_->forward(hidden);
      const int64_t q_size = heads_ * head_dim_, kv_size = kv_heads_ * head_dim_;
      q = span(qkv, 0, q_size), k = span(qkv, q_size, kv_size), v = span(qkv, q_size + kv_size, kv_size);
    } else {
      q = q_proj_->forward(hidden), k = k_proj_->forward(hidden), v = v_proj_->forward(hidden);
    }
    q = split_heads(q, heads_), k = split_heads(k, kv_heads_), v = split_heads(v, kv_heads_);
    if (q_norm_) q = q_norm_->forward(q), k = k_norm_->forward(k);
    std::tie(q, k) = apply_rotary_pos_emb(q, k, cos, sin);
    if (cache && cache->is_batch())
      return o_proj_->forward(
          merge_heads(attention_over_cache_rows(size_t(layer_idx_), q, k, v, *cache, scale_, window_, softcap_)));
    if (cache) std::tie(k, v) = cache->update(size_t(layer_idx_), k, v);
    // One query of a windowed layer sees exactly the last W slots: attend to those alone (the
    // decode kernel then reads W keys, not the whole cache).
    if (window_ && q.size(2) == 1 && k.size(2) > *window_) {
      const int64_t drop = k.size(2) - *window_;
      std::tie(k, v) = keys_in_window(k, v, window_);
      if (mask.defined()) mask = mask.narrow(-1, drop, *window_);
    }
    at::Tensor out = attention(q, k, v, mask, scale_, probs, softcap_);
    return o_proj_->forward(merge_heads(out));
  }

 private:
  int64_t layer_idx_, heads_, kv_heads_, head_dim_;
  double scale_, softcap_;
  std::optional<int64_t> window_;
  std::shared_ptr<Linear> q_proj_, k_proj_, v_proj_, qkv_proj_, o_proj_;
  std::shared_ptr<RMSNorm> q_norm_, k_norm_;
};

// down(act(gate(x)) * up(x)), from separate or fused gate / up projections.
class DecoderMLP : public torch::nn::Module, public TensorParallelModule {
 public:
  explicit DecoderMLP(const DecoderLayout& l) : intermediate_(l.intermediate_size), act_(get_activation(l.hidden_act)) {
    if (l.fused_gate_up) {
      gate_up_proj_ =
          register_module("gate_up_proj", std::make_shared<Linear>(l.hidden_size, 2 * intermediate_, l.mlp_bias));
    } else {
      gate_proj_ = register_module("gate_proj", std::make_shared<Linear>(l.hidden_size, intermediate_, l.mlp_bias));
      up_proj_ = register_module("up_proj", std::make_shared<Linear>(l.hidden_size, intermediate_, l.mlp_bias));
    }
    down_proj_ = register_module("down_proj", std::make_shared<Linear>(intermediate_, l.hidden_size, l.mlp_bias));
  }

  void split_for(int64_t rank, int64_t world) override {
    intermediate_ = tensor_parallel_units(intermediate_, rank, world, "intermediate_size").second;
  }

  // Long inputs (batched prompts) in chunks of rows (in_row_chunks, matmul.h).
  at::Tensor forward(const at::Tensor& x) const {
    return in_row_chunks(x, intermediate_, [this](const at::Tensor& rows) { return rows_forward(rows); });
  }

 private:
  at::Tensor rows_forward(const at::Tensor& x) const {
    if (gate_up_proj_) {
      const at::Tensor gate_up = gate_up_proj_->forward(x);
      return down_proj_->forward(span(gate_up, intermediate_, intermediate_) * act_(span(gate_up, 0, intermediate_)));
    }
    return down_proj_->forward(act_(gate_proj_->forward(x)) * up_proj_->forward(x));
  }

  int64_t intermediate_;
  Activation act_;
  std::shared_ptr<Linear> gate_proj_, up_proj_, gate_up_proj_, down_proj_;
};

// Pre-norm residual blocks; Gemma 2 also normalises each block's output (sandwich norms).
class DecoderLayer : public torch::nn::Module {
 public:
  DecoderLayer(const DecoderLayout& l, int64_t layer_idx) {
    self_attn_ = register_module("self_attn", std::make_shared<DecoderAttention>(l, layer_idx));
    mlp_ = register_module("mlp", std::make_shared<DecoderMLP>(l));
    auto norm = [&](const char* name) {
      return register_module(name, std::make_shared<RMSNorm>(l.hidden_size, l.rms_norm_eps, l.norm_unit_offset));
    };
    input_layernorm_ = norm("input_layernorm");
    post_attention_layernorm_ = norm("post_attention_layernorm");
    if (l.sandwich_norms) {
      pre_feedforward_layernorm_ = norm("pre_feedforward_layernorm");
      post_feedforward_layernorm_ = norm("post_feedforward_layernorm");
    }
  }

  const std::optional<int64_t>& window() const { return self_attn_->window(); }

  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask,
                     KVCache* cache, at::Tensor* probs) {
    at::Tensor attn = self_attn_->forward(input_layernorm_->forward(hidden), cos, sin, mask, cache, probs);
    if (!pre_feedforward_layernorm_) {
      const at::Tensor h = hidden + attn;
      return h + mlp_->forward(post_attention_layernorm_->forward(h));
    }
    const at::Tensor h = hidden + post_attention_layernorm_->forward(attn);
    return h + post_feedforward_layernorm_->forward(mlp_->forward(pre_feedforward_layernorm_->forward(h)));
  }

 private:
  std::shared_ptr<DecoderAttention> self_attn_;
  std::shared_ptr<DecoderMLP> mlp_;
  std::shared_ptr<RMSNorm> input_layernorm_, post_attention_layernorm_, pre_feedforward_layernorm_,
      post_feedforward_layernorm_;
};

DecoderInputs prepare_decoder_inputs(const ModelInputs& inputs, int64_t hidden_size, const std::string& family,
                                     bool allow_cache) {
  DecoderInputs d;
  d.input_ids = inputs.get("input_ids");
  d.inputs_embeds = inputs.get("inputs_embeds");
  if (d.input_ids.defined() == d.inputs_embeds.defined())
    throw InvalidInputError(family + ": give exactly one of input_ids and inputs_embeds");
  if (d.input_ids.defined() && d.input_ids.dim() != 2) throw InvalidInputError("input_ids must be [batch, seq_len]");
  if (d.inputs_embeds.defined() && (d.inputs_embeds.dim() != 3 || d.inputs_embeds.size(2) != hidden_size))
    throw InvalidInputError("inputs_embeds must be [batch, seq_len, " + std::to_string(hidden_size) + "]");
  const at::Tensor& ref = d.input_ids.defined() ? d.input_ids : d.inputs_embeds;
  d.batch = ref.size(0), d.length = ref.size(1);
  if (d.batch == 0 || d.length == 0)
    throw InvalidInputError(family + ": empty input (batch " + std::to_string(d.batch) + ", sequence length " +
                            std::to_string(d.length) + "); at least one token is needed");
  d.cache = inputs.past_key_values;
  if (d.cache && d.cache->is_batch()) {
    // Continuous batching: each row continues its own sequence, at its own positions.
    const auto& rows = d.cache->batch_rows();
    const auto& counts = d.cache->batch_new_tokens();
    const bool packed = d.cache->is_packed_batch();
    const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t(0));
    const bool fits = packed ? d.batch == 1 && d.length == total : d.batch == int64_t(rows.size()) && d.length == 1;
    if (!fits || inputs.has("attention_mask") || inputs.has("position_ids"))
      throw InvalidInputError(family + ": a cache batch of " + std::to_string(rows.size()) + " rows takes " +
                              (packed ? "[1, " + std::to_string(total) + "] input tokens (the rows' new tokens one after another)"
                                      : std::string("exactly one new token per row")) +
                              ", without attention_mask or position_ids; got [" + std::to_string(d.batch) + ", " +
                              std::to_string(d.length) + "]");
    std::vector<int64_t> positions;
    for (size_t i = 0; i < rows.size(); ++i)
      for (int64_t p = rows[i]->seq_length(0); p < rows[i]->seq_length(0) + counts[i]; ++p) positions.push_back(p);
    d.position_ids = at::tensor(positions, at::kLong).view({d.batch, d.length});
    return d;
  }
  if (!d.cache && inputs.use_cache && allow_cache) d.cache = std::make_shared<KVCache>();
  d.past = d.cache && d.cache->num_layers() > 0 ? d.cache->seq_length(0) : 0;

  d.position_ids = inputs.get("position_ids");
  if (!d.position_ids.defined()) {
    d.position_ids = at::arange(d.past, d.past + d.length, at::kLong).unsqueeze(0).expand({d.batch, d.length});
  } else {
    if (d.position_ids.dim() == 1) d.position_ids = d.position_ids.unsqueeze(0);
    if (d.position_ids.dim() != 2 || d.position_ids.size(1) != d.length ||
        (d.position_ids.size(0) != d.batch && d.position_ids.size(0) != 1))
      throw InvalidInputError("position_ids must be [batch, seq_len] (or [1, seq_len])");
    d.position_ids = d.position_ids.expand({d.batch, d.length});
  }
  d.attention_mask = inputs.get("attention_mask");
  return d;
}

DecoderModel::DecoderModel(std::shared_ptr<DecoderConfig> config, std::string family)
    : PreTrainedModel(config),
      family_(std::move(family)),
      layout_(config->decoder_layout()),
      rotary_(layout_.head_dim, layout_.rope_theta, layout_.rope_scaling, layout_.max_position_embeddings,
              layout_.partial_rotary_factor, layout_.original_max_position_embeddings) {
  if (int64_t(layout_.sliding_windows.size()) != layout_.num_hidden_layers)
    layout_.sliding_windows.resize(size_t(layout_.num_hidden_layers));
  embed_tokens_ = register_module("embed_tokens", std::make_shared<Embedding>(layout_.vocab_size, layout_.hidden_size));
  auto list = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < layout_.num_hidden_layers; ++i) {
    layers_.push_back(std::make_shared<DecoderLayer>(layout_, i));
    list->push_back(layers_.back());
  }
  norm_ = register_module("norm",
                          std::make_shared<RMSNorm>(layout_.hidden_size, layout_.rms_norm_eps, layout_.norm_unit_offset));
  for (const auto& window : layout_.sliding_windows) {
    if (!window) {
      widest_window_.reset();
      break;
    }
    widest_window_ = std::max(widest_window_.value_or(0), *window);
  }
}

std::vector<std::string> DecoderModel::ignored_unexpected_keys() const { return {R"(rotary_emb\.inv_freq)"}; }

std::vector<TensorParallelRule> DecoderModel::tensor_parallel_plan() const {
  const DecoderLayout& l = layout_;
  const int64_t d = l.head_dim;
  return {
      {"embed_tokens", ParallelStyle::vocab_rows},
      {"layers.*.self_attn.q_proj", ParallelStyle::colwise, d},
      {"layers.*.self_attn.k_proj", ParallelStyle::colwise, d},
      {"layers.*.self_attn.v_proj", ParallelStyle::colwise, d},
      {"layers.*.self_attn.qkv_proj", ParallelStyle::colwise, d,
       {l.num_attention_heads * d, l.num_key_value_heads * d, l.num_key_value_heads * d}},
      {"layers.*.self_attn.o_proj", ParallelStyle::rowwise, d},
      {"layers.*.mlp.gate_proj", ParallelStyle::colwise},
      {"layers.*.mlp.up_proj", ParallelStyle::colwise},
      {"layers.*.mlp.gate_up_proj", ParallelStyle::colwise, 1, {l.intermediate_size, l.intermediate_size}},
      {"layers.*.mlp.down_proj", ParallelStyle::rowwise},
  };
}

ModelOutput DecoderModel::forward(const ModelInputs& inputs) {
  DecoderInputs d = prepare_decoder_inputs(inputs, layout_.hidden_size, family_, !checkpointing_active());
  at::Tensor hidden = d.input_ids.defined() ? embed_tokens_->forward(d.input_ids) : d.inputs_embeds;
  const auto dtype = hidden.scalar_type();
  // Gemma: the normaliser is rounded to the embeddings' type before it multiplies them.
  if (layout_.scale_embeddings)
    hidden = hidden * at::scalar_tensor(std::sqrt(double(layout_.hidden_size)), at::TensorOptions().dtype(dtype));

  // When every layer is windowed, the cache keeps only what the widest window can still see.
  const bool cache_rows = d.cache && d.cache->is_batch();
  for (const auto& cache : cache_rows ? d.cache->batch_rows() : std::vector<std::shared_ptr<KVCache>>{d.cache})
    if (cache && cache->num_layers() == 0 && widest_window_) cache->set_window(*widest_window_);
  const int64_t stored = d.cache && !cache_rows ? d.cache->stored_length(0) : d.past;

  // One mask per distinct window, over the stored slots and the new ones. A single new token
  // without padding sees every key of a full layer, and a windowed layer narrows its keys itself,
  // so that step needs no mask at all; the rows of a cache batch mask themselves.
  const bool unmasked = d.length == 1 || cache_rows;
  std::map<std::optional<int64_t>, at::Tensor> masks;
  for (const auto& layer : layers_) {
    const std::optional<int64_t> window = unmasked ? std::nullopt : layer->window();
    if (masks.count(window)) continue;
    at::Tensor& mask = masks[window];
    if (!cache_rows && (d.length > 1 || d.attention_mask.defined()))
      mask = causal_attention_mask(d.attention_mask, d.batch, d.length, d.past, dtype, window)
                 .narrow(-1, d.past - stored, stored + d.length);
  }
  auto [cos, sin] = rotary_.forward(d.position_ids, dtype);

  const bool want_hidden = inputs.output_hidden_states.value_or(config_->output_hidden_states);
  const bool want_attn = inputs.output_attentions.value_or(config_->output_attentions);
  ModelOutput out;
  KVCache* layer_cache = d.cache.get();
  hidden = run_layers(
      int64_t(layers_.size()),
      [=, this](int64_t i, const at::Tensor& h, at::Tensor* probs) {
        const auto& layer = layers_[size_t(i)];
        const at::Tensor& mask = masks.at(unmasked ? std::nullopt : layer->window());
        return layer->forward(h, cos, sin, mask, layer_cache, probs);
      },
      hidden, want_hidden, want_attn, out);
  hidden = norm_->forward(hidden);
  if (want_hidden) out.hidden_states.push_back(hidden);
  out.set("last_hidden_state", hidden);
  out.past_key_values = d.cache;
  return out;
}

DecoderHeadModel::DecoderHeadModel(std::shared_ptr<DecoderConfig> config, std::string family, std::string base_prefix)
    : PreTrainedModel(config), family_(std::move(family)), base_prefix_(std::move(base_prefix)) {
  model_ = register_module(base_prefix_, std::make_shared<DecoderModel>(config, family_));
}

DecoderForCausalLM::DecoderForCausalLM(std::shared_ptr<DecoderConfig> config, std::string family)
    : DecoderHeadModel(config, std::move(family)) {
  lm_head_ = register_module("lm_head", std::make_shared<Linear>(model_->layout().hidden_size,
                                                                 model_->layout().vocab_size, false));
}

bool DecoderForCausalLM::reuses_cache(int64_t total, int64_t cached) const {
  const DecoderLayout& l = model_->layout();
  const bool longrope = l.rope_scaling.is_object() &&
                        (l.rope_scaling.value("rope_type", "") == "longrope" || l.rope_scaling.value("type", "") == "longrope");
  if (!longrope || !l.original_max_position_embeddings) return true;
  const int64_t original = *l.original_max_position_embeddings;
  return !(total >= original + 1 && cached <= original);
}

std::vector<TensorParallelRule> DecoderForCausalLM::tensor_parallel_plan() const {
  auto plan = DecoderHeadModel::tensor_parallel_plan();
  plan.push_back({"lm_head", ParallelStyle::colwise_gather});
  return plan;
}

ModelOutput DecoderForCausalLM::forward(const ModelInputs& inputs) {
  if (inputs.logits_to_keep < 0) throw InvalidInputError("logits_to_keep must be >= 0");
  ModelOutput base = model_->forward(inputs);
  at::Tensor hidden = base["last_hidden_state"];
  if (const auto& cache = inputs.past_key_values; cache && cache->is_packed_batch()) {
    // Prompts prefilled together: each row's logits at its last new token, as in a decode step.
    std::vector<int64_t> last;
    int64_t end = 0;
    for (int64_t count : cache->batch_new_tokens()) last.push_back((end += count) - 1);
    hidden = hidden.index_select(1, at::tensor(last, at::kLong)).view({-1, 1, hidden.size(2)});
  } else if (inputs.logits_to_keep > 0 && inputs.logits_to_keep < hidden.size(1)) {
    hidden = hidden.narrow(1, hidden.size(1) - inputs.logits_to_keep, inputs.logits_to_keep);
  }
  at::Tensor logits = lm_head_->forward(hidden).to(at::kFloat);
  if (const double cap = model_->layout().final_logit_softcapping; cap > 0) logits = at::tanh(logits / cap) * cap;
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", causal_lm_loss(logits, inputs.get("labels")));
  out.set("logits", logits);
  move_base_outputs(out, base);
  return out;
}

DecoderForSequenceClassification::DecoderForSequenceClassification(std::shared_ptr<DecoderConfig> config,
                                                                   std::string family)
    : DecoderHeadModel(config, std::move(family)) {
  score_ = register_module("score", std::make_shared<Linear>(model_->layout().hidden_size, config->num_labels(), false));
}

ModelOutput DecoderForSequenceClassification::forward(const ModelInputs& inputs) {
  if (!inputs.has("input_ids"))
    throw InvalidInputError(class_name() + " needs input_ids to find the last non-padding token");
  ModelOutput base = model_->forward(inputs);
  return last_token_classification_outputs(score_->forward(base["last_hidden_state"]), inputs, *config_, base);
}

DecoderForTokenClassification::DecoderForTokenClassification(std::shared_ptr<DecoderConfig> config,
                                                             std::string family)
    : DecoderHeadModel(config, std::move(family)) {
  score_ = register_module("score", std::make_shared<Linear>(model_->layout().hidden_size, config->num_labels(), true));
}

ModelOutput DecoderForTokenClassification::forward(const ModelInputs& inputs) {
  ModelOutput base = model_->forward(inputs);
  at::Tensor logits = score_->forward(base["last_hidden_state"]).to(at::kFloat);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", token_cross_entropy(logits, inputs.get("labels")));
  out.set("logits", logits);
  move_base_outputs(out, base);
  return out;
}

DecoderForQuestionAnswering::DecoderForQuestionAnswering(std::shared_ptr<DecoderConfig> config, std::string family,
                                                         std::string base_prefix)
    : DecoderHeadModel(config, std::move(family), std::move(base_prefix)) {
  qa_outputs_ = register_module("qa_outputs", std::make_shared<Linear>(model_->layout().hidden_size, 2, true));
}

ModelOutput DecoderForQuestionAnswering::forward(const ModelInputs& inputs) {
  ModelOutput base = model_->forward(inputs);
  ModelOutput out;
  question_answering_outputs(qa_outputs_->forward(base["last_hidden_state"]).to(at::kFloat), inputs, out);
  move_base_outputs(out, base);
  return out;
}

std::vector<std::pair<std::string, std::string>> describe_layout(const DecoderLayout& l) {
  auto number = [](double v) {
    std::ostringstream out;
    out << v;
    return out.str();
  };
  std::vector<std::pair<std::string, std::string>> lines;
  lines.emplace_back("head_dim", std::to_string(l.head_dim));
  const RotaryEmbedding rope(l.head_dim, l.rope_theta, l.rope_scaling, l.max_position_embeddings, l.partial_rotary_factor,
                             l.original_max_position_embeddings);
  std::string rope_text = rope.rope_type() + ", theta " + number(l.rope_theta);
  if (l.rope_scaling.is_object())
    for (const char* key : {"factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor", "beta_fast",
                            "beta_slow"})
      if (l.rope_scaling.contains(key) && l.rope_scaling[key].is_number())
        rope_text += std::string(", ") + key + " " + number(l.rope_scaling[key].get<double>());
  if (rope.rope_type() == "longrope" && l.original_max_position_embeddings)
    rope_text += ", original context " + std::to_string(*l.original_max_position_embeddings) + " (long factors beyond it)";
  if (rope.attention_scaling() != 1.0) rope_text += ", attention factor " + number(rope.attention_scaling());
  if (l.partial_rotary_factor != 1.0) rope_text += ", rotary fraction " + number(l.partial_rotary_factor);
  lines.emplace_back("rope", rope_text);
  // Windows as "sliding 4096 on layers 0, 2, ..., full on the others".
  std::map<std::optional<int64_t>, std::vector<int64_t>> by_window;
  for (size_t i = 0; i < l.sliding_windows.size(); ++i) by_window[l.sliding_windows[i]].push_back(int64_t(i));
  std::string attention;
  for (const auto& [window, layers] : by_window) {
    if (!attention.empty()) attention += "; ";
    attention += window ? "sliding window " + std::to_string(*window) : std::string("full");
    if (by_window.size() > 1) {
      attention += " on layers";
      for (size_t k = 0; k < layers.size() && k < 8; ++k) attention += (k ? ", " : " ") + std::to_string(layers[k]);
      if (layers.size() > 8) attention += ", ... (" + std::to_string(layers.size()) + " layers)";
    } else {
      attention += " on every layer";
    }
  }
  attention += "; scale " + number(l.attention_scale);
  if (l.attn_logit_softcapping > 0) attention += "; scores soft-capped at " + number(l.attn_logit_softcapping);
  lines.emplace_back("attention", attention);
  std::string features;
  auto add = [&](bool on, const char* name) {
    if (on) features += (features.empty() ? "" : ", ") + std::string(name);
  };
  add(l.qkv_bias, "q/k/v biases");
  add(l.o_proj_bias, "o_proj bias");
  add(l.mlp_bias, "MLP biases");
  add(l.fused_qkv, "fused qkv_proj");
  add(l.fused_gate_up, "fused gate_up_proj");
  add(l.qk_norm, "q/k norms");
  add(l.norm_unit_offset, "(1 + w) norms");
  add(l.scale_embeddings, "embeddings x sqrt(hidden_size)");
  add(l.sandwich_norms, "sandwich norms");
  if (l.final_logit_softcapping > 0) features += (features.empty() ? "" : ", ") + std::string("logits soft-capped at ") +
                                                number(l.final_logit_softcapping);
  lines.emplace_back("decoder", l.hidden_act + (features.empty() ? "" : ", " + features));
  return lines;
}

void register_decoder_family(Registry& registry, const DecoderFamily& f,
                             std::function<std::shared_ptr<DecoderConfig>(ConfigPtr)> as_config) {
  auto factory = [as_config](auto make) -> ModelFactory {
    return [as_config, make](ConfigPtr config) -> ModelPtr { return make(as_config(config)); };
  };
  const std::string family = f.family;
  registry.register_model(tasks::kAutoModel, f.model_type, family + "Model", factory([family](auto c) {
                            return std::make_shared<DecoderModel>(c, family);
                          }));
  registry.register_model(tasks::kCausalLM, f.model_type, family + "ForCausalLM", factory([family](auto c) {
                            return std::make_shared<DecoderForCausalLM>(c, family);
                          }));
  if (f.sequence_classification)
    registry.register_model(tasks::kSequenceClassification, f.model_type, family + "ForSequenceClassification",
                            factory([family](auto c) { return std::make_shared<DecoderForSequenceClassification>(c, family); }));
  if (f.token_classification)
    registry.register_model(tasks::kTokenClassification, f.model_type, family + "ForTokenClassification",
                            factory([family](auto c) { return std::make_shared<DecoderForTokenClassification>(c, family); }));
  if (f.question_answering)
    registry.register_model(tasks::kQuestionAnswering, f.model_type, family + "ForQuestionAnswering",
                            factory([family, prefix = f.qa_base_prefix](auto c) {
                              return std::make_shared<DecoderForQuestionAnswering>(c, family, prefix);
                            }));
}

}  // namespace plugformer
