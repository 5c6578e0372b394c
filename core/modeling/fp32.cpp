// computed_in_fp32's pass over blocks of rows (fp32.h).
#include "fp32.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "simd.h"
#include "plugformer/error.h"
#include "plugformer/runtime.h"

namespace plugformer {

namespace {

// 256 KB of fp32 a block, in L2 from its widening to its rounding. Smaller tensors (decode) are
// converted whole, on the calling thread: the blocks' setup costs more there than it saves.
constexpr int64_t kBlockValues = 1 << 16, kMinValues = 1 << 16;

// src[i] (+ bias[i] when given, added in fp32 as libtorch adds a bf16 / fp16 bias to fp32)
// rounded to bf16.
template <class B = float>
__attribute__((target("avx2,fma,f16c"))) void round_to_bf16(const float* src, int64_t n, c10::BFloat16* dst,
                                                             const B* bias = nullptr) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(src + i);
    if (bias) v = _mm256_add_ps(v, simd::load8(bias + i));
    simd::store8(dst + i, v);
  }
  for (; i < n; ++i) dst[i] = c10::BFloat16(bias ? src[i] + float(bias[i]) : src[i]);
}

// One row of bf16 scores as `scores * scale + mask` leaves it in bf16 (each op rounding its
// result), widened to fp32.
__attribute__((target("avx2,fma,f16c"))) void widen_scaled_masked(const c10::BFloat16* s, const c10::BFloat16* mask, float scale,
                                                             int64_t n, float* dst) {
  const __m256 factor = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = simd::rounded8<c10::BFloat16>(_mm256_mul_ps(simd::load8(s + i), factor));
    if (mask) v = simd::rounded8<c10::BFloat16>(_mm256_add_ps(v, simd::load8(mask + i)));
    _mm256_storeu_ps(dst + i, v);
  }
  for (; i < n; ++i) {
    float v = float(c10::BFloat16(float(s[i]) * scale));
    if (mask) v = float(c10::BFloat16(v + float(mask[i])));
    dst[i] = v;
  }
}

// libtorch 1.13's vectorized exp (the AVX2 build's Vectorized<float>::exp), from the libsleef it
// loads: the same function gives the same bits. (Declared with its instruction set: its vector
// argument is passed in a ymm register.)
extern "C" __attribute__((target("avx2"))) __m256 Sleef_expf8_u10(__m256);

// max(a, b) as Vectorized<float>'s maximum: NaN in either lane gives NaN.
__attribute__((target("avx2,fma"))) inline __m256 vec_maximum(__m256 a, __m256 b) {
  return _mm256_or_ps(_mm256_max_ps(a, b), _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
}

__attribute__((target("avx2,fma"))) inline __m256 vec_add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }

// The lanes of v combined as libtorch's AVX2 reduce_all combines its accumulator: halves, then
// pairs, then neighbours.
template <class Op>
__attribute__((target("avx2,fma"))) inline float across_lanes(__m256 v, Op op) {
  v = op(v, _mm256_permute2f128_ps(v, v, 0x1));
  v = op(v, _mm256_shuffle_ps(v, v, 0x4E));
  v = op(v, _mm256_shuffle_ps(v, v, 0xB1));
  return _mm256_cvtss_f32(v);
}

// All bits set in lanes [0, n) (n < 8).
__attribute__((target("avx2,fma"))) inline __m256i first_lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The first n (< 8) values of p, zeros after: Vectorized<float>::loadu(p, n).
__attribute__((target("avx2,fma"))) inline __m256 load_first(const float* p, int64_t n) {
  return _mm256_maskload_ps(p, first_lanes(n));
}

// Below this, Sleef's expf is exactly 0: whole vectors of masked keys skip it.
constexpr float kExpUnderflow = -104.0f;

__attribute__((target("avx2,fma"))) inline __m256 exp_minus(__m256 v, __m256 max) {
  const __m256 d = _mm256_sub_ps(v, max);
  const bool underflows = _mm256_movemask_ps(_mm256_cmp_ps(d, _mm256_set1_ps(kExpUnderflow), _CMP_LT_OQ)) == 0xFF;
  return underflows ? _mm256_setzero_ps() : Sleef_expf8_u10(d);
}

float max_with_nan(float a, float b) { return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b); }

// The AVX-512 parts of a row's softmax, over its first `count` values (a multiple of 16): 16 values a
// step where each value is on its own (widening, rounding, exp, scaling), while the sum still goes to 8
// lanes in libtorch's order (each 16's low half, then its high half). Sleef's 16-wide expf gives the
// bits of its 8-wide one for every non-NaN fp32 (checked exhaustively on the Intel Xeon). A 512-token
// prompt's rows: 1.0-1.1 -> 0.64-0.76 ms per million scores, one thread there.
extern "C" __attribute__((target("avx512f"))) __m512 Sleef_expf16_u10(__m512);

__attribute__((target("avx512f"))) inline __m512 rounded16(__m512 v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(simd::bf16_bits(v), 16));
}

