#include "modeling.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>

#include <plugformer/error.h>
#include <plugformer/heads.h>

namespace plugformer::bert {

namespace {

std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

void require_shape(const char* name, const at::Tensor& t, at::IntArrayRef expected, const char* of) {
  if (t.defined() && t.sizes() != expected) {
    std::string e = "[";
    for (size_t i = 0; i < expected.size(); ++i) e += (i ? ", " : "") + std::to_string(expected[i]);
    throw InvalidInputError(std::string(name) + " has shape " + shape_of(t) + " but " + of + " needs " + e + "]");
  }
}

}  // namespace

// ---------------------------------------------------------------- embeddings

BertEmbeddings::BertEmbeddings(const BertConfig& c) : cfg_(c) {
  word_embeddings_ = register_module("word_embeddings", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  position_embeddings_ =
      register_module("position_embeddings", std::make_shared<Embedding>(c.max_position_embeddings, c.hidden_size));
  token_type_embeddings_ =
      register_module("token_type_embeddings", std::make_shared<Embedding>(c.type_vocab_size, c.hidden_size));
  layer_norm_ = register_module("LayerNorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor BertEmbeddings::forward(const at::Tensor& input_ids, const at::Tensor& token_type_ids,
                                   const at::Tensor& position_ids, const at::Tensor& inputs_embeds,
                                   int64_t past_length) const {
  at::Tensor embeds = inputs_embeds.defined() ? inputs_embeds : word_embeddings_->forward(input_ids);
  const int64_t batch = embeds.size(0), len = embeds.size(1);
  at::Tensor types = token_type_ids;
  if (!types.defined()) types = at::zeros({batch, len}, at::kLong);
  else if (types.numel() > 0) {
    const int64_t lo = types.min().item<int64_t>(), hi = types.max().item<int64_t>();
    if (lo < 0 || hi >= cfg_.type_vocab_size)
      throw InvalidInputError("token_type_ids holds " + std::to_string(lo < 0 ? lo : hi) +
                              ", outside [0, type_vocab_size = " + std::to_string(cfg_.type_vocab_size) + ")");
  }
  at::Tensor h = embeds + token_type_embeddings_->forward(types);
  if (cfg_.position_embedding_type == "absolute") {
    at::Tensor positions = position_ids;
    if (!positions.defined()) positions = at::arange(past_length, past_length + len, at::kLong).unsqueeze(0);
    else if (positions.numel() > 0) {
      const int64_t lo = positions.min().item<int64_t>(), hi = positions.max().item<int64_t>();
      if (lo < 0 || hi >= cfg_.max_position_embeddings)
        throw InvalidInputError("position_ids holds " + std::to_string(lo < 0 ? lo : hi) +
                                ", outside [0, max_position_embeddings = " +
                                std::to_string(cfg_.max_position_embeddings) + ")");
    }
    h = h + position_embeddings_->forward(positions);
  }
  return layer_norm_->forward(h);
}

// ---------------------------------------------------------------- attention

BertSelfAttention::BertSelfAttention(const BertConfig& c, int64_t layer_idx)
    : layer_idx_(layer_idx),
      heads_(c.num_attention_heads),
      head_dim_(c.head_size()),
      max_positions_(c.max_position_embeddings),
      position_embedding_type_(c.position_embedding_type) {
  query_ = register_module("query", std::make_shared<Linear>(c.hidden_size, c.hidden_size));
  key_ = register_module("key", std::make_shared<Linear>(c.hidden_size, c.hidden_size));
  value_ = register_module("value", std::make_shared<Linear>(c.hidden_size, c.hidden_size));
  if (position_embedding_type_ != "absolute")
    distance_embedding_ = register_module(
        "distance_embedding", std::make_shared<Embedding>(2 * c.max_position_embeddings - 1, head_dim_));
}

at::Tensor BertSelfAttention::prune_heads(const std::vector<int64_t>& heads) {
  auto [removed, index] = find_pruneable_heads_and_indices(heads, heads_, head_dim_, pruned_heads_);
  for (auto* projection : {query_.get(), key_.get(), value_.get()}) prune_linear_layer(*projection, index, 0);
  heads_ -= int64_t(removed.size());
  pruned_heads_.insert(removed.begin(), removed.end());
  return index;
}

at::Tensor BertSelfAttention::forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& head_mask,
                                      KVCache* cache, at::Tensor* probs) {
  at::Tensor q = split_heads(query_->forward(hidden), heads_);
  at::Tensor k = split_heads(key_->forward(hidden), heads_);
  at::Tensor v = split_heads(value_->forward(hidden), heads_);
  if (cache) std::tie(k, v) = cache->update(size_t(layer_idx_), k, v);
  const double scale = 1.0 / std::sqrt(double(head_dim_));
  at::Tensor bias = mask;
  if (distance_embedding_) {
    // Relative position scores, added to q k^T before the scaling: folded into the additive mask.
    const int64_t q_len = q.size(2), kv_len = k.size(2);
    at::Tensor left = at::arange(kv_len - q_len, kv_len, at::kLong).view({-1, 1});
    at::Tensor right = at::arange(kv_len, at::kLong).view({1, -1});
    at::Tensor pos = distance_embedding_->forward(left - right + (max_positions_ - 1)).to(q.scalar_type());
    at::Tensor rel = at::einsum("bhld,lrd->bhlr", {q, pos});
    if (position_embedding_type_ == "relative_key_query") rel = rel + at::einsum("bhrd,lrd->bhlr", {k, pos});
    rel = rel * scale;
    bias = mask.defined() ? rel + mask : rel;
  }
  at::Tensor p;
  at::Tensor out = attention(q, k, v, bias, scale, (probs || head_mask.defined()) ? &p : nullptr);
  if (head_mask.defined()) {
    // probs * head_mask, then probs @ v: the same as scaling each head's output.
    at::Tensor m = head_mask.to(out.scalar_type()).view({1, -1, 1, 1});
    out = out * m;
    p = p * m;
  }
  if (probs) *probs = p;
  return merge_heads(out);
}

BertResidualOutput::BertResidualOutput(const BertConfig& c, int64_t in_features) {
  dense_ = register_module("dense", std::make_shared<Linear>(in_features, c.hidden_size));
  layer_norm_ = register_module("LayerNorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor BertResidualOutput::forward(const at::Tensor& hidden, const at::Tensor& residual) const {
  return layer_norm_->forward(dense_->forward(hidden) + residual);
}

BertAttention::BertAttention(const BertConfig& c, int64_t layer_idx) {
  self_ = register_module("self", std::make_shared<BertSelfAttention>(c, layer_idx));
  output_ = register_module("output", std::make_shared<BertResidualOutput>(c, c.hidden_size));
}

at::Tensor BertAttention::forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& head_mask,
                                  KVCache* cache, at::Tensor* probs) {
  return output_->forward(self_->forward(hidden, mask, head_mask, cache, probs), hidden);
}

BertIntermediate::BertIntermediate(const BertConfig& c) : act_(get_activation(c.hidden_act)) {
  dense_ = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.intermediate_size));
}

