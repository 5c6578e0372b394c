// The plugformer command end to end.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cstdio>

#include <plugformer/config.h>
#include <plugformer/runtime.h>
#include <plugformer/safetensors.h>

#include "test_util.h"

using namespace plugformer;

namespace {


}  // namespace

TEST(Cli, ListShowsTheLlamaPlugin) {
  auto r = test::run_cli("list");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("libplugformer_llama.so"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("LlamaForCausalLM"), std::string::npos);
  EXPECT_NE(r.out.find("AutoModelForCausalLM"), std::string::npos);
  EXPECT_NE(r.out.find("LlamaTokenizer"), std::string::npos);
}

TEST(Cli, GenerateDefaultModel) {
  auto r = test::run_cli("generate --max-new-tokens 40");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("Once upon a time, there was a little girl named Lily. She loved to play outside in the park."),
            std::string::npos)
      << r.out;
}

// The streamed continuation keeps the space the prompt's decoding would drop ("Once upon atime").
TEST(Cli, GenerateStreamsTheContinuationOfThePrompt) {
  auto r = test::run_cli("generate " + test::kStories + " \"Once upon a\" --max-new-tokens 6");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "Once upon a time, there was a little\n");
  auto json_out = test::run_cli("generate " + test::kStories + " \"Lily went to the\" --max-new-tokens 6 --json");
  EXPECT_EQ(json_out.status, 0) << json_out.out;
  EXPECT_EQ(json::parse(json_out.out)["text"], " park with her mom");
}

TEST(Cli, GenerateIdsAsJson) {
  auto r = test::run_cli("generate " + test::kStories + " --ids 1,403,407,261,378 --max-new-tokens 5 --json");
  EXPECT_EQ(r.status, 0) << r.out;
  const json result = json::parse(r.out.substr(r.out.find('{')));
  EXPECT_EQ(result["generated_ids"].size(), 5u);
}

