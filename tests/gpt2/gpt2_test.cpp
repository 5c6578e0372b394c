// GPT-2 parity on the hfref fixtures (LM head, hub key layout with legacy buffers, sequence and
// token classification), the heads without a fixture checked against ones that have one, the
// config aliases, and bad input.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/generation.h>
#include <plugformer/registry.h>
#include <plugformer/safetensors.h>

#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "../models/fixture_runner.h"

using namespace plugformer;
using namespace plugformer::testing;

namespace {

at::Tensor ids(std::vector<int64_t> v) { return at::tensor(v, at::kLong).unsqueeze(0); }

}  // namespace

TEST(GPT2Fixtures, TinyLM) { check_model_fixture("gpt2-tiny-lm"); }
TEST(GPT2Fixtures, TinyLMHubLayout) { check_model_fixture("gpt2-tiny-lm-hub-layout"); }
TEST(GPT2Fixtures, TinySeqCls) { check_model_fixture("gpt2-tiny-seqcls"); }
TEST(GPT2Fixtures, TinyTokCls) { check_model_fixture("gpt2-tiny-tokcls"); }
TEST(GPT2Fixtures, Bfloat16AndFloat16AgreeWithFloat32) {
  for (const char* name : {"gpt2-tiny-lm", "gpt2-tiny-seqcls", "gpt2-tiny-tokcls"})
    check_reduced_precision_agreement(name, {"bfloat16", "float16"});
}

TEST(GPT2Loading, HubLayoutKeysAndLegacyBuffers) {
  // Keys without "transformer." and attn.bias / attn.masked_bias buffers: nothing missing,
  // the buffers are not reported as unexpected.
  LoadingInfo info;
  auto model = load("gpt2-tiny-lm-hub-layout", "GPT2LMHeadModel", &info);
  EXPECT_TRUE(info.missing_keys.empty()) << info.missing_keys.size() << " missing, first " << info.missing_keys[0];
  EXPECT_TRUE(info.unexpected_keys.empty()) << info.unexpected_keys.size() << " unexpected, first "
                                            << info.unexpected_keys[0];
  EXPECT_TRUE(info.mismatched_keys.empty());
  // The checkpoint really has the buffers (the test would be vacuous otherwise).
  auto weights = SafetensorsFile::open(fixture("gpt2-tiny-lm-hub-layout") + "/model.safetensors");
  bool has_buffer = false;
  for (const auto& name : weights->keys()) has_buffer |= name.find("attn.bias") != std::string::npos &&
                                                         name.find("c_attn") == std::string::npos;
  EXPECT_TRUE(has_buffer);
}

TEST(GPT2Loading, LMHeadTiedToWte) {
  auto model = load("gpt2-tiny-lm", "GPT2LMHeadModel");
  at::Tensor lm_head, wte;
  for (const auto& p : model->named_parameters(true)) {
    if (p.key() == "lm_head.weight") lm_head = p.value();
    if (p.key() == "transformer.wte.weight") wte = p.value();
  }
  ASSERT_TRUE(lm_head.defined() && wte.defined());
  EXPECT_TRUE(at::equal(lm_head, wte));
  EXPECT_TRUE(model->can_generate());
}

TEST(GPT2Config, AliasesAndDefaults) {
  auto config = AutoConfig::from_pretrained(fixture("gpt2-tiny-lm"));
  EXPECT_EQ(config->model_type(), "gpt2");
  EXPECT_EQ(config->get("hidden_size").get<int64_t>(), 32);
  EXPECT_EQ(config->get("num_hidden_layers").get<int64_t>(), 2);
  EXPECT_EQ(config->get("num_attention_heads").get<int64_t>(), 4);
  EXPECT_EQ(config->get("max_position_embeddings").get<int64_t>(), 64);
  EXPECT_TRUE(config->get("n_inner").is_null());
  EXPECT_EQ(config->get("activation_function").get<std::string>(), "gelu_new");

  auto defaults = AutoConfig::for_model("gpt2");
  EXPECT_EQ(defaults->get("n_embd").get<int64_t>(), 768);
  EXPECT_EQ(defaults->get("n_positions").get<int64_t>(), 1024);
  EXPECT_EQ(defaults->get("vocab_size").get<int64_t>(), 50257);
  EXPECT_EQ(defaults->bos_token_id.value_or(-1), 50256);
  EXPECT_EQ(defaults->eos_token_id, std::vector<int64_t>{50256});
  EXPECT_TRUE(defaults->get("scale_attn_weights").get<bool>());
  EXPECT_FALSE(defaults->get("reorder_and_upcast_attn").get<bool>());

  // Setting an alias sets the field.
  auto c = AutoConfig::for_model(
      "gpt2", json{{"hidden_size", 64}, {"num_hidden_layers", 3}, {"num_attention_heads", 4}, {"max_position_embeddings", 16}});
  EXPECT_EQ(c->get("n_embd").get<int64_t>(), 64);
  EXPECT_EQ(c->get("n_layer").get<int64_t>(), 3);
  EXPECT_EQ(c->get("n_head").get<int64_t>(), 4);
  EXPECT_EQ(c->get("n_positions").get<int64_t>(), 16);
  EXPECT_THROW(AutoConfig::for_model("gpt2", json{{"hidden_size", 64}}), ConfigError);  // 64 % 12 heads
  EXPECT_THROW(AutoConfig::for_model("gpt2", json{{"n_embd", 30}, {"n_head", 4}}), ConfigError);
}

