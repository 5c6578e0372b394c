// The BERT-style encoder shared by bert, roberta and xlm-roberta (encoder.h): BERT's modules
// (transformers' modeling_bert.py: absolute or relative position embeddings, token type
// embeddings, post-LayerNorm layers, tanh pooler), the base model, and RoBERTa's heads.
#include "plugformer/encoder.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <array>
#include <cmath>

#include "plugformer/error.h"
#include "plugformer/heads.h"
#include "matmul.h"

namespace plugformer {

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

class BertEmbeddings : public torch::nn::Module {
 public:
  BertEmbeddings(const BertStyleConfig& config, const EncoderLayout& layout);
  // input_ids or inputs_embeds [batch, seq(, hidden)]; token_type_ids, position_ids [batch, seq] or undefined.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& token_type_ids, const at::Tensor& position_ids,
                     const at::Tensor& inputs_embeds, int64_t past_length) const;
  // The position id of a sequence's first token when none are given (RoBERTa: padding_idx + 1).
  int64_t first_position() const { return positions_ == PositionIds::after_padding_idx ? padding_idx_ + 1 : 0; }

 private:
  const BertStyleConfig& cfg_;
  PositionIds positions_;
  int64_t padding_idx_;
  std::shared_ptr<Embedding> word_embeddings_, position_embeddings_, token_type_embeddings_;
  std::shared_ptr<LayerNorm> layer_norm_;
};

class BertSelfAttention : public torch::nn::Module {
 public:
  // names: the query, key and value projections' module names.
  BertSelfAttention(const BertStyleConfig& config, int64_t layer_idx, const std::array<const char*, 3>& names);
  // mask: additive [batch, 1, q_len or 1, kv_len] or undefined; head_mask: [heads] or undefined.
  // first_position: queries of the first position only (keys and values of all).
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& head_mask, KVCache* cache,
                     at::Tensor* probs, bool first_position);
  // Removes heads (numbered as in the unpruned layer); returns the kept rows of the
  // [heads * head_dim] projections so the output projection can drop the same inputs.
  at::Tensor prune_heads(const std::vector<int64_t>& heads);

 private:
  int64_t layer_idx_, heads_, head_dim_, max_positions_;
  std::set<int64_t> pruned_heads_;
  std::string position_embedding_type_;
  std::shared_ptr<Linear> query_, key_, value_;
  std::shared_ptr<Embedding> distance_embedding_;  // relative_key / relative_key_query only
};

// BertOutput: Linear, then LayerNorm of (output + residual).
class BertResidualOutput : public torch::nn::Module {
 public:
  BertResidualOutput(const BertStyleConfig& config, int64_t in_features);
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& residual) const;

 private:
  std::shared_ptr<Linear> dense_;
  std::shared_ptr<LayerNorm> layer_norm_;
};

// Self-attention, then LayerNorm(output projection + residual). BERT names the parts
// self.{query,key,value} and output.{dense,LayerNorm}; MPNet attn.{q,k,v,o} and LayerNorm.
class BertAttention : public torch::nn::Module {
 public:
  BertAttention(const BertStyleConfig& config, int64_t layer_idx, const EncoderLayout& layout);
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& head_mask, KVCache* cache,
                     at::Tensor* probs, bool first_position);
  void prune_heads(const std::vector<int64_t>& heads) { prune_linear_layer(*dense_, self_->prune_heads(heads), 1); }

 private:
  std::shared_ptr<BertSelfAttention> self_;
  std::shared_ptr<Linear> dense_;
  std::shared_ptr<LayerNorm> layer_norm_;
};

class BertIntermediate : public torch::nn::Module {
 public:
  explicit BertIntermediate(const BertStyleConfig& config);
  at::Tensor forward(const at::Tensor& hidden) const;

 private:
  std::shared_ptr<Linear> dense_;
  Activation act_;
};

class BertLayer : public torch::nn::Module {
 public:
  BertLayer(const BertStyleConfig& config, int64_t layer_idx, const EncoderLayout& layout);
  // first_position: the output of the first position only, [batch, 1, hidden].
  at::Tensor forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& head_mask, KVCache* cache,
                     at::Tensor* probs, bool first_position);

 private:
  int64_t intermediate_size_;
  std::shared_ptr<BertAttention> attention_;
  std::shared_ptr<BertIntermediate> intermediate_;
  std::shared_ptr<BertResidualOutput> output_;
};