at::Tensor BertIntermediate::forward(const at::Tensor& hidden) const { return act_(dense_->forward(hidden)); }

BertLayer::BertLayer(const BertConfig& c, int64_t layer_idx) {
  attention_ = register_module("attention", std::make_shared<BertAttention>(c, layer_idx));
  intermediate_ = register_module("intermediate", std::make_shared<BertIntermediate>(c));
  output_ = register_module("output", std::make_shared<BertResidualOutput>(c, c.intermediate_size));
}

at::Tensor BertLayer::forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& head_mask,
                              KVCache* cache, at::Tensor* probs) {
  at::Tensor h = attention_->forward(hidden, mask, head_mask, cache, probs);
  return output_->forward(intermediate_->forward(h), h);
}

BertEncoder::BertEncoder(const BertConfig& c) {
  auto list = register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(std::make_shared<BertLayer>(c, i));
    list->push_back(layers.back());
  }
}

BertPooler::BertPooler(const BertConfig& c) {
  dense_ = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size));
}

at::Tensor BertPooler::forward(const at::Tensor& hidden) const {
  static const Activation tanh = get_activation("tanh");
  return tanh(dense_->forward(hidden.select(1, 0)));
}

// ---------------------------------------------------------------- BertModel

BertModel::BertModel(std::shared_ptr<BertConfig> config, bool add_pooling_layer)
    : PreTrainedModel(config), cfg_(*config) {
  if (cfg_.add_cross_attention)
    throw ConfigError("bert: add_cross_attention (BERT as the decoder of an encoder-decoder model) is not supported");
  embeddings_ = register_module("embeddings", std::make_shared<BertEmbeddings>(cfg_));
  encoder_ = register_module("encoder", std::make_shared<BertEncoder>(cfg_));
  if (add_pooling_layer) pooler_ = register_module("pooler", std::make_shared<BertPooler>(cfg_));
}

