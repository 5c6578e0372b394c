// Matrix products for the shared layers. libtorch 1.13 computes bf16 products fast only where
// oneDNN finds native bf16 (AVX512-BF16, AMX) and the product is large; elsewhere it falls back to
// a scalar loop (~0.6 GFLOP/s on an AVX2 server, 200x slower than sgemm). It has no fp16 product.
// Reduced-precision products that would reach those paths run in fp32 instead — the same arithmetic PyTorch does (fp32
// accumulation, one rounding of the result) — and decode-sized products read the 2-byte weights directly in a
// streaming kernel, so they keep the halved memory traffic that makes bf16 decode fast. The
// streaming kernels exist for AVX2, AVX-512 and AVX512-BF16 and are chosen per call from
// cpu_isa() (runtime.h): the CPU's level, or a lower one PLUGFORMER_CPU_ISA caps it at.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <oneapi/dnnl/dnnl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <type_traits>
#include <unordered_map>

#include "matmul.h"
#include "fp32.h"
#include "simd.h"
#include "worker_team.h"
#include "plugformer/error.h"
#include "plugformer/runtime.h"

namespace plugformer {

namespace {

bool is_reduced(c10::ScalarType t) { return t == at::kBFloat16 || t == at::kHalf; }

// Up to this many rows, streaming the weight through an AVX2 kernel beats BLAS: OpenBLAS's sgemm
// reaches a fraction of its peak on short inputs (one row: a slow path; 16-24 rows of bert-base
// shapes 37-41 GFLOP/s against the kernel's 67-71, on par at 32), and 2-byte / int8 weights would
// first be converted for it. An fp32 weight needs no conversion, so beyond decode (one group of
// rows) it streams only where that pays: [out, in] weights of kStreamingMinWeightFp32 values or
// more. Smaller ones sit in L1, where sgemm is as fast or faster (9-32 rows, kernel speed-up over
// sgemm: 4-32 KB weights 0.6-1.05x, 64 KB 1.2-1.9x, 256 KB - 16 MB 1.1-3.9x); the [in, out] kernel
// loses to sgemm at 16 rows even on GPT-2's 768 x 3072 (0.81x), so Conv1D weights stay at 8 rows.
constexpr int64_t kStreamingRows = 32, kStreamingMinWeightFp32 = 128 * 128;

}  // namespace

// fp16: always, libtorch 1.13 has no fp16 product on the CPU. bf16: except on the native route for
// [out, in] weights beyond the streaming rows, where oneDNN's bf16 products pay (a bf16 linear of
// 512 rows at 425 GFLOP/s against sgemm's 190 on a Zen 4). Up to 32 rows the streaming kernel
// stays, as libtorch's bf16 products of few rows reached a scalar loop there (bert-base 1x16 at 3
// GFLOP/s). GPT-2's [in, out] weights stay in fp32 arithmetic: where oneDNN declines a product
// libtorch's fallback for that layout rounds every partial sum to bf16. On AMX, linear_product
// sends inference products of either layout to oneDNN's tiles before asking this (GPT-2 bf16
// prefill of 512 tokens on an Intel Xeon: 1091 -> 2462 tokens/s, eager 1419-1488).
bool products_in_fp32(c10::ScalarType type, int64_t rows, bool weight_in_out) {
  if (type == at::kHalf) return true;
  if (type != at::kBFloat16) return false;
  return weight_in_out || rows <= kStreamingRows || effective_bf16_route() != Bf16Route::native;
}

namespace {

// Rows per call of the [out, in] kernel (a decode step of up to 8 sequences); every weight type
// and layout streams at least this many.
constexpr int64_t kRowGroup = 8;
// Inputs longer than one group of rows (8; 4 for [in, out]) walk the weight in tiles of this many
// rows ([out, in]; a quarter for the wider [in, out] rows), each used by every group while it
// sits in L2 instead of read from DRAM once per group.
constexpr int64_t kWeightTileRows = 64;

// The widening kernels for AVX2 (8 floats per register) and AVX-512 (16; its 32 registers leave
// room for every row kernel's accumulators).
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
struct Vec {
  using Reg = __m256;
  static constexpr int64_t kWidth = 8;
  static constexpr int kBlockRows = 4;  // rows of x per dot_block (its accumulators fit 16 registers)
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg set1(float v) { return _mm256_set1_ps(v); }
  static Reg loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void storeu(float* p, Reg v) { _mm256_storeu_ps(p, v); }
  template <class W>
  static Reg load(const W* p) { return simd::load8(p); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static float sum(Reg v) { return simd::horizontal_sum(v); }
};
#include "widening_kernels.inc"
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
namespace avx512 {
struct Vec {
  using Reg = __m512;
  static constexpr int64_t kWidth = 16;
  static constexpr int kBlockRows = 8;  // 32 registers: a decode step of 8 sequences in one block
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg set1(float v) { return _mm512_set1_ps(v); }
  static Reg loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void storeu(float* p, Reg v) { _mm512_storeu_ps(p, v); }
  template <class W>
  static Reg load(const W* p) { return simd::load16(p); }
  static Reg fmadd(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static float sum(Reg v) { return _mm512_reduce_add_ps(v); }
};
#include "widening_kernels.inc"
}  // namespace avx512
#pragma GCC pop_options

// bf16 rows of x against bf16 weight rows, multiplied as bf16 pairs by vdpbf16ps: the products
// are exact in fp32 and accumulated in fp32 (as the widening kernels), 32 values per instruction
// and no conversion. The tail is read with masked loads (zeros add nothing).
template <int R, int O, int V>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) inline void dot_block_bf16_pairs(
    const c10::BFloat16* x, const c10::BFloat16* const* wr, const int64_t* row, int64_t in, bool prefetch, float* y,
    int64_t y_stride) {
  constexpr int64_t step = 32 * V;
  const int64_t vec_end = in / step * step;
  __m512 acc[R][O][V];
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < O; ++k)
      for (int v = 0; v < V; ++v) acc[r][k][v] = _mm512_setzero_ps();
  for (int64_t i = 0; i < vec_end; i += step) {
    // 2 KB ahead: a byte of bf16 weights holds twice the values of fp32 (1 KB ahead: 4-24% slower
    // at 4 and 8 rows on a Zen 5). Every line of the step, at every row count: on an Intel Xeon
    // one row read 23-24 GB/s without, 28-30 with (the hardware prefetcher alone falls behind).
    if (prefetch)
      for (int k = 0; k < O; ++k)
        for (int v = 0; v < V; ++v) _mm_prefetch(reinterpret_cast<const char*>(wr[k] + i + 32 * v) + 2048, _MM_HINT_T0);
    for (int v = 0; v < V; ++v) {  // the order of dot_block (widening_kernels.inc), for the same reasons
      __m512bh wv[O];
      for (int k = 0; k < O; ++k) wv[k] = (__m512bh)_mm512_loadu_si512(wr[k] + i + 32 * v);
      for (int r = 0; r < R; ++r) {
        __m512bh xv = (__m512bh)_mm512_loadu_si512(x + r * in + i + 32 * v);
        asm("" : "+v"(xv));
        for (int k = 0; k < O; ++k) acc[r][k][v] = _mm512_dpbf16_ps(acc[r][k][v], xv, wv[k]);
      }
    }
  }
  for (int64_t t = vec_end; t < in; t += 32) {
    const __mmask32 live = in - t >= 32 ? ~__mmask32(0) : __mmask32((1u << (in - t)) - 1);
    for (int k = 0; k < O; ++k) {
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(live, wr[k] + t);
      for (int r = 0; r < R; ++r)
        acc[r][k][0] = _mm512_dpbf16_ps(acc[r][k][0], (__m512bh)_mm512_maskz_loadu_epi16(live, x + r * in + t), wv);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < O; ++k) {
      __m512 total = acc[r][k][0];
      for (int v = 1; v < V; ++v) total = _mm512_add_ps(total, acc[r][k][v]);
      y[r * y_stride + row[k]] = _mm512_reduce_add_ps(total);
    }
}

// dot_block for R rows of x (up to 8) against `count` weight rows from each of the O starts. The
// O starts are far apart: O long sequential streams per core keep more prefetches in flight than
// one, which reads DRAM faster here than a single stream or O adjacent rows (one core, bf16, one
// row: 2 streams 22.5 GB/s, 3 streams 27.5). Rows beyond the kernels' block (K::kBlockRows) are a
// second block over the same weight rows, read again from L1. Each row's sum depends on V only,
// not on its block or on which stream reads it.
template <class K, int R, int O, int V, class X, class W>
void dot_rows(const X* x, const W* w, const float* scale, int64_t in, const int64_t* start, int64_t count, float* y,
              int64_t y_stride) {
  constexpr int first = R < K::kBlockRows ? R : K::kBlockRows;
  for (int64_t j = 0; j < count; ++j) {
    const W* wr[O];
    int64_t row[O];
    for (int k = 0; k < O; ++k) {
      row[k] = start[k] + j;
      wr[k] = w + row[k] * in;
    }
    K::template dot<first, O, V>(x, wr, row, scale, in, R >= K::kPrefetchFromRows, y, y_stride);
    if constexpr (R > first)
      K::template dot<R - first, O, V>(x + first * in, wr, row, scale, in, false, y + first * y_stride, y_stride);
  }
}

// count[k] rows from each of O far-apart starts: side by side while all have rows, then each
// one's rest alone.
template <class K, int R, int O, int V, class X, class W>
void dot_streams(const X* x, const W* w, const float* scale, int64_t in, const int64_t* start, const int64_t* count,
                 float* y, int64_t y_stride) {
  const int64_t all = *std::min_element(count, count + O);
  dot_rows<K, R, O, V>(x, w, scale, in, start, all, y, y_stride);
  for (int k = 0; k < O; ++k) {
    const int64_t rest = start[k] + all;
    dot_rows<K, R, 1, V>(x, w, scale, in, &rest, count[k] - all, y, y_stride);
  }
}

// The weight rows [ob, oe) as O far-apart streams.
template <class K, int R, int O, int V, class X, class W>
void dot_range(const X* x, const W* w, const float* scale, int64_t in, int64_t ob, int64_t oe, float* y,
               int64_t y_stride) {
  int64_t start[O], count[O];
  for (int k = 0; k < O; ++k) {
    start[k] = ob + (oe - ob) * k / O;
    count[k] = ob + (oe - ob) * (k + 1) / O - start[k];
  }
  dot_streams<K, R, O, V>(x, w, scale, in, start, count, y, y_stride);
}

// Calls fn(R, O, V) (std::integral_constant) for up to 8 rows of x: streams and vectors per step
// for each row count, the fastest measured on one core (a scratch benchmark of the bf16 kernel,
// then `generation_bench linear`): the accumulators (R * O * V, up to 4 rows per block) cover
// the FMA latency and leave registers for a weight vector per stream and a row of x.
template <class Fn>
void with_row_kernel(int64_t rows, Fn&& fn) {
  using std::integral_constant;
  using I = int;
  switch (rows) {
    case 1: return fn(integral_constant<I, 1>(), integral_constant<I, 4>(), integral_constant<I, 2>());
    case 2: return fn(integral_constant<I, 2>(), integral_constant<I, 3>(), integral_constant<I, 2>());
    case 3: return fn(integral_constant<I, 3>(), integral_constant<I, 3>(), integral_constant<I, 1>());
    case 4: return fn(integral_constant<I, 4>(), integral_constant<I, 3>(), integral_constant<I, 1>());
    case 5: return fn(integral_constant<I, 5>(), integral_constant<I, 3>(), integral_constant<I, 1>());
    case 6: return fn(integral_constant<I, 6>(), integral_constant<I, 3>(), integral_constant<I, 1>());
    case 7: return fn(integral_constant<I, 7>(), integral_constant<I, 3>(), integral_constant<I, 1>());
    default: return fn(integral_constant<I, 8>(), integral_constant<I, 3>(), integral_constant<I, 1>());
  }
}

constexpr int64_t kStreamChunkRows = 16;

// A decode step runs the same products in the same order every step: the product that followed
// each weight last time is announced to the team (team_read_ahead) once that weight's product is
// done, so the other threads fetch the beginnings of their streams of it while main runs the ops
// in between alone. bf16 Llama decode, 512-token context, Intel Xeon: 65-71% -> 72-76% of the
// bandwidth bound.
class ProductOrder {
 public:
  // Before a product: what was announced is being read by it now.
  void starting() const { team_read_ahead({}, 0); }
  // After it: learn it as its predecessor's successor, announce its own.
  void ran(const RowStreams& product) {
    if (successor_.size() > 4096) successor_.clear();  // weights of models long gone
    if (previous_) successor_[previous_] = product;
    previous_ = product.data;
    if (const auto next = successor_.find(product.data); next != successor_.end())
      team_read_ahead(next->second, read_ahead_bytes());
  }

