#include "fused_ops.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "matmul.h"
#include "simd.h"
#include "worker_team.h"

namespace plugformer {

namespace {

using simd::with_kernel_type;

// Rounds an fp32 value to T, as storing a libtorch op's result in a T tensor does.
template <class T>
float round_to(float v) {
  return float(T(v));
}

template <class T>
__attribute__((target("avx2,fma,f16c"))) inline __m256 squares8(const T* x) {
  const __m256 v = simd::load8(x);
  return _mm256_mul_ps(v, v);
}

// Item i of a row of squares, as a vector of 8 or a single value.
template <class T, bool kVector>
__attribute__((target("avx2,fma,f16c"))) inline auto square_at(const T* x, int64_t i) {
  if constexpr (kVector) return squares8(x + i * 8);
  else return float(x[i]) * float(x[i]);
}

// libtorch's cascaded row sum (SumKernel.cpp, row_sum) of `count` items: 4 interleaved
// accumulators, each level folded into the next every 16 steps (more for very long rows),
// then the leftover items and the 4 partial sums, in that order.
template <class T, bool kVector>
__attribute__((target("avx2,fma,f16c"))) auto cascade_sum_of_squares(const T* x, int64_t count) {
  using Acc = decltype(square_at<T, kVector>(x, 0));
  constexpr int64_t kIlp = 4, kLevels = 4;
  const int64_t steps = count / kIlp;
  int64_t ceil_log2 = 0;
  while ((int64_t(1) << ceil_log2) < steps) ++ceil_log2;
  const int64_t level_power = std::max<int64_t>(4, ceil_log2 / kLevels), level_step = int64_t(1) << level_power;
  Acc acc[kLevels][kIlp] = {};
  int64_t i = 0;
  while (i + level_step <= steps) {
    for (int64_t j = 0; j < level_step; ++j, ++i)
      for (int k = 0; k < kIlp; ++k) acc[0][k] = acc[0][k] + square_at<T, kVector>(x, i * kIlp + k);
    for (int64_t level = 1; level < kLevels; ++level) {
      for (int k = 0; k < kIlp; ++k) {
        acc[level][k] = acc[level][k] + acc[level - 1][k];
        acc[level - 1][k] = Acc{};
      }
      if ((i & ((level_step - 1) << (level * level_power))) != 0) break;
    }
  }
  for (; i < steps; ++i)
    for (int k = 0; k < kIlp; ++k) acc[0][k] = acc[0][k] + square_at<T, kVector>(x, i * kIlp + k);
  for (int64_t level = 1; level < kLevels; ++level)
    for (int k = 0; k < kIlp; ++k) acc[0][k] = acc[0][k] + acc[level][k];
  Acc total = acc[0][0];
  for (int64_t item = steps * kIlp; item < count; ++item) total = total + square_at<T, kVector>(x, item);
  for (int k = 1; k < kIlp; ++k) total = total + acc[0][k];
  return total;
}

// The sum of the squares (each rounded to fp32, as pow(2) stores them) exactly as libtorch's
// AVX2 sum kernel adds them: rows of 8 or more as vectors of 8, then the leftover floats and the
// 8 lanes. The mean is then bit for bit libtorch's, which matters: some models amplify a
// one-ulp difference in a norm far beyond 1e-4 at the logits.
template <class T>
__attribute__((target("avx2,fma,f16c"))) float sum_of_squares(const T* x, int64_t n) {
  constexpr int64_t kLanes = 8;
  if (n < kLanes) return cascade_sum_of_squares<T, false>(x, n);
  const int64_t vectors = n / kLanes;
  alignas(32) float lanes[kLanes];
  _mm256_store_ps(lanes, cascade_sum_of_squares<T, true>(x, vectors));
  float sum = 0;
  for (int64_t t = vectors * kLanes; t < n; ++t) sum += float(x[t]) * float(x[t]);
  for (float lane : lanes) sum += lane;
  return sum;
}

// y = x * inv scaled by the norm's weight: rounded to T before the weight as transformers' two ops
// round, or (unit_offset, Gemma's (1 + w)) in fp32 throughout.
template <class T>
__attribute__((target("avx2,fma,f16c"))) void normalize_row(const T* x, const T* w, T* y, int64_t dim, float inv,
                                                            bool unit_offset) {
  const __m256 scale = _mm256_set1_ps(inv), one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    const __m256 v = _mm256_mul_ps(simd::load8(x + i), scale);
    simd::store8(y + i, unit_offset ? _mm256_mul_ps(v, _mm256_add_ps(one, simd::load8(w + i)))
                                    : _mm256_mul_ps(simd::load8(w + i), simd::rounded8<T>(v)));
  }
  for (; i < dim; ++i)
    y[i] = unit_offset ? T(float(x[i]) * inv * (1.0f + float(w[i]))) : T(float(w[i]) * round_to<T>(float(x[i]) * inv));
}

template <class T>
void rms_norm_rows(const T* x, const T* w, T* y, int64_t rows, int64_t dim, float eps, bool unit_offset) {
  team_parallel_for(rows, std::max<int64_t>(1, 16384 / dim), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float inv = 1.0f / std::sqrt(sum_of_squares(x + r * dim, dim) / float(dim) + eps);
      normalize_row(x + r * dim, w, y + r * dim, dim, inv, unit_offset);
    }
  });
}