class BertEncoder : public torch::nn::Module {
 public:
  BertEncoder(const BertStyleConfig& config, const EncoderLayout& layout);
  std::vector<std::shared_ptr<BertLayer>> layers;
  std::shared_ptr<Embedding> relative_attention_bias;  // MPNet

  // MPNet's position bias [1, heads, len, len]: the table at T5's bidirectional bucket of k - q.
  at::Tensor position_bias(int64_t len, c10::ScalarType dtype) const {
    const at::Tensor slots = at::arange(len, at::kLong);
    const at::Tensor buckets = relative_position_bucket(slots.unsqueeze(0) - slots.unsqueeze(1), true, 32, 128);
    return relative_attention_bias->forward(buckets).permute({2, 0, 1}).unsqueeze(0).to(dtype);
  }
};

// tanh(dense(hidden[:, 0])).
class BertPooler : public torch::nn::Module {
 public:
  explicit BertPooler(const BertStyleConfig& config);
  at::Tensor forward(const at::Tensor& hidden) const;

 private:
  std::shared_ptr<Linear> dense_;
};

// ---------------------------------------------------------------- embeddings

BertEmbeddings::BertEmbeddings(const BertStyleConfig& c, const EncoderLayout& layout)
    : cfg_(c), positions_(layout.positions), padding_idx_(layout.padding_idx.value_or(c.pad_token_id.value_or(1))) {
  word_embeddings_ = register_module("word_embeddings", std::make_shared<Embedding>(c.vocab_size, c.hidden_size));
  position_embeddings_ =
      register_module("position_embeddings", std::make_shared<Embedding>(c.max_position_embeddings, c.hidden_size));
  if (layout.token_type_embeddings)
    token_type_embeddings_ =
        register_module("token_type_embeddings", std::make_shared<Embedding>(c.type_vocab_size, c.hidden_size));
  layer_norm_ = register_module("LayerNorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor BertEmbeddings::forward(const at::Tensor& input_ids, const at::Tensor& token_type_ids,
                                   const at::Tensor& position_ids, const at::Tensor& inputs_embeds,
                                   int64_t past_length) const {
  at::Tensor embeds = inputs_embeds.defined() ? inputs_embeds : word_embeddings_->forward(input_ids);
  const int64_t batch = embeds.size(0), len = embeds.size(1);
  at::Tensor h = embeds;
  if (token_type_embeddings_) {
    at::Tensor types = token_type_ids;
    if (!types.defined()) types = at::zeros({batch, len}, at::kLong);
    else if (types.numel() > 0) {
      const int64_t lo = types.min().item<int64_t>(), hi = types.max().item<int64_t>();
      if (lo < 0 || hi >= cfg_.type_vocab_size)
        throw InvalidInputError("token_type_ids holds " + std::to_string(lo < 0 ? lo : hi) +
                                ", outside [0, type_vocab_size = " + std::to_string(cfg_.type_vocab_size) + ")");
    }
    h = h + token_type_embeddings_->forward(types);
  }
  // Without a token type table (MPNet), token_type_ids are ignored: its tokenizers' model inputs
  // never include them in transformers.
  if (cfg_.position_embedding_type == "absolute") {
    at::Tensor positions = position_ids;
    if (!positions.defined() && positions_ == PositionIds::after_padding_idx) {
      // RoBERTa's create_position_ids_from_input_ids / _from_inputs_embeds.
      const int64_t pad = padding_idx_;
      if (input_ids.defined()) {
        const at::Tensor real = input_ids.ne(pad).to(at::kLong);
        positions = (real.cumsum(1) + past_length) * real + pad;
      } else {
        positions = at::arange(pad + 1, pad + 1 + len, at::kLong).unsqueeze(0);
      }
    } else if (!positions.defined()) {
      positions = at::arange(past_length, past_length + len, at::kLong).unsqueeze(0);
    } else if (positions.numel() > 0) {
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

BertSelfAttention::BertSelfAttention(const BertStyleConfig& c, int64_t layer_idx,
                                     const std::array<const char*, 3>& names)
    : layer_idx_(layer_idx),
      heads_(c.num_attention_heads),
      head_dim_(c.head_size()),
      max_positions_(c.max_position_embeddings),
      position_embedding_type_(c.position_embedding_type) {
  query_ = register_module(names[0], std::make_shared<Linear>(c.hidden_size, c.hidden_size));
  key_ = register_module(names[1], std::make_shared<Linear>(c.hidden_size, c.hidden_size));
  value_ = register_module(names[2], std::make_shared<Linear>(c.hidden_size, c.hidden_size));
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
                                      KVCache* cache, at::Tensor* probs, bool first_position) {
  at::Tensor q = split_heads(query_->forward(first_position ? hidden.narrow(1, 0, 1) : hidden), heads_);
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
  if (first_position && bias.defined() && bias.size(2) > 1) bias = bias.narrow(2, 0, 1);
  at::Tensor p;
  at::Tensor out = attention(q, k, v, bias, scale, probs ? &p : nullptr);
  if (head_mask.defined()) {
    // probs * head_mask, then probs @ v: the same as scaling each head's output.
    at::Tensor m = head_mask.to(out.scalar_type()).view({1, -1, 1, 1});
    out = out * m;
    if (probs) p = p * m;
  }
  if (probs) *probs = p;
  return merge_heads(out);
}

BertResidualOutput::BertResidualOutput(const BertStyleConfig& c, int64_t in_features) {
  dense_ = register_module("dense", std::make_shared<Linear>(in_features, c.hidden_size));
  layer_norm_ = register_module("LayerNorm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
}

at::Tensor BertResidualOutput::forward(const at::Tensor& hidden, const at::Tensor& residual) const {
  return layer_norm_->forward(dense_->forward(hidden) + residual);
}

BertAttention::BertAttention(const BertStyleConfig& c, int64_t layer_idx, const EncoderLayout& layout) {
  auto dense = std::make_shared<Linear>(c.hidden_size, c.hidden_size);
  auto layer_norm = std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps);
  if (layout.mpnet_attention_names) {
    self_ = register_module("attn", std::make_shared<BertSelfAttention>(c, layer_idx, std::array{"q", "k", "v"}));
    dense_ = self_->register_module("o", dense);
    layer_norm_ = register_module("LayerNorm", layer_norm);
  } else {
    self_ = register_module("self", std::make_shared<BertSelfAttention>(c, layer_idx, std::array{"query", "key", "value"}));
    auto output = register_module("output", std::make_shared<torch::nn::Module>());
    dense_ = output->register_module("dense", dense);
    layer_norm_ = output->register_module("LayerNorm", layer_norm);
  }
}

at::Tensor BertAttention::forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& head_mask,
                                  KVCache* cache, at::Tensor* probs, bool first_position) {
  const at::Tensor residual = first_position ? hidden.narrow(1, 0, 1) : hidden;
  return layer_norm_->forward(dense_->forward(self_->forward(hidden, mask, head_mask, cache, probs, first_position)) +
                              residual);
}

BertIntermediate::BertIntermediate(const BertStyleConfig& c) : act_(get_activation(c.hidden_act)) {
  dense_ = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.intermediate_size));
}

at::Tensor BertIntermediate::forward(const at::Tensor& hidden) const { return act_(dense_->forward(hidden)); }

BertLayer::BertLayer(const BertStyleConfig& c, int64_t layer_idx, const EncoderLayout& layout)
    : intermediate_size_(c.intermediate_size) {
  attention_ = register_module("attention", std::make_shared<BertAttention>(c, layer_idx, layout));
  intermediate_ = register_module("intermediate", std::make_shared<BertIntermediate>(c));
  output_ = register_module("output", std::make_shared<BertResidualOutput>(c, c.intermediate_size));
}

at::Tensor BertLayer::forward(const at::Tensor& hidden, const at::Tensor& mask, const at::Tensor& head_mask,
                              KVCache* cache, at::Tensor* probs, bool first_position) {
  const at::Tensor h = attention_->forward(hidden, mask, head_mask, cache, probs, first_position);
  // Long inputs in chunks of rows (in_row_chunks): 32 x 256 tokens of MiniLM make a 50 MB intermediate.
  return in_row_chunks(h, intermediate_size_,
                       [this](const at::Tensor& rows) { return output_->forward(intermediate_->forward(rows), rows); });
}

BertEncoder::BertEncoder(const BertStyleConfig& c, const EncoderLayout& layout) {
  auto list = register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(std::make_shared<BertLayer>(c, i, layout));
    list->push_back(layers.back());
  }
  if (const int64_t rows = c.relative_attention_table_size(); rows > 0)
    relative_attention_bias =
        register_module("relative_attention_bias", std::make_shared<Embedding>(rows, c.num_attention_heads));
}

