#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "plugformer/error.h"
#include "distributed/tensor_parallel.h"
#include "peft/lora.h"
#include "plugformer/layers.h"
#include "plugformer/modeling.h"

#include "fp32.h"
#include "fused_ops.h"
#include "inference_views.h"
#include "matmul.h"
#include "simd.h"
#include "torch_errors.h"
#include "worker_team.h"

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

at::Tensor LayerNorm::forward(const at::Tensor& x) const {
  try {
    // The weights in the type the norm computes in (fp32 for 2-byte x), converted once rather than
    // for each block of rows.
    const c10::ScalarType type = x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf ? at::kFloat : x.scalar_type();
    const at::Tensor w = weight.to(type);
    const c10::optional<at::Tensor> b = bias.defined() ? c10::optional<at::Tensor>(bias.to(type)) : c10::nullopt;
    return computed_in_fp32(x, [&](const at::Tensor& h) { return at::layer_norm(h, {weight.size(0)}, w, b, eps); });
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
  if (softcap <= 0 && scores.scalar_type() == type) {  // a prompt's bf16 scores: one pass instead of four
    const at::Tensor m = mask.defined() ? mask.expand(scores.sizes()) : mask;
    if (scaled_masked_softmax_applies(scores, m)) return scaled_masked_softmax(scores, scale, m);
  }
  if (scale != 1.0) scores = scores * scale;
  // In fp32 and rounded once, as the norms and activations (libtorch 1.13 has no fp16 tanh).
  if (softcap > 0) scores = (at::tanh(scores.to(at::kFloat) / softcap) * softcap).to(scores.scalar_type());
  if (mask.defined()) scores = scores + mask;
  return at::softmax(scores, -1, at::kFloat).to(type);
}

// Prompts take their queries kQueryBlock rows at a time, each block only as far along the keys as
// any of its rows sees: a causal mask hides every later key from the whole block, and their
// probabilities are exactly 0 (the score plus finfo.min underflows in exp), so the products and
// softmax skip ~40% of a prompt's scores (a 512-token prompt's attention per layer, 12 heads, Intel
// Xeon: bf16 3.7 -> 2.6 ms on AMX, 6.5 -> 4.1 at the avx512_bf16 cap, with the softmax of fp32.cpp;
// fp32 5.2 -> 3.6 ms; blocks of 128 queries: 2.6, 4.5, 3.8). The probabilities keep their bits (the
// kept scores, their maximum and sum do not change); the products' sums over shorter rows of keys
// can round differently in the last place (bf16 on AVX512-BF16: 116 of 4.3 M outputs by one bf16
// step).
constexpr int64_t kQueryBlock = 64;

struct QueryBlock {
  int64_t first, count, keys;  // queries [first, first + count) see keys [0, keys) at most
};

// One past the last key that any of queries [first, first + count) sees, over every sequence and
// head of m [batch, heads, q_len, kv_len]; kv_len when a query sees no key at all (its softmax is
// then uniform over all of them). A key is hidden by finfo(type).min (as transformers writes it) or
// -inf.
template <class T>
int64_t keys_seen_by(const at::Tensor& m, int64_t first, int64_t count) {
  const int64_t kv_len = m.size(3);
  const float hidden = float(finfo_min(m.scalar_type()));
  const T* data = m.data_ptr<T>();
  int64_t end = 0;
  for (int64_t b = 0; b < m.size(0); ++b)
    for (int64_t h = 0; h < (m.stride(1) == 0 ? 1 : m.size(1)); ++h)
      for (int64_t t = first + count - 1; t >= first; --t) {  // later queries see more: first
        const T* row = data + b * m.stride(0) + h * m.stride(1) + t * m.stride(2);
        int64_t seen = kv_len;
        while (seen > 0 && float(row[(seen - 1) * m.stride(3)]) <= hidden) --seen;
        if (seen == 0) return kv_len;
        end = std::max(end, seen);
      }
  return end;
}

// A prompt's query blocks (one block for all queries when the mask hides no trailing keys, or
// there is none); consecutive blocks that see the same keys go together.
std::vector<QueryBlock> query_blocks(const at::Tensor& m, int64_t q_len, int64_t kv_len) {
  std::vector<QueryBlock> blocks;
  for (int64_t t0 = 0; t0 < q_len; t0 += kQueryBlock) {
    const int64_t count = std::min(kQueryBlock, q_len - t0);
    const int64_t keys = !m.defined() || !simd::is_kernel_type(m.scalar_type())
                             ? kv_len
                             : simd::with_kernel_type(m.scalar_type(), [&](auto type) {
                                 return keys_seen_by<decltype(type)>(m, t0, count);
                               });
    if (!blocks.empty() && blocks.back().keys == keys)
      blocks.back().count += count;
    else
      blocks.push_back({t0, count, keys});
  }
  return blocks;
}

// Many queries, inference: the heads are spread over the threads, each head's scores, softmax
// and product computed while they sit in cache, and written straight into the [batch, q_len,
// heads, dim] layout merge_heads wants. The whole-tensor path instead copies q, k and v into
// batched matmuls that libtorch 1.13 runs one head at a time, each product threaded on its own
// (bert-base 8 x 128: 25 -> 10 ms per layer alone; llama prefill of 512 tokens ~+15% in all).
// Below ~32 x 32 scores per head the ops per head cost more than they save (fp32 heads of up to
// 128 x 128 scores take the fused kernel before this, attention_kernel.cpp).
bool per_head_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  return q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.size(0) * q.size(1) >= at::get_num_threads() &&
         q.size(2) * k.size(2) >= 32 * 32 &&
         q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type() && q.is_cpu() &&
         !attention_products_in_bf16(q.scalar_type()) && !trains_through({q, k, v, mask});
}