 private:
  // Half the L2 cache of a core: the rows wait there for their product (1 MB on the Intel Xeon,
  // where 2 MB measured no better).
  static int64_t read_ahead_bytes() {
    static const int64_t bytes = std::max<int64_t>(::sysconf(_SC_LEVEL2_CACHE_SIZE), 512 * 1024) / 2;
    return bytes;
  }

  std::unordered_map<const void*, RowStreams> successor_;
  const void* previous_ = nullptr;
};

thread_local ProductOrder product_order;

// Decode (one group of rows): `units` (weight rows, or tile steps) cut into O far-apart streams
// per thread; every thread starts on its own and reads them in chunks of `chunk` units, calling
// run(start[O], count[O]) for each set; one that runs out takes chunks from the streams of the
// others, so a core slowed down by another process on the machine no longer holds up the whole
// product. around(work) runs each thread's share (a kernel's per-thread setup). Returns the
// threads it used (at most one per min_units).
template <int O, class Run, class Around>
int64_t shared_streams(int64_t units, int64_t min_units, int64_t chunk, Run&& run, Around&& around) {
  struct alignas(64) Stream {
    std::atomic<int64_t> next;
    int64_t end;
  };
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), units / min_units));
  const int64_t streams = O * threads;
  std::unique_ptr<Stream[]> stream(new Stream[size_t(streams)]);
  for (int64_t i = 0; i < streams; ++i) {
    stream[i].next.store(units * i / streams, std::memory_order_relaxed);
    stream[i].end = units * (i + 1) / streams;
  }
  auto has_rows = [&](int64_t i) { return stream[i].next.load(std::memory_order_relaxed) < stream[i].end; };
  team_parallel_for(threads, 1, [&](int64_t begin, int64_t end) {
    around([&] {
      for (int64_t t = begin; t < end; ++t) {
        int64_t mine[O];  // the streams this thread reads side by side: its own, then others' in turn
        for (int k = 0; k < O; ++k) mine[k] = O * t + k;
        while (true) {
          int64_t start[O], count[O];
          bool any = false;
          for (int k = 0; k < O; ++k) {
            if (!has_rows(mine[k]))
              for (int64_t d = 0; d < streams; ++d) {
                const int64_t i = (O * t + d) % streams;
                if (has_rows(i) && std::find(mine, mine + O, i) == mine + O) {
                  mine[k] = i;
                  break;
                }
              }
            start[k] = stream[mine[k]].next.fetch_add(chunk, std::memory_order_relaxed);
            count[k] = std::clamp<int64_t>(stream[mine[k]].end - start[k], 0, chunk);
            any = any || count[k] > 0;
          }
          if (!any) break;
          run(start, count);
        }
      }
    });
  });
  return threads;
}