BertPooler::BertPooler(const BertStyleConfig& c) {
  dense_ = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size));
}

at::Tensor BertPooler::forward(const at::Tensor& hidden) const {
  static const Activation tanh = get_activation("tanh");
  return tanh(dense_->forward(hidden.select(1, 0)));
}

// ---------------------------------------------------------------- BertModel

BertStyleModel::BertStyleModel(std::shared_ptr<BertStyleConfig> config, std::string family, EncoderLayout layout,
                               bool add_pooling_layer)
    : PreTrainedModel(config), cfg_(*config), family_(std::move(family)), layout_(std::move(layout)) {
  if (cfg_.add_cross_attention)
    throw ConfigError(cfg_.model_type() + ": add_cross_attention (as the decoder of an encoder-decoder model) is not supported");
  embeddings_ = register_module("embeddings", std::make_shared<BertEmbeddings>(cfg_, layout_));
  encoder_ = register_module("encoder", std::make_shared<BertEncoder>(cfg_, layout_));
  if (add_pooling_layer) pooler_ = register_module("pooler", std::make_shared<BertPooler>(cfg_));
}

BertStyleModel::~BertStyleModel() = default;

void BertStyleModel::prune_heads_impl(const std::map<int64_t, std::vector<int64_t>>& heads_to_prune) {
  for (const auto& [layer, heads] : heads_to_prune) {
    auto attention = std::dynamic_pointer_cast<BertAttention>(find_module("encoder.layer." + std::to_string(layer) + ".attention"));
    if (!attention) throw InvalidInputError("prune_heads: layer " + std::to_string(layer) + " does not exist");
    attention->prune_heads(heads);
  }
}

