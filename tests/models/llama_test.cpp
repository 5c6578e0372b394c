// Llama parity: hfref fixtures (GQA, MQA, tied, llama3 rope, padding, generation) and the real
// stories260K model against llama2.c's run.c.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <plugformer/auto.h>
#include <plugformer/generation.h>

#include "fixture_runner.h"

using namespace plugformer;

TEST(LlamaFixtures, LlamaTiny) { plugformer::testing::check_model_fixture("llama-tiny"); }
TEST(LlamaFixtures, LlamaTinyTiedSeqCls) { plugformer::testing::check_model_fixture("llama-tiny-tied-seqcls"); }
TEST(LlamaFixtures, Bfloat16AndFloat16AgreeWithFloat32) {
  for (const char* name : {"llama-tiny", "llama-tiny-tied-seqcls"})
    plugformer::testing::check_reduced_precision_agreement(name, {"bfloat16", "float16"});
}

namespace {
const std::string kStories = std::string(PLUGFORMER_SOURCE_DIR) + "/models/stories260K";
json stories_reference() { return read_json_file(std::string(PLUGFORMER_FIXTURES_DIR) + "/llama_stories260K.json"); }
}  // namespace

TEST(Stories260K, LogitsMatchLlama2c) {
  auto model = AutoModelForCausalLM::from_pretrained(kStories);
  c10::InferenceMode guard;
  const json ref = stories_reference();
  for (const auto& prompt : ref["prompts"]) {
    SCOPED_TRACE(prompt["text"].get<std::string>());
    const auto ids = prompt["ids"].get<std::vector<int64_t>>();
    ModelInputs inputs;
    inputs.tensors["input_ids"] = at::tensor(ids, at::kLong).unsqueeze(0);
    at::Tensor logits = model->forward(inputs)["logits"][0][-1];
    at::Tensor expected = at::tensor(prompt["logits_last"].get<std::vector<float>>());
    EXPECT_LE((logits - expected).abs().max().item<double>(), 1e-4);
    EXPECT_EQ(logits.argmax().item<int64_t>(), prompt["argmax_last"].get<int64_t>());
  }
}

TEST(Stories260K, GreedyMatchesLlama2c) {
  auto model = AutoModelForCausalLM::from_pretrained(kStories);
  const json ref = stories_reference();
  for (const auto& prompt : ref["prompts"]) {
    SCOPED_TRACE(prompt["text"].get<std::string>());
    const auto ids = prompt["ids"].get<std::vector<int64_t>>();
    GenerationConfig config;
    config.max_new_tokens = prompt["greedy"]["max_new_tokens"].get<int64_t>();
    auto out = generate(*model, at::tensor(ids, at::kLong).unsqueeze(0), at::Tensor(), config);
    at::Tensor fresh = out.sequences[0].narrow(0, int64_t(ids.size()), config.max_new_tokens.value()).contiguous();
    std::vector<int64_t> got(fresh.data_ptr<int64_t>(), fresh.data_ptr<int64_t>() + fresh.numel());
    EXPECT_EQ(got, prompt["greedy"]["ids"].get<std::vector<int64_t>>());
  }
}

TEST(Stories260K, SlowTokenizerMatchesSentencePiece) {
  auto tokenizer = AutoTokenizer::from_pretrained(kStories, {}, /*use_fast=*/false);
  const json ref = stories_reference();
  int matched = 0, total = 0;
  for (const auto& c : ref["tokenizer_cases"]["cases"]) {
    const std::string text = c["text"].get<std::string>();
    ++total;
    const auto ids = tokenizer->encode(text).ids;
    EXPECT_EQ(ids, c["ids"].get<std::vector<int64_t>>()) << "text: '" << text << "'";
    matched += ids == c["ids"].get<std::vector<int64_t>>();
  }
  std::cout << "stories260K LlamaTokenizer (SentencePiece): " << matched << "/" << total << " cases match\n";
  for (const auto& prompt : ref["prompts"])
    EXPECT_EQ(tokenizer->decode(prompt["greedy"]["ids"].get<std::vector<int64_t>>(), true),
              prompt["greedy"]["text"].get<std::string>());
}

TEST(Stories260K, LoadsZeroCopyFromTheMapping) {
  PretrainedOptions options;
  options.torch_dtype = "auto";
  LoadingInfo info;
  options.loading_info = &info;
  auto model = AutoModelForCausalLM::from_pretrained(kStories, options);
  EXPECT_TRUE(info.missing_keys.empty());
  EXPECT_TRUE(info.unexpected_keys.empty());
  EXPECT_EQ(model->num_parameters(), 260032);
  // lm_head is tied: one tensor under two names.
  at::Tensor lm_head, embed;
  for (const auto& p : model->named_parameters()) {
    if (p.key() == "lm_head.weight") lm_head = p.value();
    if (p.key() == "model.embed_tokens.weight") embed = p.value();
  }
  EXPECT_EQ(lm_head.data_ptr(), embed.data_ptr());
}

