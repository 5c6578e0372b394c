// The shared layers' fast paths: fp32 / bf16 / fp16 products equal PyTorch's arithmetic (fp32
// accumulation, one rounding) whichever kernel the CPU gets: the weight-streaming kernel for few
// rows, sgemm (on converted weights) for many, or libtorch's own on native-bf16 CPUs.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <plugformer/error.h>
#include <plugformer/layers.h>
#include <plugformer/runtime.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>
#include <optional>
#include <tuple>

#include "modeling/fp32.h"
#include "modeling/inference_views.h"
#include "modeling/matmul.h"
#include "modeling/worker_team.h"
#include "models/fixture_runner.h"

using namespace plugformer;

namespace {

// One unit in the last place of the rounded result, plus a little for the summation order.
void expect_close_in_type(const at::Tensor& actual, const at::Tensor& reference_fp32, c10::ScalarType type) {
  ASSERT_EQ(actual.scalar_type(), type);
  ASSERT_EQ(actual.sizes(), reference_fp32.sizes());
  const double ulp = type == at::kBFloat16 ? 1.0 / 128 : type == at::kHalf ? 1.0 / 1024 : 1e-6;
  const at::Tensor diff = (actual.to(at::kFloat) - reference_fp32).abs();
  const at::Tensor bound = reference_fp32.abs() * ulp + (type == at::kFloat ? 1e-5 : 1e-3);
  EXPECT_TRUE((diff <= bound).all().item<bool>()) << "max diff " << diff.max().item<double>();
}

using RouteGuard = plugformer::testing::Bf16RouteGuard;
constexpr auto& kRoutes = plugformer::testing::kBf16Routes;

class ReducedPrecision : public ::testing::TestWithParam<std::tuple<c10::ScalarType, Bf16Route>> {
 protected:
  void SetUp() override { route_.emplace(std::get<1>(GetParam())); }
  c10::ScalarType type() const { return std::get<0>(GetParam()); }

 private:
  std::optional<RouteGuard> route_;
};

}  // namespace

// fp16 never reaches libtorch's products (it has none on the CPU); bf16 does only on the native
// route, for more rows than the streaming kernel takes and [out, in] weights.
TEST(Bf16Route, ChoosesLibtorchOnlyForLongBf16ProductsOnTheNativeRoute) {
  for (Bf16Route route : kRoutes) {
    RouteGuard guard(route);
    SCOPED_TRACE("route " + to_string(route));
    EXPECT_EQ(effective_bf16_route(), route);
    for (int64_t rows : {1, 32, 33, 512}) {
      EXPECT_TRUE(products_in_fp32(at::kHalf, rows)) << rows;
      EXPECT_FALSE(products_in_fp32(at::kFloat, rows)) << rows;
      EXPECT_EQ(products_in_fp32(at::kBFloat16, rows), route == Bf16Route::fp32 || rows <= 32) << rows;
      EXPECT_TRUE(products_in_fp32(at::kBFloat16, rows, /*weight_in_out=*/true)) << rows;
    }
  }
  RouteGuard automatic(Bf16Route::automatic);
  EXPECT_NE(effective_bf16_route(), Bf16Route::automatic);
}

// libtorch's own exceptions inside a layer become one-line ComputationErrors naming the layer,
// the dtype and the operation.
TEST(TorchErrors, BecomeComputationErrorsNamingTheModule) {
  Linear linear(4, 3);
  linear.weight.set_data(at::randn({3, 4}));
  linear.bias.set_data(at::zeros({3}));
  try {
    linear.forward(at::randn({2, 4}, at::kDouble));
    FAIL() << "no error";
  } catch (const ComputationError& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind("Linear(in_features=4, out_features=3) in Double: ", 0), 0u) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
  Embedding embedding(10, 4);
  embedding.weight.set_data(at::randn({10, 4}));
  EXPECT_THROW(embedding.forward(at::ones({2}, at::kFloat)), ComputationError);
  RMSNorm norm(4, 1e-6);
  norm.weight.set_data(at::ones({5}));
  EXPECT_THROW(norm.forward(at::randn({2, 4})), ComputationError);
}

TEST_P(ReducedPrecision, LinearMatchesFp32ArithmeticForAnyRowCount) {
  const auto type = this->type();
  at::manual_seed(3);
  // Not multiples of the vector loops' 16 / 32 elements; 300 x 61 is large enough for fp32 prompts
  // to stream too (300 x 37 stays on sgemm). 300 outputs: each thread's range spans several weight
  // tiles, the last one partial.
  for (int64_t in : {37, 61}) {
  Linear linear(in, 300);
  linear.weight.set_data(at::randn({300, in}).to(type));
  linear.bias.set_data(at::randn({300}).to(type));
  for (int64_t rows : {1, 2, 3, 8, 9, 24, 32, 33, 64}) {
    SCOPED_TRACE(std::to_string(rows) + " rows of " + std::to_string(in));
    const at::Tensor x = at::randn({1, rows, in}).to(type);
    const at::Tensor reference =
        at::linear(x.to(at::kFloat), linear.weight.to(at::kFloat), linear.bias.to(at::kFloat));
    at::NoGradGuard no_grad;
    expect_close_in_type(linear.forward(x), reference, type);
  }
  }
}

TEST_P(ReducedPrecision, Conv1DMatchesFp32ArithmeticForAnyRowCount) {
  const auto type = this->type();
  at::manual_seed(4);
  Conv1D conv(37, 300);  // 300 columns: more than one 256-column block, with a tail
  conv.weight.set_data(at::randn({37, 300}).to(type));
  conv.bias.set_data(at::randn({300}).to(type));
  for (int64_t rows : {1, 5, 8, 9, 20, 32, 33}) {
    SCOPED_TRACE(rows);
    const at::Tensor x = at::randn({rows, 1, 37}).to(type);
    const at::Tensor reference = at::matmul(x.to(at::kFloat), conv.weight.to(at::kFloat)) + conv.bias.to(at::kFloat);
    at::NoGradGuard no_grad;
    expect_close_in_type(conv.forward(x), reference, type);
  }
}

TEST_P(ReducedPrecision, AttentionMatchesFp32Arithmetic) {
  const auto type = this->type();
  at::manual_seed(5);
  const at::Tensor q = at::randn({2, 4, 3, 16}).to(type), k = at::randn({2, 2, 5, 16}).to(type),
                   v = at::randn({2, 2, 5, 16}).to(type);
  const at::Tensor out = attention(q, k, v, at::Tensor(), 0.25);
  const at::Tensor fp32 = attention(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), at::Tensor(), 0.25);
  ASSERT_EQ(out.scalar_type(), type);
  // Scores and probabilities are rounded to the reduced type on the way, as in PyTorch.
  EXPECT_LE((out.to(at::kFloat) - fp32).abs().max().item<double>(), type == at::kBFloat16 ? 0.05 : 0.01);
  // A prompt without autograd, with a padding mask: its softmax runs by blocks of rows in bf16.
  at::NoGradGuard no_grad;
  const at::Tensor lq = at::randn({2, 12, 128, 64}).to(type), lk = at::randn({2, 12, 128, 64}).to(type),
                   lv = at::randn({2, 12, 128, 64}).to(type);
  const at::Tensor mask = at::zeros({2, 1, 1, 128}).index_put_({1, 0, 0, at::indexing::Slice(100)}, -1e4).to(type);
  const at::Tensor long_out = attention(lq, lk, lv, mask, 0.125);
  const at::Tensor long_fp32 = attention(lq.to(at::kFloat), lk.to(at::kFloat), lv.to(at::kFloat), mask.to(at::kFloat), 0.125);
  EXPECT_LE((long_out.to(at::kFloat) - long_fp32).abs().max().item<double>(), type == at::kBFloat16 ? 0.05 : 0.01);
}