TEST(GPT2Heads, BaseModelMatchesLMHeadHiddenState) {
  // GPT2Model from the LM checkpoint (prefix stripped) gives the fixture's last_hidden_state.
  auto model = load("gpt2-tiny-lm", "GPT2Model");
  c10::InferenceMode guard;
  ModelInputs inputs;
  inputs.tensors["input_ids"] = expected("gpt2-tiny-lm", "single.input_ids");
  ModelOutput out = model->forward(inputs);
  EXPECT_LE(max_diff(out["last_hidden_state"], expected("gpt2-tiny-lm", "single.last_hidden_state")), 1e-4);
}

TEST(GPT2Heads, QuestionAnsweringMatchesClassifierRows) {
  // No QA fixture: a QA model carrying the token classifier's first two rows must give that
  // fixture's logits[..., 0] and [..., 1] as start and end logits.
  const std::string name = "gpt2-tiny-tokcls";
  auto tokcls_weights = SafetensorsFile::open(fixture(name) + "/model.safetensors");
  std::map<std::string, at::Tensor> state;
  for (const auto& key : tokcls_weights->keys()) {
    at::Tensor t = tokcls_weights->get(key);
    if (key == "classifier.weight") state["qa_outputs.weight"] = t.narrow(0, 0, 2);
    else if (key == "classifier.bias") state["qa_outputs.bias"] = t.narrow(0, 0, 2);
    else state[key] = t;
  }
  auto config = AutoConfig::from_pretrained(fixture(name));
  auto model = auto_model_from_config(tasks::kQuestionAnswering, config);
  EXPECT_EQ(model->class_name(), "GPT2ForQuestionAnswering");
  LoadingInfo info = model->load_weights(state);
  EXPECT_TRUE(info.missing_keys.empty());
  EXPECT_TRUE(info.unexpected_keys.empty());
  c10::InferenceMode guard;
  ModelInputs inputs;
  inputs.tensors["input_ids"] = expected(name, "input_ids");
  inputs.tensors["attention_mask"] = expected(name, "attention_mask");
  ModelOutput out = model->forward(inputs);
  at::Tensor logits = expected(name, "logits");
  EXPECT_LE(max_diff(out["start_logits"], logits.select(-1, 0)), 1e-4);
  EXPECT_LE(max_diff(out["end_logits"], logits.select(-1, 1)), 1e-4);

  // Loss: mean of the two cross entropies; out-of-range positions are ignored.
  const int64_t len = logits.size(1);
  inputs.tensors["start_positions"] = at::tensor(std::vector<int64_t>{1, len + 5}, at::kLong);
  inputs.tensors["end_positions"] = at::tensor(std::vector<int64_t>{2, 3}, at::kLong);
  ModelOutput with_loss = model->forward(inputs);
  at::Tensor s = out["start_logits"], e = out["end_logits"];
  const double start_loss = -at::log_softmax(s[0], -1)[1].item<double>();  // row 1 ignored
  const double end_loss = -(at::log_softmax(e[0], -1)[2].item<double>() + at::log_softmax(e[1], -1)[3].item<double>()) / 2;
  EXPECT_NEAR(with_loss["loss"].item<double>(), (start_loss + end_loss) / 2, 1e-5);
}