TEST(Stories260K, Bfloat16AgreesWithFloat32OnConfidentPositions) {
  auto fp32 = AutoModelForCausalLM::from_pretrained(kStories);
  PretrainedOptions options;
  options.torch_dtype = "bfloat16";
  auto bf16 = AutoModelForCausalLM::from_pretrained(kStories, options);
  EXPECT_EQ(bf16->dtype(), at::kBFloat16);
  c10::InferenceMode guard;
  const auto ids = stories_reference()["prompts"][0]["ids"].get<std::vector<int64_t>>();
  ModelInputs inputs;
  inputs.tensors["input_ids"] = at::tensor(ids, at::kLong).unsqueeze(0);
  at::Tensor a = fp32->forward(inputs)["logits"][0], b = bf16->forward(inputs)["logits"][0];
  auto top2 = a.topk(2, -1);
  at::Tensor confident = (std::get<0>(top2).select(-1, 0) - std::get<0>(top2).select(-1, 1)) > 0.1;
  at::Tensor agree = a.argmax(-1) == b.argmax(-1);
  EXPECT_TRUE(agree.logical_or(confident.logical_not()).all().item<bool>());
}

TEST(Stories260K, AutoTokenizerFallsBackToTheModelTypeMapping) {
  // Only config.json and tokenizer.model: no tokenizer_config.json names a class.
  const auto dir = std::filesystem::path(PLUGFORMER_BINARY_DIR) / "test_tmp" / "tokenizer-mapping";
  std::filesystem::create_directories(dir);
  for (const char* f : {"config.json", "tokenizer.model"})
    std::filesystem::copy_file(kStories + "/" + f, dir / f, std::filesystem::copy_options::overwrite_existing);
  auto tokenizer = AutoTokenizer::from_pretrained(dir.string());
  // LlamaTokenizer's own default adds BOS.
  EXPECT_EQ(tokenizer->encode("Once upon a time").ids, (std::vector<int64_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tokenizer->vocab_size(), 512u);
  std::filesystem::remove_all(dir);
}

TEST(Stories260K, FastTokenizerMatchesTheRustLibrary) {
  auto tokenizer = AutoTokenizer::from_pretrained(kStories);  // tokenizer.json -> LlamaTokenizerFast
  const json ref = stories_reference();
  int matched = 0, total = 0;
  for (const auto& c : ref["tokenizer_cases"]["cases"]) {
    const auto ids = tokenizer->encode(c["text"].get<std::string>()).ids;
    ++total;
    matched += ids == c["ids"].get<std::vector<int64_t>>();
    EXPECT_EQ(ids, c["ids"].get<std::vector<int64_t>>()) << c["text"];
    if (c.contains("decoded_hf")) EXPECT_EQ(tokenizer->decode(ids, true), c["decoded_hf"].get<std::string>()) << c["text"];
  }
  std::cout << "stories260K LlamaTokenizerFast (tokenizer.json): " << matched << "/" << total << " cases match\n";
}

// Long inputs without autograd run the MLP in chunks of rows (fp32 intermediate within 8 MB:
// 512 rows of 4096 here), so 3 x 200 rows make a chunk of 512 and one of 88. With autograd the
// MLP runs whole: both must give the same hidden states, in fp32 and in bf16.
TEST(DecoderMLP, LongInputsInRowChunksMatchTheWholeInput) {
  at::manual_seed(10);
  auto config = AutoConfig::for_model("llama", json{{"hidden_size", 16}, {"intermediate_size", 4096},
                                                    {"num_hidden_layers", 1}, {"num_attention_heads", 2},
                                                    {"num_key_value_heads", 1}, {"vocab_size", 50}});
  auto model = AutoModel::from_config(config);
  const at::Tensor ids = at::randint(0, 50, {3, 200}, at::kLong);
  for (c10::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    model->to_dtype(dtype);
    const at::Tensor whole = model->forward({{"input_ids", ids}})["last_hidden_state"].detach().to(at::kFloat);
    at::Tensor chunked;
    {
      c10::InferenceMode guard;
      chunked = model->forward({{"input_ids", ids}})["last_hidden_state"].to(at::kFloat);
    }
    const double tolerance = dtype == at::kFloat ? 1e-5 : 1.0 / 16;
    EXPECT_LE((chunked - whole).abs().max().item<double>(), tolerance * whole.abs().max().item<double>());
  }
}