// PyTorch 2 computes norms and activations of 2-byte types in fp32 and rounds once; libtorch
// 1.13's bf16 kernels round on the way (~40% of gelu / silu / layer_norm outputs differ from
// that) and it has no fp16 ones on CPU. quick_gelu is transformers' two ops: x * sigmoid(1.702 x).
TEST_P(ReducedPrecision, NormsAndActivationsAreComputedInFp32AndRoundedOnce) {
  const auto type = this->type();
  at::manual_seed(9);
  const at::Tensor x = (at::randn({6, 40}) * 3).to(type), x32 = x.to(at::kFloat);
  for (const char* name : {"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "relu6", "silu", "swish", "tanh",
                           "sigmoid", "mish", "linear"}) {
    const at::Tensor out = get_activation(name)(x);
    ASSERT_EQ(out.scalar_type(), type) << name;
    EXPECT_TRUE(at::equal(out, get_activation(name)(x32).to(type))) << name;
  }
  const at::Tensor quick = get_activation("quick_gelu")(x);
  EXPECT_TRUE(at::equal(quick, x * at::sigmoid((1.702 * x).to(at::kFloat)).to(type)));
  for (bool with_bias : {true, false}) {
    LayerNorm norm(40, 1e-5, with_bias);
    norm.weight = at::randn({40}).to(type);
    if (with_bias) norm.bias = at::randn({40}).to(type);
    const at::Tensor out = norm.forward(x);
    ASSERT_EQ(out.scalar_type(), type);
    const c10::optional<at::Tensor> bias32 = with_bias ? c10::optional<at::Tensor>(norm.bias.to(at::kFloat)) : c10::nullopt;
    EXPECT_TRUE(at::equal(out, at::layer_norm(x32, {40}, norm.weight.to(at::kFloat), bias32, 1e-5).to(type)))
        << "bias " << with_bias;
  }
  // A prompt's activations without autograd (bf16: blocks of rows widened, computed and rounded
  // in one pass): the same bits, across partial blocks and vector tails (rows of 257).
  at::NoGradGuard no_grad;
  // Decode-sized ones (one loop each way instead of libtorch's conversions): the same values, for
  // infinities, NaN and a tail beyond the vectors (rows of 43).
  at::Tensor small = (at::randn({3, 43}) * 3).to(type);
  small[0][0] = INFINITY, small[1][42] = -INFINITY, small[2][5] = NAN;
  for (const char* name : {"gelu", "silu", "relu", "tanh"}) {
    const at::Tensor out = get_activation(name)(small);
    ASSERT_EQ(out.scalar_type(), type) << name;
    EXPECT_TRUE(at::allclose(out, get_activation(name)(small.to(at::kFloat)).to(type), 0, 0, true)) << name;
  }
  const at::Tensor large = (at::randn({3, 301, 257}) * 3).to(type), large32 = large.to(at::kFloat);
  for (const char* name : {"gelu", "gelu_new", "silu", "relu"})
    EXPECT_TRUE(at::equal(get_activation(name)(large), get_activation(name)(large32).to(type))) << name;
  EXPECT_TRUE(at::equal(get_activation("quick_gelu")(large),
                        large * at::sigmoid((1.702 * large).to(at::kFloat)).to(type)));
  LayerNorm norm(257, 1e-5, true);
  norm.weight = at::randn({257}).to(type);
  norm.bias = at::randn({257}).to(type);
  EXPECT_TRUE(at::equal(norm.forward(large), at::layer_norm(large32, {257}, norm.weight.to(at::kFloat),
                                                            norm.bias.to(at::kFloat), 1e-5).to(type)));
}

TEST(ReducedPrecisionGrad, LinearStaysDifferentiable) {
  Linear linear(8, 4);
  linear.weight.set_data(at::randn({4, 8}).to(at::kBFloat16));
  linear.bias.set_data(at::zeros({4}).to(at::kBFloat16));
  const at::Tensor x = at::randn({2, 8}).to(at::kBFloat16).requires_grad_(true);
  linear.forward(x).to(at::kFloat).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_TRUE(at::allclose(x.grad().to(at::kFloat), linear.weight.sum(0).to(at::kFloat).expand({2, 8}), 1e-2, 1e-2));
}

// fp32 too: the same kernels and thresholds, against libtorch's own products. Each type under
// each bf16 route (the test name says which ran).
INSTANTIATE_TEST_SUITE_P(Types, ReducedPrecision,
                         ::testing::Combine(::testing::Values(at::kBFloat16, at::kHalf, at::kFloat),
                                            ::testing::ValuesIn(kRoutes)),
                         [](const auto& info) {
                           return std::string(c10::toString(std::get<0>(info.param))) + "_" +
                                  to_string(std::get<1>(info.param)) + "Route";
                         });

TEST(FusedAttention, OneQueryMatchesTheGenericPathWithMaskGroupsAndCacheStrides) {
  at::manual_seed(6);
  // Head sizes of one, two and more than eight registers; 33 keys (not a multiple of 8).
  for (int64_t dim : {24, 72, 128}) {
    SCOPED_TRACE("head dim " + std::to_string(dim));
    // Keys/values as a cache hands them out: a narrowed view of a larger buffer.
    const at::Tensor k_storage = at::randn({2, 2, 40, dim}), v_storage = at::randn({2, 2, 40, dim});
    const at::Tensor k = k_storage.narrow(2, 0, 33), v = v_storage.narrow(2, 0, 33);
    const at::Tensor q = at::randn({2, 6, 1, dim});
    at::Tensor mask = at::zeros({2, 1, 1, 33});
    mask[0][0][0].narrow(0, 0, 5).fill_(std::numeric_limits<float>::lowest());  // left padding of row 0
    at::NoGradGuard no_grad;
    for (const at::Tensor& m : {mask, at::Tensor()}) {
      at::Tensor probs;
      const at::Tensor generic = attention(q, k, v, m, 0.2, &probs);  // asking for probabilities takes the generic path
      const at::Tensor fast = attention(q, k, v, m, 0.2);
      EXPECT_LE((fast - generic).abs().max().item<double>(), 1e-5);
      // 2-byte caches are read as they are; fp32 arithmetic, one rounding of the result.
      for (auto type : {at::kBFloat16, at::kHalf}) {
        SCOPED_TRACE(c10::toString(type));
        const at::Tensor q2 = q.to(type), k2 = k.to(type), v2 = v.to(type);
        const at::Tensor m2 = m.defined() ? m.to(type) : m;
        at::Tensor unused;
        const at::Tensor exact = attention(q2.to(at::kFloat), k2.to(at::kFloat), v2.to(at::kFloat), m, 0.2, &unused);
        const at::Tensor reduced = attention(q2, k2, v2, m2, 0.2);
        ASSERT_EQ(reduced.scalar_type(), type);
        expect_close_in_type(reduced, exact, type);
      }
    }
  }
}