void BertModel::prune_heads_impl(const std::map<int64_t, std::vector<int64_t>>& heads_to_prune) {
  for (const auto& [layer, heads] : heads_to_prune) {
    auto attention = std::dynamic_pointer_cast<BertAttention>(find_module("encoder.layer." + std::to_string(layer) + ".attention"));
    if (!attention) throw InvalidInputError("prune_heads: layer " + std::to_string(layer) + " does not exist");
    attention->prune_heads(heads);
  }
}

ModelOutput BertModel::forward(const ModelInputs& inputs) {
  const at::Tensor input_ids = inputs.get("input_ids");
  const at::Tensor inputs_embeds = inputs.get("inputs_embeds");
  if (input_ids.defined() == inputs_embeds.defined())
    throw InvalidInputError("BertModel needs exactly one of input_ids and inputs_embeds");
  if (input_ids.defined() && input_ids.dim() != 2)
    throw InvalidInputError("input_ids must be [batch, seq_len], got shape " + shape_of(input_ids));
  if (inputs_embeds.defined() && (inputs_embeds.dim() != 3 || inputs_embeds.size(2) != cfg_.hidden_size))
    throw InvalidInputError("inputs_embeds must be [batch, seq_len, " + std::to_string(cfg_.hidden_size) +
                            "], got shape " + shape_of(inputs_embeds));
  const at::Tensor& ref = input_ids.defined() ? input_ids : inputs_embeds;
  const int64_t batch = ref.size(0), len = ref.size(1);

  // Only a decoder (is_decoder, BertLMHeadModel) keeps keys and values of past positions.
  std::shared_ptr<KVCache> cache;
  if (cfg_.is_decoder) {
    cache = inputs.past_key_values;
    if (!cache && inputs.use_cache) cache = std::make_shared<KVCache>();
  }
  const int64_t past = cache ? cache->seq_length(0) : 0;

  const at::Tensor token_type_ids = inputs.get("token_type_ids");
  const at::Tensor position_ids = inputs.get("position_ids");
  require_shape("token_type_ids", token_type_ids, {batch, len}, "the input");
  require_shape("position_ids", position_ids, {batch, len}, "the input");
  if (!position_ids.defined() && cfg_.position_embedding_type == "absolute" && past + len > cfg_.max_position_embeddings)
    throw InvalidInputError("sequence of " + std::to_string(past + len) +
                            " positions is longer than max_position_embeddings (" +
                            std::to_string(cfg_.max_position_embeddings) +
                            ") of this BERT model; truncate the input to at most " +
                            std::to_string(cfg_.max_position_embeddings) + " tokens");
  if (cfg_.position_embedding_type != "absolute" && past + len > cfg_.max_position_embeddings)
    throw InvalidInputError("sequence of " + std::to_string(past + len) +
                            " positions is longer than max_position_embeddings (" +
                            std::to_string(cfg_.max_position_embeddings) + ") of this BERT model");

  at::Tensor hidden = embeddings_->forward(input_ids, token_type_ids, position_ids, inputs_embeds, past);
  const auto dtype = hidden.scalar_type();

  // The extended attention mask: (1 - mask) * finfo(dtype).min, causal for a decoder.
  const at::Tensor attention_mask = inputs.get("attention_mask");
  at::Tensor mask;
  if (attention_mask.defined() && attention_mask.dim() == 3) {
    require_shape("attention_mask", attention_mask, {batch, len, past + len}, "the input");
    // [batch, from, to]: used as it is (no causal part), as transformers does.
    const at::Tensor min = padding_attention_mask(at::zeros({1, 1}), dtype);  // finfo(dtype).min, [1, 1, 1, 1]
    mask = (1.0 - attention_mask.to(dtype).unsqueeze(1)) * min;
  } else if (attention_mask.defined()) {
    require_shape("attention_mask", attention_mask, {batch, past + len}, "the input");
  }
  if (cfg_.is_decoder) {
    if (!mask.defined() && (len > 1 || attention_mask.defined()))
      mask = causal_attention_mask(attention_mask, batch, len, past, dtype);
  } else if (!mask.defined() && attention_mask.defined()) {
    mask = padding_attention_mask(attention_mask, dtype);
  }

  // head_mask: [heads] for every layer or [layers, heads]; 1 keeps a head, 0 silences it.
  at::Tensor head_mask = inputs.get("head_mask");
  if (head_mask.defined()) {
    const int64_t layers = cfg_.num_hidden_layers, heads = cfg_.num_attention_heads;
    if (head_mask.dim() == 1 && head_mask.size(0) == heads) head_mask = head_mask.unsqueeze(0).expand({layers, heads});
    else if (!(head_mask.dim() == 2 && head_mask.size(0) == layers && head_mask.size(1) == heads))
      throw InvalidInputError("head_mask must be [num_attention_heads] or [num_hidden_layers, num_attention_heads] = [" +
                              std::to_string(layers) + ", " + std::to_string(heads) + "], got shape " +
                              shape_of(head_mask));
  }

  const bool want_hidden = inputs.output_hidden_states.value_or(cfg_.output_hidden_states);
  const bool want_attn = inputs.output_attentions.value_or(cfg_.output_attentions);
  ModelOutput out;
  for (size_t i = 0; i < encoder_->layers.size(); ++i) {
    if (want_hidden) out.hidden_states.push_back(hidden);
    at::Tensor probs;
    hidden = encoder_->layers[i]->forward(hidden, mask, head_mask.defined() ? head_mask[int64_t(i)] : at::Tensor(),
                                          cache.get(), want_attn ? &probs : nullptr);
    if (want_attn) out.attentions.push_back(probs);
  }
  if (want_hidden) out.hidden_states.push_back(hidden);
  out.set("last_hidden_state", hidden);
  if (pooler_) out.set("pooler_output", pooler_->forward(hidden));
  out.past_key_values = cache;
  return out;
}

