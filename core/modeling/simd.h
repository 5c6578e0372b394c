// AVX2 / AVX-512 helpers shared by the decode kernels (core-internal): the element types they
// read, eight (sixteen) consecutive values of any weight / cache type as fp32, and a horizontal sum.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <immintrin.h>

#include <cstdint>
#include <type_traits>
#include <utility>

namespace plugformer::simd {

// The 64-byte operand of ldtilecfg, palette 1: the rows and bytes per row of each AMX tile
// (unused tiles: zero).
struct TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};
// ldtilecfg with the whole configuration as its operand: GCC 12's _tile_loadconfig names only its
// first 8 bytes as read, so the compiler may drop the stores of the rest as dead (it did).
inline void load_tile_config(const TileConfig& config) { asm volatile("ldtilecfg %0" : : "m"(config)); }

// fp32, bf16 and fp16: the activation / cache types the kernels read (arithmetic in fp32).
inline bool is_kernel_type(c10::ScalarType t) {
  return t == c10::kFloat || t == c10::kBFloat16 || t == c10::kHalf;
}

// Calls f with a value of the C++ type of a kernel type.
template <class F>
decltype(auto) with_kernel_type(c10::ScalarType t, F&& f) {
  switch (t) {
    case c10::kBFloat16: return f(c10::BFloat16());
    case c10::kHalf: return f(c10::Half());
    default: return f(float());
  }
}

// Calls f with a value of the C++ type of a streamed weight: a kernel type or int8.
template <class F>
decltype(auto) with_weight_type(c10::ScalarType t, F&& f) {
  if (t == c10::kChar) return f(int8_t());
  return with_kernel_type(t, std::forward<F>(f));
}

// bf16 is the high half of an fp32; int8 weights are per-row quantized (their scale is applied
// by the caller).
__attribute__((target("avx2,fma"))) inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,fma"))) inline __m256 load8(const c10::BFloat16* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
__attribute__((target("avx2,fma"))) inline __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// Eight fp32 rounded as c10::BFloat16 rounds them (to nearest even, NaN to 0x7FC0), as the bf16
// bit patterns in the low halves of the lanes.
__attribute__((target("avx2,fma"))) inline __m256i bf16_bits(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), odd), 16);
  return _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}

// Eight fp32 stored as T, each rounded as T(float) rounds it (fp16: to nearest even).
__attribute__((target("avx2,fma"))) inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
__attribute__((target("avx2,fma"))) inline void store8(c10::BFloat16* p, __m256 v) {
  const __m256i rounded = bf16_bits(v);
  const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(rounded), _mm256_extracti128_si256(rounded, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}
__attribute__((target("avx2,fma,f16c"))) inline void store8(c10::Half* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

// Eight fp32 rounded to T's precision, back in fp32: what a libtorch op on T tensors stores,
// widened again.
template <class T>
__attribute__((target("avx2,fma,f16c"))) inline __m256 rounded8(__m256 v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(bf16_bits(v), 16));
  } else {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
}

// rows x cols values (rows row_stride apart, unit stride within) into contiguous fp32 (exact).
template <class T>
__attribute__((target("avx2,fma,f16c"))) inline void widen_rows(const T* src, int64_t rows, int64_t cols,
                                                                 int64_t row_stride, float* dst) {
  for (int64_t r = 0; r < rows; ++r, src += row_stride, dst += cols) {
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) _mm256_storeu_ps(dst + c, load8(src + c));
    for (; c < cols; ++c) dst[c] = float(src[c]);
  }
}

__attribute__((target("avx2,fma"))) inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Sixteen consecutive values as fp32 in one AVX-512 register (the same conversions, twice as wide).
__attribute__((target("avx512f"))) inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
__attribute__((target("avx512f"))) inline __m512 load16(const c10::BFloat16* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
__attribute__((target("avx512f"))) inline __m512 load16(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
__attribute__((target("avx512f"))) inline __m512 load16(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// Sixteen fp32 rounded as c10::BFloat16 rounds them (bf16_bits and store8 above, twice as wide).
__attribute__((target("avx512f"))) inline __m512i bf16_bits(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)), odd), 16);
  return _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), rounded, _mm512_set1_epi32(0x7FC0));
}
__attribute__((target("avx512f"))) inline void store16(c10::BFloat16* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(bf16_bits(v)));
}

}  // namespace plugformer::simd