// Short inputs in fp32 (fewer than 32 x 32 scores per head, as a batch of short sentences or
// query / passage pairs): the kernel row by row, q as split_heads leaves it, keys and values as a
// cache or split_heads hands them out, the result in the layout merge_heads returns as a view.
TEST(FusedAttention, ShortInputsMatchTheGenericPathForMasksGroupsAndStrides) {
  at::manual_seed(10);
  const int64_t batch = 3, heads = 6, kv_heads = 2, dim = 16;
  for (auto [q_len, past] : {std::pair<int64_t, int64_t>{5, 0}, {27, 0}, {9, 4}}) {
    const int64_t kv_len = past + q_len;
    SCOPED_TRACE(std::to_string(q_len) + " queries, " + std::to_string(kv_len) + " keys");
    const at::Tensor q = split_heads(at::randn({batch, q_len, heads * dim}), heads);
    const at::Tensor k = at::randn({batch, kv_heads, kv_len + 3, dim}).narrow(2, 0, kv_len);
    const at::Tensor v = split_heads(at::randn({batch, kv_len, kv_heads * dim}), kv_heads);
    at::Tensor padding = at::ones({batch, kv_len}, at::kLong);
    padding[1].narrow(0, kv_len - 2, 2).zero_();
    const at::Tensor causal = causal_attention_mask(padding, batch, q_len, past, at::kFloat);  // [batch, 1, q, kv]
    const at::Tensor per_head_bias = at::randn({1, heads, q_len, kv_len});                    // MPNet's / T5's bias
    const at::Tensor key_padding = padding_attention_mask(padding, at::kFloat);               // [batch, 1, 1, kv]
    at::NoGradGuard no_grad;
    for (const at::Tensor& mask : {causal, per_head_bias, key_padding, at::Tensor()})
      for (double softcap : {0.0, 5.0}) {
        SCOPED_TRACE("mask " + (mask.defined() ? c10::str(mask.sizes()) : std::string("none")) + " softcap " +
                     std::to_string(softcap));
        at::Tensor probs;
        const at::Tensor generic = attention(q, k, v, mask, 0.3, &probs, softcap);  // probabilities: whole tensors
        const at::Tensor fused = attention(q, k, v, mask, 0.3, nullptr, softcap);
        ASSERT_EQ(fused.sizes(), generic.sizes());
        EXPECT_LE((fused - generic).abs().max().item<double>(), 1e-5);
        EXPECT_EQ(merge_heads(fused).data_ptr(), fused.data_ptr()) << "not the fused kernel's layout";
      }
  }
}

// Many queries without autograd: each head computed on its own thread, written in the layout
// merge_heads returns as a view. It runs the same ops as the whole-tensor path on each head.
TEST(PerHeadAttention, MatchesTheWholeTensorPathForMasksGroupsAndTypes) {
  at::manual_seed(7);
  // At least 32 x 32 scores per head (below, the whole-tensor path is faster and taken), more than
  // 128 x 128 (up to there fp32 takes the fused kernel).
  const int64_t batch = 2, heads = 6, kv_heads = 2, q_len = 131, past = 4, kv_len = past + q_len, dim = 12;
  // q as split_heads leaves it (a strided view), keys/values as a cache hands them out.
  const at::Tensor packed = at::randn({batch, q_len, heads * dim});
  const at::Tensor q = split_heads(packed, heads);
  const at::Tensor k = at::randn({batch, kv_heads, kv_len + 3, dim}).narrow(2, 0, kv_len);
  const at::Tensor v = at::randn({batch, kv_heads, kv_len + 3, dim}).narrow(2, 0, kv_len);
  at::Tensor padding = at::ones({batch, kv_len}, at::kLong);
  padding[0].narrow(0, 0, 2).zero_();
  const at::Tensor causal = causal_attention_mask(padding, batch, q_len, past, at::kFloat);  // [batch, 1, q, kv]
  const at::Tensor per_head_bias = at::randn({1, heads, q_len, kv_len});                    // T5's position bias
  const at::Tensor key_padding = padding_attention_mask(padding, at::kFloat);               // [batch, 1, 1, kv]
  at::NoGradGuard no_grad;
  for (Bf16Route route : kRoutes)
  for (auto type : {at::kFloat, at::kBFloat16, at::kHalf}) {
    RouteGuard guard(route);
    for (const at::Tensor& mask : {causal, per_head_bias, key_padding, at::Tensor()}) {
      for (double scale : {1.0, 0.3}) {
        SCOPED_TRACE("route " + to_string(route) + ", " + std::string(c10::toString(type)) + " mask " + (mask.defined() ? c10::str(mask.sizes()) : "none") +
                     " scale " + std::to_string(scale));
        const at::Tensor qt = q.to(type), kt = k.to(type), vt = v.to(type);
        const at::Tensor m = mask.defined() ? mask.to(type) : mask;
        at::Tensor probs;
        const at::Tensor whole = attention(qt, kt, vt, m, scale, &probs);  // asking for probabilities: whole tensors
        const at::Tensor per_head = attention(qt, kt, vt, m, scale);
        ASSERT_EQ(per_head.sizes(), whole.sizes());
        ASSERT_EQ(per_head.scalar_type(), type);
        // 2-byte types: within one rounding of ~1
        const double tolerance = type == at::kFloat ? 1e-5 : type == at::kBFloat16 ? 1.0 / 64 : 1.0 / 512;
        EXPECT_LE((per_head.to(at::kFloat) - whole.to(at::kFloat)).abs().max().item<double>(), tolerance);
        const at::Tensor merged = merge_heads(per_head);
        EXPECT_EQ(merged.data_ptr(), per_head.data_ptr()) << "merge_heads copied the per-head result";
      }
    }
  }
}

// bf16 on the native route: libtorch's bf16 products over a few sequences and heads at a time
// (fp32 scores of up to 4 MB a chunk). The shapes make chunks of two sequences and one left over
// (3 x 256 x 256 scores per key/value head: 0.75 MB, five per chunk, two heads a sequence), and
// of one key/value head of one sequence (3 x 600 x 600: 4.1 MB).
TEST(ChunkedAttention, Bf16OnTheNativeRouteMatchesTheWholeTensorPathAcrossChunks) {
  at::manual_seed(9);
  RouteGuard guard(Bf16Route::native);
  at::NoGradGuard no_grad;
  const int64_t heads = 6, kv_heads = 2, dim = 8;
  for (auto [batch, q_len] : {std::pair<int64_t, int64_t>{3, 256}, {2, 600}}) {
    const int64_t past = 3, kv_len = past + q_len;
    const at::Tensor q = split_heads(at::randn({batch, q_len, heads * dim}), heads).to(at::kBFloat16);
    const at::Tensor k = at::randn({batch, kv_heads, kv_len + 2, dim}).narrow(2, 0, kv_len).to(at::kBFloat16);
    const at::Tensor v = at::randn({batch, kv_heads, kv_len + 2, dim}).narrow(2, 0, kv_len).to(at::kBFloat16);
    at::Tensor padding = at::ones({batch, kv_len}, at::kLong);
    padding[batch - 1].narrow(0, 0, 7).zero_();
    const at::Tensor causal = causal_attention_mask(padding, batch, q_len, past, at::kBFloat16);
    const at::Tensor per_head_bias = at::randn({1, heads, q_len, kv_len}).to(at::kBFloat16);
    for (const at::Tensor& mask : {causal, per_head_bias, at::Tensor()}) {
      SCOPED_TRACE(std::to_string(batch) + " x " + std::to_string(q_len) + ", mask " +
                   (mask.defined() ? c10::str(mask.sizes()) : "none"));
      at::Tensor probs;
      const at::Tensor whole = attention(q, k, v, mask, 0.3, &probs);  // asking for probabilities: whole tensors
      const at::Tensor chunked = attention(q, k, v, mask, 0.3);
      ASSERT_EQ(chunked.sizes(), whole.sizes());
      ASSERT_EQ(chunked.scalar_type(), at::kBFloat16);
      EXPECT_LE((chunked.to(at::kFloat) - whole.to(at::kFloat)).abs().max().item<double>(), 1.0 / 64);
      EXPECT_EQ(merge_heads(chunked).data_ptr(), chunked.data_ptr()) << "merge_heads copied the chunked result";
    }
  }
}