template <class K, int R, int O, int V, class X, class W>
void dot_rows_shared(const X* x, const W* w, const float* scale, int64_t in, int64_t out, float* y,
                     int64_t y_stride) {
  product_order.starting();
  const int64_t threads = shared_streams<O>(
      out, 64, kStreamChunkRows,
      [&](const int64_t* start, const int64_t* count) { dot_streams<K, R, O, V>(x, w, scale, in, start, count, y, y_stride); },
      [](auto&& work) { work(); });
  product_order.ran({w, out, in * int64_t(sizeof(W)), threads, O});
}

// Up to 4 rows of x added into y over the weight rows [ib, ie) by `accumulate` (one of the
// accumulate_rows kernels, called as accumulate(integral_constant R, integral_constant K)).
template <class Accumulate>
void accumulate_row_group(int64_t rows, Accumulate&& accumulate) {
  using std::integral_constant;
  switch (rows) {
    case 1: return accumulate(integral_constant<int, 1>(), integral_constant<int, 4>());
    case 2: return accumulate(integral_constant<int, 2>(), integral_constant<int, 4>());
    case 3: return accumulate(integral_constant<int, 3>(), integral_constant<int, 2>());
    default: return accumulate(integral_constant<int, 4>(), integral_constant<int, 2>());
  }
}

// The kernels of each instruction set and the type of x they read: fp32 (avx2::Kernels and
// avx512::Kernels widen the weight) or, for bf16 [out, in] weights on AVX512-BF16, bf16 (no
// [in, out] kernel: pairs run along `in`).
struct Bf16PairKernels {
  using Input = c10::BFloat16;
  static constexpr int kBlockRows = 8;
  static constexpr int kPrefetchFromRows = 1;  // at every row count (dot_block_bf16_pairs)
  template <int R, int O, int V>
  static void dot(const c10::BFloat16* x, const c10::BFloat16* const* wr, const int64_t* row, const float*, int64_t in,
                  bool prefetch, float* y, int64_t y_stride) {
    dot_block_bf16_pairs<R, O, V>(x, wr, row, in, prefetch, y, y_stride);
  }
};