TEST(GPT2Heads, AutoMappings) {
  auto config = AutoConfig::for_model("gpt2", json{{"n_embd", 16}, {"n_layer", 1}, {"n_head", 2}, {"n_positions", 8},
                                                  {"vocab_size", 20}});
  EXPECT_EQ(AutoModel::from_config(config)->class_name(), "GPT2Model");
  EXPECT_EQ(AutoModelForCausalLM::from_config(config)->class_name(), "GPT2LMHeadModel");
  EXPECT_EQ(AutoModelForSequenceClassification::from_config(config)->class_name(), "GPT2ForSequenceClassification");
  EXPECT_EQ(AutoModelForTokenClassification::from_config(config)->class_name(), "GPT2ForTokenClassification");
  EXPECT_EQ(AutoModelForQuestionAnswering::from_config(config)->class_name(), "GPT2ForQuestionAnswering");
}

TEST(GPT2Modeling, LogitsToKeepAndCacheSteps) {
  auto model = load("gpt2-tiny-lm", "GPT2LMHeadModel");
  c10::InferenceMode guard;
  at::Tensor prompt = expected("gpt2-tiny-lm", "single.input_ids");
  at::Tensor full = expected("gpt2-tiny-lm", "single.logits");
  const int64_t len = prompt.size(1);
  ModelInputs inputs;
  inputs.tensors["input_ids"] = prompt;
  inputs.logits_to_keep = 1;
  EXPECT_LE(max_diff(model->forward(inputs)["logits"], full.narrow(1, len - 1, 1)), 1e-4);

  // Prefill all but the last token, then one cached step: same logits as the full pass.
  ModelInputs prefill;
  prefill.tensors["input_ids"] = prompt.narrow(1, 0, len - 1);
  prefill.use_cache = true;
  ModelOutput first = model->forward(prefill);
  ASSERT_TRUE(first.past_key_values);
  EXPECT_EQ(first.past_key_values->seq_length(0), len - 1);
  ModelInputs step;
  step.tensors["input_ids"] = prompt.narrow(1, len - 1, 1);
  step.past_key_values = first.past_key_values;
  step.use_cache = true;
  EXPECT_LE(max_diff(model->forward(step)["logits"], full.narrow(1, len - 1, 1)), 1e-4);
}

TEST(GPT2Modeling, ScaleAndUpcastOptionsChangeOrKeepNumbers) {
  // scale_attn_by_inverse_layer_idx changes layer 1's scores (so the logits); reorder_and_upcast_attn
  // in fp32 is the same computation as the default path.
  c10::InferenceMode guard;
  at::Tensor prompt = expected("gpt2-tiny-lm", "single.input_ids");
  at::Tensor reference = expected("gpt2-tiny-lm", "single.logits");
  auto run = [&](const json& overrides) {
    PretrainedOptions options;
    options.architecture = "GPT2LMHeadModel";
    options.config_overrides = overrides;
    auto model = load_model_for_architecture(fixture("gpt2-tiny-lm"), options);
    ModelInputs inputs;
    inputs.tensors["input_ids"] = prompt;
    return model->forward(inputs)["logits"];
  };
  EXPECT_LE(max_diff(run(json{{"reorder_and_upcast_attn", true}}), reference), 1e-4);
  EXPECT_GT(max_diff(run(json{{"scale_attn_by_inverse_layer_idx", true}}), reference), 1e-3);
  EXPECT_GT(max_diff(run(json{{"scale_attn_weights", false}}), reference), 1e-3);
  // bf16 weights: fp32 scores (reorder_and_upcast_attn) are no further from the fp32 reference
  // than plain bf16 attention, and both stay near it.
  auto run_bf16 = [&](bool upcast) {
    PretrainedOptions options;
    options.architecture = "GPT2LMHeadModel";
    options.torch_dtype = "bfloat16";
    options.config_overrides = json{{"reorder_and_upcast_attn", upcast}};
    auto model = load_model_for_architecture(fixture("gpt2-tiny-lm"), options);
    EXPECT_EQ(model->dtype(), at::kBFloat16);
    ModelInputs inputs;
    inputs.tensors["input_ids"] = prompt;
    return max_diff(model->forward(inputs)["logits"], reference);
  };
  const double upcast_err = run_bf16(true), plain_err = run_bf16(false);
  const double range = reference.abs().max().item<double>();
  EXPECT_LE(upcast_err, plain_err * 1.25 + 1e-3) << "upcast " << upcast_err << " plain " << plain_err;
  EXPECT_LE(upcast_err, 0.1 * range) << "upcast " << upcast_err << " range " << range;
}

