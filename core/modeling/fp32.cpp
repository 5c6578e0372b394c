// computed_in_fp32's pass over blocks of rows (fp32.h).
#include "fp32.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include "simd.h"
#include "plugformer/error.h"
#include "plugformer/runtime.h"

namespace plugformer {

namespace {

// 256 KB of fp32 a block, in L2 from its widening to its rounding. Smaller tensors (decode) are
// converted whole, on the calling thread: the blocks' setup costs more there than it saves.
constexpr int64_t kBlockValues = 1 << 16, kMinValues = 1 << 16;

// Eight fp32 rounded as c10::BFloat16 rounds them (to nearest even, NaN to 0x7FC0), as the
// bf16 bit patterns in the low halves of the lanes.
__attribute__((target("avx2,fma"))) inline __m256i bf16_bits(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), odd), 16);
  return _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}

// The same rounding, kept in fp32: what a libtorch op on bf16 tensors stores, widened back.
__attribute__((target("avx2,fma"))) inline __m256 rounded_to_bf16(__m256 v) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(bf16_bits(v), 16));
}

// src[i] (+ bias[i] when given, added in fp32 as libtorch adds a bf16 / fp16 bias to fp32)
// rounded to bf16.
template <class B = float>
__attribute__((target("avx2,fma,f16c"))) void round_to_bf16(const float* src, int64_t n, c10::BFloat16* dst,
                                                             const B* bias = nullptr) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(src + i);
    if (bias) v = _mm256_add_ps(v, simd::load8(bias + i));
    const __m256i rounded = bf16_bits(v);
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(rounded), _mm256_extracti128_si256(rounded, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), packed);
  }
  for (; i < n; ++i) dst[i] = c10::BFloat16(bias ? src[i] + float(bias[i]) : src[i]);
}

// One row of bf16 scores as `scores * scale + mask` leaves it in bf16 (each op rounding its
// result), widened to fp32.
__attribute__((target("avx2,fma"))) void widen_scaled_masked(const c10::BFloat16* s, const c10::BFloat16* mask, float scale,
                                                             int64_t n, float* dst) {
  const __m256 factor = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = rounded_to_bf16(_mm256_mul_ps(simd::load8(s + i), factor));
    if (mask) v = rounded_to_bf16(_mm256_add_ps(v, simd::load8(mask + i)));
    _mm256_storeu_ps(dst + i, v);
  }
  for (; i < n; ++i) {
    float v = float(c10::BFloat16(float(s[i]) * scale));
    if (mask) v = float(c10::BFloat16(v + float(mask[i])));
    dst[i] = v;
  }
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

at::Tensor rows_in_fp32(const at::Tensor& x, const std::function<at::Tensor(const at::Tensor&)>& f) {
  const c10::BFloat16* src = x.data_ptr<c10::BFloat16>();
  return rows_in_fp32(x, f, [src](int64_t row, int64_t n, int64_t width, float* dst) {
    simd::widen_rows(src + row * width, 1, n * width, 0, dst);
  });
}

bool scaled_masked_softmax_applies(const at::Tensor& scores, const at::Tensor& mask) {
  return scores.dim() == 4 && rows_in_fp32_apply(scores) &&
         (!mask.defined() || (mask.scalar_type() == at::kBFloat16 && mask.dim() == 4 && mask.stride(3) == 1 &&
                              mask.sizes() == scores.sizes()));
}

at::Tensor scaled_masked_softmax(const at::Tensor& scores, double scale, const at::Tensor& mask) {
  const int64_t heads = scores.size(1), q_len = scores.size(2);
  const c10::BFloat16* src = scores.data_ptr<c10::BFloat16>();
  const c10::BFloat16* m = mask.defined() ? mask.data_ptr<c10::BFloat16>() : nullptr;
  const float factor = float(c10::BFloat16(float(scale)));  // libtorch 1.13 rounds the scalar to bf16 first
  const auto prepare = [&](int64_t row, int64_t n, int64_t width, float* dst) {
    for (int64_t r = row; r < row + n; ++r, dst += width) {
      const int64_t b = r / (heads * q_len), h = r / q_len % heads, q = r % q_len;
      widen_scaled_masked(src + r * width, m ? m + b * mask.stride(0) + h * mask.stride(1) + q * mask.stride(2) : nullptr,
                          factor, width, dst);
    }
  };
  return rows_in_fp32(scores, [](const at::Tensor& h) { return at::softmax(h, -1); }, prepare);
}

at::Tensor rows_in_fp32(const at::Tensor& x, const std::function<at::Tensor(const at::Tensor&)>& f,
                        const std::function<void(int64_t, int64_t, int64_t, float*)>& widen_rows) {
  const int64_t width = x.size(-1), rows = x.numel() / width;
  const int64_t block = std::max<int64_t>(1, kBlockValues / width);
  at::Tensor out = at::empty_like(x);
  c10::BFloat16* dst = out.data_ptr<c10::BFloat16>();
  at::parallel_for(0, rows, block, [&](int64_t begin, int64_t end) {
    const at::Tensor buffer = at::empty({std::min(block, end - begin), width}, x.options().dtype(at::kFloat));
    for (int64_t r = begin; r < end; r += block) {
      const int64_t n = std::min(block, end - r);
      const at::Tensor in = buffer.narrow(0, 0, n);
      widen_rows(r, n, width, in.data_ptr<float>());
      const at::Tensor y = f(in).contiguous();
      if (y.scalar_type() != at::kFloat || y.numel() != n * width)
        throw Error("computed_in_fp32: f changed the type or the size of its rows");
      round_to_bf16(y.data_ptr<float>(), n * width, dst + r * width);
    }
  });
  return out;
}

}  // namespace plugformer