// bf16 rows of x (up to 32) against a bf16 [out, in] weight on AMX tiles, for decode. On Intel's
// AMX Xeons vdpbf16ps runs about one per two cycles (~80 GFLOP/s a core), which held the
// bf16-pair kernel to 17-20 GB/s at 8 rows; a tile product does 16 weight rows x 32 inputs x 16
// rows of x at once. The weight is the A operand as it lies in memory: its rows form 16 lanes of
// `lane` rows, and a tile takes one row of each lane (16 sequential streams, which the prefetchers
// follow better than 16 adjacent rows: 1 GB read by 2 threads, 1 / 8 rows of x, 31-32 / 28-30
// GB/s against 26-27 / 24-29). x is the B operand, packed once per product. Each column of a tile
// product is summed alone, in the same order at any row count: a row's result does not depend on
// the rows decoded with it. Needs an even `in` (pairs); the remainder rows (out % 16) are one
// tile of fewer rows.
namespace amx_bf16 {
constexpr int64_t kTileRows = 16, kInputs = 32;
constexpr int64_t kMaxRows = 2 * kTileRows;  // x's rows in the two column groups of a product

// x as B tiles: for each group of up to 16 rows of x, every 32 inputs (then the tail of `in`)
// as rows of pairs, row p holding inputs 2p and 2p + 1 of each row of x. One row of x is its own
// packing.
struct PackedRows {
  std::vector<uint32_t> pairs;
  int64_t groups = 0, cols[2] = {}, full = 0, tail = 0;  // full 32-input chunks, then tail inputs
  const uint32_t* group[2] = {};
};

PackedRows pack(const c10::BFloat16* x, int64_t rows, int64_t in) {
  PackedRows p;
  p.groups = (rows + kTileRows - 1) / kTileRows;
  p.full = in / kInputs, p.tail = in % kInputs;
  const uint32_t* x_pairs = reinterpret_cast<const uint32_t*>(x);
  const int64_t pairs = in / 2;
  if (rows == 1) {
    p.cols[0] = 1, p.group[0] = x_pairs;
    return p;
  }
  p.pairs.resize(size_t(rows * pairs));
  for (int64_t g = 0; g < p.groups; ++g) {
    const int64_t cols = p.cols[g] = std::min(kTileRows, rows - g * kTileRows);
    uint32_t* dst = p.pairs.data() + g * kTileRows * pairs;
    p.group[g] = dst;
    for (int64_t n = 0; n < cols; ++n)
      for (int64_t pair = 0; pair < pairs; ++pair) dst[pair * cols + n] = x_pairs[(g * kTileRows + n) * pairs + pair];
  }
  return p;
}

__attribute__((target("amx-tile,amx-bf16"))) void configure(const PackedRows& p, int64_t a_rows) {
  simd::TileConfig c;
  for (int64_t g = 0; g < p.groups; ++g) {
    c.rows[g] = uint8_t(a_rows), c.bytes_per_row[g] = uint16_t(4 * p.cols[g]);  // tiles 0, 1: the sums
    c.rows[4 + g] = kInputs / 2, c.bytes_per_row[4 + g] = uint16_t(4 * p.cols[g]);  // 4, 5: x's chunk
    if (p.tail) c.rows[6 + g] = uint8_t(p.tail / 2), c.bytes_per_row[6 + g] = uint16_t(4 * p.cols[g]);  // 6, 7: its tail
  }
  c.rows[2] = uint8_t(a_rows), c.bytes_per_row[2] = 2 * kInputs;  // 2: the weight's chunk
  if (p.tail) c.rows[3] = uint8_t(a_rows), c.bytes_per_row[3] = uint16_t(2 * p.tail);  // 3: its tail
  simd::load_tile_config(c);
}

// The weight rows first + m * lane (m below the configured rows) against every row of x: sums
// [group][m][row of x in the group], 16 x 16 per group.
template <int G>
__attribute__((target("amx-tile,amx-bf16"))) void tile_step(const PackedRows& p, const c10::BFloat16* w, int64_t in,
                                                            int64_t first, int64_t lane, int64_t a_rows, float* sums) {
  const char* a = reinterpret_cast<const char*>(w + first * in);
  const int64_t stride = lane * in * 2;
  const int64_t b_chunk[2] = {kInputs / 2 * p.cols[0], kInputs / 2 * p.cols[1]};  // pairs
  _tile_zero(0);
  if constexpr (G > 1) _tile_zero(1);
  for (int64_t c = 0; c < p.full; ++c) {
    // 512 bytes ahead in each lane (from a row's end into the lane's next row): 28.6-29.7 GB/s at
    // 8 rows of x against 27.0-28.5 without, 27.4-29.8 at 2 KB.
    for (int64_t m = 0; m < a_rows; ++m) _mm_prefetch(a + m * stride + 2 * kInputs * c + 512, _MM_HINT_T0);
    _tile_loadd(2, a + 2 * kInputs * c, stride);
    _tile_loadd(4, p.group[0] + c * b_chunk[0], int(4 * p.cols[0]));
    _tile_dpbf16ps(0, 2, 4);
    if constexpr (G > 1) {
      _tile_loadd(5, p.group[1] + c * b_chunk[1], int(4 * p.cols[1]));
      _tile_dpbf16ps(1, 2, 5);
    }
  }
  if (p.tail) {
    _tile_loadd(3, a + 2 * kInputs * p.full, stride);
    _tile_loadd(6, p.group[0] + p.full * b_chunk[0], int(4 * p.cols[0]));
    _tile_dpbf16ps(0, 3, 6);
    if constexpr (G > 1) {
      _tile_loadd(7, p.group[1] + p.full * b_chunk[1], int(4 * p.cols[1]));
      _tile_dpbf16ps(1, 3, 7);
    }
  }
  _tile_stored(0, sums, int(4 * p.cols[0]));
  if constexpr (G > 1) _tile_stored(1, sums + kTileRows * kTileRows, int(4 * p.cols[1]));
}

__attribute__((target("amx-tile"))) void release_tiles() { _tile_release(); }

// Tile steps a thread takes at a time from a stream, and writes out together.
constexpr int64_t kChunkSteps = 8;

// The sums of `count` tile steps from `first` (tile_step's layout, step after step) into y [rows of
// x, out]: weight row first + m * lane + s. Adjacent steps are adjacent rows of every lane, so each
// row of x gets runs of `count` values (a step's 16 x 8 values written where they go were 128
// stores to scattered lines: 768 x 768 weights, 8 rows of x, 48 -> 39 us a product).
template <int G>
void write_steps(const PackedRows& p, const float* staged, int64_t count, int64_t first, int64_t lane, int64_t a_rows,
                 float* y, int64_t out) {
  constexpr int64_t kTile = kTileRows * kTileRows;
  for (int64_t g = 0; g < G; ++g)
    for (int64_t n = 0; n < p.cols[g]; ++n)
      for (int64_t m = 0; m < a_rows; ++m) {
        float* dst = y + (g * kTileRows + n) * out + first + m * lane;
        for (int64_t s = 0; s < count; ++s) dst[s] = staged[(s * G + g) * kTile + m * p.cols[g] + n];
      }
}

template <int G>
void product(const PackedRows& p, const c10::BFloat16* w, int64_t in, int64_t out, float* y) {
  const int64_t lane = out / kTileRows, rest = out % kTileRows;
  constexpr int64_t kTile = kTileRows * kTileRows;
  if (lane > 0) {
    product_order.starting();
    const int64_t threads = shared_streams<1>(
        lane, 64 / kTileRows, kChunkSteps,
        [&](const int64_t* start, const int64_t* count) {
          alignas(64) float staged[kChunkSteps][G][kTile];
          for (int64_t s = 0; s < count[0]; ++s) tile_step<G>(p, w, in, start[0] + s, lane, kTileRows, staged[s][0]);
          write_steps<G>(p, staged[0][0], count[0], start[0], lane, kTileRows, y, out);
        },
        [&](auto&& work) {
          configure(p, kTileRows);
          work();
          release_tiles();  // hands the tile state back: context switches save less
        });
    product_order.ran({w, kTileRows * lane, in * 2, threads, 1, kTileRows});
  }
  if (rest > 0) {
    alignas(64) float sums[G][kTile];
    configure(p, rest);
    tile_step<G>(p, w, in, kTileRows * lane, 1, rest, sums[0]);
    release_tiles();
    write_steps<G>(p, sums[0], 1, kTileRows * lane, 1, rest, y, out);
  }
}

// x [rows, in] (rows <= kMaxRows, even in) times w [out, in] into y [rows, out], all contiguous.
void product(const c10::BFloat16* x, int64_t rows, int64_t in, const c10::BFloat16* w, int64_t out, float* y) {
  const PackedRows p = pack(x, rows, in);
  p.groups == 1 ? product<1>(p, w, in, out, y) : product<2>(p, w, in, out, y);
}
}  // namespace amx_bf16