// v * cos + w * sin, each product rounded to T.
template <class T>
__attribute__((target("avx2,fma,f16c"))) inline __m256 rotated8(__m256 v, __m256 cos, __m256 w, __m256 sin) {
  return _mm256_add_ps(simd::rounded8<T>(_mm256_mul_ps(v, cos)), simd::rounded8<T>(_mm256_mul_ps(w, sin)));
}

// One head's rotary features with unit stride, 8 of each half at a time: the same roundings.
template <class T>
__attribute__((target("avx2,fma,f16c"))) void rotate_head(const T* x, const T* c, const T* s, int64_t half, T* out) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t i = 0; i < half; i += 8) {
    const __m256 first = simd::load8(x + i), second = simd::load8(x + half + i);
    simd::store8(out + i, rotated8<T>(first, simd::load8(c + i), _mm256_xor_ps(second, sign), simd::load8(s + i)));
    simd::store8(out + half + i, rotated8<T>(second, simd::load8(c + half + i), first, simd::load8(s + half + i)));
  }
}

// out (contiguous [batch, heads, len, dim]) = x * cos + rotate_half(x) * sin over the rotary
// features of any strided x, each product and the sum rounded to T as the three libtorch ops do.
template <class T>
void rotate_rows(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out) {
  const int64_t batch = x.size(0), heads = x.size(1), len = x.size(2), dim = x.size(3), rot = cos.size(-1),
                half = rot / 2;
  const T* xp = x.data_ptr<T>();
  const T* cp = cos.data_ptr<T>();
  const T* sp = sin.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const int64_t xs0 = x.stride(0), xs1 = x.stride(1), xs2 = x.stride(2), xs3 = x.stride(3);
  const int64_t cs0 = cos.size(0) == 1 ? 0 : cos.stride(0), cs1 = cos.stride(1);
  const int64_t ss0 = sin.size(0) == 1 ? 0 : sin.stride(0), ss1 = sin.stride(1);
  const bool vectors = xs3 == 1 && half % 8 == 0 && cpu_has_avx2_fma();
  team_parallel_for(batch * len, std::max<int64_t>(1, 8192 / (heads * dim)), [&](int64_t begin, int64_t end) {
    for (int64_t bl = begin; bl < end; ++bl) {
      const int64_t b = bl / len, l = bl % len;
      const T* c = cp + b * cs0 + l * cs1;
      const T* s = sp + b * ss0 + l * ss1;
      for (int64_t h = 0; h < heads; ++h) {
        const T* xr = xp + b * xs0 + h * xs1 + l * xs2;
        T* orow = op + ((b * heads + h) * len + l) * dim;
        if (vectors) {
          rotate_head(xr, c, s, half, orow);
          std::copy(xr + rot, xr + dim, orow + rot);
          continue;
        }
        for (int64_t i = 0; i < rot; ++i) {
          const float rotated = i < half ? -float(xr[(i + half) * xs3]) : float(xr[(i - half) * xs3]);
          const float a = round_to<T>(float(xr[i * xs3]) * float(c[i]));
          const float bterm = round_to<T>(rotated * float(s[i]));
          orow[i] = T(a + bterm);
        }
        for (int64_t i = rot; i < dim; ++i) orow[i] = xr[i * xs3];
      }
    }
  });
}

}  // namespace

bool fused_rms_norm_applies(const at::Tensor& x, const at::Tensor& weight) {
  return x.dim() >= 1 && x.device().is_cpu() && simd::is_kernel_type(x.scalar_type()) &&
         weight.scalar_type() == x.scalar_type() && weight.dim() == 1 && x.size(-1) == weight.size(0) &&
         weight.is_contiguous() && !trains_through({x, weight}) && cpu_has_avx2_fma();
}

at::Tensor fused_rms_norm(const at::Tensor& x_in, const at::Tensor& weight, double eps, bool unit_offset) {
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  const int64_t dim = x.size(-1), rows = dim ? x.numel() / dim : 0;
  with_kernel_type(x.scalar_type(), [&](auto type) {
    using T = decltype(type);
    rms_norm_rows(x.data_ptr<T>(), weight.data_ptr<T>(), y.data_ptr<T>(), rows, dim, float(eps), unit_offset);
  });
  return y;
}

bool fused_rotary_applies(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return x.dim() == 4 && cos.dim() == 3 && sin.sizes() == cos.sizes() && x.device().is_cpu() &&
         simd::is_kernel_type(x.scalar_type()) && cos.scalar_type() == x.scalar_type() &&
         sin.scalar_type() == x.scalar_type() && (cos.size(0) == 1 || cos.size(0) == x.size(0)) &&
         cos.size(1) == x.size(2) && cos.size(2) <= x.size(3) && cos.size(2) % 2 == 0 && cos.stride(2) == 1 &&
         sin.stride(2) == 1 && !trains_through({x, cos, sin});
}

at::Tensor fused_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // The result keeps x's [batch, heads, len, dim] shape, laid out contiguously.
  at::Tensor out = at::empty(x.sizes(), x.options());
  with_kernel_type(x.scalar_type(), [&](auto type) { rotate_rows<decltype(type)>(x, cos, sin, out); });
  return out;
}

}  // namespace plugformer
