// Attention in fp32, one query row at a time: for each row, one pass over its head's keys and one
// over its values. Used for one query position (decode), where the generic path's batched matmuls
// land in BLAS's gemm, which repacks the whole key cache on every call; and for heads with few
// scores (short encoder inputs), where libtorch 1.13's batched matmul runs one small gemm per head
// with its dispatch and threading around each.
#include <ATen/ATen.h>
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "fp32.h"
#include "matmul.h"
#include "simd.h"
#include "worker_team.h"

namespace plugformer {

namespace {

using simd::load8;

// Keys are asked for this many rows ahead (every line of them), and each block's values while
// its keys are scored, so both are in flight at once: a decode step reads each head's keys and
// values once, in streams of a few tens of KB, too short for the hardware prefetcher to get going.
// 64 caches of 12 heads x 577 bf16 keys and values, one query: 12-13 -> 17-19 GB/s (Intel Xeon;
// 32 or 64 rows ahead: slower).
constexpr int64_t kRowsAhead = 16;

template <class T>
void prefetch_row(const T* row, int64_t values) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t b = 0; b < values * int64_t(sizeof(T)); b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
}

// Scores of 8 consecutive keys (rows of `dim` values, `stride` apart; dim % 8 == 0) against the
// query, as one vector: 8 accumulators reduced together instead of one horizontal sum per key.
template <class T>
__attribute__((target("avx2,fma,f16c"))) __m256 dot8(const float* q, const T* keys, int64_t stride, int64_t dim) {
  __m256 acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
  for (int j = 0; j < 8; ++j) prefetch_row(keys + (kRowsAhead + j) * stride, dim);
  for (int64_t d = 0; d < dim; d += 8) {
    const __m256 qv = _mm256_loadu_ps(q + d);
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(qv, load8(keys + j * stride + d), acc[j]);
  }
  const __m256 t0 = _mm256_hadd_ps(acc[0], acc[1]), t1 = _mm256_hadd_ps(acc[2], acc[3]);
  const __m256 t2 = _mm256_hadd_ps(acc[4], acc[5]), t3 = _mm256_hadd_ps(acc[6], acc[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

template <class T>
__attribute__((target("avx2,fma,f16c"))) float dot(const float* a, const T* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8(b + i), acc);
  float sum = simd::horizontal_sum(acc);
  for (; i < n; ++i) sum += a[i] * float(b[i]);
  return sum;
}

// e^x for x <= 0 (scores minus their maximum), Cephes' polynomial: ~1 ulp against expf;
// below -87.3 (masked keys) exactly 0, as expf underflows.
__attribute__((target("avx2,fma"))) __m256 exp_nonpositive(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654f), _CMP_LT_OQ);
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.33654f));
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  for (float c : {1.3981999507E-3f, 8.3334519073E-3f, 4.1665795894E-2f, 1.6666665459E-1f, 5.0000001201E-1f})
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(c));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(y, _mm256_castsi256_ps(exponent)));
}

// out[0, 8 * C) = sum over l of p[l] * values[l][0, 8 * C) (rows `stride` apart), the partial sums
// kept in registers.
template <int C, class T>
__attribute__((target("avx2,fma,f16c"))) void weighted_sum(const float* p, const T* values, int64_t len,
                                                      int64_t stride, float* out) {
  __m256 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps();
  for (int64_t l = 0; l < len; ++l) {
    const __m256 pv = _mm256_set1_ps(p[l]);
    for (int c = 0; c < C; ++c) acc[c] = _mm256_fmadd_ps(pv, load8(values + l * stride + 8 * c), acc[c]);
  }
  for (int c = 0; c < C; ++c) _mm256_storeu_ps(out + 8 * c, acc[c]);
}

