// int8-weight products of long inputs (prompts) in integer arithmetic on AMX int8 tiles,
// AVX512-VNNI or AVX-VNNI (the same instruction on 256-bit registers, in CPUs without AVX-512),
// all three with the same integer sums and so the same results. Widening the weight to
// fp32 for sgemm (the other CPUs' route) leaves int8 at fp32's speed; vpdpbusd multiplies 64
// (32) byte pairs per instruction. As llama.cpp's Q8 path does, the activations are
// quantized on the fly, but in two int8 parts per row — x = s * (high + low / 254), s = the row's
// largest |x| / 127 — so they keep ~15 bits (an error of at most 1/64516 of the row's largest
// value, finer than bf16's rounding) and the result stays that of the weight-only product.
// Two vpdpbusd per four products still run about twice sgemm's rate.
#include <ATen/ATen.h>
#include <immintrin.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "matmul.h"
#include "simd.h"
#include "worker_team.h"
#include "plugformer/runtime.h"

namespace plugformer {

namespace {

constexpr int kLowSteps = 254;  // low = round((x / s - high) * 254): |low| <= 127
// Accumulators hold sum((w + 128) * part) <= in * 255 * 127 in int32.
constexpr int64_t kMaxFeatures = 65536;

// The rows of x in two int8 parts, with each row's scale and the sums of its parts (for the +128
// that makes the weights unsigned). The parts are zero-padded to whole steps of the kernel: groups
// of four inputs (vpdpbusd), or 16 rows by 64 inputs (an AMX tile).
struct SplitRows {
  int64_t padded = 0;
  std::vector<int8_t> high, low;
  std::vector<float> scale;
  std::vector<int32_t> high_sum, low_sum;

  void resize(int64_t rows, int64_t in, int64_t row_multiple, int64_t in_multiple) {
    padded = (in + in_multiple - 1) / in_multiple * in_multiple;
    const int64_t padded_rows = (rows + row_multiple - 1) / row_multiple * row_multiple;
    high.assign(size_t(padded_rows * padded), 0);
    low.assign(size_t(padded_rows * padded), 0);
    scale.resize(size_t(rows));
    high_sum.resize(size_t(rows));
    low_sum.resize(size_t(rows));
  }
};

// The weight rows [first, first + channels) for vpdpbusd: for every group of four inputs, the
// four bytes of each channel side by side, made unsigned by adding 128. Channels past `out` and
// inputs past `in` are zero weights.
void pack_tile(const int8_t* w, int64_t in, int64_t out, int64_t first, int64_t channels, int64_t quads,
               uint32_t* packed) {
  constexpr uint32_t kZero = 0x80808080u;  // four zero weights, +128 each
  for (int64_t c = 0; c < channels; ++c) {
    uint32_t* dst = packed + c;
    const int64_t o = first + c;
    if (o >= out) {
      for (int64_t q = 0; q < quads; ++q) dst[q * channels] = kZero;
      continue;
    }
    const int8_t* row = w + o * in;
    int64_t q = 0;
    for (; 4 * q + 4 <= in; ++q) {
      uint32_t four;
      std::memcpy(&four, row + 4 * q, 4);
      dst[q * channels] = four ^ kZero;
    }
    for (; q < quads; ++q) {
      uint32_t four = kZero;
      for (int64_t b = 0; b < 4 && 4 * q + b < in; ++b) four ^= uint32_t(uint8_t(row[4 * q + b])) << (8 * b);
      dst[q * channels] = four;
    }
  }
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,amx-tile,amx-int8")
namespace vnni512 {
struct V {
  using Float = __m512;
  using Int = __m512i;
  static constexpr int64_t kLanes = 16;
  static constexpr int kVectors = 3, kRows = 4;  // 24 accumulators of 32 registers
  static Float load(const float* p) { return _mm512_loadu_ps(p); }
  static Float set1(float v) { return _mm512_set1_ps(v); }
  static Float abs(Float v) { return _mm512_abs_ps(v); }
  static Float max(Float a, Float b) { return _mm512_max_ps(a, b); }
  static bool unordered(Float v) { return _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) != 0; }
  static float reduce_max(Float v) { return _mm512_reduce_max_ps(v); }
  static Float mul(Float a, Float b) { return _mm512_mul_ps(a, b); }
  static Float sub(Float a, Float b) { return _mm512_sub_ps(a, b); }
  static Float fmadd(Float a, Float b, Float c) { return _mm512_fmadd_ps(a, b, c); }
  static Int to_int(Float v) { return _mm512_cvtps_epi32(v); }
  static Float to_float(Int v) { return _mm512_cvtepi32_ps(v); }
  static void store_bytes(int8_t* p, Int v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v)); }
  static Int set1_i(int32_t v) { return _mm512_set1_epi32(v); }
  static Int load_i(const uint32_t* p) { return _mm512_loadu_si512(p); }
  static Int add_i(Int a, Int b) { return _mm512_add_epi32(a, b); }
  static Int sub_i(Int a, Int b) { return _mm512_sub_epi32(a, b); }
  static int32_t reduce_add(Int v) { return _mm512_reduce_add_epi32(v); }
  static Int dpbusd(Int acc, Int w, Int x) { return _mm512_dpbusd_epi32(acc, w, x); }
  static __mmask16 first(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1); }
  static Float load_n(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store_n(float* p, Float v, int64_t n) { _mm512_mask_storeu_ps(p, first(n), v); }
};
#include "int8_kernels.inc"

// AMX: one tdpbsud multiplies 16 rows x 64 inputs of x (signed) by 64 inputs x 16 channels of
// the packed weights (unsigned): the packing and the integer sums are vpdpbusd's, and the same
// store_sums turns them into the same floats. Tiles 0-3 sum the high / low parts for the tile's
// channels 0-15 / 16-31, tiles 4 and 5 hold x's parts, tiles 6 and 7 the weights.
namespace amx {
constexpr int64_t kRows = 16, kChannels = 32, kInputs = 64;

void rows_against_tile(const SplitRows& x, int64_t rows, const uint32_t* packed, int64_t quads, const float* w_scale,
                       int64_t first, int64_t valid, float* y, int64_t y_stride) {
  simd::TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = kRows;  // 16 rows of x, or 16 groups of four inputs of the weights
    config.bytes_per_row[t] = 64;
  }
  simd::load_tile_config(config);
  alignas(64) int32_t sums[4][kRows * 16];
  for (int64_t row = 0; row < rows; row += kRows) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const int8_t* high = x.high.data() + row * x.padded;
    const int8_t* low = x.low.data() + row * x.padded;
    for (int64_t q = 0; q < quads; q += kInputs / 4) {
      _tile_loadd(4, high + 4 * q, x.padded);
      _tile_loadd(6, packed + q * kChannels, kChannels * 4);
      _tile_dpbsud(0, 4, 6);
      _tile_loadd(7, packed + q * kChannels + 16, kChannels * 4);
      _tile_dpbsud(1, 4, 7);
      _tile_loadd(5, low + 4 * q, x.padded);
      _tile_dpbsud(2, 5, 6);
      _tile_dpbsud(3, 5, 7);
    }
    _tile_stored(0, sums[0], 64);
    _tile_stored(1, sums[1], 64);
    _tile_stored(2, sums[2], 64);
    _tile_stored(3, sums[3], 64);
    for (int64_t r = 0; r < std::min(kRows, rows - row); ++r)
      for (int64_t n = 0; n < 2; ++n) {
        const int64_t begin = 16 * n;
        if (begin < valid)
          store_sums(x, row + r, V::load_i(reinterpret_cast<const uint32_t*>(sums[n] + 16 * r)),
                     V::load_i(reinterpret_cast<const uint32_t*>(sums[2 + n] + 16 * r)), w_scale + first + begin,
                     std::min<int64_t>(16, valid - begin), y + (row + r) * y_stride + first + begin);
      }
  }
  _tile_release();  // hands the tile state back: context switches save less
}

