// int8-weight products of long inputs (prompts) in integer arithmetic on AVX512-VNNI. Widening
// the weight to fp32 for sgemm (the other CPUs' route) leaves int8 at fp32's speed; vpdpbusd
// multiplies 64 byte pairs per instruction. As llama.cpp's Q8 path does, the activations are
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
#include "worker_team.h"
#include "plugformer/runtime.h"

namespace plugformer {

namespace {

constexpr int kLowSteps = 254;  // low = round((x / s - high) * 254): |low| <= 127
// Output channels per tile: three 16-lane vectors. With 4 rows of x per step, the 2 x 4 x 3
// accumulators, three weight vectors and two broadcasts fill 29 of the 32 registers.
constexpr int kTileVectors = 3, kTileRows = 4;
constexpr int64_t kTileChannels = 16 * kTileVectors;
// Accumulators hold sum((w + 128) * part) <= in * 255 * 127 in int32.
constexpr int64_t kMaxFeatures = 65536;

// The rows of x in two int8 parts (zero-padded to whole groups of four), with each row's scale
// and the sums of its parts (for the +128 that makes the weights unsigned).
struct SplitRows {
  int64_t padded = 0;
  std::vector<int8_t> high, low;
  std::vector<float> scale;
  std::vector<int32_t> high_sum, low_sum;
};

// One row into its two parts; false if it holds a NaN or infinity (no scale represents it).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))) bool split_row(const float* x, int64_t in, int8_t* high,
                                                                             int8_t* low, float& scale,
                                                                             int32_t& high_sum, int32_t& low_sum) {
  __m512 largest = _mm512_setzero_ps();
  __mmask16 unordered = 0;
  for (int64_t i = 0; i < in; i += 16) {
    const __mmask16 live = in - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (in - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(live, x + i);
    unordered |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    largest = _mm512_max_ps(largest, _mm512_abs_ps(v));
  }
  const float amax = _mm512_reduce_max_ps(largest);
  if (unordered || !std::isfinite(amax)) return false;
  scale = amax / 127;
  const __m512 inverse = _mm512_set1_ps(amax > 0 ? 127 / amax : 0.0f);
  __m512i high_total = _mm512_setzero_si512(), low_total = _mm512_setzero_si512();
  for (int64_t i = 0; i < in; i += 16) {
    const __mmask16 live = in - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (in - i)) - 1);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(live, x + i), inverse);
    const __m512i h = _mm512_cvtps_epi32(v);  // round to nearest even
    const __m512 rest = _mm512_sub_ps(v, _mm512_cvtepi32_ps(h));  // exact: |rest| <= 0.5
    const __m512i l = _mm512_cvtps_epi32(_mm512_mul_ps(rest, _mm512_set1_ps(float(kLowSteps))));
    _mm_mask_storeu_epi8(high + i, live, _mm512_cvtepi32_epi8(h));
    _mm_mask_storeu_epi8(low + i, live, _mm512_cvtepi32_epi8(l));
    high_total = _mm512_add_epi32(high_total, h);
    low_total = _mm512_add_epi32(low_total, l);
  }
  high_sum = _mm512_reduce_add_epi32(high_total);
  low_sum = _mm512_reduce_add_epi32(low_total);
  return true;
}

bool split_rows(const float* x, int64_t rows, int64_t in, SplitRows& split) {
  split.padded = (in + 3) / 4 * 4;
  split.high.assign(size_t(rows * split.padded), 0);
  split.low.assign(size_t(rows * split.padded), 0);
  split.scale.resize(size_t(rows));
  split.high_sum.resize(size_t(rows));
  split.low_sum.resize(size_t(rows));
  std::atomic<bool> finite{true};
  team_parallel_for(rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      if (!split_row(x + r * in, in, &split.high[r * split.padded], &split.low[r * split.padded], split.scale[r],
                     split.high_sum[r], split.low_sum[r]))
        finite = false;
  });
  return finite;
}

// The weight rows [first, first + 48) for vpdpbusd: for every group of four inputs, the four
// bytes of each channel side by side (16 channels per register), made unsigned by adding 128.
// Channels past `out` and inputs past `in` are zero weights.
void pack_tile(const int8_t* w, int64_t in, int64_t out, int64_t first, int64_t quads, uint32_t* packed) {
  constexpr uint32_t kZero = 0x80808080u;  // four zero weights, +128 each
  for (int64_t c = 0; c < kTileChannels; ++c) {
    uint32_t* dst = packed + c;
    const int64_t o = first + c;
    if (o >= out) {
      for (int64_t q = 0; q < quads; ++q) dst[q * kTileChannels] = kZero;
      continue;
    }
    const int8_t* row = w + o * in;
    int64_t q = 0;
    for (; 4 * q + 4 <= in; ++q) {
      uint32_t four;
      std::memcpy(&four, row + 4 * q, 4);
      dst[q * kTileChannels] = four ^ kZero;
    }
    for (; q < quads; ++q) {
      uint32_t four = kZero;
      for (int64_t b = 0; b < 4 && 4 * q + b < in; ++b) four ^= uint32_t(uint8_t(row[4 * q + b])) << (8 * b);
      dst[q * kTileChannels] = four;
    }
  }
}

