// Attention of one query position (decode) in fp32: for each head, one pass over its cached keys
// and one over its values. The generic path's batched matmuls with a single query row land in
// BLAS's gemm, which repacks the whole key cache on every call.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "matmul.h"

namespace plugformer {

namespace {

__attribute__((target("avx2,fma"))) float dot(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  __m256 v = _mm256_add_ps(acc0, acc1);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  float sum = _mm_cvtss_f32(s);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// out += p * v over n floats.
__attribute__((target("avx2,fma"))) void axpy(float p, const float* v, float* out, int64_t n) {
  const __m256 pv = _mm256_set1_ps(p);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + i), _mm256_loadu_ps(out + i)));
  for (; i < n; ++i) out[i] += p * v[i];
}

}  // namespace

bool single_query_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& mask) {
  const auto f = at::kFloat;
  return q.size(2) == 1 && q.scalar_type() == f && k.scalar_type() == f && v.scalar_type() == f &&
         (!mask.defined() || mask.scalar_type() == f) && k.stride(3) == 1 && v.stride(3) == 1 &&
         k.stride(2) == k.size(3) && v.stride(2) == v.size(3) &&
         (!at::GradMode::is_enabled() || (!q.requires_grad() && !k.requires_grad() && !v.requires_grad())) &&
         cpu_has_avx2_fma();
}

at::Tensor single_query_attention(const at::Tensor& q_in, const at::Tensor& k, const at::Tensor& v,
                                  const at::Tensor& mask, double scale) {
  const at::Tensor q = q_in.contiguous();
  const int64_t batch = q.size(0), heads = q.size(1), dim = q.size(3), kv_heads = k.size(1), len = k.size(2);
  const int64_t groups = heads / kv_heads;
  at::Tensor out = at::zeros({batch, heads, 1, dim}, at::kFloat);
  const at::Tensor m = mask.defined() ? mask.expand({batch, heads, 1, len}) : at::Tensor();
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const float* mp = m.defined() ? m.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(len));
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / heads, h = bh % heads, kvh = h / groups;
      const float* query = qp + bh * dim;
      const float* keys = kp + b * k.stride(0) + kvh * k.stride(1);
      const float* values = vp + b * v.stride(0) + kvh * v.stride(1);
      float max = -INFINITY;
      for (int64_t l = 0; l < len; ++l) {
        // As the generic path: the scaled score is rounded to fp32, then the mask is added.
        float s = float(dot(query, keys + l * dim, dim) * scale);
        if (mp) s += mp[b * m.stride(0) + h * m.stride(1) + l * m.stride(3)];
        scores[size_t(l)] = s;
        max = std::max(max, s);
      }
      float total = 0;
      for (int64_t l = 0; l < len; ++l) total += (scores[size_t(l)] = std::exp(scores[size_t(l)] - max));
      float* o = op + bh * dim;
      for (int64_t l = 0; l < len; ++l) axpy(scores[size_t(l)] / total, values + l * dim, o, dim);
    }
  });
  return out;
}

}  // namespace plugformer