// A prompt's attention takes its queries in blocks, each only as far along the keys as any of its
// queries sees: keys that no query sees (here the padding after a 260-token prompt, filled with NaN)
// are never read, and the result has the bits of attention over the seen keys alone. bf16 on the
// native route (whole chunks of heads) and fp32 (per head).
TEST(PromptAttention, KeysNoQuerySeesAreNotRead) {
  at::manual_seed(10);
  RouteGuard guard(Bf16Route::native);
  at::NoGradGuard no_grad;
  const int64_t heads = 4, dim = 16, q_len = 300, seen = 260;
  for (auto type : {at::kBFloat16, at::kFloat}) {
    SCOPED_TRACE(c10::toString(type));
    const at::Tensor q = at::randn({1, heads, q_len, dim}).to(type);
    const at::Tensor k = at::randn({1, heads, q_len, dim}).to(type), v = at::randn({1, heads, q_len, dim}).to(type);
    at::Tensor padding = at::ones({1, q_len}, at::kLong);
    padding[0].narrow(0, seen, q_len - seen).zero_();
    const at::Tensor mask = causal_attention_mask(padding, 1, q_len, 0, type);
    const at::Tensor clean = attention(q, k.narrow(2, 0, seen), v.narrow(2, 0, seen), mask.narrow(3, 0, seen), 0.25);
    k.narrow(2, seen, q_len - seen).fill_(NAN);
    v.narrow(2, seen, q_len - seen).fill_(NAN);
    const at::Tensor out = attention(q, k, v, mask, 0.25);
    EXPECT_TRUE(out.isfinite().all().item<bool>());
    EXPECT_TRUE(at::equal(out, clean));
  }
}

// Decode products share their rows among the threads in chunks taken at run time, prompts of up
// to 32 rows split them in ranges: whichever thread computes a row, each row is computed once and
// gives the same bits.
TEST(StreamingLinear, SameBitsOnAnyThreadCountAndEveryRowWritten) {
  at::manual_seed(8);
  const int threads = at::get_num_threads();
  at::NoGradGuard no_grad;
  for (int64_t out : {5, 300, 1000}) {
    Linear linear(96, out, false);
    linear.weight.set_data(at::randn({out, 96}));
    for (int64_t rows : {1, 2, 5, 8, 16, 32}) {
      if (rows > 8 && out == 5) continue;  // a small fp32 weight: sgemm's rows, not the kernel's
      SCOPED_TRACE(std::to_string(rows) + " rows, " + std::to_string(out) + " outputs");
      const at::Tensor x = at::randn({rows, 96});
      at::set_num_threads(1);
      const at::Tensor one = linear.forward(x);
      at::set_num_threads(std::max(2, threads));
      const at::Tensor several = linear.forward(x);
      at::set_num_threads(threads);
      EXPECT_TRUE(at::equal(one, several));
      EXPECT_TRUE(at::allclose(several, at::linear(x, linear.weight), 1e-5, 1e-5));
    }
  }
}

// A product of two pieces, the calling thread's taking `caller_ms`, the other's `helper_ms` where
// it runs on another thread; whether any did.
bool two_pieces(int caller_ms, int helper_ms) {
  const auto caller = std::this_thread::get_id();
  std::atomic<bool> elsewhere{false};
  team_parallel_for(2, 1, [&](int64_t, int64_t) {
    const bool here = std::this_thread::get_id() == caller;
    if (!here) elsewhere = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(here ? caller_ms : helper_ms));
  });
  return elsewhere.load();
}

// One step of a team: two_pieces in with_worker_team.
bool team_step(int caller_ms, int helper_ms) {
  bool elsewhere = false;
  with_worker_team([&] { elsewhere = two_pieces(caller_ms, helper_ms); });
  return elsewhere;
}

// Runs the steps that an earlier test's held-up steps left to the calling thread alone (the next
// test below), and one clean team step, so that a test starts with its team's threads.
void until_the_team_is_back() {
  for (int i = 0; i < 1000 && !team_step(20, 0); ++i) {
  }
}

// A team piece runs on a thread of the region; the same product inside and outside a team (and
// on any thread count) gives the same bits.
TEST(WorkerTeam, PiecesCoverTheRangeOnceAsParallelForSplitsIt) {
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  until_the_team_is_back();
  for (int team_threads : {1, 2, 3, 4}) {
    at::set_num_threads(team_threads);
    std::set<std::thread::id> workers;
    with_worker_team([&] {
      EXPECT_EQ(at::in_parallel_region(), team_threads > 1);  // main runs inside the team's region
      for (int64_t n : {1, 2, 3, 7, 64, 1000})
        for (int64_t grain : {1, 3, 16, 2000}) {
          SCOPED_TRACE(std::to_string(team_threads) + " threads, n " + std::to_string(n) + ", grain " +
                       std::to_string(grain));
          std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
          std::mutex mutex;
          std::vector<std::pair<int64_t, int64_t>> pieces;
          team_parallel_for(n, grain, [&](int64_t begin, int64_t end) {
            std::lock_guard<std::mutex> lock(mutex);
            pieces.emplace_back(begin, end);
            workers.insert(std::this_thread::get_id());
            for (int64_t i = begin; i < end; ++i) ++hits[static_cast<size_t>(i)];
          });
          for (const auto& hit : hits) EXPECT_EQ(hit.load(), 1);
          const int64_t parts = n <= grain ? 1 : std::min<int64_t>(team_threads, (n + grain - 1) / grain);
          const int64_t chunk = (n + parts - 1) / parts;
          EXPECT_LE(int64_t(pieces.size()), parts);
          for (const auto& [begin, end] : pieces) {
            EXPECT_EQ(begin % chunk, 0);
            EXPECT_EQ(end, std::min(n, begin + chunk));
          }
        }
    });
    EXPECT_EQ(int64_t(workers.size()), team_threads);  // every thread of the region took pieces
  }
  at::set_num_threads(threads);
}

TEST(WorkerTeam, ErrorsReachTheCallerAndTheTeamCarriesOn) {
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  until_the_team_is_back();
  std::atomic<int> after{0};
  with_worker_team([&] {
    for (int64_t failing : {0, 1}) {  // the caller's piece, then the other thread's
      EXPECT_THROW(team_parallel_for(2, 1,
                                     [&](int64_t begin, int64_t) {
                                       if (begin == failing) throw InvalidInputError("piece " + std::to_string(begin));
                                     }),
                   InvalidInputError);
      team_parallel_for(2, 1, [&](int64_t begin, int64_t end) { after += int(end - begin); });
    }
    // A team inside a team is its main run directly; its pieces still all run.
    with_worker_team([&] { team_parallel_for(10, 1, [&](int64_t begin, int64_t end) { after += int(end - begin); }); });
  });
  EXPECT_EQ(after.load(), 14);
  EXPECT_THROW(with_worker_team([] { throw InvalidInputError("main"); }), InvalidInputError);
  at::set_num_threads(threads);
}