// x [rows, in] (K::Input, contiguous) times an [out, in] weight (int8 ones with their per-row
// scale) into y [rows, out] (fp32).
template <class K, class W>
void stream_out_in(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale, float* yp) {
  using X = typename K::Input;
  const X* xp = x.data_ptr<X>();
  const W* wp = w.data_ptr<W>();
  const float* sp = scale.defined() ? scale.data_ptr<float>() : nullptr;
  const int64_t in = x.size(-1), rows = x.numel() / in, out = w.size(0);
  if (rows <= kRowGroup)
    return with_row_kernel(rows, [&](auto r, auto o, auto v) { dot_rows_shared<K, r, o, v>(xp, wp, sp, in, out, yp, out); });
  team_parallel_for(out, 64, [&](int64_t begin, int64_t end) {
    for (int64_t ob = begin; ob < end; ob += kWeightTileRows)
      for (int64_t r0 = 0; r0 < rows; r0 += kRowGroup)
        with_row_kernel(std::min<int64_t>(kRowGroup, rows - r0), [&](auto r, auto o, auto v) {
          dot_range<K, r, o, v>(xp + r0 * in, wp, sp, in, ob, std::min(end, ob + kWeightTileRows), yp + r0 * out, out);
        });
  });
}

// x [rows, in] (fp32, contiguous) times an [in, out] weight (Conv1D): each thread takes a
// contiguous range of weight rows and sums into its own partial result; the partials are added
// at the end.
template <class K, class W>
at::Tensor stream_in_out(const at::Tensor& x, const at::Tensor& w) {
  const float* xp = x.data_ptr<float>();
  const W* wp = w.data_ptr<W>();
  const int64_t in = x.size(-1), rows = x.numel() / in, out = w.size(1);
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), in / 64));
  at::Tensor partial = at::zeros({parts, rows, out}, at::kFloat);
  float* pp = partial.data_ptr<float>();
  product_order.starting();
  team_parallel_for(parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part) {
      const int64_t ib = in * part / parts, ie = in * (part + 1) / parts;
      const int64_t tile = rows > 4 ? kWeightTileRows / 4 : ie - ib;  // [in, out] rows are wide: fewer per tile
      for (int64_t tb = ib; tb < ie; tb += tile)
        for (int64_t r0 = 0; r0 < rows; r0 += 4)
          accumulate_row_group(std::min<int64_t>(4, rows - r0), [&](auto r, auto k) {
            K::template accumulate<r, k>(xp + r0 * in, wp, in, out, tb, std::min(ie, tb + tile),
                                         pp + part * rows * out + r0 * out);
          });
    }
  });
  if (rows <= kRowGroup) product_order.ran({wp, in, out * int64_t(sizeof(W)), parts, rows <= 2 ? 4 : 2});  // accumulate_row_group's streams
  return parts == 1 ? partial[0] : partial.sum(0);
}

// x [..., in] (contiguous; bf16 for the bf16-pair kernels, else fp32) times a weight -> fp32
// [..., out] (out_sizes), by the kernels of the CPU's instruction set. The weight is [out, in]
// (Linear, and every int8 weight, with its per-row scale) or, with in_out, [in, out] (Conv1D).
template <class K>
at::Tensor streaming_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale, bool in_out,
                            at::IntArrayRef out_sizes) {
  at::Tensor y;
  if constexpr (std::is_same_v<typename K::Input, c10::BFloat16>) {
    y = at::empty(out_sizes, at::kFloat);
    stream_out_in<K, c10::BFloat16>(x, w, scale, y.data_ptr<float>());
  } else {
    simd::with_weight_type(w.scalar_type(), [&](auto zero) {
      using W = decltype(zero);
      if (in_out) {
        y = stream_in_out<K, W>(x, w).view(out_sizes);
      } else {
        y = at::empty(out_sizes, at::kFloat);
        stream_out_in<K, W>(x, w, scale, y.data_ptr<float>());
      }
    });
  }
  return y;
}

thread_local bool training_pass = false;