__attribute__((target("avx512f"))) void widen_scaled_masked16(const c10::BFloat16* s, const c10::BFloat16* mask,
                                                              float scale, int64_t count, float* dst) {
  const __m512 factor = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < count; i += 16) {
    __m512 v = rounded16(_mm512_mul_ps(simd::load16(s + i), factor));
    if (mask) v = rounded16(_mm512_add_ps(v, simd::load16(mask + i)));
    _mm512_storeu_ps(dst + i, v);
  }
}

__attribute__((target("avx512f"))) float max16(const float* x, int64_t count) {
  __m512 acc = _mm512_loadu_ps(x);
  __mmask16 nan = _mm512_cmp_ps_mask(acc, acc, _CMP_UNORD_Q);
  for (int64_t i = 16; i < count; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    acc = _mm512_max_ps(acc, v);
  }
  return nan ? NAN : _mm512_reduce_max_ps(acc);
}

// exp(x - max) in place; returns the 8 lanes' sums, accumulated as libtorch's 8-wide loop does.
__attribute__((target("avx512f,avx512dq,avx2"))) __m256 exp_sum16(float* x, int64_t count, float max) {
  const __m512 mv = _mm512_set1_ps(max), underflow = _mm512_set1_ps(kExpUnderflow);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t i = 0; i < count; i += 16) {
    const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + i), mv);
    const __m512 e = _mm512_cmp_ps_mask(d, underflow, _CMP_LT_OQ) == 0xFFFF ? _mm512_setzero_ps() : Sleef_expf16_u10(d);
    _mm512_storeu_ps(x + i, e);
    const __m256 low = _mm512_castps512_ps256(e);
    sum = _mm256_add_ps(i == 0 ? low : _mm256_add_ps(sum, low), _mm512_extractf32x8_ps(e, 1));
  }
  return sum;
}

__attribute__((target("avx512f"))) void scaled_to_bf16_16(const float* x, int64_t count, float factor,
                                                          c10::BFloat16* dst) {
  const __m512 f = _mm512_set1_ps(factor);
  for (int64_t i = 0; i < count; i += 16) simd::store16(dst + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), f));
}

// softmax(s * scale + mask) of one row of n bf16 scores, as libtorch's bf16 ops and its AVX2
// at::softmax (_vec_softmax_lastdim) compute it: the maximum (exact in any order), exp(x - max) by the
// same Sleef function, their sum over 8 lanes in its order combined as its reduce_all does, times
// 1 / sum, rounded to bf16. x: n floats of scratch. With avx512, the first n / 16 * 16 values go 16 at
// a time.
__attribute__((target("avx2,fma,f16c"))) void scaled_masked_softmax_row(const c10::BFloat16* s, const c10::BFloat16* mask,
                                                                       float scale, int64_t n, float* x, c10::BFloat16* dst,
                                                                       bool avx512) {
  const int64_t wide = avx512 ? n / 16 * 16 : 0, full = n - n % 8;
  if (wide) widen_scaled_masked16(s, mask, scale, wide, x);
  widen_scaled_masked(s + wide, mask ? mask + wide : nullptr, scale, n - wide, x + wide);
  float max = wide ? max16(x, wide) : -INFINITY;
  int64_t i = wide;
  if (i < full) {
    __m256 acc = _mm256_loadu_ps(x + i);
    for (i += 8; i < full; i += 8) acc = vec_maximum(acc, _mm256_loadu_ps(x + i));
    max = max_with_nan(max, across_lanes(acc, vec_maximum));
  }
  for (i = full; i < n; ++i) max = max_with_nan(max, x[i]);
  const __m256 mv = _mm256_set1_ps(max);
  __m256 sum = wide ? exp_sum16(x, wide, max) : _mm256_setzero_ps();
  for (i = wide; i < full; i += 8) {
    const __m256 e = exp_minus(_mm256_loadu_ps(x + i), mv);
    _mm256_storeu_ps(x + i, e);
    sum = i == 0 ? e : _mm256_add_ps(sum, e);
  }
  float total;
  if (full < n) {
    float tail[8];
    _mm256_storeu_ps(tail, exp_minus(load_first(x + full, n - full), mv));
    std::copy(tail, tail + (n - full), x + full);
    if (n < 8) {
      total = x[0];
      for (i = 1; i < n; ++i) total += x[i];
    } else {
      total = across_lanes(_mm256_add_ps(sum, load_first(tail, n - full)), vec_add);
    }
  } else {
    total = across_lanes(sum, vec_add);
  }
  const float inverse = 1 / total;
  if (wide) scaled_to_bf16_16(x, wide, inverse, dst);
  for (i = wide; i < n; ++i) x[i] *= inverse;
  round_to_bf16(x + wide, n - wide, dst + wide);
}

}  // namespace