// When other work takes the cores, a team's step waits for its other threads (their pieces are
// theirs). After two such steps in a row, steps and the products right after them run on the
// calling thread alone for a while; then the team is tried again, after twice as long each time
// it is still held up.
TEST(WorkerTeam, StepsHeldUpByTheirThreadsRunOnTheCallingThreadForAWhile) {
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  until_the_team_is_back();
  // A step is held up when its caller waits for the other thread (5 ms); in a clean one the caller
  // is the slow one (30 ms), so a slow start of the other thread on a busy machine cannot hold it up.
  auto held_up = [] { return team_step(0, 5); };
  auto clean = [] { return team_step(30, 0); };
  EXPECT_TRUE(clean());
  EXPECT_TRUE(held_up());  // one: a hiccup
  EXPECT_TRUE(held_up());  // two in a row: the next 4 steps run alone
  for (int i = 0; i < 4; ++i) {
    EXPECT_FALSE(held_up()) << i;
    EXPECT_FALSE(two_pieces(0, 0)) << i;  // and so does a product right after a step
  }
  EXPECT_TRUE(held_up());  // tried again, held up again: the next 8 alone
  bool nested_elsewhere = true;  // a team inside a step that runs alone is its main run directly
  with_worker_team([&] {
    with_worker_team([] {});
    nested_elsewhere = two_pieces(30, 0);
  });
  EXPECT_FALSE(nested_elsewhere);
  for (int i = 0; i < 7; ++i) EXPECT_FALSE(clean()) << i;
  EXPECT_TRUE(clean());  // tried again: not held up, the team is back
  EXPECT_TRUE(clean());
  EXPECT_TRUE(held_up());  // and a hiccup is one again
  EXPECT_TRUE(clean());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(two_pieces(0, 0));  // outside a step: at::parallel_for's threads
  at::set_num_threads(threads);
}

TEST(WorkerTeam, StreamedProductsAndAttentionGiveTheSameBitsInsideATeam) {
  at::manual_seed(9);
  const int threads = at::get_num_threads();
  at::NoGradGuard no_grad;
  at::set_num_threads(std::max(2, threads));
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    Linear linear(200, 700, false);
    linear.weight.set_data(at::randn({700, 200}).to(dtype));
    const at::Tensor q = at::randn({1, 4, 1, 64}).to(dtype), k = at::randn({1, 2, 37, 64}).to(dtype),
                     v = at::randn({1, 2, 37, 64}).to(dtype);
    for (int64_t rows : {1, 3, 8}) {
      const at::Tensor x = at::randn({rows, 200}).to(dtype);
      const at::Tensor alone = linear.forward(x), attended = fused_attention(q, k, v, {}, 0.125, 0.0);
      at::Tensor in_team, attended_in_team;
      with_worker_team([&] {
        in_team = linear.forward(x);
        attended_in_team = fused_attention(q, k, v, {}, 0.125, 0.0);
      });
      EXPECT_TRUE(at::equal(alone, in_team)) << rows << " rows";
      EXPECT_TRUE(at::equal(attended, attended_in_team));
    }
  }
  at::set_num_threads(threads);
}

// narrow_view builds inference views directly: the same sizes, strides, offset and storage as
// at::narrow (writes through it reach the base); outside InferenceMode it is at::narrow, and out of
// bounds it throws as at::narrow does.
TEST(InferenceViews, NarrowViewIsNarrow) {
  c10::InferenceMode inference;
  const at::Tensor base = at::arange(2 * 3 * 10 * 4, at::kFloat).view({2, 3, 10, 4});
  for (int64_t dim : {0, 2, 3}) {
    const at::Tensor view = narrow_view(base, dim, 1, base.size(dim) - 1), expected = base.narrow(dim, 1, base.size(dim) - 1);
    EXPECT_EQ(view.sizes(), expected.sizes());
    EXPECT_EQ(view.strides(), expected.strides());
    EXPECT_EQ(view.storage_offset(), expected.storage_offset());
    EXPECT_TRUE(view.is_inference());
    EXPECT_TRUE(at::equal(view, expected));
  }
  narrow_view(base, 2, 7, 2).fill_(-1);
  EXPECT_EQ(base[1][2][8][3].item<float>(), -1.0f);
  EXPECT_EQ(base[1][2][6][3].item<float>(), 1.0f * (((1 * 3 + 2) * 10 + 6) * 4 + 3));
  EXPECT_THROW(narrow_view(base, 2, 8, 3), c10::Error);
  EXPECT_THROW(narrow_view(base, 4, 0, 1), c10::Error);
}

TEST(InferenceViews, OutsideInferenceModeNarrowViewTracksAutograd) {
  const at::Tensor base = at::ones({4, 3}).requires_grad_();
  const at::Tensor view = narrow_view(base, 0, 1, 2);
  EXPECT_TRUE(view.requires_grad());
  EXPECT_TRUE(view.is_view());
  view.sum().backward();
  EXPECT_TRUE(at::equal(base.grad(), at::tensor({0.0f, 1.0f, 1.0f, 0.0f}).unsqueeze(1).expand({4, 3})));
}

// Between the pieces of a team, its other threads read ahead the rows announced by main (a decode
// step's next product, learned as the products run): nothing it reads changes, every piece still
// runs once, and the products keep their bits, whatever was announced.
TEST(WorkerTeam, ReadingAheadChangesNoResult) {
  at::manual_seed(10);
  const int threads = at::get_num_threads();
  at::NoGradGuard no_grad;
  at::set_num_threads(std::max(2, threads));
  std::vector<Linear> layers;
  for (int64_t out : {300, 700, 90}) {
    layers.emplace_back(200, out, false);
    layers.back().weight.set_data(at::randn({out, 200}).to(at::kBFloat16));
  }
  const at::Tensor x = at::randn({1, 200}).to(at::kBFloat16);
  std::vector<at::Tensor> alone;
  for (const auto& layer : layers) alone.push_back(layer.forward(x));
  const std::vector<char> far(size_t(64) << 20, 1);  // more than the read-ahead reads before the next piece
  with_worker_team([&] {
    for (int step = 0; step < 3; ++step)  // from the second step on, each product announces the next
      for (size_t i = 0; i < layers.size(); ++i) EXPECT_TRUE(at::equal(layers[i].forward(x), alone[i])) << step << " " << i;
    team_read_ahead({far.data(), 1 << 16, 1024, 2, 4}, int64_t(far.size()));
    std::atomic<int64_t> covered{0};
    team_parallel_for(1000, 1, [&](int64_t begin, int64_t end) { covered += end - begin; });
    EXPECT_EQ(covered.load(), 1000);
    team_read_ahead({nullptr, 0, 0, 0, 0}, 0);  // nothing to read
    team_read_ahead({far.data(), 8, 64, 64, 100}, 1 << 20);  // more threads and streams than the team has
    team_parallel_for(2, 1, [&](int64_t begin, int64_t end) { covered += end - begin; });
    EXPECT_EQ(covered.load(), 1002);
  });
  EXPECT_EQ(std::count(far.begin(), far.end(), 1), int64_t(far.size()));
  at::set_num_threads(threads);
}