std::pair<int64_t, int64_t> check_encoder_inputs(const ModelInputs& inputs, int64_t hidden_size,
                                                 const std::string& model_class) {
  const at::Tensor input_ids = inputs.get("input_ids");
  const at::Tensor inputs_embeds = inputs.get("inputs_embeds");
  if (input_ids.defined() == inputs_embeds.defined())
    throw InvalidInputError(model_class + " needs exactly one of input_ids and inputs_embeds");
  if (input_ids.defined() && input_ids.dim() != 2)
    throw InvalidInputError("input_ids must be [batch, seq_len], got shape " + shape_of(input_ids));
  if (inputs_embeds.defined() && (inputs_embeds.dim() != 3 || inputs_embeds.size(2) != hidden_size))
    throw InvalidInputError("inputs_embeds must be [batch, seq_len, " + std::to_string(hidden_size) +
                            "], got shape " + shape_of(inputs_embeds));
  const at::Tensor& ref = input_ids.defined() ? input_ids : inputs_embeds;
  const at::Tensor attention_mask = inputs.get("attention_mask");
  if (attention_mask.defined() && attention_mask.dim() == 2)
    require_shape("attention_mask", attention_mask, {ref.size(0), ref.size(1)}, "the input");
  return {ref.size(0), ref.size(1)};
}

ModelOutput BertStyleModel::forward(const ModelInputs& inputs) { return forward(inputs, false); }

ModelOutput BertStyleModel::forward_first_position(const ModelInputs& inputs) { return forward(inputs, true); }