// fp32 products beyond the streaming kernels' rows, on AVX-512 CPUs: oneDNN's sgemm (the libdnnl
// libtorch itself loads) picks its AVX-512 kernels from cpuid, while Debian's OpenBLAS 0.3.21 runs
// its Haswell (AVX2) ones on an AMD Zen 4: 1.5-2.7x there (a Llama MLP's 512 x 768 x 2048: 308
// against 211 GFLOP/s; one attention head's 512 x 512 x 64: 380 against 138). AVX2 CPUs keep
// OpenBLAS, the only one measured there.
bool onednn_sgemm_applies(const at::Tensor& a, const at::Tensor& b) {
  return cpu_isa() >= CpuIsa::avx512 && a.dim() == 2 && b.dim() == 2 && a.scalar_type() == at::kFloat &&
         b.scalar_type() == at::kFloat && a.is_cpu() && b.is_cpu();
}

// A 2-D fp32 operand as row-major sgemm reads it: itself ('N') or its transpose ('T') with a
// leading dimension, copied when neither of its strides is 1.
struct GemmOperand {
  at::Tensor values;
  char trans;
  int64_t ld;
};
GemmOperand gemm_operand(const at::Tensor& t) {
  if (t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(1, t.size(1))) return {t, 'N', std::max<int64_t>(1, t.stride(0))};
  if (t.stride(0) == 1 && t.stride(1) >= std::max<int64_t>(1, t.size(0))) return {t, 'T', std::max<int64_t>(1, t.stride(1))};
  const at::Tensor copy = t.contiguous();
  return {copy, 'N', std::max<int64_t>(1, copy.size(1))};
}

// a [m, k] times b [k, n] (fp32) by oneDNN's sgemm, into a new contiguous [m, n].
at::Tensor onednn_mm(const at::Tensor& a, const at::Tensor& b) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  at::Tensor c = at::empty({m, n}, a.options());
  if (m == 0 || n == 0) return c;
  if (k == 0) return c.zero_();
  const GemmOperand left = gemm_operand(a), right = gemm_operand(b);
  const dnnl_status_t status =
      dnnl_sgemm(left.trans, right.trans, m, n, k, 1.0f, left.values.data_ptr<float>(), left.ld,
                 right.values.data_ptr<float>(), right.ld, 0.0f, c.data_ptr<float>(), std::max<int64_t>(1, n));
  if (status != dnnl_success)
    throw Error("oneDNN sgemm of [" + std::to_string(m) + ", " + std::to_string(k) + "] x [" + std::to_string(k) + ", " +
                std::to_string(n) + "] failed (dnnl_status_t " + std::to_string(int(status)) + ")");
  return c;
}

// a b in fp32 without autograd: oneDNN where it applies, else libtorch.
at::Tensor fp32_matmul(const at::Tensor& a, const at::Tensor& b) {
  return onednn_sgemm_applies(a, b) ? onednn_mm(a, b) : at::matmul(a, b);
}

// y = a b (+ bias), bf16, by one oneDNN matmul primitive: a [..., m, k], b [..., k, n], y [..., m, n]
// (2-4 dimensions, the leading ones equal, any strides; bias [n] contiguous or undefined). oneDNN
// reads strided operands where at::matmul first copies them and at::addmm first copies the bias
// into every row of y (bert-base at 8 x 128 tokens on the AMX Xeon: 144 bias copies, 16 of its 198
// ms; attention's head views, 12 ms). The same single rounding, the same bits. False (nothing
// written) where oneDNN declines.
bool onednn_bf16_matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias, const at::Tensor& y) {
  const int64_t dims = a.dim();
  if (dims < 2 || dims > 4 || b.dim() != dims || y.dim() != dims ||
      (bias.defined() && (bias.scalar_type() != at::kBFloat16 || bias.dim() != 1 || !bias.is_contiguous())))
    return false;
  static const dnnl_engine_t engine = [] {
    dnnl_engine_t e = nullptr;
    return dnnl_engine_create(&e, dnnl_cpu, 0) == dnnl_success ? e : nullptr;
  }();
  if (!engine) return false;
  auto desc = [dims](at::IntArrayRef sizes, at::IntArrayRef strides) {
    dnnl_memory_desc_t md;
    dnnl_dims_t d, s;
    for (int64_t i = 0; i < dims; ++i) d[i] = sizes[size_t(i)], s[i] = strides[size_t(i)];
    return dnnl_memory_desc_init_by_strides(&md, int(dims), d, dnnl_bf16, s) == dnnl_success ? md : dnnl_memory_desc_t{};
  };
  std::vector<int64_t> bias_sizes(size_t(dims), 1), bias_strides(size_t(dims), 0);
  bias_sizes.back() = y.size(-1), bias_strides.back() = 1;
  const dnnl_memory_desc_t src = desc(a.sizes(), a.strides()), weights = desc(b.sizes(), b.strides()),
                           bias_md = desc(bias_sizes, bias_strides), dst = desc(y.sizes(), y.strides());
  dnnl_matmul_desc_t op;
  dnnl_primitive_desc_t pd = nullptr;
  dnnl_primitive_t primitive = nullptr;
  dnnl_stream_t stream = nullptr;
  dnnl_memory_t memory[4] = {};
  bool done = dnnl_matmul_desc_init(&op, &src, &weights, bias.defined() ? &bias_md : nullptr, &dst) == dnnl_success &&
              dnnl_primitive_desc_create(&pd, &op, nullptr, engine, nullptr) == dnnl_success &&
              dnnl_primitive_create(&primitive, pd) == dnnl_success &&
              dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) == dnnl_success;
  const dnnl_memory_desc_t* mds[4] = {&src, &weights, &dst, &bias_md};
  void* data[4] = {a.data_ptr(), b.data_ptr(), y.data_ptr(), bias.defined() ? bias.data_ptr() : nullptr};
  const int kinds[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
  const int args_count = bias.defined() ? 4 : 3;
  dnnl_exec_arg_t args[4];
  for (int i = 0; i < args_count && done; ++i) {
    done = dnnl_memory_create(&memory[i], mds[i], engine, data[i]) == dnnl_success;
    args[i] = {kinds[i], memory[i]};
  }
  done = done && dnnl_primitive_execute(primitive, stream, args_count, args) == dnnl_success &&
         dnnl_stream_wait(stream) == dnnl_success;
  for (dnnl_memory_t m : memory)
    if (m) dnnl_memory_destroy(m);
  if (stream) dnnl_stream_destroy(stream);
  if (primitive) dnnl_primitive_destroy(primitive);
  if (pd) dnnl_primitive_desc_destroy(pd);
  return done;
}

