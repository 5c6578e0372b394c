// T5 parity on the hfref fixtures (relu + tied, gated-gelu untied, encoder-only), the heads
// without a fixture checked against the base model they sit on, seq2seq generation (greedy through
// the fixtures, beams and sampling here), the config rules, the CLI, and bad input.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/generation.h>
#include <plugformer/safetensors.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <sys/wait.h>
#include <unistd.h>

#include "../core/test_util.h"
#include "../models/fixture_runner.h"

using namespace plugformer;
using namespace plugformer::testing;

namespace {

at::Tensor param(const ModelPtr& model, const std::string& name) {
  for (const auto& p : model->named_parameters(true))
    if (p.key() == name) return p.value();
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

// A scratch copy of a fixture whose config.json can be edited.
std::filesystem::path edited_copy(const std::string& name, const std::function<void(json&)>& edit) {
  const auto dir = std::filesystem::temp_directory_path() / ("t5_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  for (const char* file : {"config.json", "model.safetensors"})
    std::filesystem::copy_file(fixture(name) + "/" + file, dir / file);
  json config = read_json_file(dir / "config.json");
  edit(config);
  write_json_file(dir / "config.json", config);
  return dir;
}


}  // namespace

TEST(T5Fixtures, TinyReluTied) { check_model_fixture("t5-tiny"); }
// Checked at 3e-4: the fixture carries ~1e-4 of fp32 rounding itself (see fixture_runner.cpp).
TEST(T5Fixtures, TinyGatedGeluUntied) { check_model_fixture("t5-tiny-v1_1"); }
TEST(T5Fixtures, TinyEncoderGatedSilu) { check_model_fixture("t5-tiny-encoder"); }
// fp16 also runs transformers' clamp of the hidden states after each sub-layer. The argmax is
// compared in fp16 only: in bf16, t5-tiny-v1_1 (attention scores up to ~56) moves its logits by up
// to ~2.7 and flips positions with fp32 margins up to 0.85, with libtorch's own bf16 kernels too.
TEST(T5Fixtures, Bfloat16AndFloat16AgreeWithFloat32) {
  for (const char* name : {"t5-tiny", "t5-tiny-v1_1", "t5-tiny-encoder"})
    check_reduced_precision_agreement(name, {"float16"});
}

TEST(T5Config, FeedForwardProjDecidesTheActivation) {
  auto config = AutoConfig::from_pretrained(fixture("t5-tiny-v1_1"));
  EXPECT_EQ(config->model_type(), "t5");
  EXPECT_TRUE(config->is_encoder_decoder);
  EXPECT_EQ(config->get("dense_act_fn"), "gelu_new");  // "gated-gelu" keeps the tanh approximation
  EXPECT_EQ(config->get("is_gated_act"), true);
  EXPECT_EQ(config->get("hidden_size"), 32);  // attribute_map: hidden_size -> d_model
  EXPECT_EQ(config->get("num_hidden_layers"), 2);
  config->apply_overrides({{"feed_forward_proj", "gated-silu"}});
  EXPECT_EQ(config->get("dense_act_fn"), "silu");
  config->apply_overrides({{"feed_forward_proj", "relu"}});
  EXPECT_EQ(config->get("is_gated_act"), false);
  EXPECT_THROW(config->apply_overrides({{"feed_forward_proj", "fancy-relu"}}), ConfigError);
  EXPECT_THROW(config->apply_overrides({{"feed_forward_proj", "gated-gelu-new"}}), ConfigError);
}

TEST(T5Loading, TiedCheckpointHasNoLmHeadAndLoadsCleanly) {
  LoadingInfo info;
  auto model = load("t5-tiny", "T5ForConditionalGeneration", &info);
  EXPECT_TRUE(info.missing_keys.empty()) << info.missing_keys[0];
  EXPECT_TRUE(info.unexpected_keys.empty()) << info.unexpected_keys[0];
  EXPECT_TRUE(at::equal(param(model, "lm_head.weight"), param(model, "shared.weight")));
  // The untied v1.1 checkpoint keeps its own head.
  auto untied = load("t5-tiny-v1_1", "T5ForConditionalGeneration");
  EXPECT_FALSE(at::equal(param(untied, "lm_head.weight"), param(untied, "shared.weight")));
  EXPECT_TRUE(model->can_generate());
}

TEST(T5Loading, StackEmbeddingCopiesAndUnusedCrossBiasAreIgnored) {
  // Hub checkpoints also store encoder/decoder.embed_tokens.weight (aliases of shared.weight) and
  // some an EncDecAttention bias table that T5 never reads.
  const auto dir = edited_copy("t5-tiny", [](json&) {});
  auto weights = SafetensorsFile::open(fixture("t5-tiny") + "/model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : weights->keys()) tensors.emplace_back(name, weights->get(name));
  tensors.emplace_back("encoder.embed_tokens.weight", weights->get("shared.weight"));
  tensors.emplace_back("decoder.embed_tokens.weight", weights->get("shared.weight"));
  tensors.emplace_back("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight", at::zeros({32, 4}));
  save_safetensors(dir / "model.safetensors", tensors);
  LoadingInfo info;
  PretrainedOptions options;
  options.loading_info = &info;
  AutoModelForSeq2SeqLM::from_pretrained(dir.string(), options);
  EXPECT_TRUE(info.unexpected_keys.empty()) << info.unexpected_keys[0];
  std::filesystem::remove_all(dir);
}

TEST(T5Heads, AutoMappings) {
  EXPECT_EQ(AutoModel::from_pretrained(fixture("t5-tiny"))->class_name(), "T5Model");
  EXPECT_EQ(AutoModelForSeq2SeqLM::from_pretrained(fixture("t5-tiny"))->class_name(), "T5ForConditionalGeneration");
  EXPECT_EQ(AutoModelForTextEncoding::from_pretrained(fixture("t5-tiny"))->class_name(), "T5EncoderModel");
  EXPECT_EQ(AutoModelForSequenceClassification::from_pretrained(fixture("t5-tiny"))->class_name(),
            "T5ForSequenceClassification");
  EXPECT_EQ(AutoModelForQuestionAnswering::from_pretrained(fixture("t5-tiny"))->class_name(), "T5ForQuestionAnswering");
}

TEST(T5Heads, BaseAndEncoderModelsMatchTheFixture) {
  c10::InferenceMode guard;
  const at::Tensor ids = expected("t5-tiny", "input_ids"), mask = expected("t5-tiny", "attention_mask");
  ModelInputs inputs{{"input_ids", ids}, {"attention_mask", mask}, {"decoder_input_ids", expected("t5-tiny", "decoder_input_ids")}};
  auto base = load("t5-tiny", "T5Model")->forward(inputs);
  EXPECT_LE(max_diff(base["last_hidden_state"], expected("t5-tiny", "decoder_last_hidden_state")), 1e-4);
  EXPECT_LE(max_diff(base["encoder_last_hidden_state"], expected("t5-tiny", "encoder_last_hidden_state")), 1e-4);
  auto encoder = load("t5-tiny", "T5EncoderModel")->forward({{"input_ids", ids}, {"attention_mask", mask}});
  EXPECT_LE(max_diff(encoder["last_hidden_state"], expected("t5-tiny", "encoder_last_hidden_state")), 1e-4);
}

TEST(T5Heads, LabelsAreShiftedAndMinus100Ignored) {
  c10::InferenceMode guard;
  auto model = load("t5-tiny", "T5ForConditionalGeneration");
  const at::Tensor ids = expected("t5-tiny", "input_ids"), mask = expected("t5-tiny", "attention_mask");
  at::Tensor labels = at::tensor({5, 9, 17, 1, -100, -100, 33, 12, 7, 8, 1, -100}, at::kLong).view({2, 6});
  auto out = model->forward({{"input_ids", ids}, {"attention_mask", mask}, {"labels", labels}});
  // Independently: decoder inputs = [start, labels[:-1]] with -100 -> pad (both 0), then the mean
  // cross entropy over the positions whose label is not -100.
  at::Tensor decoder = at::tensor({0, 5, 9, 17, 1, 0, 0, 33, 12, 7, 8, 1}, at::kLong).view({2, 6});
  at::Tensor logits = model->forward({{"input_ids", ids}, {"attention_mask", mask}, {"decoder_input_ids", decoder}})["logits"];
  EXPECT_LE(max_diff(out["logits"], logits), 1e-6);
  at::Tensor logp = logits.log_softmax(-1);
  double sum = 0;
  int count = 0;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 6; ++t) {
      const int64_t label = labels[b][t].item<int64_t>();
      if (label == -100) continue;
      sum -= logp[b][t][label].item<double>();
      ++count;
    }
  EXPECT_NEAR(out["loss"].item<double>(), sum / count, 1e-5);
}

TEST(T5Heads, CacheStepsEqualOneFullPass) {
  c10::InferenceMode guard;
  auto model = load("t5-tiny-v1_1", "T5ForConditionalGeneration");
  const at::Tensor ids = expected("t5-tiny-v1_1", "input_ids"), mask = expected("t5-tiny-v1_1", "attention_mask");
  const at::Tensor decoder = expected("t5-tiny-v1_1", "decoder_input_ids");
  at::Tensor full = model->forward({{"input_ids", ids}, {"attention_mask", mask}, {"decoder_input_ids", decoder}})["logits"];
  ModelInputs step{{"input_ids", ids}, {"attention_mask", mask}};
  step.use_cache = true;
  at::Tensor encoded;
  for (int64_t t = 0; t < decoder.size(1); ++t) {
    step.tensors["decoder_input_ids"] = decoder.narrow(1, t, 1);
    if (encoded.defined()) {  // later steps reuse the encoder output and the cross-attention cache
      step.tensors.erase("input_ids");
      step.tensors["encoder_outputs"] = encoded;
    }
    auto out = model->forward(step);
    encoded = out["encoder_last_hidden_state"];
    step.past_key_values = out.past_key_values;
    EXPECT_LE(max_diff(out["logits"].squeeze(1), full.select(1, t)), 1e-4) << "step " << t;
  }
  EXPECT_EQ(step.past_key_values->seq_length(0), decoder.size(1));
  EXPECT_TRUE(step.past_key_values->has_cross(0));
}

TEST(T5Heads, HiddenStatesAndAttentionsPerStack) {
  c10::InferenceMode guard;
  auto model = load("t5-tiny-v1_1", "T5ForConditionalGeneration");
  ModelInputs inputs{{"input_ids", expected("t5-tiny-v1_1", "input_ids")},
                     {"decoder_input_ids", expected("t5-tiny-v1_1", "decoder_input_ids")}};
  inputs.output_hidden_states = true;
  inputs.output_attentions = true;
  auto out = model->forward(inputs);
  EXPECT_EQ(out.hidden_states.size(), 4u);  // decoder: embeddings + 3 layers (the last normed)
  EXPECT_EQ(out.attentions.size(), 3u);
  EXPECT_TRUE(out.has("encoder_hidden_states.2") && !out.has("encoder_hidden_states.3"));
  EXPECT_TRUE(out.has("encoder_attentions.1") && out.has("cross_attentions.2"));
  EXPECT_LE(max_diff(out.hidden_states.back(), out["decoder_last_hidden_state"]), 0);
  // Attention rows are distributions; cross-attention spans the encoder length.
  at::Tensor cross = out["cross_attentions.0"];
  EXPECT_EQ(cross.size(-1), inputs.get("input_ids").size(1));
  EXPECT_LE(max_diff(cross.sum(-1), at::ones_like(cross.sum(-1))), 1e-5);
}

TEST(T5Heads, SequenceClassificationPoolsTheLastEos) {
  c10::InferenceMode guard;
  auto model = load("t5-tiny", "T5ForSequenceClassification");
  // Every row ends with eos (1) before its padding, as T5's tokenizer writes it.
  const at::Tensor ids = expected("t5-tiny", "input_ids"), mask = expected("t5-tiny", "attention_mask");
  auto out = model->forward({{"input_ids", ids}, {"attention_mask", mask}, {"labels", at::tensor({1, 0}, at::kLong)}});
  // By hand: T5Model on decoder = shift_right(input_ids), row state at the last eos, dense-tanh-out_proj.
  at::Tensor decoder = at::cat({at::zeros({ids.size(0), 1}, at::kLong), ids.narrow(1, 0, ids.size(1) - 1)}, 1);
  at::Tensor hidden = load("t5-tiny", "T5Model")->forward({{"input_ids", ids}, {"attention_mask", mask}, {"decoder_input_ids", decoder}})["last_hidden_state"];
  std::vector<at::Tensor> rows;
  for (int64_t b = 0; b < ids.size(0); ++b) {
    int64_t last = -1;
    for (int64_t t = 0; t < ids.size(1); ++t)
      if (ids[b][t].item<int64_t>() == 1) last = t;
    ASSERT_GE(last, 0);
    rows.push_back(hidden[b][last]);
  }
  at::Tensor x = at::stack(rows);
  x = at::tanh(at::linear(x, param(model, "classification_head.dense.weight"), param(model, "classification_head.dense.bias")));
  at::Tensor logits = at::linear(x, param(model, "classification_head.out_proj.weight"), param(model, "classification_head.out_proj.bias"));
  EXPECT_LE(max_diff(out["logits"], logits), 1e-5);
  EXPECT_NEAR(out["loss"].item<double>(), at::cross_entropy_loss(logits, at::tensor({1, 0}, at::kLong)).item<double>(), 1e-5);
  // Rows with different numbers of eos tokens are refused, as transformers does.
  at::Tensor uneven = ids.clone();
  uneven[0][0] = 1;
  EXPECT_THROW(model->forward({{"input_ids", uneven}, {"attention_mask", mask}}), InvalidInputError);
}

TEST(T5Heads, QuestionAnsweringOnTheDecoderStates) {
  c10::InferenceMode guard;
  auto model = load("t5-tiny", "T5ForQuestionAnswering");
  const at::Tensor ids = expected("t5-tiny", "input_ids"), mask = expected("t5-tiny", "attention_mask");
  auto out = model->forward({{"input_ids", ids}, {"attention_mask", mask},
                             {"start_positions", at::tensor({1, 2}, at::kLong)}, {"end_positions", at::tensor({3, 99}, at::kLong)}});
  at::Tensor decoder = at::cat({at::zeros({ids.size(0), 1}, at::kLong), ids.narrow(1, 0, ids.size(1) - 1)}, 1);
  at::Tensor hidden = load("t5-tiny", "T5Model")->forward({{"input_ids", ids}, {"attention_mask", mask}, {"decoder_input_ids", decoder}})["last_hidden_state"];
  at::Tensor logits = at::linear(hidden, param(model, "qa_outputs.weight"), param(model, "qa_outputs.bias"));
  EXPECT_LE(max_diff(out["start_logits"], logits.select(-1, 0)), 1e-5);
  EXPECT_LE(max_diff(out["end_logits"], logits.select(-1, 1)), 1e-5);
  EXPECT_TRUE(out.has("loss"));
}

TEST(T5Generation, BeamSearchAndSamplingStartFromTheDecoderStart) {
  auto model = load("t5-tiny-v1_1", "T5ForConditionalGeneration");
  const at::Tensor ids = expected("t5-tiny-v1_1", "input_ids"), mask = expected("t5-tiny-v1_1", "attention_mask");
  GenerationConfig config = GenerationConfig::from_model_config(model->config());
  config.eos_token_id.clear();
  config.max_new_tokens = 6;
  config.num_beams = 3;
  config.num_return_sequences = 2;
  auto beams = generate(*model, ids, mask, config);
  ASSERT_EQ(beams.sequences.size(0), 4);
  EXPECT_EQ(beams.sequences.size(1), 7);
  EXPECT_TRUE((beams.sequences.select(1, 0) == 0).all().item<bool>());
  EXPECT_GE(beams.sequences_scores[0].item<double>(), beams.sequences_scores[1].item<double>());
  // The best beam's score is its summed log-probability over the length (length_penalty 1),
  // recomputed from a plain forward pass.
  at::Tensor best = beams.sequences.narrow(0, 0, 1);
  {
    c10::InferenceMode guard;
    at::Tensor logits = model->forward({{"input_ids", ids.narrow(0, 0, 1)}, {"attention_mask", mask.narrow(0, 0, 1)},
                                        {"decoder_input_ids", best.narrow(1, 0, 6)}})["logits"];
    at::Tensor logp = logits.log_softmax(-1)[0];
    double sum = 0;
    for (int64_t t = 0; t < 6; ++t) sum += logp[t][best[0][t + 1].item<int64_t>()].item<double>();
    EXPECT_NEAR(beams.sequences_scores[0].item<double>(), sum / 6, 1e-4);
  }
  // Seeded sampling: the same seed gives the same tokens, with or without the cache.
  config.num_beams = 1;
  config.num_return_sequences = 1;
  config.do_sample = true;
  config.seed = 7;
  auto a = generate(*model, ids, mask, config);
  config.use_cache = false;
  auto b = generate(*model, ids, mask, config);
  EXPECT_TRUE(at::equal(a.sequences, b.sequences));
}

TEST(T5Generation, GreedyStopsAtEosAndPadsFinishedRows) {
  auto model = load("t5-tiny", "T5ForConditionalGeneration");
  const at::Tensor ids = expected("t5-tiny", "input_ids"), mask = expected("t5-tiny", "attention_mask");
  GenerationConfig config = GenerationConfig::from_model_config(model->config());
  config.max_new_tokens = 20;
  config.eos_token_id = {49};  // the fixture's greedy rows reach 49 as their 10th (row 0) and 6th (row 1) token
  auto out = generate(*model, ids, mask, config);
  ASSERT_EQ(out.sequences.size(1), 11);  // stops when the last row is done
  EXPECT_EQ(out.sequences[0][10].item<int64_t>(), 49);
  EXPECT_EQ(out.sequences[1][6].item<int64_t>(), 49);
  EXPECT_TRUE((out.sequences[1].narrow(0, 7, 4) == 0).all().item<bool>());  // pad_token_id once finished
}

TEST(T5BadInput, NoDecoderStartToken) {
  const auto dir = edited_copy("t5-tiny", [](json& c) { c["decoder_start_token_id"] = nullptr; });
  auto model = AutoModelForSeq2SeqLM::from_pretrained(dir.string());
  const at::Tensor ids = expected("t5-tiny", "input_ids");
  GenerationConfig config = GenerationConfig::from_model_config(model->config());
  config.max_new_tokens = 3;
  try {
    generate(*model, ids, at::Tensor(), config);
    FAIL() << "generate without decoder_start_token_id";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("decoder_start_token_id"), std::string::npos) << e.what();
  }
  c10::InferenceMode guard;
  EXPECT_THROW(model->forward({{"input_ids", ids}, {"labels", ids}}), InvalidInputError);
  std::filesystem::remove_all(dir);
}

TEST(T5BadInput, DecoderInputsWithoutEncoderOutputs) {
  c10::InferenceMode guard;
  auto model = load("t5-tiny", "T5ForConditionalGeneration");
  const at::Tensor decoder = expected("t5-tiny", "decoder_input_ids");
  try {
    model->forward({{"decoder_input_ids", decoder}});
    FAIL() << "decoder inputs without encoder outputs";
  } catch (const InvalidInputError& e) {
    EXPECT_NE(std::string(e.what()).find("encoder_outputs"), std::string::npos) << e.what();
  }
  const at::Tensor ids = expected("t5-tiny", "input_ids");
  EXPECT_THROW(model->forward({{"input_ids", ids}}), InvalidInputError);  // no decoder inputs at all
  EXPECT_THROW(model->forward({{"input_ids", ids}, {"decoder_input_ids", decoder.narrow(0, 0, 1)}}), InvalidInputError);
  EXPECT_THROW(model->forward({{"input_ids", ids}, {"attention_mask", at::ones({2, 3}, at::kLong)}, {"decoder_input_ids", decoder}}),
               InvalidInputError);
  EXPECT_THROW(model->forward({{"encoder_outputs", at::zeros({2, 4, 7})}, {"decoder_input_ids", decoder}}), InvalidInputError);
  EXPECT_THROW(model->forward({{"input_ids", ids + 1000}, {"decoder_input_ids", decoder}}), InvalidInputError);
}

TEST(T5Cli, GenerateSeq2SeqIdsAsJson) {
  auto r = test::run_cli("generate " + fixture("t5-tiny") + " --ids 5,9,17,1 --max-new-tokens 8 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const json result = json::parse(r.out.substr(r.out.find('{')));
  // The same as the API with the model's generation config (which stops at eos 1).
  auto model = load("t5-tiny", "T5ForConditionalGeneration");
  GenerationConfig config = GenerationConfig::from_model_config(model->config());
  config.update_from_json(read_json_file(fixture("t5-tiny") + "/generation_config.json"));
  config.max_new_tokens = 8;
  auto out = generate(*model, at::tensor({5, 9, 17, 1}, at::kLong).unsqueeze(0), at::Tensor(), config);
  at::Tensor fresh = out.sequences[0].narrow(0, 1, out.sequences.size(1) - 1).contiguous();
  EXPECT_EQ(result["generated_ids"].get<std::vector<int64_t>>(),
            std::vector<int64_t>(fresh.data_ptr<int64_t>(), fresh.data_ptr<int64_t>() + fresh.numel()));
}

TEST(T5Cli, ForwardTakesDecoderInputIds) {
  const auto dir = std::filesystem::temp_directory_path() / ("t5_cli_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  save_safetensors(dir / "inputs.safetensors", {{"input_ids", expected("t5-tiny", "input_ids")},
                                                {"attention_mask", expected("t5-tiny", "attention_mask")},
                                                {"decoder_input_ids", expected("t5-tiny", "decoder_input_ids")}});
  auto r = test::run_cli("forward " + fixture("t5-tiny") + " --inputs " + (dir / "inputs.safetensors").string() + " --out " +
                   (dir / "out.safetensors").string());
  ASSERT_EQ(r.status, 0) << r.out;
  auto out = SafetensorsFile::open(dir / "out.safetensors");
  EXPECT_LE(max_diff(out->get("logits"), expected("t5-tiny", "logits")), 1e-4);
  EXPECT_LE(max_diff(out->get("encoder_last_hidden_state"), expected("t5-tiny", "encoder_last_hidden_state")), 1e-4);
  std::filesystem::remove_all(dir);
}

TEST(T5Tokenizer, FastTokenizerThroughTheModelType) {
  // t5-small's tokenizer.json (Unigram with the Precompiled normalizer) beside a t5 config.
  const auto dir = edited_copy("t5-tiny", [](json&) {});
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"})
    std::filesystem::copy_file(std::string(PLUGFORMER_FIXTURES_DIR) + "/tokenizers/t5-small/" + file, dir / file);
  auto tokenizer = AutoTokenizer::from_pretrained(dir.string());
  const auto ids = tokenizer->encode("Hello world").ids;
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.back(), 1);  // </s> appended
  EXPECT_EQ(tokenizer->token_to_id("<extra_id_0>"), 32099);
  EXPECT_EQ(tokenizer->decode(ids, true), "Hello world");
  std::filesystem::remove_all(dir);
}