ModelOutput BertStyleModel::forward(const ModelInputs& inputs, bool first_position) {
  const at::Tensor input_ids = inputs.get("input_ids");
  const at::Tensor inputs_embeds = inputs.get("inputs_embeds");
  // A 2-D mask of a decoder also covers the cached positions: checked below, after the cache.
  ModelInputs checked = inputs;
  if (cfg_.is_decoder) checked.tensors.erase("attention_mask");
  const auto [batch, len] = check_encoder_inputs(checked, cfg_.hidden_size, class_name());

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
  // RoBERTa's positions start after padding_idx: max_position_embeddings - padding_idx - 1 tokens fit.
  const int64_t first = embeddings_->first_position();
  if (!position_ids.defined() && cfg_.position_embedding_type == "absolute" &&
      first + past + len > cfg_.max_position_embeddings)
    throw InvalidInputError("sequence of " + std::to_string(past + len) +
                            " positions is longer than max_position_embeddings (" +
                            std::to_string(cfg_.max_position_embeddings) + ") of this " + class_name() +
                            " allows; truncate the input to at most " +
                            std::to_string(cfg_.max_position_embeddings - first) + " tokens");
  if (cfg_.position_embedding_type != "absolute" && past + len > cfg_.max_position_embeddings)
    throw InvalidInputError("sequence of " + std::to_string(past + len) +
                            " positions is longer than max_position_embeddings (" +
                            std::to_string(cfg_.max_position_embeddings) + ") of this " + class_name());

  at::Tensor hidden = embeddings_->forward(input_ids, token_type_ids, position_ids, inputs_embeds, past);
  const auto dtype = hidden.scalar_type();

  // The extended attention mask: (1 - mask) * finfo(dtype).min, causal for a decoder.
  const at::Tensor attention_mask = inputs.get("attention_mask");
  at::Tensor mask;
  if (attention_mask.defined() && attention_mask.dim() == 3) {
    require_shape("attention_mask", attention_mask, {batch, len, past + len}, "the input");
    // [batch, from, to]: used as it is (no causal part), as transformers does.
    mask = (1.0 - attention_mask.to(dtype).unsqueeze(1)) * finfo_min(dtype);
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

  // MPNet's position bias joins the additive mask (every layer adds both to its scores).
  if (encoder_->relative_attention_bias) {
    const at::Tensor bias = encoder_->position_bias(len, dtype);
    mask = mask.defined() ? mask + bias : bias;
  }

  const bool want_hidden = inputs.output_hidden_states.value_or(cfg_.output_hidden_states);
  const bool want_attn = inputs.output_attentions.value_or(cfg_.output_attentions);
  // Relative position scores take the query's position from the cache length: every query then.
  first_position = first_position && !want_hidden && !want_attn && !cfg_.is_decoder &&
                   cfg_.position_embedding_type == "absolute";
  ModelOutput out;
  for (size_t i = 0; i < encoder_->layers.size(); ++i) {
    if (want_hidden) out.hidden_states.push_back(hidden);
    at::Tensor probs;
    hidden = encoder_->layers[i]->forward(hidden, mask, head_mask.defined() ? head_mask[int64_t(i)] : at::Tensor(),
                                          cache.get(), want_attn ? &probs : nullptr,
                                          first_position && i + 1 == encoder_->layers.size());
    if (want_attn) out.attentions.push_back(probs);
  }
  if (want_hidden) out.hidden_states.push_back(hidden);
  out.set("last_hidden_state", hidden);
  if (pooler_) out.set("pooler_output", pooler_->forward(hidden));
  out.past_key_values = cache;
  return out;
}

ModelInputs flatten_choices(const ModelInputs& inputs, const std::string& model_class, int64_t& batch, int64_t& choices) {
  const at::Tensor ids = inputs.get("input_ids"), embeds = inputs.get("inputs_embeds");
  const at::Tensor& ref = ids.defined() ? ids : embeds;
  if (!ref.defined()) throw InvalidInputError(model_class + " needs input_ids or inputs_embeds");
  if (ref.dim() != (ids.defined() ? 3 : 4))
    throw InvalidInputError(std::string(ids.defined() ? "input_ids" : "inputs_embeds") +
                            " must be [batch, num_choices, seq_len" + (ids.defined() ? "" : ", hidden") +
                            "], got shape " + shape_of(ref));
  batch = ref.size(0), choices = ref.size(1);
  const int64_t len = ref.size(2);
  ModelInputs flat = inputs;
  for (const char* name : {"input_ids", "attention_mask", "token_type_ids", "position_ids"}) {
    at::Tensor t = inputs.get(name);
    if (!t.defined()) continue;
    require_shape(name, t, {batch, choices, len}, "the input");
    flat.tensors[name] = t.reshape({batch * choices, len});
  }
  if (embeds.defined()) flat.tensors["inputs_embeds"] = embeds.reshape({batch * choices, len, embeds.size(3)});
  flat.tensors.erase("labels");
  return flat;
}

// ---------------------------------------------------------------- RoBERTa's heads

namespace {

// lm_head: dense -> exact gelu -> layer_norm -> decoder (tied to the word embeddings) + bias.
// transformers' lm_head.decoder.bias is the same parameter as lm_head.bias: kept once, under the
// name save_pretrained keeps, and ignored in checkpoints as the alias it is.
class RobertaLMHead : public torch::nn::Module {
 public:
  explicit RobertaLMHead(const BertStyleConfig& c) {
    dense_ = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size));
    layer_norm_ = register_module("layer_norm", std::make_shared<LayerNorm>(c.hidden_size, c.layer_norm_eps));
    decoder_ = register_module("decoder", std::make_shared<Linear>(c.hidden_size, c.vocab_size, false));
    bias_ = register_parameter("bias", at::zeros({c.vocab_size}));
  }
  at::Tensor forward(const at::Tensor& hidden) const {
    static const Activation gelu = get_activation("gelu");
    return decoder_->forward(layer_norm_->forward(gelu(dense_->forward(hidden)))) + bias_;
  }
  void resize_bias(int64_t vocab_size) { resize_vocabulary_bias(bias_, vocab_size); }

 private:
  std::shared_ptr<Linear> dense_, decoder_;
  std::shared_ptr<LayerNorm> layer_norm_;
  at::Tensor bias_;
};