// ---------------------------------------------------------------- heads

BertPredictionHeadTransform::BertPredictionHeadTransform(const BertConfig& c) : act_(get_activation(c.hidden_act)) {
  dense_ = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size));
  layer_norm_ = register_module("LayerNorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor BertPredictionHeadTransform::forward(const at::Tensor& hidden) const {
  return layer_norm_->forward(act_(dense_->forward(hidden)));
}

BertLMPredictionHead::BertLMPredictionHead(const BertConfig& c) {
  transform_ = register_module("transform", std::make_shared<BertPredictionHeadTransform>(c));
  decoder_ = register_module("decoder", std::make_shared<Linear>(c.hidden_size, c.vocab_size, /*bias=*/false));
  bias_ = register_parameter("bias", at::zeros({c.vocab_size}));
}

at::Tensor BertLMPredictionHead::forward(const at::Tensor& hidden) const {
  return decoder_->forward(transform_->forward(hidden)) + bias_;
}

void BertLMPredictionHead::resize_bias(int64_t vocab_size) {
  at::NoGradGuard no_grad;
  at::Tensor bias = at::zeros({vocab_size}, bias_.options());
  const int64_t kept = std::min(vocab_size, bias_.size(0));
  bias.narrow(0, 0, kept).copy_(bias_.narrow(0, 0, kept));
  bias_.set_data(bias);
}

BertClsHeads::BertClsHeads(const BertConfig& c, bool with_predictions, bool with_seq_relationship) {
  if (with_predictions) predictions = register_module("predictions", std::make_shared<BertLMPredictionHead>(c));
  if (with_seq_relationship)
    seq_relationship = register_module("seq_relationship", std::make_shared<Linear>(c.hidden_size, 2));
}

BertHeadModel::BertHeadModel(std::shared_ptr<BertConfig> config, bool add_pooling_layer)
    : PreTrainedModel(config), cfg_(*config), pooling_(add_pooling_layer) {
  bert_ = register_module("bert", std::make_shared<BertModel>(config, add_pooling_layer));
}