// oneDNN 2.6's bf16 products on AMX tiles take their blocking from the row count, and many counts
// get a poor one (Intel Xeon with AMX, 2 threads, [rows, 768] x [768, 3072]: 496 rows 590 GFLOP/s,
// 682 rows 550, 976 rows 75, against 1790-1910 at 480 and 512; AVX512-BF16's kernels do not vary
// so). Multiples of 32 rows from 64 to 512 ran at 670-2100 on every Llama, BERT and Qwen shape
// measured, so products go to oneDNN in pieces of up to 512 rows, each a multiple of 32 (the last
// one zero-padded). x2d [rows, in] times w [in, out] (a transposed [out, in] weight or GPT-2's
// Conv1D one), in bf16, no autograd.
at::Tensor bf16_linear_on_amx(const at::Tensor& x2d, const at::Tensor& w, const at::Tensor& bias) {
  constexpr int64_t kPieceRows = 512, kRowStep = 32;
  const int64_t rows = x2d.size(0);
  const at::Tensor x = x2d.contiguous();
  at::Tensor y = at::empty({rows, w.size(1)}, x.options());
  for (int64_t first = 0; first < rows; first += kPieceRows) {
    const int64_t count = std::min(kPieceRows, rows - first), padded = (count + kRowStep - 1) / kRowStep * kRowStep;
    const at::Tensor piece = padded == count ? x.narrow(0, first, count) : at::constant_pad_nd(x.narrow(0, first, count), {0, 0, 0, padded - count});
    at::Tensor out = padded == count ? y.narrow(0, first, count) : at::empty({padded, y.size(1)}, y.options());
    if (!bias.defined())
      at::mm_out(out, piece, w);
    else if (!onednn_bf16_matmul(piece, w, bias, out))
      at::addmm_out(out, bias, piece, w);
    if (padded != count) y.narrow(0, first, count).copy_(out.narrow(0, 0, count));
  }
  return y;
}

}  // namespace

bool trains_through(std::initializer_list<at::Tensor> operands) {
  // The first pass of a checkpointed layer computes without autograd what its recomputation will
  // with it, where activations (attention's q, k, v) require grad: all of it counts as training.
  if (training_pass) return true;
  if (!at::GradMode::is_enabled()) return false;
  for (const auto& t : operands)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

bool inference_only() { return !at::GradMode::is_enabled() && !training_pass; }

at::Tensor in_row_chunks(const at::Tensor& x, int64_t width, const std::function<at::Tensor(const at::Tensor&)>& f) {
  constexpr int64_t kChunkBytes = 8 << 20;
  const int64_t rows = x.numel() / std::max<int64_t>(1, x.size(-1));
  // Whole pieces of the bf16 products on AMX (bf16_linear_on_amx): 512 rows, or a multiple of 64 below.
  const int64_t fit = kChunkBytes / (4 * std::max<int64_t>(1, width));
  const int64_t chunk = fit >= 512 ? fit / 512 * 512 : std::max<int64_t>(64, fit / 64 * 64);
  if (rows <= chunk || !inference_only()) return f(x);
  const at::Tensor flat = x.reshape({rows, x.size(-1)});
  std::vector<at::Tensor> parts;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) parts.push_back(f(flat.narrow(0, r0, std::min(chunk, rows - r0))));
  at::Tensor out = at::cat(parts);
  auto sizes = x.sizes().vec();
  sizes.back() = out.size(-1);
  return out.view(sizes);
}

TrainingPassGuard::TrainingPassGuard() : previous_(training_pass) { training_pass = true; }
TrainingPassGuard::~TrainingPassGuard() { training_pass = previous_; }

bool cpu_has_avx2_fma() { return cpu_isa() >= CpuIsa::avx2; }