at::Tensor per_head_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                              double scale, double softcap) {
  const int64_t batch = q.size(0), heads = q.size(1), q_len = q.size(2), groups = heads / k.size(1);
  const int64_t dim = v.size(3), kv_len = k.size(2);
  const at::Tensor m = mask.defined() ? mask.expand({batch, heads, q_len, kv_len}) : mask;
  const std::vector<QueryBlock> blocks = query_blocks(m, q_len, kv_len);
  at::Tensor out = at::empty({batch, q_len, heads, dim}, q.options());
  char* const base = static_cast<char*>(out.data_ptr());
  const int64_t row_bytes = dim * int64_t(out.element_size());
  const c10::ScalarType type = q.scalar_type();
  team_parallel_for(batch * heads, 1, [&](int64_t begin, int64_t end) {
    c10::InferenceMode no_autograd;  // per-thread state: the temporaries need no autograd bookkeeping
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / heads, h = i % heads;
      for (const QueryBlock& block : blocks) {
        const at::Tensor qh = q[b][h].narrow(0, block.first, block.count);
        const at::Tensor kh = k[b][h / groups].narrow(0, 0, block.keys), vh = v[b][h / groups].narrow(0, 0, block.keys);
        const at::Tensor scores = matmul_any_precision(qh, kh.t());
        const at::Tensor mh = m.defined() ? m[b][h].narrow(0, block.first, block.count).narrow(1, 0, block.keys) : m;
        const at::Tensor probs = attention_probs(scores, mh, scale, softcap, type);
        const at::Tensor head = matmul_any_precision(probs, vh).contiguous();
        const char* src = static_cast<const char*>(head.data_ptr());
        for (int64_t t = 0; t < block.count; ++t)
          std::memcpy(base + ((b * q_len + block.first + t) * heads + h) * row_bytes, src + t * row_bytes,
                      size_t(row_bytes));
      }
    }
  });
  return out.transpose(1, 2);
}

