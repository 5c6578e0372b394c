// computed_in_fp32's pass over blocks of rows (fp32.h).
#include "fp32.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include "matmul.h"
#include "simd.h"
#include "plugformer/error.h"
#include "plugformer/runtime.h"

namespace plugformer {

namespace {

// 256 KB of fp32 a block, in L2 from its widening to its rounding. Smaller tensors (decode) take
// libtorch's conversions: one call each costs less there than the blocks' setup.
constexpr int64_t kBlockValues = 1 << 16, kMinValues = 1 << 16;

__attribute__((target("avx2,fma"))) void widen(const c10::BFloat16* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, simd::load8(src + i));
  for (; i < n; ++i) dst[i] = float(src[i]);
}

// As c10::BFloat16 rounds an fp32: to nearest even, NaN to 0x7FC0.
__attribute__((target("avx2,fma"))) void round_to_bf16(const float* src, int64_t n, c10::BFloat16* dst) {
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF), nan = _mm256_set1_epi32(0x7FC0);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(src + i);
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), one);
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, bias), odd), 16);
    rounded = _mm256_blendv_epi8(rounded, nan, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(rounded), _mm256_extracti128_si256(rounded, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), packed);
  }
  for (; i < n; ++i) dst[i] = c10::BFloat16(src[i]);
}

}  // namespace

bool rows_in_fp32_apply(const at::Tensor& x) {
  return x.scalar_type() == at::kBFloat16 && x.dim() >= 1 && x.numel() >= kMinValues && x.is_contiguous() &&
         !x.requires_grad() && inference_only() && cpu_isa() >= CpuIsa::avx2;
}

at::Tensor rows_in_fp32(const at::Tensor& x, const std::function<at::Tensor(const at::Tensor&)>& f) {
  const int64_t width = x.size(-1), rows = x.numel() / width;
  const int64_t block = std::max<int64_t>(1, kBlockValues / width);
  at::Tensor out = at::empty_like(x);
  const c10::BFloat16* src = x.data_ptr<c10::BFloat16>();
  c10::BFloat16* dst = out.data_ptr<c10::BFloat16>();
  at::parallel_for(0, rows, block, [&](int64_t begin, int64_t end) {
    const at::Tensor buffer = at::empty({std::min(block, end - begin), width}, x.options().dtype(at::kFloat));
    for (int64_t r = begin; r < end; r += block) {
      const int64_t n = std::min(block, end - r);
      const at::Tensor in = buffer.narrow(0, 0, n);
      widen(src + r * width, n * width, in.data_ptr<float>());
      const at::Tensor y = f(in).contiguous();
      if (y.scalar_type() != at::kFloat || y.numel() != n * width)
        throw Error("computed_in_fp32: f changed the type or the size of its rows");
      round_to_bf16(y.data_ptr<float>(), n * width, dst + r * width);
    }
  });
  return out;
}

}  // namespace plugformer