// classifier: the first token (<s>) -> dense -> tanh -> out_proj.
class RobertaClassificationHead : public torch::nn::Module {
 public:
  explicit RobertaClassificationHead(const BertStyleConfig& c) {
    dense_ = register_module("dense", std::make_shared<Linear>(c.hidden_size, c.hidden_size));
    out_proj_ = register_module("out_proj", std::make_shared<Linear>(c.hidden_size, c.num_labels()));
  }
  at::Tensor forward(const at::Tensor& hidden) const {
    static const Activation tanh = get_activation("tanh");
    return out_proj_->forward(tanh(dense_->forward(hidden.select(1, 0))));
  }

 private:
  std::shared_ptr<Linear> dense_, out_proj_;
};

enum class RobertaHead { masked_lm, causal_lm, sequence_classification, token_classification, question_answering,
                         multiple_choice };

std::string roberta_class_name(const std::string& family, RobertaHead head) {
  static const char* const suffix[] = {"ForMaskedLM", "ForCausalLM", "ForSequenceClassification",
                                       "ForTokenClassification", "ForQuestionAnswering", "ForMultipleChoice"};
  return family + suffix[int(head)];
}

// Every head class of modeling_roberta.py, the head chosen at construction.
class RobertaHeadModel : public PreTrainedModel {
 public:
  RobertaHeadModel(std::shared_ptr<BertStyleConfig> config, std::string family, RobertaHead head,
                   const EncoderLayout& layout)
      : PreTrainedModel(config), family_(std::move(family)), prefix_(layout.prefix), head_(head) {
    const BertStyleConfig& c = *config;
    pooling_ = head == RobertaHead::multiple_choice;
    roberta_ = register_module(prefix_, std::make_shared<BertStyleModel>(config, family_, layout, pooling_));
    switch (head) {
      case RobertaHead::masked_lm:
      case RobertaHead::causal_lm: lm_head_ = register_module("lm_head", std::make_shared<RobertaLMHead>(c)); break;
      case RobertaHead::sequence_classification:
        classifier_head_ = register_module("classifier", std::make_shared<RobertaClassificationHead>(c));
        break;
      case RobertaHead::token_classification:
        linear_ = register_module("classifier", std::make_shared<Linear>(c.hidden_size, c.num_labels()));
        break;
      case RobertaHead::question_answering:
        linear_ = register_module("qa_outputs", std::make_shared<Linear>(c.hidden_size, c.num_labels()));
        break;
      case RobertaHead::multiple_choice:
        linear_ = register_module("classifier", std::make_shared<Linear>(c.hidden_size, 1));
        break;
    }
  }

  std::string class_name() const override { return roberta_class_name(family_, head_); }
  std::string base_model_prefix() const override { return prefix_; }
  std::vector<std::string> ignored_unexpected_keys() const override {
    std::vector<std::string> keys = {R"(embeddings\.position_ids)", R"(lm_head\.decoder\.bias$)"};
    if (!pooling_) keys.push_back("^(" + prefix_ + "\\.)?pooler\\.");
    return keys;
  }
  std::vector<std::pair<std::string, std::string>> tied_weights() const override {
    if (!lm_head_) return {};
    return {{"lm_head.decoder.weight", prefix_ + ".embeddings.word_embeddings.weight"}};
  }
  bool can_generate() const override { return head_ == RobertaHead::causal_lm; }