std::vector<std::string> BertHeadModel::ignored_unexpected_keys() const {
  std::vector<std::string> keys = {R"(embeddings\.position_ids)", R"(cls\.predictions\.decoder\.bias$)"};
  if (!pooling_) keys.push_back(R"(^(bert\.)?pooler\.)");
  return keys;
}

void BertHeadModel::finish(ModelOutput& out, ModelOutput& base) {
  out.set("last_hidden_state", base["last_hidden_state"]);
  if (base.has("pooler_output")) out.set("pooler_output", base["pooler_output"]);
  out.past_key_values = base.past_key_values;
  out.hidden_states = std::move(base.hidden_states);
  out.attentions = std::move(base.attentions);
}

namespace {
const std::vector<std::pair<std::string, std::string>> kTiedDecoder = {
    {"cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"}};
}  // namespace

BertForMaskedLM::BertForMaskedLM(std::shared_ptr<BertConfig> config) : BertHeadModel(config, false) {
  cls_ = register_module("cls", std::make_shared<BertClsHeads>(*config, true, false));
}

std::vector<std::pair<std::string, std::string>> BertForMaskedLM::tied_weights() const { return kTiedDecoder; }

ModelOutput BertForMaskedLM::forward(const ModelInputs& inputs) {
  ModelOutput base = base_forward(inputs);
  at::Tensor logits = cls_->predictions->forward(base["last_hidden_state"]);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", token_cross_entropy(logits.to(at::kFloat), inputs.get("labels")));
  out.set("logits", logits);
  finish(out, base);
  return out;
}

BertLMHeadModel::BertLMHeadModel(std::shared_ptr<BertConfig> config) : BertHeadModel(config, false) {
  cls_ = register_module("cls", std::make_shared<BertClsHeads>(*config, true, false));
}

std::vector<std::pair<std::string, std::string>> BertLMHeadModel::tied_weights() const { return kTiedDecoder; }

ModelOutput BertLMHeadModel::forward(const ModelInputs& inputs) {
  ModelOutput base = base_forward(inputs);
  at::Tensor hidden = base["last_hidden_state"];
  if (inputs.logits_to_keep > 0 && inputs.logits_to_keep < hidden.size(1))
    hidden = hidden.narrow(1, hidden.size(1) - inputs.logits_to_keep, inputs.logits_to_keep);
  at::Tensor logits = cls_->predictions->forward(hidden);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", causal_lm_loss(logits.to(at::kFloat), inputs.get("labels")));
  out.set("logits", logits);
  finish(out, base);
  return out;
}

BertForPreTraining::BertForPreTraining(std::shared_ptr<BertConfig> config) : BertHeadModel(config, true) {
  cls_ = register_module("cls", std::make_shared<BertClsHeads>(*config, true, true));
}

std::vector<std::pair<std::string, std::string>> BertForPreTraining::tied_weights() const { return kTiedDecoder; }

ModelOutput BertForPreTraining::forward(const ModelInputs& inputs) {
  ModelOutput base = base_forward(inputs);
  at::Tensor prediction = cls_->predictions->forward(base["last_hidden_state"]);
  at::Tensor relationship = cls_->seq_relationship->forward(base["pooler_output"]);
  ModelOutput out;
  if (inputs.has("labels") && inputs.has("next_sentence_label"))
    out.set("loss", token_cross_entropy(prediction.to(at::kFloat), inputs.get("labels")) +
                        token_cross_entropy(relationship, inputs.get("next_sentence_label")));
  out.set("prediction_logits", prediction);
  out.set("seq_relationship_logits", relationship);
  finish(out, base);
  return out;
}

BertForNextSentencePrediction::BertForNextSentencePrediction(std::shared_ptr<BertConfig> config)
    : BertHeadModel(config, true) {
  cls_ = register_module("cls", std::make_shared<BertClsHeads>(*config, false, true));
}

ModelOutput BertForNextSentencePrediction::forward(const ModelInputs& inputs) {
  ModelOutput base = base_forward(inputs);
  at::Tensor logits = cls_->seq_relationship->forward(base["pooler_output"]);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", token_cross_entropy(logits, inputs.get("labels")));
  out.set("logits", logits);
  finish(out, base);
  return out;
}

