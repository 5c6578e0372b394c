// Building blocks shared by every family, implemented once in core so a fix or a speed-up lands
// everywhere. Parameter names follow transformers (weight, bias), so checkpoints load unchanged.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

#include "plugformer/config.h"

namespace plugformer {

// LoRA adapters attached to a Linear / Conv1D by PeftModel (peft.h); defined in core.
class LoraLayer;
class KVCache;
struct TensorParallelShard;

// Tensor parallelism (distributed.h): how a family splits its modules across ranks, as
// transformers' tp_plan does. Modules without a rule are replicated.
enum class ParallelStyle {
  colwise,         // Linear / Conv1D output features split, with their biases (a rank's heads / MLP columns)
  rowwise,         // input features split; partial outputs summed over ranks, then the bias added once
  colwise_gather,  // colwise, then the outputs gathered so every rank has all of them (an LM head)
  vocab_rows,      // Embedding rows split; a rank looks up the ids it holds, the results summed over ranks
};
struct TensorParallelRule {
  std::string pattern;  // module path; '*' stands for one path component ("layers.*.mlp.down_proj")
  ParallelStyle style = ParallelStyle::colwise;
  int64_t unit = 1;     // split in whole units of this many features (a head's head_dim)
  // Fused outputs ([q heads | k heads | v heads], [gate | up]): the blocks' sizes, each split alike.
  std::vector<int64_t> sections = {};
};
// A base model's plan as seen from a head model holding it under `prefix` ("model", "transformer").
std::vector<TensorParallelRule> prefixed_plan(const std::string& prefix, std::vector<TensorParallelRule> plan);
// Modules whose sizes follow the split (attention's head counts): told the world size once the
// model's layers are split.
class TensorParallelModule {
 public:
  virtual ~TensorParallelModule() = default;
  virtual void split_for(int64_t rank, int64_t world) = 0;
};

// y = x W^T + b with W stored [out, in]. One-row inputs (decode) take a matrix-vector product,
// which is several times faster than the one-row sgemm path on CPU.
class Linear : public torch::nn::Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor base_forward(const at::Tensor& x) const;  // without adapters
  at::Tensor weight, bias;
  // Set by PeftModel: the active adapters' low-rank products are added to the output.
  std::shared_ptr<LoraLayer> lora;
  // Set when the model is split across ranks (distributed.h).
  std::shared_ptr<const TensorParallelShard> parallel;
};

// GPT-2's Conv1D: a linear layer whose weight is stored [in, out].
class Conv1D : public torch::nn::Module {
 public:
  Conv1D(int64_t in_features, int64_t out_features);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor base_forward(const at::Tensor& x) const;  // without adapters
  at::Tensor weight, bias;
  std::shared_ptr<LoraLayer> lora;  // as Linear::lora
  std::shared_ptr<const TensorParallelShard> parallel;  // as Linear::parallel
};

class Embedding : public torch::nn::Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim);
  // InvalidInputError when an id lies outside [0, num_embeddings).
  at::Tensor forward(const at::Tensor& ids) const;
  at::Tensor weight;
  // enable_input_require_grads: the output requires grad even when the weight is frozen.
  bool output_requires_grad = false;
  std::shared_ptr<const TensorParallelShard> parallel;  // vocab_rows: this rank's rows of the table
};

class LayerNorm : public torch::nn::Module {
 public:
  LayerNorm(int64_t dim, double eps, bool bias = true);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight, bias;
  double eps;
};

// Llama / T5 style: x / rms(x) * weight, the normalised value computed in fp32 and rounded to x's
// type before the weight multiplies it. With unit_offset (Gemma) the scale is 1 + weight, applied in
// fp32 and rounded once; such weights are stored around 0 and initialised to 0.
class RMSNorm : public torch::nn::Module {
 public:
  RMSNorm(int64_t dim, double eps, bool unit_offset = false);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight;
  double eps;
  bool unit_offset;
};

// Activation functions by transformers' ACT2FN names (gelu, gelu_new, gelu_pytorch_tanh,
// gelu_fast, quick_gelu, relu, silu, swish, tanh, sigmoid, ...). ConfigError for unknown names.
using Activation = std::function<at::Tensor(const at::Tensor&)>;
Activation get_activation(const std::string& name);