  ModelOutput forward(const ModelInputs& inputs) override {
    ModelOutput out;
    if (head_ == RobertaHead::multiple_choice) {
      int64_t batch = 0, choices = 0;
      ModelOutput base = base_forward(flatten_choices(inputs, class_name(), batch, choices));
      at::Tensor logits = linear_->forward(base["pooler_output"]).view({batch, choices});
      if (inputs.has("labels")) out.set("loss", token_cross_entropy(logits, inputs.get("labels")));
      out.set("logits", logits);
      move_base_outputs(out, base);
      out.set("pooler_output", base["pooler_output"]);
      return out;
    }
    ModelOutput base = base_forward(inputs);
    const at::Tensor hidden = base["last_hidden_state"];
    const at::Tensor labels = inputs.get("labels");
    switch (head_) {
      case RobertaHead::masked_lm: {
        at::Tensor logits = lm_head_->forward(hidden);
        if (labels.defined()) out.set("loss", token_cross_entropy(logits.to(at::kFloat), labels));
        out.set("logits", logits);
        break;
      }
      case RobertaHead::causal_lm: {
        at::Tensor kept = hidden;
        if (inputs.logits_to_keep > 0 && inputs.logits_to_keep < kept.size(1))
          kept = kept.narrow(1, kept.size(1) - inputs.logits_to_keep, inputs.logits_to_keep);
        at::Tensor logits = lm_head_->forward(kept);
        if (labels.defined()) out.set("loss", causal_lm_loss(logits.to(at::kFloat), labels));
        out.set("logits", logits);
        break;
      }
      case RobertaHead::sequence_classification: {
        at::Tensor logits = classifier_head_->forward(hidden);
        if (labels.defined()) out.set("loss", sequence_classification_loss(*config_, logits.to(at::kFloat), labels));
        out.set("logits", logits);
        break;
      }
      case RobertaHead::token_classification: {
        at::Tensor logits = linear_->forward(hidden);
        if (labels.defined()) out.set("loss", token_cross_entropy(logits.to(at::kFloat), labels));
        out.set("logits", logits);
        break;
      }
      case RobertaHead::question_answering:
        question_answering_outputs(linear_->forward(hidden), inputs, out);
        break;
      case RobertaHead::multiple_choice: break;
    }
    move_base_outputs(out, base);
    return out;
  }

 protected:
  std::string output_embeddings_name() const override { return lm_head_ ? "lm_head.decoder" : ""; }
  // Sequence classification and multiple choice read the first position only.
  ModelOutput base_forward(const ModelInputs& inputs) {
    const bool first = head_ == RobertaHead::sequence_classification || head_ == RobertaHead::multiple_choice;
    return first && inputs.pooled_outputs_only ? roberta_->forward_first_position(inputs) : roberta_->forward(inputs);
  }
  void resized_token_embeddings(int64_t vocab_size) override {
    if (lm_head_) lm_head_->resize_bias(vocab_size);
  }

 private:
  std::string family_, prefix_;
  RobertaHead head_;
  bool pooling_ = false;
  std::shared_ptr<BertStyleModel> roberta_;
  std::shared_ptr<RobertaLMHead> lm_head_;
  std::shared_ptr<RobertaClassificationHead> classifier_head_;
  std::shared_ptr<Linear> linear_;
};

}  // namespace

void register_roberta_family(Registry& registry, const std::string& model_type, const std::string& family,
                             std::function<std::shared_ptr<BertStyleConfig>(ConfigPtr)> as_config,
                             const EncoderLayout& layout, bool causal_lm) {
  auto base = [as_config, family, layout](ConfigPtr c) -> ModelPtr {
    return std::make_shared<BertStyleModel>(as_config(c), family, layout);
  };
  registry.register_model(tasks::kAutoModel, model_type, family + "Model", base);
  registry.register_model(tasks::kTextEncoding, model_type, family + "Model", base);
  const std::pair<const char*, RobertaHead> heads[] = {
      {tasks::kMaskedLM, RobertaHead::masked_lm},
      {tasks::kCausalLM, RobertaHead::causal_lm},
      {tasks::kSequenceClassification, RobertaHead::sequence_classification},
      {tasks::kTokenClassification, RobertaHead::token_classification},
      {tasks::kQuestionAnswering, RobertaHead::question_answering},
      {tasks::kMultipleChoice, RobertaHead::multiple_choice}};
  for (const auto& [task, head] : heads) {
    if (head == RobertaHead::causal_lm && !causal_lm) continue;
    const ModelFactory factory = [as_config, family, layout, head = head](ConfigPtr c) -> ModelPtr {
      return std::make_shared<RobertaHeadModel>(as_config(c), family, head, layout);
    };
    registry.register_model(task, model_type, roberta_class_name(family, head), factory);
  }
}

}  // namespace plugformer