// Each kernel level (runtime.h's CpuIsa) this CPU has, chosen by capping the detected one; a
// level it lacks is reported as skipped, with the reason. Every level must give the fp32
// reference product of every weight type and layout, for odd sizes and 1-33 rows.
class CpuKernels : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (detected_cpu_isa() < GetParam())
      GTEST_SKIP() << "this CPU's kernels go up to " << to_string(detected_cpu_isa()) << " (" << cpu_features()
                   << "), not " << to_string(GetParam());
    previous_ = cpu_isa_cap();
    set_cpu_isa_cap(GetParam());
  }
  void TearDown() override {
    if (previous_) set_cpu_isa_cap(*previous_);
  }

 private:
  std::optional<CpuIsa> previous_;
};

TEST_P(CpuKernels, LinearProductsEqualTheFp32ProductForEveryWeightTypeLayoutAndRowCount) {
  ASSERT_EQ(cpu_isa(), GetParam());
  EXPECT_EQ(describe_cpu_kernels().rfind(to_string(GetParam()), 0), 0u) << describe_cpu_kernels();
  at::manual_seed(10);
  at::NoGradGuard no_grad;
  for (auto type : {at::kFloat, at::kBFloat16, at::kHalf, at::kChar}) {
    // Not multiples of 8, 16 or 32 (every vector width's tail), one below a vector, and larger.
    for (int64_t in : {7, 37, 100, 259}) {
      for (bool in_out : {false, true}) {
        if (type == at::kChar && in_out) continue;  // int8 weights are always [out, in]
        const int64_t out = 131;
        const c10::ScalarType x_type = type == at::kChar ? at::kFloat : type;
        const at::Tensor w32 = at::randn({out, in});
        at::Tensor weight = in_out ? w32.t().contiguous().to(type) : w32.to(type), scale;
        if (type == at::kChar) {
          scale = at::rand({out}) / 64 + 1e-3;
          weight = at::randint(-127, 128, {out, in}).to(at::kChar);
        }
        const at::Tensor reference_weight =
            (type == at::kChar ? weight.to(at::kFloat) * scale.unsqueeze(1) : weight.to(at::kFloat)).to(at::kDouble);
        const at::Tensor bias = at::randn({out}).to(x_type);
        for (int64_t rows : {1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 35, 66, 600}) {
          SCOPED_TRACE(std::string(c10::toString(type)) + (in_out ? " [in, out] " : " [out, in] ") + std::to_string(rows) +
                       " rows of " + std::to_string(in));
          const at::Tensor x = at::randn({rows, in}).to(x_type);
          // The exact product, and a bound for fp32 accumulation in any order (a few units of fp32
          // rounding per term's magnitude) plus the one rounding of the result to x's type.
          const at::Tensor w = in_out ? reference_weight : reference_weight.t();
          const at::Tensor exact = at::matmul(x.to(at::kDouble), w) + bias.to(at::kDouble);
          const at::Tensor magnitude = at::matmul(x.to(at::kDouble).abs(), w.abs()) + bias.to(at::kDouble).abs();
          const double ulp = x_type == at::kBFloat16 ? 1.0 / 128 : x_type == at::kHalf ? 1.0 / 1024 : 0.0;
          const at::Tensor y = linear_product(x, weight, bias, scale, in_out);
          ASSERT_EQ(y.scalar_type(), x_type);
          // int8 products in integers: each activation within 1/64516 of its row's largest |x|.
          at::Tensor split = at::zeros_like(exact);
          if (type == at::kChar && rows > 32 && int8_products_in_integers(in))
            split = x.to(at::kDouble).abs().amax(1, true) / 64516 * w.abs().sum(0, true);
          const at::Tensor excess = (y.to(at::kDouble) - exact).abs() - (exact.abs() * ulp + magnitude * 4e-6 + split);
          EXPECT_LE(excess.max().item<double>(), 0.0);
        }
      }
    }
  }
}

// At the amx level, bf16 decode products of 2-32 rows (one position each) run on AMX tiles: every
// row comes out the same bits at any row count (batching does not change a sequence's logits),
// within the bound of fp32 accumulation. `in` with a tail below 32 inputs, and weights with fewer
// than 16 rows or a remainder below 16. Rows 0 and 1 cancel 2^23 against -2^23 with halves in
// between, which the order of the sums decides: the bf16-pair kernel, whose order depends on the
// row count, fails the first check with them.
TEST_P(CpuKernels, Bf16DecodeRowsOnAmxTilesAreSummedAlikeAtAnyRowCount) {
  if (GetParam() != CpuIsa::amx) GTEST_SKIP() << "bf16 decode products run on AMX tiles at the amx level only";
  at::manual_seed(12);
  at::NoGradGuard no_grad;
  for (int64_t in : {64, 100, 770})
    for (int64_t out : {5, 131, 1000}) {
      const at::Tensor weight = at::randn({out, in}).to(at::kBFloat16), bias = at::randn({out}).to(at::kBFloat16);
      at::Tensor x = at::randn({32, 1, in});
      for (int64_t row : {0, 1}) {
        x[row].fill_(0.5);
        x[row][0][row] = 16777216.0;  // 2^24 and -2^24, a chunk of 32 apart
        x[row][0][row + 32] = -16777216.0;
      }
      weight.narrow(0, 0, std::min<int64_t>(out, 4)).fill_(0.5);
      x = x.to(at::kBFloat16);
      const at::Tensor all = linear_product(x, weight, bias, {});
      const at::Tensor random = x.narrow(0, 2, 30).to(at::kDouble), w = weight.to(at::kDouble).t();
      const at::Tensor exact = at::matmul(random, w) + bias.to(at::kDouble);
      const at::Tensor magnitude = at::matmul(random.abs(), w.abs()) + bias.to(at::kDouble).abs();
      EXPECT_LE(((all.narrow(0, 2, 30).to(at::kDouble) - exact).abs() - (exact.abs() / 128 + magnitude * 4e-6)).max().item<double>(), 0.0)
          << in << " x " << out;
      for (int64_t rows : {2, 3, 8, 9, 16, 17, 31}) {
        SCOPED_TRACE(std::to_string(rows) + " rows of " + std::to_string(in) + " against " + std::to_string(out));
        EXPECT_TRUE(at::equal(linear_product(x.narrow(0, 0, rows), weight, bias, {}), all.narrow(0, 0, rows)));
      }
    }
}

// At the amx level bf16 prompts with a bias take oneDNN's matmul with that bias instead of
// at::addmm (which first copies the bias into every output row): the same bits as libtorch's own
// bf16 addmm, which is what PyTorch computes, for inputs of one piece (bf16_linear_on_amx; longer
// ones are summed piece by piece, as before).
TEST_P(CpuKernels, Bf16PromptProductsWithBiasEqualLibtorchsAddmm) {
  if (GetParam() != CpuIsa::amx) GTEST_SKIP() << "bf16 prompt products go to oneDNN's tiles at the amx level only";
  at::manual_seed(13);
  at::NoGradGuard no_grad;
  for (auto [in, out] : {std::pair<int64_t, int64_t>{768, 3072}, {3072, 768}, {100, 37}})
    for (int64_t rows : {64, 512}) {
      SCOPED_TRACE(std::to_string(rows) + " rows of " + std::to_string(in) + " against " + std::to_string(out));
      const at::Tensor x = at::randn({rows, in}).to(at::kBFloat16), weight = at::randn({out, in}).to(at::kBFloat16);
      const at::Tensor bias = at::randn({out}).to(at::kBFloat16);
      EXPECT_TRUE(at::equal(linear_product(x.unsqueeze(0), weight, bias, {}).squeeze(0), at::addmm(bias, x, weight.t())));
    }
}

