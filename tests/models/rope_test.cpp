// Rotary embeddings' rope types against transformers' modeling_rope_utils: yarn and longrope tables
// (tests/fixtures/rope, computed from transformers' formulas in float32 as torch runs them), values
// worked out by hand, and the typed errors for bad rope_scaling.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>

#include <plugformer/error.h>
#include <plugformer/layers.h>

using namespace plugformer;

namespace {

json rope_tables() { return read_json_file(std::string(PLUGFORMER_FIXTURES_DIR) + "/rope/rope_tables.json"); }

RotaryEmbedding rotary_of(const json& c) {
  std::optional<int64_t> original;
  if (!c["original_max_position_embeddings"].is_null()) original = c["original_max_position_embeddings"].get<int64_t>();
  return RotaryEmbedding(c["head_dim"].get<int64_t>(), c["rope_theta"].get<double>(), c["rope_scaling"],
                         c["max_position_embeddings"].get<int64_t>(), c["partial_rotary_factor"].get<double>(), original);
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no ConfigError)";
}

}  // namespace

TEST(RopeTypes, YarnAndLongropeMatchTransformersTables) {
  const json tables = rope_tables();  // kept: a range-for over a temporary's ["cases"] would dangle
  for (const auto& c : tables["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const RotaryEmbedding rope = rotary_of(c);
    const at::Tensor expected = at::tensor(c["inv_freq"].get<std::vector<float>>());
    const at::Tensor got = rope.inv_freq_for(c["seq_len"].get<int64_t>());
    ASSERT_EQ(got.sizes(), expected.sizes());
    EXPECT_LE(((got - expected).abs() / expected).max().item<double>(), 1e-6);
    EXPECT_NEAR(rope.attention_scaling(), c["attention_factor"].get<double>(), 1e-12);
  }
}

TEST(RopeTypes, HandComputedYarnValues) {
  // factor 4, 64 dims, original context 32: low = floor(-6.39) -> 0 and high = ceil(5.66) = 6, so
  // frequency 0 keeps plain RoPE, 3 is halfway, and 6 onwards are divided by the factor.
  const RotaryEmbedding rope(64, 10000.0, json{{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32}},
                             128);
  const at::Tensor f = rope.inv_freq_for(1);
  auto plain = [](int64_t i) { return 1.0 / std::pow(10000.0, 2.0 * double(i) / 64.0); };
  EXPECT_NEAR(f[0].item<double>(), 1.0, 1e-7);
  EXPECT_NEAR(f[3].item<double>() / plain(3), 0.5 * 1.0 + 0.5 / 4.0, 1e-6);
  for (int64_t i = 6; i < 32; ++i) EXPECT_NEAR(f[i].item<double>() / plain(i), 0.25, 1e-6) << i;
  EXPECT_NEAR(rope.attention_scaling(), 0.1 * std::log(4.0) + 1.0, 1e-12);
  // cos and sin carry the attention factor.
  auto [cos, sin] = rope.forward(at::zeros({1, 1}, at::kLong), at::kFloat);
  EXPECT_NEAR(cos[0][0][0].item<double>(), 0.1 * std::log(4.0) + 1.0, 1e-6);
}

TEST(RopeTypes, HandComputedLongropeValues) {
  // max_position_embeddings 64 over an original 16: factor 4, attention factor sqrt(1 + ln 4 / ln 16).
  const json scaling = {{"rope_type", "longrope"},
                        {"short_factor", {1.0, 1.0, 1.0, 1.0}},
                        {"long_factor", {2.0, 4.0, 8.0, 16.0}}};
  const RotaryEmbedding rope(8, 10000.0, scaling, 64, 1.0, 16);
  EXPECT_NEAR(rope.attention_scaling(), std::sqrt(1.5), 1e-12);
  const at::Tensor short_f = rope.inv_freq_for(16), long_f = rope.inv_freq_for(17);
  for (int64_t i = 0; i < 4; ++i) {
    const double plain = 1.0 / std::pow(10000.0, 2.0 * double(i) / 8.0);
    EXPECT_NEAR(short_f[i].item<double>() / plain, 1.0, 1e-6);
    EXPECT_NEAR(long_f[i].item<double>() / plain, 1.0 / std::pow(2.0, double(i + 1)), 1e-6);
  }
  // The regime follows the largest position id of the call.
  auto [cos_short, sin_short] = rope.forward(at::tensor(std::vector<int64_t>{0, 15}).view({1, 2}), at::kFloat);
  auto [cos_long, sin_long] = rope.forward(at::tensor(std::vector<int64_t>{0, 16}).view({1, 2}), at::kFloat);
  const double angle = 15.0 * 1.0;  // position 15, frequency 0, short factor 1
  EXPECT_NEAR(cos_short[0][1][0].item<double>(), std::cos(angle) * std::sqrt(1.5), 1e-5);
  EXPECT_NEAR(cos_long[0][1][0].item<double>(), std::cos(16.0 / 2.0) * std::sqrt(1.5), 1e-5);
}

TEST(RopeTypes, BadRopeScalingIsAConfigErrorNamingTheField) {
  EXPECT_NE(error_of([] { RotaryEmbedding(8, 1e4, json{{"rope_type", "ntk-by-parts"}}, 64); }).find("'ntk-by-parts' is not supported"),
            std::string::npos);
  EXPECT_NE(error_of([] { RotaryEmbedding(8, 1e4, json{{"rope_type", "yarn"}}, 64); }).find("rope_scaling.factor"),
            std::string::npos);
  EXPECT_NE(error_of([] { RotaryEmbedding(8, 1e4, json{{"rope_type", "linear"}}, 64); }).find("rope_scaling.factor"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              RotaryEmbedding(8, 1e4, json{{"rope_type", "llama3"}, {"factor", 8.0}}, 64);
            }).find("rope_scaling.low_freq_factor"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              RotaryEmbedding(8, 1e4, json{{"rope_type", "longrope"}, {"short_factor", {1.0, 1.0, 1.0, 1.0}}}, 64);
            }).find("rope_scaling.long_factor"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              RotaryEmbedding(8, 1e4, json{{"rope_type", "longrope"}, {"short_factor", {1.0}}, {"long_factor", {1.0}}}, 64);
            }).find("list of 4 numbers"),
            std::string::npos);
  EXPECT_NE(error_of([] { RotaryEmbedding(8, 1e4, json{{"rope_type", "yarn"}, {"factor", "four"}}, 64); })
                .find("'rope_scaling.factor' must be a number"),
            std::string::npos);
}