// Rotary position embeddings (rotate_half layout) with transformers' rope types (modeling_rope_utils):
// default, linear, dynamic (NTK), llama3, yarn and longrope. Built from a config's rope_theta /
// rope_scaling; `original_max_position_embeddings` is the config's own field of that name where the
// family has one (Phi-3), which longrope and yarn prefer to rope_scaling's. ConfigError (naming
// rope_scaling's field) for unknown types and missing or malformed keys.
class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t head_dim, double rope_theta, const json& rope_scaling, int64_t max_position_embeddings,
                  double partial_rotary_factor = 1.0,
                  std::optional<int64_t> original_max_position_embeddings = std::nullopt);
  // cos, sin for position_ids [batch, seq] -> [batch, seq, rotary_dim], in `dtype`. dynamic and
  // longrope choose their frequencies per call from the largest position id.
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& position_ids, c10::ScalarType dtype) const;
  const std::string& rope_type() const { return rope_type_; }
  // The frequencies for a call whose largest position id is seq_len - 1, and the factor cos and sin
  // are multiplied by (yarn's and longrope's attention factor, else 1).
  at::Tensor inv_freq_for(int64_t seq_len) const;
  double attention_scaling() const { return attention_scaling_; }

 private:
  std::string rope_type_ = "default";
  int64_t dim_;
  double base_, factor_ = 1.0, attention_scaling_ = 1.0;
  int64_t max_position_embeddings_, original_max_position_embeddings_;
  at::Tensor inv_freq_, long_inv_freq_;  // long_inv_freq_: longrope beyond the original context
};

// q, k: [batch, heads, seq, head_dim]; cos, sin: [batch, seq, rotary_dim].
std::pair<at::Tensor, at::Tensor> apply_rotary_pos_emb(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                                       const at::Tensor& sin);

// Eager attention: softmax(q k^T * scale + mask) v. q: [batch, heads, q_len, d]; k, v:
// [batch, kv_heads, kv_len, d] (grouped-query attention when kv_heads < heads); mask: additive,
// broadcastable to [batch, heads, q_len, kv_len], or undefined. Softmax runs in fp32.
// When `probs` is given, the attention probabilities are stored there. softcap > 0 caps the scaled
// scores as Gemma 2 does, softcap * tanh(scores / softcap), before the mask is added.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     double scale, at::Tensor* probs = nullptr, double softcap = 0.0);

// The keys / values a single query of a layer with sliding window `window` can see: the last W
// of them (all when there is no window or fewer are stored).
std::pair<at::Tensor, at::Tensor> keys_in_window(const at::Tensor& k, const at::Tensor& v, std::optional<int64_t> window);

// A step over a KVCache::batch_of cache, with RoPE applied: a decode step's q, k, v [batch, heads, 1, d]
// (row i's key and value extend the cache's row i at `layer`, and its query attends to that row's
// own history, within `window`), or a packed step's [1, heads, sum of new tokens, d] (each row's
// span extends its row and attends causally to its history and itself, as that sequence alone
// would). Returns q's shape, as attention() does.
at::Tensor attention_over_cache_rows(size_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     KVCache& cache, double scale, std::optional<int64_t> window = std::nullopt,
                                     double softcap = 0.0);

// torch.finfo(dtype).min: what transformers puts at masked positions.
double finfo_min(c10::ScalarType dtype);

// Additive masks with transformers' semantics (finfo(dtype).min where masked).
// Causal decoder mask [batch, 1, q_len, past_len + q_len] from a 2-D padding mask over all
// positions (or undefined for no padding). With a sliding window W, a query at slot q sees only
// keys at slots q - W < k <= q (slots of the padded batch, not position ids).
at::Tensor causal_attention_mask(const at::Tensor& attention_mask, int64_t batch, int64_t q_len, int64_t past_len,
                                 c10::ScalarType dtype, std::optional<int64_t> sliding_window = std::nullopt);
// T5's (and MPNet's) relative position buckets: relative_position (key - query) -> bucket. Half the
// buckets are exact small distances, the rest grow logarithmically up to max_distance;
// bidirectional buckets also tell the sign apart.
at::Tensor relative_position_bucket(const at::Tensor& relative_position, bool bidirectional, int64_t num_buckets,
                                    int64_t max_distance);

// Bidirectional padding mask [batch, 1, 1, kv_len] from [batch, kv_len] (encoders, cross-attention).
at::Tensor padding_attention_mask(const at::Tensor& attention_mask, c10::ScalarType dtype);

// Head pruning, as transformers' pytorch_utils: which of `heads` are still present (minus
// already_pruned) and the indices of the rows of a [n_heads * head_size] projection to keep, in
// the current layout (n_heads counts the heads left after earlier pruning).
std::pair<std::set<int64_t>, at::Tensor> find_pruneable_heads_and_indices(const std::vector<int64_t>& heads,
                                                                          int64_t n_heads, int64_t head_size,
                                                                          const std::set<int64_t>& already_pruned);
// Keeps the output features (dim 0, with their biases) or input features (dim 1) listed in index.
void prune_linear_layer(Linear& layer, const at::Tensor& index, int64_t dim = 0);
// The same for a Conv1D ([in, out]): dim 1 keeps output features (with biases), dim 0 inputs.
void prune_conv1d_layer(Conv1D& layer, const at::Tensor& index, int64_t dim = 1);

// Splits [batch, seq, heads * dim] into [batch, heads, seq, dim] and back.
at::Tensor split_heads(const at::Tensor& x, int64_t heads);
at::Tensor merge_heads(const at::Tensor& x);

}  // namespace plugformer