template <class T>
void weighted_sum_any(const float* p, const T* values, int64_t len, int64_t stride, int64_t dim, float* out) {
  for (int64_t d = 0; d < dim; d += 64) {  // blocks of up to 8 registers
    const T* v = values + d;
    switch (std::min<int64_t>(8, (dim - d) / 8)) {
      case 8: weighted_sum<8, T>(p, v, len, stride, out + d); break;
      case 7: weighted_sum<7, T>(p, v, len, stride, out + d); break;
      case 6: weighted_sum<6, T>(p, v, len, stride, out + d); break;
      case 5: weighted_sum<5, T>(p, v, len, stride, out + d); break;
      case 4: weighted_sum<4, T>(p, v, len, stride, out + d); break;
      case 3: weighted_sum<3, T>(p, v, len, stride, out + d); break;
      case 2: weighted_sum<2, T>(p, v, len, stride, out + d); break;
      default: weighted_sum<1, T>(p, v, len, stride, out + d); break;
    }
  }
}

// Scaled scores plus mask, softmax, weighted sum of the values: one query row of one head (key and
// value rows `key_stride` / `value_stride` apart).
template <class T>
__attribute__((target("avx2,fma,f16c"))) void attend_row(const float* query, const T* keys, int64_t key_stride,
                                                    const T* values, int64_t value_stride, const float* mask,
                                                    int64_t mask_stride, int64_t len, int64_t dim, float scale,
                                                    float softcap, float* scores, float* out) {
  // As the generic path: each scaled score is rounded to fp32, then the mask is added.
  const __m256 sv = _mm256_set1_ps(scale);
  int64_t l = 0;
  for (; l + 8 <= len; l += 8) {
    for (int64_t j = 0; j < 8; ++j) prefetch_row(values + (l + j) * value_stride, dim);
    _mm256_storeu_ps(scores + l, _mm256_mul_ps(dot8(query, keys + l * key_stride, key_stride, dim), sv));
  }
  for (; l < len; ++l) scores[l] = dot(query, keys + l * key_stride, dim) * scale;
  if (softcap > 0)
    for (l = 0; l < len; ++l) scores[l] = std::tanh(scores[l] / softcap) * softcap;
  float max = -INFINITY;
  for (l = 0; l < len; ++l) {
    if (mask) scores[l] += mask[l * mask_stride];
    max = std::max(max, scores[l]);
  }
  const __m256 mv = _mm256_set1_ps(max);
  __m256 totals = _mm256_setzero_ps();
  for (l = 0; l + 8 <= len; l += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores + l), mv));
    _mm256_storeu_ps(scores + l, e);
    totals = _mm256_add_ps(totals, e);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, totals);
  float total = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
  for (; l < len; ++l) total += (scores[l] = std::exp(scores[l] - max));
  // The values weighted by the unnormalised exponentials, then divided by their total: one
  // rounding per output instead of one per probability and another per product.
  weighted_sum_any(scores, values, len, value_stride, dim, out);
  for (int64_t d = 0; d < dim; ++d) out[d] /= total;
}

// Many queries go through the kernel up to 128 x 128 scores per head. Measured against the
// per-head gemms of layers.cpp on a Zen 5: level for bert-base's heads of 64 at 8 x 128 tokens,
// faster at 8 x 32 / 64 (180 vs 190-200 ms, 345 vs 365-385), and for MiniLM's heads of 32 at
// 32 x 128 (470 vs 660 ms); level again at 256 tokens, where longer inputs keep the gemms.
constexpr int64_t kFusedScoresPerHead = 128 * 128;