bool rows_in_fp32_apply(const at::Tensor& x) {
  // Without autograd only (no graph to keep); a checkpointed layer's first pass may take it too, as
  // its results are the same bits.
  return x.scalar_type() == at::kBFloat16 && x.dim() >= 1 && x.numel() >= kMinValues && x.is_contiguous() &&
         !at::GradMode::is_enabled() && cpu_isa() >= CpuIsa::avx2;
}

bool small_conversion_applies(const at::Tensor& t) {
  return (t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf || t.scalar_type() == at::kFloat) &&
         t.numel() > 0 && t.numel() <= kMinValues && t.is_contiguous() && !at::GradMode::is_enabled() &&
         cpu_isa() >= CpuIsa::avx2;
}

at::Tensor widened_to_fp32(const at::Tensor& x) {
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(at::kFloat));
  simd::with_kernel_type(x.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    simd::widen_rows(static_cast<const T*>(x.data_ptr()), 1, x.numel(), 0, out.data_ptr<float>());
  });
  return out;
}

at::Tensor rounded_from_fp32(const at::Tensor& y, const at::Tensor& bias, c10::ScalarType type) {
  const int64_t width = y.size(-1), rows = y.numel() / width;
  at::Tensor out = at::empty(y.sizes(), y.options().dtype(type));
  const float* src = y.data_ptr<float>();
  simd::with_kernel_type(bias.defined() ? bias.scalar_type() : at::kFloat, [&](auto zero) {
    using B = decltype(zero);
    const B* b = bias.defined() ? static_cast<const B*>(bias.data_ptr()) : nullptr;
    if (type == at::kBFloat16) {
      c10::BFloat16* dst = out.data_ptr<c10::BFloat16>();
      if (!b) return round_to_bf16(src, rows * width, dst);
      for (int64_t r = 0; r < rows; ++r) round_to_bf16(src + r * width, width, dst + r * width, b);
    } else {
      c10::Half* dst = out.data_ptr<c10::Half>();
      for (int64_t i = 0; i < rows * width; ++i) dst[i] = c10::Half(b ? src[i] + float(b[i % width]) : src[i]);
    }
  });
  return out;
}

bool scaled_masked_softmax_applies(const at::Tensor& scores, const at::Tensor& mask) {
  return scores.dim() == 4 && rows_in_fp32_apply(scores) &&
         (!mask.defined() || (mask.scalar_type() == at::kBFloat16 && mask.dim() == 4 && mask.stride(3) == 1 &&
                              mask.sizes() == scores.sizes()));
}

at::Tensor scaled_masked_softmax(const at::Tensor& scores, double scale, const at::Tensor& mask) {
  const int64_t heads = scores.size(1), q_len = scores.size(2), width = scores.size(3), rows = scores.numel() / width;
  const c10::BFloat16* src = scores.data_ptr<c10::BFloat16>();
  const c10::BFloat16* m = mask.defined() ? mask.data_ptr<c10::BFloat16>() : nullptr;
  const float factor = float(c10::BFloat16(float(scale)));  // libtorch 1.13 rounds the scalar to bf16 first
  at::Tensor out = at::empty_like(scores);
  c10::BFloat16* dst = out.data_ptr<c10::BFloat16>();
  const bool avx512 = cpu_isa() >= CpuIsa::avx512;
  // Each row widened, soft-maxed and rounded while it sits in L1.
  at::parallel_for(0, rows, std::max<int64_t>(1, kBlockValues / width), [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(width));
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (heads * q_len), h = r / q_len % heads, q = r % q_len;
      scaled_masked_softmax_row(src + r * width,
                                m ? m + b * mask.stride(0) + h * mask.stride(1) + q * mask.stride(2) : nullptr, factor,
                                width, row.data(), dst + r * width, avx512);
    }
  });
  return out;
}

at::Tensor rows_in_fp32(const at::Tensor& x, const std::function<at::Tensor(const at::Tensor&)>& f) {
  const c10::BFloat16* src = x.data_ptr<c10::BFloat16>();
  const int64_t width = x.size(-1), rows = x.numel() / width;
  const int64_t block = std::max<int64_t>(1, kBlockValues / width);
  at::Tensor out = at::empty_like(x);
  c10::BFloat16* dst = out.data_ptr<c10::BFloat16>();
  at::parallel_for(0, rows, block, [&](int64_t begin, int64_t end) {
    const at::Tensor buffer = at::empty({std::min(block, end - begin), width}, x.options().dtype(at::kFloat));
    for (int64_t r = begin; r < end; r += block) {
      const int64_t n = std::min(block, end - r);
      const at::Tensor in = buffer.narrow(0, 0, n);
      simd::widen_rows(src + r * width, 1, n * width, 0, in.data_ptr<float>());
      const at::Tensor y = f(in).contiguous();
      if (y.scalar_type() != at::kFloat || y.numel() != n * width)
        throw Error("computed_in_fp32: f changed the type or the size of its rows");
      round_to_bf16(y.data_ptr<float>(), n * width, dst + r * width);
    }
  });
  return out;
}

}  // namespace plugformer