// Attention over whole tensors, grouped-query without copying k/v: each group of query heads
// folded into rows. q [batch, heads, q_len, dim], k / v [batch, kv_heads, kv_len, dim] ->
// [batch, heads, q_len, dim]; the probabilities into *probs when asked.
at::Tensor grouped_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                             double scale, double softcap, at::Tensor* probs) {
  const int64_t batch = q.size(0), heads = q.size(1), q_len = q.size(2), kv_heads = k.size(1);
  const int64_t groups = heads / kv_heads, kv_len = k.size(2);
  const at::Tensor qg = q.reshape({batch, kv_heads, groups * q_len, q.size(3)});
  const at::Tensor scores = matmul_any_precision(qg, k.transpose(-1, -2)).view({batch, heads, q_len, kv_len});
  const at::Tensor p = attention_probs(scores, mask, scale, softcap, q.scalar_type());
  if (probs) *probs = p;
  const at::Tensor out = matmul_any_precision(p.view({batch, kv_heads, groups * q_len, kv_len}), v);
  return out.view({batch, heads, q_len, v.size(3)});
}

// bf16 on the native route, inference: grouped_attention, whose products are then libtorch's
// batched bf16 ones (oneDNN, as eager PyTorch), over as many sequences and heads at a time as keep a chunk's fp32 scores within
// kChunkScoreBytes, written into the [batch, q_len, heads, dim] layout merge_heads wants. The
// products of the whole tensor at once are as fast for bert-base's 8 x 128 (3.2 ms per layer
// against 10-12 for the per-head path in fp32 on a Zen 4), but one 512-token prompt of 32 heads
// makes 34 MB of fp32 scores, ~5 temporaries of that size a layer, each mapped afresh and
// faulted in: 269 ms per layer against 23 per head.
constexpr int64_t kChunkScoreBytes = 4 << 20;