// q: fp32 with contiguous rows; the result is fp32 [batch, q_len, heads, dim] (the layout
// merge_heads returns as a view; fused_attention_of shows it as [batch, heads, q_len, dim]). `k` / `v` hold either one
// tensor for the whole batch or one per batch row (a decode step of sequences with caches of
// their own lengths, the mask then undefined).
template <class T>
at::Tensor fused_attention_in(const at::Tensor& q, const std::vector<at::Tensor>& k, const std::vector<at::Tensor>& v,
                              const at::Tensor& mask, double scale, double softcap) {
  const int64_t batch = q.size(0), heads = q.size(1), q_len = q.size(2), dim = q.size(3);
  const int64_t groups = heads / k[0].size(1);
  int64_t longest = 0;
  for (const auto& keys : k) longest = std::max(longest, keys.size(2));
  at::Tensor out = at::empty({batch, q_len, heads, dim}, at::kFloat);
  const at::Tensor m = mask.defined() ? mask.to(at::kFloat).expand({batch, heads, q_len, longest}) : at::Tensor();
  const float* qp = q.data_ptr<float>();
  const float* mp = m.defined() ? m.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  const bool one = k.size() == 1;
  team_parallel_for(batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(longest));
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / heads, h = bh % heads, kvh = h / groups;
      const at::Tensor& kb = k[one ? 0 : size_t(b)];
      const at::Tensor& vb = v[one ? 0 : size_t(b)];
      const T* keys = kb.data_ptr<T>() + (one ? b : 0) * kb.stride(0) + kvh * kb.stride(1);
      const T* values = vb.data_ptr<T>() + (one ? b : 0) * vb.stride(0) + kvh * vb.stride(1);
      for (int64_t t = 0; t < q_len; ++t)
        attend_row(qp + b * q.stride(0) + h * q.stride(1) + t * q.stride(2), keys, kb.stride(2), values, vb.stride(2),
                   mp ? mp + b * m.stride(0) + h * m.stride(1) + t * m.stride(2) : nullptr,
                   m.defined() ? m.stride(3) : 0, kb.size(2), dim, float(scale), float(softcap), scores.data(),
                   op + ((b * q_len + t) * heads + h) * dim);
    }
  });
  return out;
}

at::Tensor fused_attention_of(const at::Tensor& q_in, const std::vector<at::Tensor>& k, const std::vector<at::Tensor>& v,
                              const at::Tensor& mask, double scale, double softcap) {
  const bool small = q_in.scalar_type() != at::kFloat && small_conversion_applies(q_in);
  at::Tensor q = small ? widened_to_fp32(q_in) : q_in.to(at::kFloat);
  if (q.stride(3) != 1) q = q.contiguous();
  const at::Tensor out = simd::with_kernel_type(k[0].scalar_type(), [&](auto type) {
    return fused_attention_in<decltype(type)>(q, k, v, mask, scale, softcap);
  });
  return (small ? rounded_from_fp32(out, {}, q_in.scalar_type()) : out.to(q_in.scalar_type())).transpose(1, 2);
}

}  // namespace

bool fused_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || q.size(3) % 8 != 0 || v.size(3) != q.size(3)) return false;
  const bool types = q.size(2) == 1 ? simd::is_kernel_type(q.scalar_type()) && k.scalar_type() == q.scalar_type() &&
                                          v.scalar_type() == q.scalar_type()
                                    : q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat &&
                                          v.scalar_type() == at::kFloat &&
                                          q.size(2) * k.size(2) <= kFusedScoresPerHead;
  return types && (!mask.defined() || simd::is_kernel_type(mask.scalar_type())) && q.stride(3) == 1 &&
         k.stride(3) == 1 && v.stride(3) == 1 && !trains_through({q, k, v}) && cpu_has_avx2_fma();
}

// Keys and values are read in their own type (2-byte caches stay 2 bytes); the arithmetic is
// fp32 throughout and the result is rounded once to the query's type.
at::Tensor fused_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                           double scale, double softcap) {
  return fused_attention_of(q, {k}, {v}, mask, scale, softcap);
}

bool fused_attention_rows_applies(const at::Tensor& q, const std::vector<at::Tensor>& k, const std::vector<at::Tensor>& v) {
  if (q.dim() != 4 || q.size(2) != 1 || q.size(0) != int64_t(k.size()) || k.size() != v.size() || k.empty()) return false;
  for (size_t i = 0; i < k.size(); ++i)
    if (k[i].size(0) != 1 || v[i].size(0) != 1 || k[i].size(1) != k[0].size(1) || !fused_attention_applies(q, k[i], v[i], {}))
      return false;
  return true;
}

at::Tensor fused_attention_rows(const at::Tensor& q, const std::vector<at::Tensor>& k, const std::vector<at::Tensor>& v,
                                double scale, double softcap) {
  return fused_attention_of(q, k, v, at::Tensor(), scale, softcap);
}

}  // namespace plugformer
