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

bool cpu_has_avx2_fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

bool is_reduced(c10::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

// Up to this many rows, the weight-streaming kernel beats converting the weight for sgemm.
constexpr int64_t kStreamingRows = 8;

__attribute__((target("avx2,fma"))) inline __m256 load8(const c10::BFloat16* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

__attribute__((target("avx2,fma,f16c"))) inline __m256 load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

__attribute__((target("avx2,fma"))) inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// y[r, o] = sum_i x[r, i] * w[o, i] for up to 4 rows of x (fp32) against 2-byte weights,
// fp32 accumulation. Each weight row is read from memory once per call.
template <class W>
__attribute__((target("avx2,fma,f16c"))) void rows_times_weight(const float* x, int64_t rows, const W* w,
                                                                 int64_t in, int64_t out_begin, int64_t out_end,
                                                                 float* y, int64_t out_stride) {
  const int64_t vec_end = in / 16 * 16;
  for (int64_t o = out_begin; o < out_end; ++o) {
    const W* wr = w + o * in;
    for (int64_t r0 = 0; r0 < rows; r0 += 4) {
      const int64_t n = std::min<int64_t>(4, rows - r0);
      __m256 acc[4][2];
      for (int r = 0; r < 4; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
      for (int64_t i = 0; i < vec_end; i += 16) {
        const __m256 w0 = load8(wr + i), w1 = load8(wr + i + 8);
        for (int r = 0; r < n; ++r) {
          const float* xr = x + (r0 + r) * in + i;
          acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xr), w0, acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 8), w1, acc[r][1]);
        }
      }
      for (int r = 0; r < n; ++r) {
        float sum = horizontal_sum(_mm256_add_ps(acc[r][0], acc[r][1]));
        const float* xr = x + (r0 + r) * in;
        for (int64_t i = vec_end; i < in; ++i) sum += xr[i] * float(wr[i]);
        y[(r0 + r) * out_stride + o] = sum;
      }
    }
  }
}

// The same product for a weight stored [in, out] (GPT-2's Conv1D): y[r, o] = sum_i x[r, i] * w[i, o],
// for the output columns [out_begin, out_end), accumulated in y (which starts at zero).
template <class W>
__attribute__((target("avx2,fma,f16c"))) void rows_times_weight_in_out(const float* x, int64_t rows, const W* w,
                                                                        int64_t in, int64_t out, int64_t out_begin,
                                                                        int64_t out_end, float* y) {
  const int64_t vec_end = out_begin + (out_end - out_begin) / 8 * 8;
  for (int64_t i = 0; i < in; ++i) {
    const W* wr = w + i * out;
    for (int64_t r = 0; r < rows; ++r) {
      const __m256 xi = _mm256_set1_ps(x[r * in + i]);
      float* yr = y + r * out;
      for (int64_t o = out_begin; o < vec_end; o += 8)
        _mm256_storeu_ps(yr + o, _mm256_fmadd_ps(xi, load8(wr + o), _mm256_loadu_ps(yr + o)));
      for (int64_t o = vec_end; o < out_end; ++o) yr[o] += x[r * in + i] * float(wr[o]);
    }
  }
}

// x [rows, in] (any floating type) times a 2-byte weight -> fp32 [rows, out]. The weight is
// [out, in] (Linear) or, with in_out, [in, out] (Conv1D).
at::Tensor streaming_linear(const at::Tensor& x2d, const at::Tensor& weight, bool in_out) {
  const at::Tensor x = x2d.to(at::kFloat).contiguous();
  const at::Tensor w = weight.contiguous();
  const int64_t rows = x.size(0), in = x.size(1), out = in_out ? w.size(1) : w.size(0);
  at::Tensor y = in_out ? at::zeros({rows, out}, at::kFloat) : at::empty({rows, out}, at::kFloat);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const bool bf16 = w.scalar_type() == at::kBFloat16;
  if (in_out) {
    // Blocks of 256 columns keep each thread's slice of y in L1 while the weight streams by.
    const int64_t blocks = (out + 255) / 256;
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      const int64_t ob = begin * 256, oe = std::min(out, end * 256);
      if (bf16) rows_times_weight_in_out(xp, rows, w.data_ptr<c10::BFloat16>(), in, out, ob, oe, yp);
      else rows_times_weight_in_out(xp, rows, w.data_ptr<c10::Half>(), in, out, ob, oe, yp);
    });
  } else {
    at::parallel_for(0, out, 64, [&](int64_t begin, int64_t end) {
      if (bf16) rows_times_weight(xp, rows, w.data_ptr<c10::BFloat16>(), in, begin, end, yp, out);
      else rows_times_weight(xp, rows, w.data_ptr<c10::Half>(), in, begin, end, yp, out);
    });
  }
  return y;
}

}  // namespace

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
    y = streaming_linear(x2d, weight, weight_in_out);
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