// R rows of x (from `row`) against one packed tile into y's channels [first, first + valid):
// y = s_x * w_scale * (sum(w * high) + sum(w * low) / 254), each sum exact in int32.
template <int R>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void tile_product(
    const SplitRows& x, int64_t row, const uint32_t* packed, int64_t quads, const float* w_scale, int64_t first,
    int64_t valid, float* y, int64_t y_stride) {
  __m512i high[R][kTileVectors], low[R][kTileVectors];
  for (int r = 0; r < R; ++r)
    for (int n = 0; n < kTileVectors; ++n) high[r][n] = low[r][n] = _mm512_setzero_si512();
  const int8_t* xh = x.high.data() + row * x.padded;
  const int8_t* xl = x.low.data() + row * x.padded;
  for (int64_t q = 0; q < quads; ++q) {
    __m512i w[kTileVectors];
    for (int n = 0; n < kTileVectors; ++n) w[n] = _mm512_loadu_si512(packed + (q * kTileVectors + n) * 16);
    for (int r = 0; r < R; ++r) {
      int32_t h4, l4;
      std::memcpy(&h4, xh + r * x.padded + 4 * q, 4);
      std::memcpy(&l4, xl + r * x.padded + 4 * q, 4);
      const __m512i h = _mm512_set1_epi32(h4), l = _mm512_set1_epi32(l4);
      for (int n = 0; n < kTileVectors; ++n) {
        high[r][n] = _mm512_dpbusd_epi32(high[r][n], w[n], h);
        low[r][n] = _mm512_dpbusd_epi32(low[r][n], w[n], l);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    // Take away the +128 of every weight: 128 * the sum of each part.
    const __m512i high_offset = _mm512_set1_epi32(128 * x.high_sum[row + r]);
    const __m512i low_offset = _mm512_set1_epi32(128 * x.low_sum[row + r]);
    const __m512 row_scale = _mm512_set1_ps(x.scale[row + r]);
    for (int n = 0; n < kTileVectors; ++n) {
      const int64_t begin = 16 * n;
      if (begin >= valid) break;
      const __mmask16 live = valid - begin >= 16 ? __mmask16(0xffff) : __mmask16((1u << (valid - begin)) - 1);
      const __m512 h = _mm512_cvtepi32_ps(_mm512_sub_epi32(high[r][n], high_offset));
      const __m512 l = _mm512_cvtepi32_ps(_mm512_sub_epi32(low[r][n], low_offset));
      const __m512 sum = _mm512_fmadd_ps(l, _mm512_set1_ps(1.0f / kLowSteps), h);
      const __m512 scale = _mm512_mul_ps(row_scale, _mm512_maskz_loadu_ps(live, w_scale + first + begin));
      _mm512_mask_storeu_ps(y + (row + r) * y_stride + first + begin, live, _mm512_mul_ps(sum, scale));
    }
  }
}

void rows_against_tile(const SplitRows& x, int64_t rows, const uint32_t* packed, int64_t quads, const float* w_scale,
                       int64_t first, int64_t valid, float* y, int64_t y_stride) {
  int64_t r = 0;
  for (; r + kTileRows <= rows; r += kTileRows)
    tile_product<kTileRows>(x, r, packed, quads, w_scale, first, valid, y, y_stride);
  switch (rows - r) {
    case 3: return tile_product<3>(x, r, packed, quads, w_scale, first, valid, y, y_stride);
    case 2: return tile_product<2>(x, r, packed, quads, w_scale, first, valid, y, y_stride);
    case 1: return tile_product<1>(x, r, packed, quads, w_scale, first, valid, y, y_stride);
    default: return;
  }
}

}  // namespace

bool int8_products_in_integers(int64_t in) {
  return in <= kMaxFeatures && cpu_isa() >= CpuIsa::avx512 && cpu_has_avx512_vnni();
}

at::Tensor int8_integer_product(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& row_scale) {
  const int64_t in = x.size(1), rows = x.size(0), out = weight.size(0);
  SplitRows split;
  if (!split_rows(x.data_ptr<float>(), rows, in, split)) return at::Tensor();
  const int64_t quads = split.padded / 4, tiles = (out + kTileChannels - 1) / kTileChannels;
  at::Tensor y = at::empty({rows, out}, at::kFloat);
  const int8_t* wp = weight.data_ptr<int8_t>();
  const float* sp = row_scale.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  team_parallel_for(tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> packed(size_t(quads * kTileChannels));
    for (int64_t t = begin; t < end; ++t) {
      const int64_t first = t * kTileChannels;
      pack_tile(wp, in, out, first, quads, packed.data());
      rows_against_tile(split, rows, packed.data(), quads, sp, first, std::min(kTileChannels, out - first), yp, out);
    }
  });
  return y;
}

}  // namespace plugformer