TEST(T5Tokenizer, SentencePieceWithSentinelTokens) {
  // spiece.model (unigram, 200 pieces) with T5's ids: <pad> 0, </s> 1, <unk> 2; extra_ids 5.
  const auto dir = edited_copy("t5-tiny", [](json&) {});
  for (const char* file : {"spiece.model", "tokenizer_config.json"})
    std::filesystem::copy_file(std::string(PLUGFORMER_FIXTURES_DIR) + "/t5-spiece/" + file, dir / file);
  auto tokenizer = AutoTokenizer::from_pretrained(dir.string());
  EXPECT_EQ(tokenizer->vocab_size(), 205u);
  // Ids printed by sentencepiece's own spm_encode for this text, then </s>.
  const std::vector<int64_t> plain = {108, 3, 198, 15, 9, 10, 61, 3, 29, 19, 8, 45, 13, 3, 24, 8, 67, 3, 179,
                                      15, 14, 16, 5, 3, 138, 18, 3, 11, 6, 189, 33, 3, 12, 8, 23, 21, 1};
  EXPECT_EQ(tokenizer->encode("The quick brown fox jumps over the lazy dog.").ids, plain);
  // Sentinels count down from the end of the vocabulary and are matched in the text.
  EXPECT_EQ(tokenizer->token_to_id("<extra_id_0>"), 204);
  EXPECT_EQ(tokenizer->token_to_id("<extra_id_4>"), 200);
  EXPECT_FALSE(tokenizer->token_to_id("<extra_id_5>").has_value());
  EXPECT_EQ(tokenizer->id_to_token(203), "<extra_id_1>");
  const auto enc = tokenizer->encode("over<extra_id_0> the");
  // "over" and " the" are encoded on their own (spm_encode: 3 138 and 18) around the sentinel.
  EXPECT_EQ(enc.ids, (std::vector<int64_t>{3, 138, 204, 18, 1}));
  EXPECT_EQ(tokenizer->decode(enc.ids, true), "over the");
  EXPECT_NE(tokenizer->decode(enc.ids, false).find("<extra_id_0>"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(T5Tokenizer, BadExtraIdsIsATypedError) {
  const auto dir = edited_copy("t5-tiny", [](json&) {});
  std::filesystem::copy_file(std::string(PLUGFORMER_FIXTURES_DIR) + "/t5-spiece/spiece.model", dir / "spiece.model");
  write_json_file(dir / "tokenizer_config.json", {{"tokenizer_class", "T5Tokenizer"}, {"extra_ids", "many"}});
  try {
    AutoTokenizer::from_pretrained(dir.string());
    FAIL() << "extra_ids must be an integer";
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("extra_ids"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}