at::Tensor linear_product(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                          const at::Tensor& row_scale, bool weight_in_out) {
  const bool quantized = weight.scalar_type() == at::kChar;
  const bool in_out = weight_in_out && !quantized;  // int8 weights are stored [out, in] in both layouts
  const int64_t in = weight.size(in_out ? 0 : 1), out = weight.size(in_out ? 1 : 0);
  if (x.dim() == 0 || x.size(-1) != in)
    throw InvalidInputError("linear layer: input of shape " + c10::str(x.sizes()) + " does not end in " + std::to_string(in) +
                            " features");
  if (quantized && (!row_scale.defined() || row_scale.numel() != out))
    throw Error("linear layer: int8 weight [" + std::to_string(out) + ", " + std::to_string(in) +
                "] without its per-row scales");
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  const int64_t rows = x.numel() / in;
  const bool grad = trains_through({x, weight, bias});
  const bool reduced = products_in_fp32(weight.scalar_type(), rows, in_out);
  const bool same_type = x.scalar_type() == weight.scalar_type();
  const bool fp32_streams_prompts = !in_out && weight.numel() >= kStreamingMinWeightFp32;
  const int64_t streaming_rows =
      weight.scalar_type() != at::kFloat || fp32_streams_prompts ? kStreamingRows : kRowGroup;
  // On AMX, bf16 [out, in] products of 2-32 rows (decode steps of several sequences, short
  // prompts) stream through amx_bf16's tiles, whose rows sum alike at any of those row counts; one
  // row keeps the bf16-pair kernel (1-5% faster there). Longer prompts go to oneDNN's tiles, which
  // reorder the weight at every call: 6.5-8.4 GB/s at 16-32 rows of the small Llama's shapes,
  // against 16-25 streamed (Intel Xeon).
  const bool bf16_on_amx = !grad && cpu_isa() >= CpuIsa::amx && same_type && x.scalar_type() == at::kBFloat16 &&
                           effective_bf16_route() == Bf16Route::native;
  const bool streams_on_amx = bf16_on_amx && !in_out && in % 2 == 0 && rows >= 2 && rows <= amx_bf16::kMaxRows;
  const bool prompt_on_amx = bf16_on_amx && !streams_on_amx && rows > kRowGroup && x.dim() >= 2 && x.size(-2) > 1;
  if (!prompt_on_amx && !grad && rows <= streaming_rows && cpu_has_avx2_fma() && x.is_floating_point() &&
      (quantized || (same_type && (reduced || weight.scalar_type() == at::kFloat)))) {
    // Decode: every op here costs more than its arithmetic, so none is spent on no-op
    // conversions or reshapes.
    const CpuIsa isa = cpu_isa();
    at::Tensor y;
    if (streams_on_amx) {
      y = at::empty(sizes, at::kFloat);
      const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
      amx_bf16::product(xc.data_ptr<c10::BFloat16>(), rows, in, wc.data_ptr<c10::BFloat16>(), out, y.data_ptr<float>());
    } else if (isa >= CpuIsa::avx512_bf16 && !in_out && weight.scalar_type() == at::kBFloat16) {
      y = streaming_linear<Bf16PairKernels>(x.contiguous(), weight.contiguous(), row_scale, in_out, sizes);
    } else {
      const at::Tensor xc = x.contiguous();
      const at::Tensor xf = xc.scalar_type() == at::kFloat ? xc
                            : small_conversion_applies(xc) ? widened_to_fp32(xc)
                                                           : xc.to(at::kFloat);
      y = isa >= CpuIsa::avx512 ? streaming_linear<avx512::Kernels>(xf, weight.contiguous(), row_scale, in_out, sizes)
                                : streaming_linear<avx2::Kernels>(xf, weight.contiguous(), row_scale, in_out, sizes);
    }
    const bool plain_bias = !bias.defined() || (bias.dim() == 1 && bias.is_contiguous() && bias.numel() == out &&
                                                simd::is_kernel_type(bias.scalar_type()));
    if (x.scalar_type() != at::kFloat && small_conversion_applies(y) && plain_bias)
      return rounded_from_fp32(y, bias, x.scalar_type());
    if (bias.defined()) y.add_(bias);
    return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
  }
  const at::Tensor x2d = x.reshape({rows, in});
  // Beyond the streaming rows (or a prompt beyond the decode rows) on AMX, bf16 products go to
  // oneDNN's tiles in either weight layout.
  if (prompt_on_amx || (bf16_on_amx && rows > kStreamingRows))
    return bf16_linear_on_amx(x2d, in_out ? weight : weight.t(), bias).view(sizes);
  at::Tensor y;
  if (quantized && !grad && int8_products_in_integers(in))
    y = int8_integer_product(x2d.to(at::kFloat).contiguous(), weight.contiguous(), row_scale.to(at::kFloat).contiguous());
  if (y.defined()) {
    if (bias.defined()) y.add_(bias.to(at::kFloat));
  } else if (quantized || (same_type && reduced)) {
    // Many rows: sgemm on an fp32 copy of the weight (dequantized for int8).
    at::Tensor w = weight.to(at::kFloat);
    if (quantized) w.mul_(row_scale.unsqueeze(1));
    y = grad ? at::matmul(x2d.to(at::kFloat), in_out ? w : w.t()) : fp32_matmul(x2d.to(at::kFloat), in_out ? w : w.t());
    if (bias.defined()) y.add_(bias.to(at::kFloat));
  } else if (!grad && onednn_sgemm_applies(x2d, weight)) {
    y = onednn_mm(x2d, in_out ? weight : weight.t());
    if (bias.defined()) y.add_(bias);
    return y.view(sizes);
  } else if (in_out) {
    return (bias.defined() ? at::addmm(bias, x2d, weight) : at::mm(x2d, weight)).view(sizes);
  } else {
    return at::linear(x, weight, bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
  }
  return y.to(x.scalar_type()).view(sizes);
}

namespace {

// A bf16 / fp16 operand in fp32 (exact). A 2-D view with unit stride in either dimension (a head
// of per-head attention, or its transpose) is widened by an AVX2 loop: libtorch's conversion of
// such small pieces took most of the non-product time of bf16 per-head attention (~2.5 ns per
// value, 7 conversions per head).
at::Tensor in_fp32(const at::Tensor& t) {
  if (t.dim() != 2 || !cpu_has_avx2_fma() || trains_through({t})) return t.to(at::kFloat);
  if (t.stride(1) != 1) return t.stride(0) == 1 ? in_fp32(t.t()).t() : t.to(at::kFloat);
  at::Tensor out = at::empty(t.sizes(), t.options().dtype(at::kFloat));
  simd::with_kernel_type(t.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    simd::widen_rows(static_cast<const T*>(t.data_ptr()), t.size(0), t.size(1), t.stride(0), out.data_ptr<float>());
  });
  return out;
}

}  // namespace

bool attention_products_in_bf16(c10::ScalarType type) {
  return type == at::kBFloat16 && effective_bf16_route() == Bf16Route::native;
}

at::Tensor matmul_any_precision(const at::Tensor& a, const at::Tensor& b) {
  const bool grad = trains_through({a, b});
  if (!is_reduced(a.scalar_type())) return grad ? at::matmul(a, b) : fp32_matmul(a, b);
  if (attention_products_in_bf16(a.scalar_type())) {
    // On AMX, strided heads go to oneDNN as they are (at::matmul copies them first).
    if (!grad && cpu_isa() >= CpuIsa::amx && b.scalar_type() == at::kBFloat16 && a.dim() == b.dim() && a.dim() >= 3 &&
        a.sizes().slice(0, size_t(a.dim() - 2)) == b.sizes().slice(0, size_t(b.dim() - 2)) && a.size(-1) == b.size(-2)) {
      auto sizes = a.sizes().vec();
      sizes.back() = b.size(-1);
      at::Tensor y = at::empty(sizes, a.options());
      if (onednn_bf16_matmul(a, b, at::Tensor(), y)) return y;
    }
    return at::matmul(a, b);
  }
  const at::Tensor y = grad ? at::matmul(in_fp32(a), in_fp32(b)) : fp32_matmul(in_fp32(a), in_fp32(b));
  return y.to(a.scalar_type());
}

}  // namespace plugformer