// Attention's bf16 products at the amx level read the strided head views in place (oneDNN) instead
// of at::matmul's copies: the same bits as at::matmul, for scores (q k^T) and weighted values.
TEST_P(CpuKernels, Bf16AttentionProductsOfHeadViewsEqualAtMatmul) {
  if (GetParam() != CpuIsa::amx) GTEST_SKIP() << "head views go to oneDNN directly at the amx level only";
  at::manual_seed(14);
  at::NoGradGuard no_grad;
  for (auto [batch, len, heads, dim] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{2, 128, 12, 64}, {3, 37, 4, 80}}) {
    SCOPED_TRACE(std::to_string(batch) + " x " + std::to_string(len) + " tokens, " + std::to_string(heads) + " heads of " +
                 std::to_string(dim));
    auto heads_of = [&] { return at::randn({batch, len, heads, dim}).to(at::kBFloat16).transpose(1, 2); };
    const at::Tensor q = heads_of(), k = heads_of(), v = heads_of();
    const at::Tensor scores = matmul_any_precision(q, k.transpose(-1, -2));
    EXPECT_TRUE(at::equal(scores, at::matmul(q, k.transpose(-1, -2))));
    const at::Tensor p = scores.softmax(-1);
    EXPECT_TRUE(at::equal(matmul_any_precision(p, v), at::matmul(p, v)));
    EXPECT_TRUE(at::equal(matmul_any_precision(p[0], v[0]), at::matmul(p[0], v[0])));  // 3-D
  }
}

// int8 weights times long inputs: where AVX512-VNNI or AVX-VNNI runs, the activations are split into two
// int8 parts (x = s * (high + low / 254), s = the row's largest |x| / 127), elsewhere the
// product is the dequantized weight's. Rows of 127 and 0.003s tell the two apart: 0.003 is
// 0.762 of a low step, so the split reads it as 1/254 (0.12 apart at 1e-5 of fp32 sums' error).
// An input with a NaN takes the fp32 route.
TEST_P(CpuKernels, Int8ProductsOfLongInputsSplitTheActivationsWhereVnniRuns) {
  at::NoGradGuard no_grad;
  const int64_t rows = 41, in = 259, out = 50;
  const bool integers = int8_products_in_integers(in);
  EXPECT_EQ(integers, (GetParam() >= CpuIsa::avx512 && cpu_has_avx512_vnni()) ||
                          (GetParam() >= CpuIsa::avx2 && cpu_has_avx_vnni()));
  at::Tensor x = at::full({rows, in}, 0.003f);
  x.select(1, 0).fill_(127.0f);
  x.narrow(0, 0, 7).neg_();
  const at::Tensor weight = at::ones({out, in}, at::kChar), scale = at::full({out}, 0.5f);
  const double weight_only = 0.5 * (127 + (in - 1) * 0.003), split = 0.5 * (127 + (in - 1) / 254.0);
  const at::Tensor y = linear_product(x, weight, at::Tensor(), scale);
  const at::Tensor sign = at::ones({rows, 1}, at::kDouble);
  sign.narrow(0, 0, 7).fill_(-1);
  EXPECT_TRUE(at::allclose(y.to(at::kDouble), sign * (integers ? split : weight_only) * at::ones({rows, out}, at::kDouble),
                           1e-5, 0))
      << y[0][0].item<double>() << " " << y[rows - 1][out - 1].item<double>();
  x[3][5] = std::nanf("");
  const at::Tensor with_nan = linear_product(x, weight, at::Tensor(), scale);
  EXPECT_TRUE(with_nan[3].isnan().all().item<bool>());
  EXPECT_TRUE(at::allclose(with_nan[40].to(at::kDouble), at::full({out}, weight_only, at::kDouble), 1e-5, 0));
}

// On AMX tiles the integer sums are vpdpbusd's and the same code turns them into floats: the
// products equal AVX512-VNNI's bit for bit, across partial blocks of 16 rows, 64 inputs and 32
// channels. A NaN in x still gives NaN in its row (the product falls back to the weight-only one).
TEST(Int8OnAmx, ProductsEqualAvx512VnniBitForBit) {
  if (!cpu_has_amx_int8()) GTEST_SKIP() << "no AMX int8 tiles granted here (" << cpu_features() << ")";
  at::NoGradGuard no_grad;
  at::manual_seed(12);
  const CpuIsa previous = cpu_isa_cap();
  const auto product_at = [](CpuIsa cap, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale) {
    set_cpu_isa_cap(cap);
    return linear_product(x, weight, at::Tensor(), scale);
  };
  for (int64_t rows : {33, 48, 67})
    for (int64_t in : {7, 64, 259})
      for (int64_t out : {5, 32, 77}) {
        SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(in) + " -> " + std::to_string(out));
        at::Tensor x = at::randn({rows, in}) * 3;
        const at::Tensor weight = at::randint(-127, 128, {out, in}).to(at::kChar), scale = at::rand({out}) + 0.01;
        const at::Tensor tiles = product_at(CpuIsa::amx, x, weight, scale);
        ASSERT_NE(describe_cpu_kernels().find("(AMX tiles)"), std::string::npos) << describe_cpu_kernels();
        const at::Tensor vnni = product_at(CpuIsa::avx512_bf16, x, weight, scale);
        EXPECT_TRUE(at::equal(tiles, vnni)) << "max diff " << (tiles - vnni).abs().max().item<double>();
        x[rows - 2][in / 2] = std::nanf("");
        EXPECT_TRUE(product_at(CpuIsa::amx, x, weight, scale)[rows - 2].isnan().all().item<bool>());
      }
  set_cpu_isa_cap(previous);
}

// A prompt's bf16 attention probabilities in one pass, at every kernel level: the same bits as
// libtorch's ops on bf16 (scores * scale, + mask, softmax in fp32 rounded once), for scales bf16 can
// and cannot hold, padding and causal masks, rows of whole 16-value vectors, of 16s and an 8 (600),
// with tails (603), shorter than one vector (5), and rows whose every key is masked (softmax uniform
// over them).
TEST_P(CpuKernels, Bf16AttentionSoftmaxEqualsTheBf16OpSequenceBitForBit) {
  if (GetParam() == CpuIsa::baseline) GTEST_SKIP() << "the one-pass softmax needs AVX2; baseline runs libtorch's ops";
  at::NoGradGuard no_grad;
  at::manual_seed(13);
  for (auto [q_len, width] : {std::pair<int64_t, int64_t>{40, 512}, {40, 600}, {40, 603}, {4400, 5}}) {
    const at::Tensor scores = (at::randn({2, 3, q_len, width}) * 20).to(at::kBFloat16);
    const at::Tensor padding =
        at::zeros({2, 1, 1, width}).index_put_({1, 0, 0, at::indexing::Slice(width * 5 / 6)}, -1e4);
    at::Tensor causal = at::full({q_len, width}, -3.0e38).triu(width - q_len + 1);
    causal[1].fill_(-3.0e38);  // a query that sees no key
    causal = causal.expand({2, 1, q_len, width});
    for (double scale : {0.125, 1 / std::sqrt(80.0), 1.0})
      for (const at::Tensor& mask : {at::Tensor(), padding.to(at::kBFloat16), causal.to(at::kBFloat16)}) {
        SCOPED_TRACE("rows of " + std::to_string(width) + ", scale " + std::to_string(scale) +
                     (mask.defined() ? ", mask " + c10::str(mask.sizes()) : ""));
        const at::Tensor m = mask.defined() ? mask.expand(scores.sizes()) : mask;
        ASSERT_TRUE(scaled_masked_softmax_applies(scores, m));
        at::Tensor expected = scores * scale;
        if (mask.defined()) expected = expected + mask;
        expected = at::softmax(expected, -1, at::kFloat).to(at::kBFloat16);
        EXPECT_TRUE(at::equal(scaled_masked_softmax(scores, scale, m), expected));
      }
  }
}

