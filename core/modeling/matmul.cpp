// Matrix products for the shared layers. libtorch 1.13 computes bf16 / fp16 products fast only
// where oneDNN finds native bf16 (AVX512-BF16, AMX); elsewhere it falls back to a scalar loop
// (~0.6 GFLOP/s on an AVX2 server, 200x slower than sgemm). On such CPUs reduced-precision
// products run in fp32 instead — the same arithmetic PyTorch does (fp32 accumulation, one
// rounding of the result) — and decode-sized products read the 2-byte weights directly in an
// AVX2 kernel, so they keep the halved memory traffic that makes bf16 decode fast.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cpuid.h>

#include <type_traits>

#include "matmul.h"

namespace plugformer {

namespace {

bool cpu_has_native_bf16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool amx_bf16 = edx & (1u << 22);
  unsigned eax1 = 0, ebx1 = 0, ecx1 = 0, edx1 = 0;
  const bool avx512_bf16 = __get_cpuid_count(7, 1, &eax1, &ebx1, &ecx1, &edx1) && (eax1 & (1u << 5));
  return amx_bf16 || avx512_bf16;
}

bool is_reduced(c10::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

// Up to this many rows, the weight-streaming kernel beats converting the weight for sgemm.
constexpr int64_t kStreamingRows = 8;

// Sixteen 2-byte weights as two vectors of fp32. For bf16 the widening is an interleave with
// zeros (an fp32 whose low half is zero), which yields elements in the order of kBf16Order, so
// the other operand is permuted once per call to match instead of shuffling every load.
constexpr int kBf16Order[16] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15};

__attribute__((target("avx2,fma"))) inline void load16(const c10::BFloat16* p, __m256& lo, __m256& hi) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i zero = _mm256_setzero_si256();
  lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, raw));
  hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, raw));
}

__attribute__((target("avx2,fma,f16c"))) inline void load16(const c10::Half* p, __m256& lo, __m256& hi) {
  lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
}

template <class W>
constexpr bool kPermuted = std::is_same_v<W, c10::BFloat16>;

// Position within a 16-block of the element that load16 puts at lane j.
template <class W>
int lane_source(int j) {
  return kPermuted<W> ? kBf16Order[j] : j;
}

__attribute__((target("avx2,fma"))) inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// x [rows, n] in fp32 with every full 16-block in load16's lane order; the tail as it is.
template <class W>
at::Tensor in_lane_order(const at::Tensor& x) {
  at::Tensor out = x.to(at::kFloat).contiguous();
  if (!kPermuted<W>) return out;
  at::Tensor copy = out.clone();
  const int64_t rows = x.size(0), n = x.size(1), vec_end = n / 16 * 16;
  const float* src = copy.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < vec_end; b += 16)
      for (int j = 0; j < 16; ++j) dst[r * n + b + j] = src[r * n + b + lane_source<W>(j)];
  return out;
}

// y[r, o] = sum_i x[r, i] * w[o, i] for R rows of x (fp32, in lane order) against the 2-byte
// weight rows [out_begin, out_end) of w [out, in], fp32 accumulation. U blocks of 16 per step
// give 2U independent accumulators per row (FMA latency, not bandwidth, bounds one chain);
// the weight is prefetched 1 KB ahead.
template <int R, int U, class W>
__attribute__((target("avx2,fma,f16c"))) void dot_rows(const float* x, const W* w, int64_t in, int64_t out_begin,
                                                        int64_t out_end, float* y, int64_t y_stride) {
  constexpr int64_t step = 16 * U;
  const int64_t vec_end = in / step * step;
  for (int64_t o = out_begin; o < out_end; ++o) {
    const W* wr = w + o * in;
    __m256 acc[R][2 * U];
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < 2 * U; ++u) acc[r][u] = _mm256_setzero_ps();
    for (int64_t i = 0; i < vec_end; i += step) {
      _mm_prefetch(reinterpret_cast<const char*>(wr + i + 512), _MM_HINT_T0);
      __m256 wv[2 * U];
      for (int u = 0; u < U; ++u) load16(wr + i + 16 * u, wv[2 * u], wv[2 * u + 1]);
      for (int r = 0; r < R; ++r)
        for (int u = 0; u < 2 * U; ++u)
          acc[r][u] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * in + i + 8 * u), wv[u], acc[r][u]);
    }
    for (int64_t i = vec_end; i + 16 <= in; i += 16) {  // a last single block of 16
      __m256 lo, hi;
      load16(wr + i, lo, hi);
      for (int r = 0; r < R; ++r) {
        acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * in + i), lo, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * in + i + 8), hi, acc[r][1]);
      }
    }
    for (int r = 0; r < R; ++r) {
      __m256 total = acc[r][0];
      for (int u = 1; u < 2 * U; ++u) total = _mm256_add_ps(total, acc[r][u]);
      float sum = horizontal_sum(total);
      for (int64_t i = in / 16 * 16; i < in; ++i) sum += x[r * in + i] * float(wr[i]);
      y[r * y_stride + o] = sum;
    }
  }
}

