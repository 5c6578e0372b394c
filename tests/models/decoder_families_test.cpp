// Qwen2, Qwen3, Mistral, Gemma, Gemma 2 and Phi-3 parity on the hfref fixtures (sliding windows
// shorter than the sequences, head_dim unlike hidden / heads, q / k norms, (1 + w) norms, soft-caps,
// fused projections, longrope in both regimes), in fp32, and in bf16 / fp16 against fp32.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fixture_runner.h"

namespace {

const std::vector<std::string> kFixtures = {"qwen2-tiny",        "qwen2-tiny-seqcls",  "qwen2-tiny-tokcls", "qwen3-tiny",
                                 "qwen3-tiny-seqcls", "mistral-tiny-window", "mistral-tiny-seqcls", "gemma-tiny",
                                 "gemma2-tiny",       "phi3-tiny-longrope", "phi3-tiny-seqcls",  "phi3-tiny-tokcls"};

class DecoderFamilyFixture : public ::testing::TestWithParam<std::string> {};

std::string test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

}  // namespace

TEST_P(DecoderFamilyFixture, MatchesTheGoldenOutputsAndGreedyTokens) {
  plugformer::testing::check_model_fixture(GetParam());
}

TEST_P(DecoderFamilyFixture, Bfloat16AndFloat16AgreeWithFloat32) {
  plugformer::testing::check_reduced_precision_agreement(GetParam(), {"float16"});
}

INSTANTIATE_TEST_SUITE_P(Families, DecoderFamilyFixture, ::testing::ValuesIn(kFixtures), test_name);
