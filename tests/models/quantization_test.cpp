// int8 weight-only quantization: quantized products equal fp32 products with the dequantized
// weights (weight-streaming kernel for few rows, dequantized sgemm for many), the rounding stays
// within half a quantization step, its effect on stories260K and the fixtures is bounded and
// printed, and the uses a quantized model does not support fail cleanly.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/generation.h>
#include <plugformer/layers.h>
#include <plugformer/peft.h>

#include <filesystem>
#include <iostream>

#include "../core/test_util.h"
#include "fixture_runner.h"

using namespace plugformer;
using plugformer::testing::expected;
using plugformer::testing::fixture;
using plugformer::testing::load;
using plugformer::testing::max_diff;

namespace {

at::Tensor scale_of(const torch::nn::Module& layer) { return *layer.named_buffers(false).find("weight_scale"); }

// Puts the dequantized weights of `quantized` into the same layers of `reference` (fp32, in each
// layer's own layout), so both compute the same products in two different ways.
void load_dequantized(PreTrainedModel& quantized, PreTrainedModel& reference) {
  torch::NoGradGuard no_grad;
  auto targets = reference.named_modules();
  int64_t layers = 0;
  for (const auto& item : quantized.named_modules()) {
    const auto& name = item.key();
    if (auto* q = dynamic_cast<Linear*>(item.value().get())) {
      ASSERT_EQ(q->weight.scalar_type(), at::kChar) << name;
      const at::Tensor w = q->weight.to(at::kFloat) * scale_of(*q).unsqueeze(1);
      dynamic_cast<Linear&>(*targets[name]).weight.set_data(w);
      ++layers;
    } else if (auto* c = dynamic_cast<Conv1D*>(item.value().get())) {
      ASSERT_EQ(c->weight.scalar_type(), at::kChar) << name;
      const at::Tensor w = c->weight.to(at::kFloat) * scale_of(*c).unsqueeze(1);
      dynamic_cast<Conv1D&>(*targets[name]).weight.set_data(w.t().contiguous());
      ++layers;
    }
  }
  EXPECT_GT(layers, 0);
}

at::Tensor logits_of(PreTrainedModel& model, const at::Tensor& ids) {
  ModelInputs inputs;
  inputs.tensors["input_ids"] = ids;
  return model.forward(inputs)["logits"];
}

class Int8 : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

}  // namespace

TEST_P(Int8, ProductsEqualTheDequantizedWeights) {
  const auto [name, architecture] = GetParam();
  auto quantized = load(name, architecture);
  quantized->quantize("int8");
  EXPECT_TRUE(quantized->is_quantized());
  auto reference = load(name, architecture);
  load_dequantized(*quantized, *reference);
  c10::InferenceMode guard;
  at::manual_seed(1);
  const int64_t vocab = quantized->config().get("vocab_size").get<int64_t>();
  // 1 and 8 rows take the streaming kernel, 2 x 9 rows the dequantized sgemm.
  for (auto shape : {std::vector<int64_t>{1, 1}, std::vector<int64_t>{8, 1}, std::vector<int64_t>{2, 9}}) {
    SCOPED_TRACE(c10::str(shape));
    const at::Tensor ids = at::randint(0, vocab, shape, at::kLong);
    EXPECT_LE(max_diff(logits_of(*quantized, ids), logits_of(*reference, ids)), 1e-4);
  }
}

TEST_P(Int8, RoundingIsWithinHalfAStepOfEachRowsScale) {
  const auto [name, architecture] = GetParam();
  auto original = load(name, architecture);
  auto quantized = load(name, architecture);
  quantized->quantize("int8");
  auto originals = original->named_modules();
  for (const auto& item : quantized->named_modules()) {
    at::Tensor q, w;
    if (auto* linear = dynamic_cast<Linear*>(item.value().get())) {
      q = linear->weight;
      w = dynamic_cast<Linear&>(*originals[item.key()]).weight;
    } else if (auto* conv = dynamic_cast<Conv1D*>(item.value().get())) {
      q = conv->weight;
      w = dynamic_cast<Conv1D&>(*originals[item.key()]).weight.t();
    } else {
      continue;
    }
    SCOPED_TRACE(item.key());
    const at::Tensor scale = scale_of(*item.value()).unsqueeze(1);
    EXPECT_TRUE(at::allclose(scale.squeeze(1) * 127, w.abs().amax(1)));
    EXPECT_EQ(q.abs().amax(1).min().item<int64_t>(), 127);  // every row uses the full range
    const at::Tensor error = (q.to(at::kFloat) * scale - w).abs();
    EXPECT_TRUE((error <= scale * 0.5 * (1 + 1e-5)).all().item<bool>()) << "max error " << error.max().item<double>();
  }
}

INSTANTIATE_TEST_SUITE_P(Families, Int8,
                         ::testing::Values(std::make_pair("llama-tiny", "LlamaForCausalLM"),
                                           std::make_pair("gpt2-tiny-lm", "GPT2LMHeadModel"),
                                           std::make_pair("qwen3-tiny", "Qwen3ForCausalLM"),
                                           std::make_pair("gemma2-tiny", "Gemma2ForCausalLM"),
                                           std::make_pair("phi3-tiny-longrope", "Phi3ForCausalLM")),
                         [](const auto& info) {
                           std::string name = info.param.second;
                           return name.substr(0, name.find("For"));
                         });