// matmul_any_precision (attention's per-head products; oneDNN's sgemm from avx512 up) on
// operands of every layout: rows contiguous, transposed views, strides of 2 in both dimensions
// (copied), and empty sizes.
TEST_P(CpuKernels, MatmulOfAnyLayoutEqualsTheExactProduct) {
  at::NoGradGuard no_grad;
  at::manual_seed(11);
  const at::Tensor a_rows = at::randn({37, 53}), b_rows = at::randn({53, 29});
  const at::Tensor a_cols = at::randn({53, 37}).t(), b_cols = at::randn({29, 53}).t();
  const at::Tensor a_strided = at::randn({74, 106}).slice(0, 0, 74, 2).slice(1, 0, 106, 2);
  const at::Tensor b_strided = at::randn({106, 58}).slice(0, 0, 106, 2).slice(1, 0, 58, 2);
  for (const auto& a : {a_rows, a_cols, a_strided})
    for (const auto& b : {b_rows, b_cols, b_strided}) {
      const at::Tensor exact = at::matmul(a.to(at::kDouble), b.to(at::kDouble));
      const at::Tensor bound = at::matmul(a.to(at::kDouble).abs(), b.to(at::kDouble).abs()) * 4e-6;
      const at::Tensor y = matmul_any_precision(a, b);
      ASSERT_EQ(y.sizes(), exact.sizes());
      EXPECT_TRUE(((y.to(at::kDouble) - exact).abs() <= bound).all().item<bool>())
          << a.strides() << " x " << b.strides();
    }
  EXPECT_EQ(matmul_any_precision(at::randn({0, 5}), at::randn({5, 3})).sizes(), (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(matmul_any_precision(at::randn({4, 0}), at::randn({0, 3})).eq(0).all().item<bool>());
}

// The automatic bf16 route follows the kernel level: oneDNN's bf16 products only with native bf16.
TEST_P(CpuKernels, AutomaticBf16RouteIsNativeExactlyWithNativeBf16) {
  RouteGuard automatic(Bf16Route::automatic);
  EXPECT_EQ(effective_bf16_route(), GetParam() >= CpuIsa::avx512_bf16 ? Bf16Route::native : Bf16Route::fp32);
}

INSTANTIATE_TEST_SUITE_P(Isa, CpuKernels,
                         ::testing::Values(CpuIsa::baseline, CpuIsa::avx2, CpuIsa::avx512, CpuIsa::avx512_bf16,
                                           CpuIsa::amx),
                         [](const auto& info) { return to_string(info.param); });

TEST(LinearBadInput, WrongFeatureCountAndInt8WithoutScalesAreTypedErrors) {
  Linear linear(8, 4);
  linear.weight.set_data(at::randn({4, 8}));
  linear.bias.set_data(at::zeros({4}));
  at::NoGradGuard no_grad;
  for (int64_t rows : {1, 16}) {  // the streaming kernel's path and sgemm's
    try {
      linear.forward(at::randn({rows, 5}));
      FAIL() << "a 5-feature input went through an 8-feature layer";
    } catch (const InvalidInputError& e) {
      EXPECT_NE(std::string(e.what()).find("does not end in 8 features"), std::string::npos) << e.what();
    }
  }
  linear.weight.requires_grad_(false);
  linear.weight.set_data(at::ones({4, 8}, at::kChar));  // int8 without the "weight_scale" buffer
  EXPECT_THROW(linear.forward(at::randn({1, 8})), Error);
}

// Without autograd, RMSNorm and the rotary embedding run as single fused kernels; with it, as
// libtorch op sequences. Both must give the same bits, in every kernel type: the fused kernels
// reproduce libtorch's summation order and its rounding after each op.
TEST(FusedOps, RmsNormAndRotaryEqualTheOpSequenceBitForBit) {
  at::manual_seed(7);
  auto equal_bits = [](const at::Tensor& a, const at::Tensor& b) {
    return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() && at::equal(a, b);
  };
  for (auto type : {at::kFloat, at::kBFloat16, at::kHalf}) {
    SCOPED_TRACE(c10::toString(type));
    // Widths below one vector, not a multiple of 8, and long enough for the sum's cascade.
    for (int64_t dim : {5, 100, 768, 4096}) {
      SCOPED_TRACE("width " + std::to_string(dim));
      RMSNorm norm(dim, 1e-6);
      norm.weight = at::randn({dim}).to(type);
      const at::Tensor x = (at::randn({3, 7, dim}) * 30).to(type);
      at::Tensor fused;
      {
        at::NoGradGuard no_grad;
        fused = norm.forward(x);
      }
      norm.weight.requires_grad_(true);
      const at::Tensor ops = norm.forward(x).detach();
      EXPECT_TRUE(equal_bits(fused, ops)) << "max diff " << (fused.to(at::kFloat) - ops.to(at::kFloat)).abs().max().item<double>();
    }
    // Full and partial rotary dims, halves of whole vectors and not; one position (decode) and
    // several; cos per batch row or shared; q as split_heads leaves it (a transposed view).
    for (auto [rot, head_dim] : {std::pair<int64_t, int64_t>{16, 16}, {8, 16}, {32, 48}}) {
      for (int64_t len : {1, 5}) {
        for (int64_t cos_batch : {2, 1}) {
          SCOPED_TRACE("rotary " + std::to_string(rot) + " of " + std::to_string(head_dim) + ", len " +
                       std::to_string(len) + ", cos batch " + std::to_string(cos_batch));
          const at::Tensor q = at::randn({2, len, 4, head_dim}).to(type).transpose(1, 2);
          const at::Tensor k = at::randn({2, len, 2, head_dim}).to(type).transpose(1, 2);
          const at::Tensor angles = at::rand({cos_batch, len, rot}) * 10;
          const at::Tensor cos = angles.cos().to(type), sin = angles.sin().to(type);
          std::pair<at::Tensor, at::Tensor> fused;
          {
            at::NoGradGuard no_grad;
            fused = apply_rotary_pos_emb(q, k, cos, sin);
          }
          const auto ops = apply_rotary_pos_emb(q.clone().requires_grad_(true), k, cos, sin);
          EXPECT_TRUE(equal_bits(fused.first, ops.first.detach()));
          EXPECT_TRUE(equal_bits(fused.second, ops.second.detach()));
        }
      }
    }
  }
}