TEST(Cli, InfoPrintsCountsAndFootprint) {
  auto r = test::run_cli("info " + test::kStories);
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("260032"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1040128 bytes"), std::string::npos) << r.out;
  // 260032 parameters minus the 512 x 64 tied embedding: 227264; 2 and 6 FLOPs each per token.
  EXPECT_NE(r.out.find("FLOPs per token:   454528 forward, 1363584 training"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cpu kernels:       " + to_string(cpu_isa()) + ": "), std::string::npos) << r.out;
}

// PLUGFORMER_CPU_ISA caps the kernels (info says so when the cap is below the CPU's level) and
// the same words come out on every level; a level that is not one is refused at start.
TEST(Cli, CpuIsaCapIsReportedAndEveryLevelGenerates) {
  for (CpuIsa cap : {CpuIsa::baseline, CpuIsa::avx2, CpuIsa::avx512, CpuIsa::avx512_bf16}) {
    const std::string env = "PLUGFORMER_CPU_ISA=" + to_string(cap) + " ";
    SCOPED_TRACE(env);
    const CpuIsa level = std::min(detected_cpu_isa(), cap);
    auto info = test::run_cli("info " + test::kStories, env);
    EXPECT_EQ(info.status, 0) << info.out;
    EXPECT_NE(info.out.find("cpu kernels:       " + to_string(level) + (level < detected_cpu_isa() ? " (capped" : ":")),
              std::string::npos)
        << info.out;
    for (const std::string dtype : {"float32", "bfloat16"}) {
      auto r = test::run_cli("generate " + test::kStories + " \"Once upon a time\" --max-new-tokens 5 --dtype " + dtype, env);
      EXPECT_EQ(r.status, 0) << r.out;
      EXPECT_EQ(r.out.rfind("Once upon a time, there was a", 0), 0u) << dtype << ": " << r.out;
    }
  }
  auto bad = test::run_cli("list", "PLUGFORMER_CPU_ISA=sse4 ");
  EXPECT_EQ(bad.status, 1) << bad.out;
  EXPECT_NE(bad.out.find("PLUGFORMER_CPU_ISA is \"sse4\": expected baseline, avx2, avx512, avx512_bf16 or amx"),
            std::string::npos)
      << bad.out;
}

// The environment's cap holds for oneDNN too: a bf16 prompt of 40 tokens (oneDNN's many-row
// products) runs on AMX tiles only without a cap below amx (ONEDNN_VERBOSE names each kernel).
TEST(Cli, CpuIsaCapFromTheEnvironmentCapsOnednn) {
  if (detected_cpu_isa() < CpuIsa::amx) GTEST_SKIP() << "no AMX here (" << cpu_features() << ")";
  std::string ids = "1";
  for (int i = 0; i < 39; ++i) ids += "," + std::to_string(300 + i);
  const std::string generate = "generate " + test::kStories + " --ids " + ids + " --max-new-tokens 1 --dtype bfloat16";
  for (const std::string cap : {"amx", "avx512_bf16"}) {
    auto r = test::run_cli(generate, "ONEDNN_VERBOSE=1 PLUGFORMER_CPU_ISA=" + cap + " ");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("onednn_verbose,exec,cpu,matmul"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("_amx") != std::string::npos, cap == "amx") << cap << ": " << r.out;
  }
}

TEST(Cli, ForwardWritesTransformersOutputNames) {
  test::TempDir dir("cli-forward");
  const std::string fixture = std::string(PLUGFORMER_FIXTURES_DIR) + "/models/llama-tiny";
  auto expected = SafetensorsFile::open(fixture + "/expected.safetensors");
  save_safetensors(dir / "in.safetensors", {{"input_ids", expected->get("input_ids")},
                                            {"attention_mask", expected->get("attention_mask")}});
  auto r = test::run_cli("forward " + fixture + " --class LlamaForCausalLM --inputs " + (dir / "in.safetensors").string() +
               " --out " + (dir / "out.safetensors").string());
  ASSERT_EQ(r.status, 0) << r.out;
  auto out = SafetensorsFile::open(dir / "out.safetensors");
  EXPECT_LE((out->get("logits") - expected->get("logits")).abs().max().item<double>(), 1e-4);
  EXPECT_LE((out->get("last_hidden_state") - expected->get("last_hidden_state")).abs().max().item<double>(), 1e-4);
}

TEST(Cli, ErrorsAreOneLineAndNonZero) {
  auto r = test::run_cli("info /nonexistent/model");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.out.rfind("error: ", 0), 0u) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  auto bad_ids = test::run_cli("generate " + test::kStories + " --ids 1,99999 --max-new-tokens 2");
  EXPECT_EQ(bad_ids.status, 1) << bad_ids.out;
  EXPECT_NE(bad_ids.out.find("outside the vocabulary"), std::string::npos) << bad_ids.out;
}

// fp16 and bf16 generate on both bf16 routes (the native one is what AVX512-BF16 / AMX CPUs take),
// and greedy decoding of this model picks the same words as fp32 for the first tokens.
TEST(Cli, Float16AndBfloat16GenerateOnEveryRoute) {
  for (const std::string route : {"fp32", "native", "auto"})
    for (const std::string dtype : {"float16", "bfloat16"}) {
      SCOPED_TRACE(dtype + " on the " + route + " route");
      auto r = test::run_cli("generate " + test::kStories + " \"Once upon a time\" --max-new-tokens 5 --dtype " + dtype,
                             "PLUGFORMER_BF16_ROUTE=" + route + " ");
      EXPECT_EQ(r.status, 0) << r.out;
      EXPECT_EQ(r.out.rfind("Once upon a time, there was a", 0), 0u) << r.out;
    }
  auto bad = test::run_cli("list", "PLUGFORMER_BF16_ROUTE=avx512 ");
  EXPECT_EQ(bad.status, 1) << bad.out;
  EXPECT_NE(bad.out.find("PLUGFORMER_BF16_ROUTE is \"avx512\": expected auto, native or fp32"), std::string::npos) << bad.out;
}

// An operation libtorch refuses inside a model call is one line naming the module, the dtype and
// the operation, without libtorch's C++ backtrace.
TEST(Cli, LibtorchErrorsAreOneLineWithoutStackFrames) {
  test::TempDir dir("cli-torch-error");
  save_safetensors(dir / "in.safetensors", {{"input_ids", at::ones({1, 3}, at::kFloat)}});
  auto r = test::run_cli("forward " + test::kStories + " --class LlamaForCausalLM --inputs " +
                         (dir / "in.safetensors").string() + " --out " + (dir / "out.safetensors").string());
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_EQ(r.out.rfind("error: Embedding(512, 64) in Float: ", 0), 0u) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_EQ(r.out.find("frame #"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir / "out.safetensors"));
}

TEST(Cli, WarnsOnceWhenTheReferenceBlasIsActive) {
  const std::string reference = "/usr/lib/x86_64-linux-gnu/blas";
  if (!std::filesystem::exists(reference + "/libblas.so.3")) GTEST_SKIP() << "no reference BLAS installed";
  auto slow = test::run_cli("list", "LD_LIBRARY_PATH=" + reference + " ");
  EXPECT_EQ(slow.status, 0) << slow.out;
  size_t warnings = 0;
  for (size_t at = slow.out.find("reference BLAS"); at != std::string::npos; at = slow.out.find("reference BLAS", at + 1))
    ++warnings;
  EXPECT_EQ(warnings, 1u) << slow.out;
  auto fast = test::run_cli("list");
  EXPECT_EQ(fast.out.find("reference BLAS"), std::string::npos) << fast.out;
}