bool product(const float* x, int64_t rows, int64_t in, const int8_t* w, const float* w_scale, int64_t out, float* y) {
  return product_on_tiles(x, rows, in, w, w_scale, out, y, kChannels, kRows, kInputs, rows_against_tile);
}
}  // namespace amx
}  // namespace vnni512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avxvnni")
namespace vnni256 {
struct V {
  using Float = __m256;
  using Int = __m256i;
  static constexpr int64_t kLanes = 8;
  static constexpr int kVectors = 2, kRows = 3;  // 12 accumulators of 16 registers
  static Float load(const float* p) { return _mm256_loadu_ps(p); }
  static Float set1(float v) { return _mm256_set1_ps(v); }
  static Float abs(Float v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
  static Float max(Float a, Float b) { return _mm256_max_ps(a, b); }
  static bool unordered(Float v) { return _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0; }
  static float reduce_max(Float v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  }
  static Float mul(Float a, Float b) { return _mm256_mul_ps(a, b); }
  static Float sub(Float a, Float b) { return _mm256_sub_ps(a, b); }
  static Float fmadd(Float a, Float b, Float c) { return _mm256_fmadd_ps(a, b, c); }
  static Int to_int(Float v) { return _mm256_cvtps_epi32(v); }
  static Float to_float(Int v) { return _mm256_cvtepi32_ps(v); }
  static void store_bytes(int8_t* p, Int v) {  // the values fit in int8: the saturating packs keep them
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(words, words));
  }
  static Int set1_i(int32_t v) { return _mm256_set1_epi32(v); }
  static Int load_i(const uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static Int add_i(Int a, Int b) { return _mm256_add_epi32(a, b); }
  static Int sub_i(Int a, Int b) { return _mm256_sub_epi32(a, b); }
  static int32_t reduce_add(Int v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1)));
  }
  static Int dpbusd(Int acc, Int w, Int x) { return _mm256_dpbusd_avx_epi32(acc, w, x); }
  static Int first(int64_t n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(std::min<int64_t>(n, 8))), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
  static Float load_n(const float* p, int64_t n) { return _mm256_maskload_ps(p, first(n)); }
  static void store_n(float* p, Float v, int64_t n) { _mm256_maskstore_ps(p, first(n), v); }
};
#include "int8_kernels.inc"
}  // namespace vnni256
#pragma GCC pop_options

bool avx512_vnni_runs() { return cpu_isa() >= CpuIsa::avx512 && cpu_has_avx512_vnni(); }
bool amx_int8_runs() { return cpu_isa() >= CpuIsa::amx && cpu_has_amx_int8(); }

}  // namespace

bool int8_products_in_integers(int64_t in) {
  return in <= kMaxFeatures && (avx512_vnni_runs() || (cpu_isa() >= CpuIsa::avx2 && cpu_has_avx_vnni()));
}

at::Tensor int8_integer_product(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& row_scale) {
  const int64_t in = x.size(1), rows = x.size(0), out = weight.size(0);
  at::Tensor y = at::empty({rows, out}, at::kFloat);
  const auto product = amx_int8_runs()      ? vnni512::amx::product
                       : avx512_vnni_runs() ? vnni512::product
                                            : vnni256::product;
  if (!product(x.data_ptr<float>(), rows, in, weight.data_ptr<int8_t>(), row_scale.data_ptr<float>(), out,
               y.data_ptr<float>()))
    return at::Tensor();
  return y;
}

}  // namespace plugformer