at::Tensor attention_in_chunks(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                               double scale, double softcap) {
  const int64_t batch = q.size(0), heads = q.size(1), q_len = q.size(2), kv_heads = k.size(1);
  const int64_t groups = heads / kv_heads, kv_len = k.size(2), dim = v.size(3);
  const at::Tensor m = mask.defined() ? mask.expand({batch, heads, q_len, kv_len}) : mask;
  at::Tensor out = at::empty({batch, q_len, heads, dim}, q.options());
  for (const QueryBlock& block : query_blocks(m, q_len, kv_len)) {
    const int64_t t0 = block.first, nq = block.count, seen = block.keys;
    const int64_t kv_head_bytes = std::max<int64_t>(1, groups * nq * seen * 4);
    const int64_t fit = std::max<int64_t>(1, kChunkScoreBytes / kv_head_bytes);  // key/value heads per chunk
    const int64_t chunk_heads = std::min(fit, kv_heads), chunk_batch = std::max<int64_t>(1, fit / kv_heads);
    for (int64_t b0 = 0; b0 < batch; b0 += chunk_batch)
      for (int64_t h0 = 0; h0 < kv_heads; h0 += chunk_heads) {
        const int64_t nb = std::min(chunk_batch, batch - b0), nh = std::min(chunk_heads, kv_heads - h0);
        auto part = [&](const at::Tensor& t, int64_t h, int64_t n) { return t.narrow(0, b0, nb).narrow(1, h, n); };
        const at::Tensor o = grouped_attention(
            part(q, h0 * groups, nh * groups).narrow(2, t0, nq), part(k, h0, nh).narrow(2, 0, seen),
            part(v, h0, nh).narrow(2, 0, seen),
            m.defined() ? part(m, h0 * groups, nh * groups).narrow(2, t0, nq).narrow(3, 0, seen) : m, scale, softcap,
            nullptr);
        out.narrow(0, b0, nb).narrow(1, t0, nq).narrow(2, h0 * groups, nh * groups).copy_(o.transpose(1, 2));
      }
  }
  return out.transpose(1, 2);
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     double scale, at::Tensor* probs, double softcap) {
  const int64_t heads = q.size(1), kv_heads = k.size(1);
  if (heads % kv_heads != 0)
    throw InvalidInputError("attention: " + std::to_string(heads) + " query heads are not a multiple of " +
                            std::to_string(kv_heads) + " key/value heads");
  try {
    if (!probs && fused_attention_applies(q, k, v, mask)) return fused_attention(q, k, v, mask, scale, softcap);
    if (!probs && per_head_attention_applies(q, k, v, mask)) return per_head_attention(q, k, v, mask, scale, softcap);
    if (!probs && attention_products_in_bf16(q.scalar_type()) && !trains_through({q, k, v, mask}))
      return attention_in_chunks(q, k, v, mask, scale, softcap);
    return grouped_attention(q, k, v, mask, scale, softcap, probs);
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

namespace {

// Rows that bring several new tokens (prompts prefilled together) lie one after another along the
// packed row's positions. Each row's span extends its own cache and attends, causally, to that
// row's history and itself, as the sequence alone would (the same masks and window rules).
at::Tensor attention_over_packed_cache_rows(size_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            KVCache& cache, double scale, std::optional<int64_t> window, double softcap) {
  const auto& rows = cache.batch_rows();
  const auto& counts = cache.batch_new_tokens();
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t(0));
  if (q.size(0) != 1 || q.size(2) != total)
    throw InvalidInputError("a packed cache batch of " + std::to_string(rows.size()) + " rows takes [1, " +
                            std::to_string(total) + "] new positions, got [" + std::to_string(q.size(0)) + ", " +
                            std::to_string(q.size(2)) + "]");
  std::vector<at::Tensor> outputs;
  int64_t at = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t n = counts[i], past = rows[i]->seq_length(layer), stored = rows[i]->stored_length(layer);
    auto [keys, values] = rows[i]->update(layer, narrow_view(k, 2, at, n), narrow_view(v, 2, at, n));
    at::Tensor mask;
    if (n > 1)
      mask = causal_attention_mask(at::Tensor(), 1, n, past, q.scalar_type(), window).narrow(-1, past - stored, stored + n);
    else
      std::tie(keys, values) = keys_in_window(keys, values, window);
    outputs.push_back(attention(narrow_view(q, 2, at, n), keys, values, mask, scale, nullptr, softcap));
    at += n;
  }
  return at::cat(outputs, 2);
}

}  // namespace

at::Tensor attention_over_cache_rows(size_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     KVCache& cache, double scale, std::optional<int64_t> window, double softcap) {
  const auto& rows = cache.batch_rows();
  if (cache.is_packed_batch()) return attention_over_packed_cache_rows(layer, q, k, v, cache, scale, window, softcap);
  if (q.size(0) != int64_t(rows.size()) || q.size(2) != 1)
    throw InvalidInputError("a cache batch of " + std::to_string(rows.size()) + " rows takes one new token per row, got [" +
                            std::to_string(q.size(0)) + " rows, " + std::to_string(q.size(2)) + " tokens]");
  std::vector<at::Tensor> keys(rows.size()), values(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t r = int64_t(i);
    std::tie(keys[i], values[i]) = rows[i]->update(layer, narrow_view(k, 0, r, 1), narrow_view(v, 0, r, 1));
    std::tie(keys[i], values[i]) = keys_in_window(keys[i], values[i], window);
  }
  // All rows in one kernel call: per row, its dispatch and thread hand-offs cost more than the
  // arithmetic of one query against a short cache.
  if (fused_attention_rows_applies(q, keys, values)) return fused_attention_rows(q, keys, values, scale, softcap);
  std::vector<at::Tensor> outputs;
  outputs.reserve(rows.size());
  for (size_t i = 0; i < rows.size(); ++i)
    outputs.push_back(attention(q.narrow(0, int64_t(i), 1), keys[i], values[i], at::Tensor(), scale, nullptr, softcap));
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