// The effect on outputs, printed for the record: fixture logits and stories260K (a real, tiny
// model) logits and greedy text, against fp32.
TEST(Int8Effect, FixtureLogitsStayCloseToFp32) {
  for (auto [name, architecture] : {std::make_pair("llama-tiny", "LlamaForCausalLM"),
                                    std::make_pair("gpt2-tiny-lm", "GPT2LMHeadModel")}) {
    auto model = load(name, architecture);
    model->quantize("int8");
    c10::InferenceMode guard;
    ModelInputs inputs;
    inputs.tensors["input_ids"] = expected(name, "input_ids");
    inputs.tensors["attention_mask"] = expected(name, "attention_mask");
    const at::Tensor want = expected(name, "logits"), got = model->forward(inputs)["logits"];
    const at::Tensor real = inputs.tensors["attention_mask"].to(at::kBool);  // padded positions are not compared
    const double diff = (got - want).abs().amax(-1).masked_select(real).max().item<double>();
    const double spread = want.abs().max().item<double>();
    const at::Tensor same_argmax = (got.argmax(-1) == want.argmax(-1)).masked_select(real);
    std::cout << name << ": int8 logits max |diff| " << diff << " (largest |logit| " << spread << "), argmax equal at "
              << same_argmax.sum().item<int64_t>() << " of " << same_argmax.numel() << " positions\n";
    // Random tiny models amplify the rounding (a few % of the logit range); a wrong scale or
    // layout would be off by the whole range.
    EXPECT_LE(diff, 0.1 * spread);
    EXPECT_GE(same_argmax.to(at::kFloat).mean().item<double>(), 0.8);
  }
}

TEST(Int8Effect, Stories260K) {
  PretrainedOptions options;
  options.quantization = "int8";
  auto quantized = AutoModelForCausalLM::from_pretrained(test::kStories, options);
  auto fp32 = AutoModelForCausalLM::from_pretrained(test::kStories);
  EXPECT_TRUE(quantized->is_quantized());
  auto tokenizer = AutoTokenizer::from_pretrained(test::kStories);
  c10::InferenceMode guard;
  const at::Tensor prompt = at::tensor(tokenizer->encode("Once upon a time").ids, at::kLong).unsqueeze(0);
  const at::Tensor want = logits_of(*fp32, prompt), got = logits_of(*quantized, prompt);
  const double diff = max_diff(got, want);
  GenerationConfig config;
  config.max_new_tokens = 48;
  const at::Tensor a = generate(*fp32, prompt, {}, config).sequences[0];
  const at::Tensor b = generate(*quantized, prompt, {}, config).sequences[0];
  auto text = [&](const at::Tensor& ids) {
    return tokenizer->decode(std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel()));
  };
  int64_t same = 0;
  while (same < a.size(0) && a[same].item<int64_t>() == b[same].item<int64_t>()) ++same;
  std::cout << "stories260K int8: logits max |diff| " << diff << " (largest |logit| "
            << want.abs().max().item<double>() << "), greedy tokens equal to fp32: " << same - prompt.size(1)
            << " of " << config.max_new_tokens.value() << "\nfp32: " << text(a) << "\nint8: "
            << text(b) << "\n";
  EXPECT_LE(diff, 0.02 * want.abs().max().item<double>());
  EXPECT_EQ(at::argmax(got, -1).equal(at::argmax(want, -1)), true);  // every prompt position's next token
  // With and without the KV cache the quantized model generates the same tokens.
  config.use_cache = false;
  EXPECT_TRUE(generate(*quantized, prompt, {}, config).sequences[0].equal(b));
}

TEST(Int8Cli, GenerateTakesQuantize) {
  const auto int8 = test::run_cli("generate " + test::kStories + " \"Once upon a time\" --max-new-tokens 8 --json --quantize int8");
  ASSERT_EQ(int8.status, 0) << int8.out;
  EXPECT_NE(int8.out.find("\"generated_ids\""), std::string::npos) << int8.out;
  const auto bad = test::run_cli("generate " + test::kStories + " --quantize int4");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.out.find("quantization 'int4' is not supported"), std::string::npos) << bad.out;
}

TEST(Int8BadUse, UnknownMethodSavingAndMergingFailCleanly) {
  auto model = load("llama-tiny", "LlamaForCausalLM");
  EXPECT_THROW(model->quantize("int4"), InvalidInputError);
  EXPECT_FALSE(model->is_quantized());
  PretrainedOptions options;
  options.quantization = "fp8";
  EXPECT_THROW(AutoModelForCausalLM::from_pretrained(fixture("llama-tiny"), options), InvalidInputError);

  model->quantize("int8");
  model->quantize("int8");  // already quantized layers stay as they are
  test::TempDir dir("quantized_save");
  try {
    model->save_pretrained(dir / "out");
    FAIL() << "saving int8 weights in transformers' format should fail";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("int8-quantized weights cannot be saved"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "out"));  // nothing half-written

  PeftConfig lora;
  lora.target_modules = {"q_proj"};
  lora.task_type = "CAUSAL_LM";
  auto peft = get_peft_model(model, lora);
  {  // LoRA runs on top of the quantized layers, but cannot be merged into them
    c10::InferenceMode guard;
    EXPECT_EQ(logits_of(*peft, at::tensor({3, 4}, at::kLong).unsqueeze(0)).size(2), 256);
  }
  EXPECT_THROW(peft->merge_adapter(), InvalidInputError);
}