BertForSequenceClassification::BertForSequenceClassification(std::shared_ptr<BertConfig> config)
    : BertHeadModel(config, true) {
  classifier_ = register_module("classifier", std::make_shared<Linear>(config->hidden_size, config->num_labels()));
}

ModelOutput BertForSequenceClassification::forward(const ModelInputs& inputs) {
  ModelOutput base = base_forward(inputs);
  at::Tensor logits = classifier_->forward(base["pooler_output"]);
  ModelOutput out;
  if (inputs.has("labels"))
    out.set("loss", sequence_classification_loss(*config_, logits.to(at::kFloat), inputs.get("labels")));
  out.set("logits", logits);
  finish(out, base);
  return out;
}

BertForMultipleChoice::BertForMultipleChoice(std::shared_ptr<BertConfig> config) : BertHeadModel(config, true) {
  classifier_ = register_module("classifier", std::make_shared<Linear>(config->hidden_size, 1));
}

ModelOutput BertForMultipleChoice::forward(const ModelInputs& inputs) {
  // [batch, num_choices, seq(, hidden)] -> [batch * num_choices, seq(, hidden)].
  const at::Tensor ids = inputs.get("input_ids"), embeds = inputs.get("inputs_embeds");
  const at::Tensor& ref = ids.defined() ? ids : embeds;
  if (!ref.defined()) throw InvalidInputError("BertForMultipleChoice needs input_ids or inputs_embeds");
  if (ref.dim() != (ids.defined() ? 3 : 4))
    throw InvalidInputError(std::string(ids.defined() ? "input_ids" : "inputs_embeds") +
                            " must be [batch, num_choices, seq_len" + (ids.defined() ? "" : ", hidden") +
                            "], got shape " + shape_of(ref));
  const int64_t batch = ref.size(0), choices = ref.size(1), len = ref.size(2);
  ModelInputs flat = inputs;
  for (const char* name : {"input_ids", "attention_mask", "token_type_ids", "position_ids"}) {
    at::Tensor t = inputs.get(name);
    if (!t.defined()) continue;
    require_shape(name, t, {batch, choices, len}, "the input");
    flat.tensors[name] = t.reshape({batch * choices, len});
  }
  if (embeds.defined()) flat.tensors["inputs_embeds"] = embeds.reshape({batch * choices, len, embeds.size(3)});
  flat.tensors.erase("labels");
  ModelOutput base = base_forward(flat);
  at::Tensor logits = classifier_->forward(base["pooler_output"]).view({batch, choices});
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", token_cross_entropy(logits, inputs.get("labels")));
  out.set("logits", logits);
  finish(out, base);
  return out;
}

BertForTokenClassification::BertForTokenClassification(std::shared_ptr<BertConfig> config)
    : BertHeadModel(config, false) {
  classifier_ = register_module("classifier", std::make_shared<Linear>(config->hidden_size, config->num_labels()));
}

ModelOutput BertForTokenClassification::forward(const ModelInputs& inputs) {
  ModelOutput base = base_forward(inputs);
  at::Tensor logits = classifier_->forward(base["last_hidden_state"]);
  ModelOutput out;
  if (inputs.has("labels")) out.set("loss", token_cross_entropy(logits.to(at::kFloat), inputs.get("labels")));
  out.set("logits", logits);
  finish(out, base);
  return out;
}

BertForQuestionAnswering::BertForQuestionAnswering(std::shared_ptr<BertConfig> config)
    : BertHeadModel(config, false) {
  qa_outputs_ = register_module("qa_outputs", std::make_shared<Linear>(config->hidden_size, config->num_labels()));
}

ModelOutput BertForQuestionAnswering::forward(const ModelInputs& inputs) {
  if (cfg_.num_labels() != 2)
    throw ConfigError("BertForQuestionAnswering needs num_labels == 2 (start and end), got " +
                      std::to_string(cfg_.num_labels()));
  ModelOutput base = base_forward(inputs);
  ModelOutput out;
  question_answering_outputs(qa_outputs_->forward(base["last_hidden_state"]), inputs, out);
  finish(out, base);
  return out;
}

}  // namespace plugformer::bert