template <class W>
void dot_row_group(int64_t rows, const float* x, const W* w, int64_t in, int64_t ob, int64_t oe, float* y,
                   int64_t out) {
  switch (rows) {
    case 1: return dot_rows<1, 2>(x, w, in, ob, oe, y, out);
    case 2: return dot_rows<2, 2>(x, w, in, ob, oe, y, out);
    case 3: return dot_rows<3, 1>(x, w, in, ob, oe, y, out);
    default: return dot_rows<4, 1>(x, w, in, ob, oe, y, out);
  }
}

// Adds x[r, i] * w[i, o] over i in [i_begin, i_end) to y[r, o] for the [in, out] layout
// (GPT-2's Conv1D): weight rows stream by contiguously, K at a time so each load and store of
// y (in lane order, kept in cache) serves K rows.
template <int R, int K, class W>
__attribute__((target("avx2,fma,f16c"))) void accumulate_rows(const float* x, const W* w, int64_t in, int64_t out,
                                                               int64_t i_begin, int64_t i_end, float* y) {
  const int64_t vec_end = out / 16 * 16;
  int64_t i = i_begin;
  for (; i + K <= i_end; i += K) {
    __m256 xi[R][K];
    for (int r = 0; r < R; ++r)
      for (int k = 0; k < K; ++k) xi[r][k] = _mm256_set1_ps(x[r * in + i + k]);
    for (int64_t o = 0; o < vec_end; o += 16) {
      __m256 lo[K], hi[K];
      for (int k = 0; k < K; ++k) load16(w + (i + k) * out + o, lo[k], hi[k]);
      for (int r = 0; r < R; ++r) {
        float* yr = y + r * out + o;
        __m256 a = _mm256_loadu_ps(yr), b = _mm256_loadu_ps(yr + 8);
        for (int k = 0; k < K; ++k) {
          a = _mm256_fmadd_ps(xi[r][k], lo[k], a);
          b = _mm256_fmadd_ps(xi[r][k], hi[k], b);
        }
        _mm256_storeu_ps(yr, a);
        _mm256_storeu_ps(yr + 8, b);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int k = 0; k < K; ++k)
        for (int64_t o = vec_end; o < out; ++o) y[r * out + o] += x[r * in + i + k] * float(w[(i + k) * out + o]);
  }
  if (i < i_end) accumulate_rows<R, 1>(x, w, in, out, i, i_end, y);
}

template <class W>
void accumulate_row_group(int64_t rows, const float* x, const W* w, int64_t in, int64_t out, int64_t ib, int64_t ie,
                          float* y) {
  switch (rows) {
    case 1: return accumulate_rows<1, 4>(x, w, in, out, ib, ie, y);
    case 2: return accumulate_rows<2, 2>(x, w, in, out, ib, ie, y);
    case 3: return accumulate_rows<3, 2>(x, w, in, out, ib, ie, y);
    default: return accumulate_rows<4, 2>(x, w, in, out, ib, ie, y);
  }
}

// x [rows, in] (any floating type) times a 2-byte weight -> fp32 [rows, out]. The weight is
// [out, in] (Linear) or, with in_out, [in, out] (Conv1D).
template <class W>
at::Tensor streaming_linear(const at::Tensor& x2d, const at::Tensor& weight, bool in_out) {
  const at::Tensor w = weight.contiguous();
  const W* wp = w.data_ptr<W>();
  const int64_t rows = x2d.size(0), in = x2d.size(1), out = in_out ? w.size(1) : w.size(0);
  if (!in_out) {
    const at::Tensor x = in_lane_order<W>(x2d);
    at::Tensor y = at::empty({rows, out}, at::kFloat);
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    at::parallel_for(0, out, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r0 = 0; r0 < rows; r0 += 4)
        dot_row_group(std::min<int64_t>(4, rows - r0), xp + r0 * in, wp, in, begin, end, yp + r0 * out, out);
    });
    return y;
  }
  // [in, out]: each thread takes a contiguous range of weight rows and sums into its own
  // partial result (in lane order); the partials are added and put back in column order.
  const at::Tensor x = x2d.to(at::kFloat).contiguous();
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), in / 64));
  at::Tensor partial = at::zeros({parts, rows, out}, at::kFloat);
  const float* xp = x.data_ptr<float>();
  float* pp = partial.data_ptr<float>();
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part) {
      const int64_t ib = in * part / parts, ie = in * (part + 1) / parts;
      for (int64_t r0 = 0; r0 < rows; r0 += 4)
        accumulate_row_group(std::min<int64_t>(4, rows - r0), xp + r0 * in, wp, in, out, ib, ie,
                             pp + part * rows * out + r0 * out);
    }
  });
  at::Tensor y = partial.sum(0);
  if (!kPermuted<W>) return y;
  at::Tensor ordered = y.clone();
  const float* src = y.data_ptr<float>();
  float* dst = ordered.data_ptr<float>();
  const int64_t vec_end = out / 16 * 16;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < vec_end; b += 16)
      for (int j = 0; j < 16; ++j) dst[r * out + b + lane_source<W>(j)] = src[r * out + b + j];
  return ordered;
}

}  // namespace

bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

bool native_reduced_precision_matmul() {
  static const bool native = cpu_has_native_bf16();
  return native;
}

at::Tensor reduced_precision_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                    bool weight_in_out) {
  const auto dtype = x.scalar_type();
  const int64_t in = weight.size(weight_in_out ? 0 : 1), out = weight.size(weight_in_out ? 1 : 0);
  const int64_t rows = x.numel() / in;
  const bool grad = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() ||
                                                   (bias.defined() && bias.requires_grad()));
  at::Tensor y;
  const at::Tensor x2d = x.reshape({rows, in});
  if (!grad && rows <= kStreamingRows && cpu_has_avx2_fma()) {
    y = weight.scalar_type() == at::kBFloat16 ? streaming_linear<c10::BFloat16>(x2d, weight, weight_in_out)
                                              : streaming_linear<c10::Half>(x2d, weight, weight_in_out);
    if (bias.defined()) y.add_(bias);
  } else {
    const at::Tensor w = weight.to(at::kFloat);
    y = weight_in_out ? at::matmul(x2d.to(at::kFloat), w) : at::matmul(x2d.to(at::kFloat), w.t());
    if (bias.defined()) y = y + bias.to(at::kFloat);
  }
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  return y.to(dtype).view(sizes);
}

at::Tensor matmul_any_precision(const at::Tensor& a, const at::Tensor& b) {
  if (!is_reduced(a.scalar_type()) || native_reduced_precision_matmul()) return at::matmul(a, b);
  return at::matmul(a.to(at::kFloat), b.to(at::kFloat)).to(a.scalar_type());
}

bool use_reduced_precision_fallback(const at::Tensor& x, const at::Tensor& weight) {
  return is_reduced(weight.scalar_type()) && x.scalar_type() == weight.scalar_type() &&
         !native_reduced_precision_matmul();
}

}  // namespace plugformer