TEST(GPT2BadInput, SequenceLongerThanContextWindow) {
  auto model = load("gpt2-tiny-lm", "GPT2LMHeadModel");  // n_positions = 64
  c10::InferenceMode guard;
  ModelInputs ok;
  ok.tensors["input_ids"] = at::zeros({1, 64}, at::kLong);
  EXPECT_NO_THROW(model->forward(ok));
  ModelInputs too_long;
  too_long.tensors["input_ids"] = at::zeros({1, 65}, at::kLong);
  EXPECT_THROW(model->forward(too_long), InvalidInputError);
  try {
    model->forward(too_long);
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("n_positions"), std::string::npos) << e.what();
  }
  // Through the cache: 60 cached + 5 new tokens.
  ModelInputs prefill;
  prefill.tensors["input_ids"] = at::zeros({1, 60}, at::kLong);
  prefill.use_cache = true;
  auto cache = model->forward(prefill).past_key_values;
  ModelInputs step;
  step.tensors["input_ids"] = at::zeros({1, 5}, at::kLong);
  step.past_key_values = cache;
  EXPECT_THROW(model->forward(step), InvalidInputError);
  // Explicit position ids beyond the window.
  ModelInputs positions;
  positions.tensors["input_ids"] = ids({1, 2});
  positions.tensors["position_ids"] = ids({63, 64});
  EXPECT_THROW(model->forward(positions), InvalidInputError);
}

TEST(GPT2BadInput, PromptLongerThanContextWindowInGenerate) {
  auto model = load("gpt2-tiny-lm", "GPT2LMHeadModel");
  GenerationConfig config;
  config.max_new_tokens = 2;
  EXPECT_THROW(generate(*model, at::zeros({1, 65}, at::kLong), at::Tensor(), config), InvalidInputError);
}

TEST(GPT2BadInput, EmptyInput) {
  auto model = load("gpt2-tiny-lm", "GPT2LMHeadModel");
  c10::InferenceMode guard;
  ModelInputs empty;
  empty.tensors["input_ids"] = at::zeros({1, 0}, at::kLong);
  EXPECT_THROW(model->forward(empty), InvalidInputError);
  ModelInputs no_batch;
  no_batch.tensors["input_ids"] = at::zeros({0, 3}, at::kLong);
  EXPECT_THROW(model->forward(no_batch), InvalidInputError);
  ModelInputs missing;
  EXPECT_THROW(model->forward(missing), InvalidInputError);
  auto base = load("gpt2-tiny-lm", "GPT2Model");
  EXPECT_THROW(base->forward(empty), InvalidInputError);
}

TEST(GPT2BadInput, OutOfVocabularyAndBadShapes) {
  auto model = load("gpt2-tiny-lm", "GPT2LMHeadModel");  // vocab 256
  c10::InferenceMode guard;
  ModelInputs oov;
  oov.tensors["input_ids"] = ids({1, 256});
  EXPECT_THROW(model->forward(oov), InvalidInputError);
  ModelInputs flat;
  flat.tensors["input_ids"] = at::tensor(std::vector<int64_t>{1, 2}, at::kLong);
  EXPECT_THROW(model->forward(flat), InvalidInputError);
  ModelInputs bad_mask;
  bad_mask.tensors["input_ids"] = ids({1, 2, 3});
  bad_mask.tensors["attention_mask"] = ids({1, 1});
  EXPECT_THROW(model->forward(bad_mask), InvalidInputError);
}

TEST(GPT2Tokenizer, RegisteredForModelType) {
  AutoConfig::for_model("gpt2");  // loads the plugins
  auto mapping = Registry::instance().tokenizer_mapping("gpt2");
  ASSERT_TRUE(mapping.has_value());
  EXPECT_EQ(mapping->slow_class, "GPT2Tokenizer");
  EXPECT_EQ(mapping->fast_class, "GPT2TokenizerFast");

  // tokenizer_class "GPT2Tokenizer" resolves to the registered fast class; ids as the Rust library's.
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("plugformer_gpt2_tok_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path src = fs::path(PLUGFORMER_FIXTURES_DIR) / "tokenizers" / "gpt2";
  fs::copy_file(src / "tokenizer.json", dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  std::ofstream(dir / "tokenizer_config.json") << R"({"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024})";
  auto tokenizer = AutoTokenizer::from_pretrained(dir.string());
  std::ifstream expected_lines(src / "expected.jsonl");
  std::string line;
  int checked = 0;
  while (std::getline(expected_lines, line) && checked < 40) {
    const json c = json::parse(line);
    if (c.value("type", "") != "encode" || !c.value("add_special_tokens", false)) continue;
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(tokenizer->encode(text).ids, c["ids"].get<std::vector<int64_t>>()) << "text: '" << text << "'";
    ++checked;
  }
  EXPECT_GT(checked, 10);
  fs::remove_all(dir);
}
