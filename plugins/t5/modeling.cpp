#include "modeling.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>
#include <limits>

#include <plugformer/error.h>
#include <plugformer/heads.h>

namespace plugformer::t5 {

namespace {

// transformers clamps fp16 activations after every sub-layer so that inf does not spread.
at::Tensor clamp_fp16(const at::Tensor& hidden) {
  if (hidden.scalar_type() != at::kHalf) return hidden;
  const double max = 65504.0;
  const double limit = at::isinf(hidden).any().item<bool>() ? max - 1000 : max;
  // libtorch 1.13 has no fp16 clamp on CPU; through fp32 the result is the same (the limits round
  // to the same fp16 bounds as PyTorch's fp16 clamp casts them to).
  return hidden.to(at::kFloat).clamp(-limit, limit).to(at::kHalf);
}

void check_ids(const at::Tensor& ids, const at::Tensor& embeds, int64_t d_model, const std::string& what) {
  if (ids.defined() == embeds.defined())
    throw InvalidInputError("t5: give exactly one of " + what + "input_ids and " + what + "inputs_embeds");
  if (ids.defined() && ids.dim() != 2) throw InvalidInputError(what + "input_ids must be [batch, seq_len]");
  if (embeds.defined() && (embeds.dim() != 3 || embeds.size(2) != d_model))
    throw InvalidInputError(what + "inputs_embeds must be [batch, seq_len, " + std::to_string(d_model) + "]");
  const at::Tensor& ref = ids.defined() ? ids : embeds;
  if (ref.size(0) == 0 || ref.size(1) == 0)
    throw InvalidInputError("t5: empty " + what + "input (batch " + std::to_string(ref.size(0)) + ", length " +
                            std::to_string(ref.size(1)) + ")");
}

// A head's output also carries what the base model returned, except the hidden state it replaced.
void keep_base_outputs(ModelOutput& out, const ModelOutput& base) {
  for (const auto& [name, tensor] : base.tensors)
    if (name != "last_hidden_state") out.set(name, tensor);
  out.past_key_values = base.past_key_values;
}

void append_named(ModelOutput& out, const std::string& name, const std::vector<at::Tensor>& tensors) {
  for (size_t i = 0; i < tensors.size(); ++i) out.set(name + "." + std::to_string(i), tensors[i]);
}

}  // namespace

at::Tensor shift_right(const T5Config& config, const at::Tensor& ids) {
  if (!config.decoder_start_token_id)
    throw InvalidInputError("t5: config.decoder_start_token_id is not set; it is needed to build decoder_input_ids "
                            "(set it in config.json, usually to pad_token_id)");
  if (!config.pad_token_id) throw InvalidInputError("t5: config.pad_token_id is not set; it replaces -100 in shifted labels");
  if (ids.dim() != 2) throw InvalidInputError("t5: ids to shift right must be [batch, seq_len]");
  at::Tensor shifted = at::full_like(ids, *config.decoder_start_token_id, at::kLong);
  if (ids.size(1) > 1) shifted.narrow(1, 1, ids.size(1) - 1).copy_(ids.narrow(1, 0, ids.size(1) - 1));
  return shifted.masked_fill_(shifted == -100, *config.pad_token_id);
}

T5Attention::T5Attention(const T5Config& c, bool is_decoder, bool has_relative_attention_bias)
    : is_decoder_(is_decoder),
      heads_(c.num_heads),
      num_buckets_(c.relative_attention_num_buckets),
      max_distance_(c.relative_attention_max_distance) {
  q_ = register_module("q", std::make_shared<Linear>(c.d_model, c.inner_dim(), false));
  k_ = register_module("k", std::make_shared<Linear>(c.d_model, c.inner_dim(), false));
  v_ = register_module("v", std::make_shared<Linear>(c.d_model, c.inner_dim(), false));
  o_ = register_module("o", std::make_shared<Linear>(c.inner_dim(), c.d_model, false));
  if (has_relative_attention_bias)
    relative_attention_bias_ =
        register_module("relative_attention_bias", std::make_shared<Embedding>(num_buckets_, heads_));
}

at::Tensor T5Attention::compute_bias(int64_t q_len, int64_t k_len, int64_t past) const {
  at::Tensor context = at::arange(past, past + q_len, at::kLong).view({q_len, 1});
  at::Tensor memory = at::arange(k_len, at::kLong).view({1, k_len});
  at::Tensor buckets = relative_position_bucket(memory - context, !is_decoder_, num_buckets_, max_distance_);
  return relative_attention_bias_->forward(buckets).permute({2, 0, 1}).unsqueeze(0);  // [1, heads, q, k]
}

at::Tensor T5Attention::forward(const at::Tensor& hidden, const at::Tensor& key_value_states, const at::Tensor& bias,
                                KVCache* cache, size_t layer, at::Tensor* probs) {
  at::Tensor q = split_heads(q_->forward(hidden), heads_);
  at::Tensor k, v;
  if (!key_value_states.defined()) {
    k = split_heads(k_->forward(hidden), heads_);
    v = split_heads(v_->forward(hidden), heads_);
    if (cache) std::tie(k, v) = cache->update(layer, k, v);
  } else if (cache && cache->has_cross(layer)) {
    std::tie(k, v) = cache->cross(layer);  // the encoder output does not change while decoding
  } else {
    k = split_heads(k_->forward(key_value_states), heads_);
    v = split_heads(v_->forward(key_value_states), heads_);
    if (cache) cache->set_cross(layer, k, v);
  }
  // T5 does not scale the scores: the 1/sqrt(d_kv) is folded into the initialisation of q.
  return o_->forward(merge_heads(attention(q, k, v, bias, 1.0, probs)));
}

T5DenseActDense::T5DenseActDense(const T5Config& c) : act_(get_activation(c.dense_act_fn)) {
  if (c.is_gated_act) {
    wi_0_ = register_module("wi_0", std::make_shared<Linear>(c.d_model, c.d_ff, false));
    wi_1_ = register_module("wi_1", std::make_shared<Linear>(c.d_model, c.d_ff, false));
  } else {
    wi_ = register_module("wi", std::make_shared<Linear>(c.d_model, c.d_ff, false));
  }
  wo_ = register_module("wo", std::make_shared<Linear>(c.d_ff, c.d_model, false));
}

at::Tensor T5DenseActDense::forward(const at::Tensor& x) const {
  at::Tensor h = wi_ ? act_(wi_->forward(x)) : act_(wi_0_->forward(x)) * wi_1_->forward(x);
  return wo_->forward(h.to(wo_->weight.scalar_type()));
}

T5LayerSelfAttention::T5LayerSelfAttention(const T5Config& c, bool is_decoder, bool has_relative_attention_bias) {
  attention = register_module("SelfAttention", std::make_shared<T5Attention>(c, is_decoder, has_relative_attention_bias));
  layer_norm = register_module("layer_norm", std::make_shared<RMSNorm>(c.d_model, c.layer_norm_epsilon));
}

T5LayerCrossAttention::T5LayerCrossAttention(const T5Config& c) {
  attention = register_module("EncDecAttention", std::make_shared<T5Attention>(c, true, false));
  layer_norm = register_module("layer_norm", std::make_shared<RMSNorm>(c.d_model, c.layer_norm_epsilon));
}

T5LayerFF::T5LayerFF(const T5Config& c) {
  dense = register_module("DenseReluDense", std::make_shared<T5DenseActDense>(c));
  layer_norm = register_module("layer_norm", std::make_shared<RMSNorm>(c.d_model, c.layer_norm_epsilon));
}

T5Block::T5Block(const T5Config& c, bool is_decoder, bool has_relative_attention_bias) {
  auto layers = register_module("layer", torch::nn::ModuleList());
  self_ = std::make_shared<T5LayerSelfAttention>(c, is_decoder, has_relative_attention_bias);
  layers->push_back(self_);
  if (is_decoder) {
    cross_ = std::make_shared<T5LayerCrossAttention>(c);
    layers->push_back(cross_);
  }
  ff_ = std::make_shared<T5LayerFF>(c);
  layers->push_back(ff_);
}

at::Tensor T5Block::forward(const at::Tensor& hidden, const at::Tensor& self_bias, const at::Tensor& encoder_hidden,
                            const at::Tensor& cross_bias, KVCache* cache, size_t layer, at::Tensor* probs) {
  at::Tensor h = clamp_fp16(
      hidden + self_->attention->forward(self_->layer_norm->forward(hidden), {}, self_bias, cache, layer, probs));
  if (cross_)
    h = clamp_fp16(h + cross_->attention->forward(cross_->layer_norm->forward(h), encoder_hidden, cross_bias, cache,
                                                  layer, probs ? probs + 1 : nullptr));
  return clamp_fp16(h + ff_->dense->forward(ff_->layer_norm->forward(h)));
}

T5Stack::T5Stack(const T5Config& c, bool is_decoder, std::shared_ptr<Embedding> embed_tokens)
    : cfg_(c), is_decoder_(is_decoder), embed_tokens_(std::move(embed_tokens)) {
  auto list = register_module("block", torch::nn::ModuleList());
  const int64_t layers = is_decoder ? c.decoder_layers() : c.num_layers;
  for (int64_t i = 0; i < layers; ++i) {
    // Only the first block owns the relative position table; the others reuse its bias.
    block_.push_back(std::make_shared<T5Block>(c, is_decoder, i == 0));
    list->push_back(block_.back());
  }
  final_layer_norm_ = register_module("final_layer_norm", std::make_shared<RMSNorm>(c.d_model, c.layer_norm_epsilon));
}

at::Tensor T5Stack::forward(const at::Tensor& input_ids, const at::Tensor& inputs_embeds,
                            const at::Tensor& attention_mask, const at::Tensor& encoder_hidden,
                            const at::Tensor& encoder_attention_mask, KVCache* cache, const Trace& trace) {
  const std::string what = is_decoder_ ? "decoder_" : "";
  check_ids(input_ids, inputs_embeds, cfg_.d_model, what);
  at::Tensor hidden = input_ids.defined() ? embed_tokens_->forward(input_ids) : inputs_embeds;
  const int64_t batch = hidden.size(0), len = hidden.size(1);
  const int64_t past = cache && cache->num_layers() > 0 ? cache->seq_length(0) : 0;
  const auto dtype = hidden.scalar_type();

  // Position bias plus mask, computed once and shared by every block of the stack.
  at::Tensor self_bias = block_[0]->self_attention().compute_bias(len, past + len, past).to(dtype);
  if (is_decoder_) {
    if (len > 1 || attention_mask.defined())
      self_bias = self_bias + causal_attention_mask(attention_mask, batch, len, past, dtype);
  } else if (attention_mask.defined()) {
    if (attention_mask.dim() != 2 || attention_mask.size(0) != batch || attention_mask.size(1) != len)
      throw InvalidInputError("attention_mask must be [batch, seq_len] = [" + std::to_string(batch) + ", " +
                              std::to_string(len) + "], like input_ids");
    self_bias = self_bias + padding_attention_mask(attention_mask, dtype);
  }
  at::Tensor cross_bias;
  if (is_decoder_ && encoder_attention_mask.defined()) cross_bias = padding_attention_mask(encoder_attention_mask, dtype);

  for (size_t i = 0; i < block_.size(); ++i) {
    if (trace.hidden_states) trace.hidden_states->push_back(hidden);
    at::Tensor probs[2];
    const bool want_probs = trace.attentions || trace.cross_attentions;
    hidden = block_[i]->forward(hidden, self_bias, encoder_hidden, cross_bias, cache, i, want_probs ? probs : nullptr);
    if (trace.attentions) trace.attentions->push_back(probs[0]);
    if (trace.cross_attentions && probs[1].defined()) trace.cross_attentions->push_back(probs[1]);
  }
  hidden = final_layer_norm_->forward(hidden);
  if (trace.hidden_states) trace.hidden_states->push_back(hidden);
  return hidden;
}

T5PreTrainedModel::T5PreTrainedModel(std::shared_ptr<T5Config> config, bool with_decoder)
    : PreTrainedModel(config), cfg_(*config) {
  shared_ = register_module("shared", std::make_shared<Embedding>(cfg_.vocab_size, cfg_.d_model));
  encoder_ = register_module("encoder", std::make_shared<T5Stack>(cfg_, false, shared_));
  if (with_decoder) decoder_ = register_module("decoder", std::make_shared<T5Stack>(cfg_, true, shared_));
}

ModelOutput T5PreTrainedModel::encode_decode(const ModelInputs& inputs, const at::Tensor& decoder_input_ids) {
  const bool want_hidden = inputs.output_hidden_states.value_or(cfg_.output_hidden_states);
  const bool want_attn = inputs.output_attentions.value_or(cfg_.output_attentions);
  ModelOutput out;
  const at::Tensor attention_mask = inputs.get("attention_mask");
  at::Tensor encoded = inputs.get("encoder_outputs");
  if (!encoded.defined()) {
    if (decoder_ && !inputs.has("input_ids") && !inputs.has("inputs_embeds"))
      throw InvalidInputError(class_name() + ": the decoder needs the encoder's output: pass input_ids (or "
                              "inputs_embeds) or encoder_outputs");
    std::vector<at::Tensor> hidden_states, attentions;
    T5Stack::Trace trace{want_hidden ? &hidden_states : nullptr, want_attn ? &attentions : nullptr, nullptr};
    encoded = encoder_->forward(inputs.get("input_ids"), inputs.get("inputs_embeds"), attention_mask, {}, {}, nullptr,
                                trace);
    if (!decoder_) {
      out.set("last_hidden_state", encoded);
      out.hidden_states = std::move(hidden_states);
      out.attentions = std::move(attentions);
      return out;
    }
    append_named(out, "encoder_hidden_states", hidden_states);
    append_named(out, "encoder_attentions", attentions);
  } else if (encoded.dim() != 3 || encoded.size(2) != cfg_.d_model) {
    throw InvalidInputError("encoder_outputs must be [batch, seq_len, " + std::to_string(cfg_.d_model) + "]");
  }
  if (attention_mask.defined() &&
      (attention_mask.dim() != 2 || attention_mask.size(0) != encoded.size(0) || attention_mask.size(1) != encoded.size(1)))
    throw InvalidInputError("attention_mask must be [batch, seq_len] like the encoder input");

  const at::Tensor decoder_embeds = inputs.get("decoder_inputs_embeds");
  if (!decoder_input_ids.defined() && !decoder_embeds.defined())
    throw InvalidInputError(class_name() + ": decoder_input_ids (or decoder_inputs_embeds, or labels) are needed");
  const at::Tensor& decoder_ref = decoder_input_ids.defined() ? decoder_input_ids : decoder_embeds;
  if (decoder_ref.dim() >= 1 && decoder_ref.size(0) != encoded.size(0))
    throw InvalidInputError("decoder inputs have batch " + std::to_string(decoder_ref.size(0)) +
                            " but the encoder output has batch " + std::to_string(encoded.size(0)));
  std::shared_ptr<KVCache> cache = inputs.past_key_values;
  if (!cache && inputs.use_cache) cache = std::make_shared<KVCache>();
  std::vector<at::Tensor> cross;
  T5Stack::Trace trace{want_hidden ? &out.hidden_states : nullptr, want_attn ? &out.attentions : nullptr,
                       want_attn ? &cross : nullptr};
  at::Tensor hidden = decoder_->forward(decoder_input_ids, decoder_embeds, inputs.get("decoder_attention_mask"), encoded,
                                        attention_mask, cache.get(), trace);
  append_named(out, "cross_attentions", cross);
  out.set("last_hidden_state", hidden);
  out.set("encoder_last_hidden_state", encoded);
  out.past_key_values = cache;
  return out;
}

ModelOutput T5Model::forward(const ModelInputs& inputs) { return encode_decode(inputs, inputs.get("decoder_input_ids")); }

ModelOutput T5EncoderModel::forward(const ModelInputs& inputs) { return encode_decode(inputs, {}); }

T5ForConditionalGeneration::T5ForConditionalGeneration(std::shared_ptr<T5Config> config)
    : T5PreTrainedModel(config, true) {
  lm_head_ = register_module("lm_head", std::make_shared<Linear>(config->d_model, config->vocab_size, false));
}

ModelOutput T5ForConditionalGeneration::forward(const ModelInputs& inputs) {
  const at::Tensor labels = inputs.get("labels");
  at::Tensor decoder_input_ids = inputs.get("decoder_input_ids");
  if (labels.defined() && !decoder_input_ids.defined() && !inputs.has("decoder_inputs_embeds"))
    decoder_input_ids = shift_right(cfg_, labels);
  ModelOutput base = encode_decode(inputs, decoder_input_ids);
  at::Tensor hidden = base["last_hidden_state"];
  if (inputs.logits_to_keep < 0) throw InvalidInputError("logits_to_keep must be >= 0");
  at::Tensor kept = hidden;
  if (inputs.logits_to_keep > 0 && inputs.logits_to_keep < hidden.size(1))
    kept = hidden.narrow(1, hidden.size(1) - inputs.logits_to_keep, inputs.logits_to_keep);
  // Tied embeddings: the decoder output is rescaled before the shared projection (Mesh TensorFlow).
  if (cfg_.tie_word_embeddings) kept = kept * std::pow(double(cfg_.d_model), -0.5);
  at::Tensor logits = lm_head_->forward(kept).to(at::kFloat);
  ModelOutput out;
  if (labels.defined()) {
    if (labels.sizes() != logits.sizes().slice(0, 2))
      throw InvalidInputError("labels must be [batch, decoder_seq_len] like the decoder inputs");
    out.set("loss", token_cross_entropy(logits, labels));
  }
  out.set("logits", logits);
  out.set("decoder_last_hidden_state", hidden);
  keep_base_outputs(out, base);
  out.hidden_states = std::move(base.hidden_states);
  out.attentions = std::move(base.attentions);
  return out;
}

T5ClassificationHead::T5ClassificationHead(const T5Config& c) {
  dense_ = register_module("dense", std::make_shared<Linear>(c.d_model, c.d_model, true));
  out_proj_ = register_module("out_proj", std::make_shared<Linear>(c.d_model, c.num_labels(), true));
}

at::Tensor T5ClassificationHead::forward(const at::Tensor& x) const {
  static const Activation tanh = get_activation("tanh");
  return out_proj_->forward(tanh(dense_->forward(x)));
}

T5ForSequenceClassification::T5ForSequenceClassification(std::shared_ptr<T5Config> config) : PreTrainedModel(config) {
  transformer_ = register_module("transformer", std::make_shared<T5Model>(config));
  classification_head_ = register_module("classification_head", std::make_shared<T5ClassificationHead>(*config));
}

ModelOutput T5ForSequenceClassification::forward(const ModelInputs& inputs) {
  const auto& cfg = config_as<T5Config>();
  const at::Tensor ids = inputs.get("input_ids");
  if (!ids.defined())
    throw InvalidInputError("T5ForSequenceClassification needs input_ids: it classifies at the last eos token");
  if (cfg.eos_token_id.empty()) throw InvalidInputError("T5ForSequenceClassification: config.eos_token_id is not set");
  ModelInputs inner = inputs;
  inner.use_cache = false;
  if (!inner.has("decoder_input_ids") && !inner.has("decoder_inputs_embeds"))
    inner.tensors["decoder_input_ids"] = shift_right(cfg, ids);
  ModelOutput base = transformer_->forward(inner);
  at::Tensor hidden = base["last_hidden_state"];
  if (hidden.size(1) != ids.size(1))
    throw InvalidInputError("T5ForSequenceClassification: the decoder inputs must be as long as input_ids");
  at::Tensor eos = ids.eq(cfg.eos_token_id.front());
  at::Tensor counts = eos.sum(1);
  if (counts.min().item<int64_t>() != counts.max().item<int64_t>())
    throw InvalidInputError("All examples must have the same number of <eos> tokens.");
  if (counts.min().item<int64_t>() == 0) throw InvalidInputError("every row of input_ids must contain an <eos> token");
  // The rightmost eos position of each row.
  at::Tensor last = (at::arange(ids.size(1), at::kLong).view({1, -1}) * eos.to(at::kLong)).argmax(1);
  at::Tensor sentence = hidden.gather(1, last.view({-1, 1, 1}).expand({hidden.size(0), 1, hidden.size(2)})).squeeze(1);
  at::Tensor logits = classification_head_->forward(sentence).to(at::kFloat);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", sequence_classification_loss(cfg, logits, inputs.get("labels")));
  out.set("logits", logits);
  keep_base_outputs(out, base);
  return out;
}

T5ForQuestionAnswering::T5ForQuestionAnswering(std::shared_ptr<T5Config> config) : T5PreTrainedModel(config, true) {
  qa_outputs_ = register_module("qa_outputs", std::make_shared<Linear>(config->d_model, config->num_labels(), true));
}

ModelOutput T5ForQuestionAnswering::forward(const ModelInputs& inputs) {
  ModelInputs inner = inputs;
  if (inputs.has("start_positions") && inputs.has("end_positions")) inner.use_cache = false;
  at::Tensor decoder_input_ids = inputs.get("decoder_input_ids");
  if (!decoder_input_ids.defined() && !inputs.has("decoder_inputs_embeds")) {
    if (!inputs.has("input_ids"))
      throw InvalidInputError("T5ForQuestionAnswering: without decoder_input_ids, input_ids are needed (shifted right)");
    decoder_input_ids = shift_right(cfg_, inputs.get("input_ids"));
  }
  ModelOutput base = encode_decode(inner, decoder_input_ids);
  ModelOutput out;
  question_answering_outputs(qa_outputs_->forward(base["last_hidden_state"]), inputs, out);
  keep_base_outputs(out, base);
  return out;
}

}  // namespace plugformer::t5
