// BERT: parity on the hfref fixtures (every head, padded batches, legacy gamma/beta keys), the
// Auto mappings, options (hidden states, attentions, head_mask, activations, losses, decoder
// with KV cache) and bad input.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/safetensors.h>

#include "../models/fixture_runner.h"

using namespace plugformer;

namespace {

std::string fixture(const std::string& name) { return std::string(PLUGFORMER_FIXTURES_DIR) + "/models/" + name; }

// The "main" case inputs of a fixture (input_ids, attention_mask, token_type_ids).
ModelInputs main_inputs(const std::string& name) {
  auto tensors = SafetensorsFile::open(fixture(name) + "/expected.safetensors");
  ModelInputs inputs;
  for (const char* key : {"input_ids", "attention_mask", "token_type_ids"})
    inputs.tensors[key] = tensors->get(key).clone();
  return inputs;
}

// [rows, cols] int64 tensor.
at::Tensor ids2d(std::initializer_list<std::initializer_list<int64_t>> rows) {
  std::vector<int64_t> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  return at::tensor(flat, at::kLong).view({int64_t(rows.size()), -1});
}
at::Tensor ids1d(std::vector<int64_t> values) { return at::tensor(values, at::kLong); }

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>(); }

// A small random BERT config (weights from from_config).
ConfigPtr tiny_config(json extra = json::object()) {
  json values = {{"vocab_size", 50},       {"hidden_size", 16},           {"num_hidden_layers", 2},
                 {"num_attention_heads", 4}, {"intermediate_size", 24},   {"max_position_embeddings", 20}};
  for (const auto& [k, v] : extra.items()) values[k] = v;
  return AutoConfig::for_model("bert", values);
}

}  // namespace

// ---------------------------------------------------------------- parity

TEST(BertFixtures, MaskedLM) { plugformer::testing::check_model_fixture("bert-tiny-mlm"); }
TEST(BertFixtures, MaskedLMLegacyKeys) { plugformer::testing::check_model_fixture("bert-tiny-mlm-legacy-keys"); }
TEST(BertFixtures, SequenceClassification) { plugformer::testing::check_model_fixture("bert-tiny-seqcls"); }
// Heads reading only the pooled first position, for a caller reading pooled outputs only (as
// CrossEncoder): the last layer computes that position alone, with the same logits.
TEST(BertFixtures, PooledHeadsComputeTheFirstPositionOnlyInTheLastLayer) {
  for (const char* name : {"bert-tiny-seqcls", "bert-tiny-multichoice", "bert-tiny-nsp"})
    plugformer::testing::check_first_position_only(name);
}

// A head reading every position ignores pooled_outputs_only.
TEST(BertFixtures, TokenClassificationIgnoresPooledOutputsOnly) {
  c10::InferenceMode guard;
  auto model = AutoModelForTokenClassification::from_pretrained(fixture("bert-tiny-tokcls"));
  ModelInputs inputs = main_inputs("bert-tiny-tokcls");
  const at::Tensor plain = model->forward(inputs)["logits"];
  inputs.pooled_outputs_only = true;
  EXPECT_EQ(max_diff(model->forward(inputs)["logits"], plain), 0.0);
}

// Long inputs without autograd run each layer's MLP in chunks of rows (fp32 intermediate within
// 8 MB: 512 rows of 4096 here), so 3 x 200 rows make a chunk of 512 and one of 88. With autograd
// it runs whole: both give the same hidden states.
TEST(BertLayers, LongInputsInRowChunksMatchTheWholeInput) {
  at::manual_seed(11);
  auto config = AutoConfig::for_model("bert", json{{"hidden_size", 16}, {"intermediate_size", 4096},
                                                   {"num_hidden_layers", 2}, {"num_attention_heads", 2},
                                                   {"vocab_size", 50}});
  auto model = AutoModel::from_config(config);
  const at::Tensor ids = at::randint(0, 50, {3, 200}, at::kLong);
  const at::Tensor whole = model->forward({{"input_ids", ids}})["last_hidden_state"].detach();
  c10::InferenceMode guard;
  const at::Tensor chunked = model->forward({{"input_ids", ids}})["last_hidden_state"];
  EXPECT_LE(max_diff(chunked, whole), 1e-5 * whole.abs().max().item<double>());
}

TEST(BertFixtures, TokenClassification) { plugformer::testing::check_model_fixture("bert-tiny-tokcls"); }
TEST(BertFixtures, QuestionAnswering) { plugformer::testing::check_model_fixture("bert-tiny-qa"); }
TEST(BertFixtures, MultipleChoice) { plugformer::testing::check_model_fixture("bert-tiny-multichoice"); }
TEST(BertFixtures, NextSentencePrediction) { plugformer::testing::check_model_fixture("bert-tiny-nsp"); }
TEST(BertFixtures, PreTraining) { plugformer::testing::check_model_fixture("bert-tiny-pretraining"); }
// bf16 / fp16 (libtorch 1.13 has no fp16 layer_norm / gelu / tanh on CPU: they run in fp32 here).
// The argmax is compared in fp16 only: bf16's 8-bit mantissa moves these random models' logits by
// up to ~0.17 (bert-tiny-mlm, logits up to 10.9), past some of fp32's margins above 0.1.
TEST(BertFixtures, Bfloat16AndFloat16AgreeWithFloat32) {
  for (const char* name : {"bert-tiny-mlm", "bert-tiny-seqcls", "bert-tiny-tokcls", "bert-tiny-qa", "bert-tiny-multichoice",
                           "bert-tiny-nsp", "bert-tiny-pretraining"})
    plugformer::testing::check_reduced_precision_agreement(name, {"float16"});
}

// Every bert-* folder in tests/fixtures/models has a test above.
TEST(BertFixtures, EveryFixtureIsCovered) {
  const std::set<std::string> covered = {"bert-tiny-mlm", "bert-tiny-mlm-legacy-keys", "bert-tiny-seqcls",
                                         "bert-tiny-tokcls", "bert-tiny-qa", "bert-tiny-multichoice",
                                         "bert-tiny-nsp", "bert-tiny-pretraining"};
  for (const auto& entry : std::filesystem::directory_iterator(std::string(PLUGFORMER_FIXTURES_DIR) + "/models")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("bert-", 0) == 0) EXPECT_TRUE(covered.count(name)) << name << " has no test";
  }
}

// ---------------------------------------------------------------- loading

TEST(BertLoading, LegacyKeysLoadCleanly) {
  for (const char* name : {"bert-tiny-mlm", "bert-tiny-mlm-legacy-keys"}) {
    SCOPED_TRACE(name);
    LoadingInfo info;
    PretrainedOptions options;
    options.loading_info = &info;
    auto model = AutoModelForMaskedLM::from_pretrained(fixture(name), options);
    EXPECT_EQ(model->class_name(), "BertForMaskedLM");
    EXPECT_TRUE(info.missing_keys.empty()) << info.missing_keys.front();
    EXPECT_TRUE(info.unexpected_keys.empty()) << info.unexpected_keys.front();
  }
}

TEST(BertLoading, DecoderIsTiedToWordEmbeddings) {
  auto model = AutoModelForMaskedLM::from_pretrained(fixture("bert-tiny-mlm"));
  at::Tensor decoder, embeddings;
  for (const auto& p : model->named_parameters()) {
    if (p.key() == "cls.predictions.decoder.weight") decoder = p.value();
    if (p.key() == "bert.embeddings.word_embeddings.weight") embeddings = p.value();
  }
  ASSERT_TRUE(decoder.defined() && embeddings.defined());
  EXPECT_EQ(decoder.data_ptr(), embeddings.data_ptr());
  // The saved state leaves the alias out, as transformers' safetensors files do.
  for (const auto& [name, t] : model->state_dict()) EXPECT_NE(name, "cls.predictions.decoder.weight");
}

TEST(BertLoading, AutoMappings) {
  const std::string mlm = fixture("bert-tiny-mlm"), seq = fixture("bert-tiny-seqcls");
  EXPECT_EQ(AutoModel::from_pretrained(mlm)->class_name(), "BertModel");
  EXPECT_EQ(AutoModelForMaskedLM::from_pretrained(mlm)->class_name(), "BertForMaskedLM");
  EXPECT_EQ(AutoModelForPreTraining::from_pretrained(mlm)->class_name(), "BertForPreTraining");
  EXPECT_EQ(AutoModelForCausalLM::from_pretrained(mlm)->class_name(), "BertLMHeadModel");
  EXPECT_EQ(AutoModelForNextSentencePrediction::from_pretrained(seq)->class_name(), "BertForNextSentencePrediction");
  EXPECT_EQ(AutoModelForSequenceClassification::from_pretrained(seq)->class_name(), "BertForSequenceClassification");
  EXPECT_EQ(AutoModelForTokenClassification::from_pretrained(seq)->class_name(), "BertForTokenClassification");
  EXPECT_EQ(AutoModelForQuestionAnswering::from_pretrained(fixture("bert-tiny-qa"))->class_name(),
            "BertForQuestionAnswering");
  EXPECT_EQ(AutoModelForMultipleChoice::from_pretrained(fixture("bert-tiny-multichoice"))->class_name(),
            "BertForMultipleChoice");
  EXPECT_EQ(AutoModelForTextEncoding::from_pretrained(mlm)->class_name(), "BertModel");
}

// A head checkpoint loaded as the base model gives the same hidden states as the head does.
TEST(BertLoading, BaseModelFromHeadCheckpoint) {
  c10::InferenceMode guard;
  const ModelInputs inputs = main_inputs("bert-tiny-seqcls");
  auto head = AutoModelForSequenceClassification::from_pretrained(fixture("bert-tiny-seqcls"));
  auto base = AutoModel::from_pretrained(fixture("bert-tiny-seqcls"));
  ModelOutput a = head->forward(inputs), b = base->forward(inputs);
  EXPECT_EQ(max_diff(a["last_hidden_state"], b["last_hidden_state"]), 0.0);
  EXPECT_EQ(max_diff(a["pooler_output"], b["pooler_output"]), 0.0);
}

TEST(BertConfig, DefaultsAreTransformers) {
  auto config = AutoConfig::for_model("bert");
  EXPECT_EQ(config->get("vocab_size"), 30522);
  EXPECT_EQ(config->get("hidden_size"), 768);
  EXPECT_EQ(config->get("num_hidden_layers"), 12);
  EXPECT_EQ(config->get("num_attention_heads"), 12);
  EXPECT_EQ(config->get("intermediate_size"), 3072);
  EXPECT_EQ(config->get("hidden_act"), "gelu");
  EXPECT_EQ(config->get("max_position_embeddings"), 512);
  EXPECT_EQ(config->get("type_vocab_size"), 2);
  EXPECT_DOUBLE_EQ(config->get("layer_norm_eps").get<double>(), 1e-12);
  EXPECT_EQ(config->get("position_embedding_type"), "absolute");
  EXPECT_TRUE(config->get("classifier_dropout").is_null());
  EXPECT_EQ(config->pad_token_id, 0);
  EXPECT_THROW(AutoConfig::for_model("bert", {{"hidden_size", 30}, {"num_attention_heads", 4}}), ConfigError);
  EXPECT_THROW(AutoConfig::for_model("bert", {{"position_embedding_type", "rotary"}}), ConfigError);
}

// ---------------------------------------------------------------- options

TEST(BertOptions, HiddenStatesAndAttentions) {
  c10::InferenceMode guard;
  auto model = AutoModelForMaskedLM::from_pretrained(fixture("bert-tiny-mlm"));
  ModelInputs inputs = main_inputs("bert-tiny-mlm");
  inputs.output_hidden_states = true;
  inputs.output_attentions = true;
  ModelOutput out = model->forward(inputs);
  ASSERT_EQ(out.hidden_states.size(), 3u);  // embeddings + 2 layers
  ASSERT_EQ(out.attentions.size(), 2u);
  EXPECT_EQ(max_diff(out.hidden_states.back(), out["last_hidden_state"]), 0.0);
  const int64_t batch = inputs.get("input_ids").size(0), len = inputs.get("input_ids").size(1);
  EXPECT_EQ(out.attentions[0].sizes(), (std::vector<int64_t>{batch, 4, len, len}));
  // Rows sum to one, padded keys get no weight.
  EXPECT_LE(max_diff(out.attentions[1].sum(-1), at::ones({batch, 4, len})), 1e-5);
  at::Tensor pads = (inputs.get("attention_mask") == 0).view({batch, 1, 1, len}).expand_as(out.attentions[0]);
  EXPECT_EQ(out.attentions[0].masked_select(pads).abs().max().item<double>(), 0.0);
  ModelOutput plain = model->forward(main_inputs("bert-tiny-mlm"));
  EXPECT_TRUE(plain.hidden_states.empty());
  EXPECT_TRUE(plain.attentions.empty());
}

TEST(BertOptions, HeadMask) {
  c10::InferenceMode guard;
  auto model = AutoModel::from_pretrained(fixture("bert-tiny-seqcls"));
  ModelInputs inputs = main_inputs("bert-tiny-seqcls");
  ModelOutput plain = model->forward(inputs);
  inputs.tensors["head_mask"] = at::ones({4});
  EXPECT_EQ(max_diff(model->forward(inputs)["last_hidden_state"], plain["last_hidden_state"]), 0.0);

  // Silencing heads changes the output; a silenced head has zero attention probabilities.
  inputs.tensors["head_mask"] = at::tensor({1.f, 0.f, 1.f, 1.f, 0.f, 0.f, 0.f, 0.f}).view({2, 4});
  inputs.output_attentions = true;
  ModelOutput masked = model->forward(inputs);
  EXPECT_GT(max_diff(masked["last_hidden_state"], plain["last_hidden_state"]), 1e-3);
  EXPECT_EQ(masked.attentions[0].select(1, 1).abs().max().item<double>(), 0.0);
  EXPECT_GT(masked.attentions[0].select(1, 0).abs().max().item<double>(), 0.0);
  EXPECT_EQ(masked.attentions[1].abs().max().item<double>(), 0.0);
  inputs.tensors["head_mask"] = at::ones({3});
  EXPECT_THROW(model->forward(inputs), InvalidInputError);
}

TEST(BertOptions, Activations) {
  c10::InferenceMode guard;
  std::map<std::string, at::Tensor> outputs;
  const at::Tensor ids = ids1d({2, 7, 11, 3}).unsqueeze(0);
  for (const char* act : {"gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu"}) {
    SCOPED_TRACE(act);
    at::manual_seed(7);
    auto model = AutoModel::from_config(tiny_config({{"hidden_act", act}}));
    outputs[act] = model->forward(ModelInputs{{"input_ids", ids}})["last_hidden_state"];
    EXPECT_TRUE(at::isfinite(outputs[act]).all().item<bool>());
  }
  EXPECT_GT(max_diff(outputs["gelu"], outputs["relu"]), 1e-6);
  EXPECT_GT(max_diff(outputs["gelu"], outputs["silu"]), 1e-6);
  // gelu_new and gelu_pytorch_tanh are the same tanh approximation.
  EXPECT_LE(max_diff(outputs["gelu_new"], outputs["gelu_pytorch_tanh"]), 1e-6);
  EXPECT_THROW(AutoModel::from_config(tiny_config({{"hidden_act", "no_such_act"}})), ConfigError);
}

// ---------------------------------------------------------------- losses

TEST(BertLosses, SequenceClassification) {
  c10::InferenceMode guard;
  ModelInputs inputs = main_inputs("bert-tiny-seqcls");
  {
    auto model = AutoModelForSequenceClassification::from_pretrained(fixture("bert-tiny-seqcls"));
    inputs.tensors["labels"] = ids1d({2, 0});
    ModelOutput out = model->forward(inputs);
    at::Tensor expected = -at::log_softmax(out["logits"], -1).gather(1, inputs.get("labels").unsqueeze(1)).mean();
    EXPECT_LE(max_diff(out["loss"], expected), 1e-6);
  }
  {
    PretrainedOptions options;
    options.config_overrides = {{"problem_type", "multi_label_classification"}};
    auto model = AutoModelForSequenceClassification::from_pretrained(fixture("bert-tiny-seqcls"), options);
    inputs.tensors["labels"] = at::tensor({1.f, 0.f, 1.f, 0.f, 0.f, 1.f}).view({2, 3});
    ModelOutput out = model->forward(inputs);
    at::Tensor x = out["logits"], y = inputs.get("labels");
    at::Tensor expected = (at::clamp_min(x, 0) - x * y + at::log1p(at::exp(-x.abs()))).mean();
    EXPECT_LE(max_diff(out["loss"], expected), 1e-6);
  }
  {
    at::manual_seed(3);
    auto model = AutoModelForSequenceClassification::from_config(tiny_config({{"num_labels", 1}}));
    ModelInputs in{{"input_ids", ids2d({{2, 5, 9}, {4, 4, 1}})}, {"labels", at::tensor({0.5f, -1.f})}};
    ModelOutput out = model->forward(in);
    ASSERT_EQ(out["logits"].sizes(), (std::vector<int64_t>{2, 1}));
    EXPECT_LE(max_diff(out["loss"], (out["logits"].squeeze(-1) - in.get("labels")).pow(2).mean()), 1e-6);
  }
}

TEST(BertLosses, OtherHeads) {
  c10::InferenceMode guard;
  ModelInputs inputs = main_inputs("bert-tiny-mlm");
  const at::Tensor ids = inputs.get("input_ids");
  {
    auto model = AutoModelForMaskedLM::from_pretrained(fixture("bert-tiny-mlm"));
    at::Tensor labels = at::full_like(ids, -100);
    labels.index_put_({0, 1}, 5);
    labels.index_put_({1, 2}, 7);
    inputs.tensors["labels"] = labels;
    ModelOutput out = model->forward(inputs);
    at::Tensor lp = at::log_softmax(out["logits"], -1);
    const double expected = -(lp[0][1][5] + lp[1][2][7]).item<double>() / 2;
    EXPECT_NEAR(out["loss"].item<double>(), expected, 1e-5);
  }
  {
    auto model = AutoModelForQuestionAnswering::from_pretrained(fixture("bert-tiny-qa"));
    ModelInputs qa = main_inputs("bert-tiny-qa");
    qa.tensors["start_positions"] = ids1d({1, 2});
    qa.tensors["end_positions"] = ids1d({3, 999});  // out of range: ignored
    ModelOutput out = model->forward(qa);
    at::Tensor s = at::log_softmax(out["start_logits"], -1), e = at::log_softmax(out["end_logits"], -1);
    const double start_loss = -(s[0][1] + s[1][2]).item<double>() / 2, end_loss = -e[0][3].item<double>();
    EXPECT_NEAR(out["loss"].item<double>(), (start_loss + end_loss) / 2, 1e-5);
  }
  {
    auto model = AutoModelForNextSentencePrediction::from_pretrained(fixture("bert-tiny-nsp"));
    ModelInputs nsp = main_inputs("bert-tiny-nsp");
    nsp.tensors["labels"] = ids1d({0, 1});
    ModelOutput out = model->forward(nsp);
    at::Tensor lp = at::log_softmax(out["logits"], -1);
    EXPECT_NEAR(out["loss"].item<double>(), -(lp[0][0] + lp[1][1]).item<double>() / 2, 1e-5);
  }
}

// ---------------------------------------------------------------- decoder

TEST(BertDecoder, CausalAndCachedStepsMatchFullForward) {
  c10::InferenceMode guard;
  for (const char* position_type : {"absolute", "relative_key", "relative_key_query"}) {
    SCOPED_TRACE(position_type);
    at::manual_seed(11);
    auto model = AutoModelForCausalLM::from_config(
        tiny_config({{"is_decoder", true}, {"position_embedding_type", position_type}}));
    ASSERT_EQ(model->class_name(), "BertLMHeadModel");
    const at::Tensor ids = ids2d({{3, 8, 1, 9, 4, 22}});
    at::Tensor full = model->forward(ModelInputs{{"input_ids", ids}})["logits"];
    // Causal: a prefix gives the same logits as the prefix positions of the full sequence.
    at::Tensor prefix = model->forward(ModelInputs{{"input_ids", ids.narrow(1, 0, 4)}})["logits"];
    EXPECT_LE(max_diff(prefix, full.narrow(1, 0, 4)), 1e-5);
    // Prompt of one token, then one token at a time with the KV cache.
    ModelInputs step{{"input_ids", ids.narrow(1, 0, 1)}};
    step.use_cache = true;
    ModelOutput out = model->forward(step);
    std::vector<at::Tensor> pieces = {out["logits"]};
    for (int64_t i = 1; i < ids.size(1); ++i) {
      ModelInputs next{{"input_ids", ids.narrow(1, i, 1)}};
      next.past_key_values = out.past_key_values;
      next.use_cache = true;
      out = model->forward(next);
      pieces.push_back(out["logits"]);
    }
    EXPECT_LE(max_diff(at::cat(pieces, 1), full), 1e-5);
  }
}

// An encoder (is_decoder false) is bidirectional: a later token changes earlier outputs.
TEST(BertDecoder, EncoderIsBidirectional) {
  c10::InferenceMode guard;
  at::manual_seed(5);
  auto model = AutoModel::from_config(tiny_config());
  at::Tensor a = model->forward(ModelInputs{{"input_ids", ids2d({{3, 8, 1}})}})["last_hidden_state"];
  at::Tensor b = model->forward(ModelInputs{{"input_ids", ids2d({{3, 8, 2}})}})["last_hidden_state"];
  EXPECT_GT(max_diff(a[0][0], b[0][0]), 1e-6);
}

// ---------------------------------------------------------------- bad input

TEST(BertBadInput, IdsOutsideTheVocabulary) {
  c10::InferenceMode guard;
  auto model = AutoModelForMaskedLM::from_pretrained(fixture("bert-tiny-mlm"));  // vocab 120
  EXPECT_THROW(model->forward(ModelInputs{{"input_ids", ids2d({{2, 120, 3}})}}), InvalidInputError);
  EXPECT_THROW(model->forward(ModelInputs{{"input_ids", ids2d({{2, -1, 3}})}}), InvalidInputError);
  EXPECT_NO_THROW(model->forward(ModelInputs{{"input_ids", ids2d({{2, 119, 3}})}}));
}

TEST(BertBadInput, LongerThanMaxPositionEmbeddings) {
  c10::InferenceMode guard;
  auto model = AutoModelForMaskedLM::from_pretrained(fixture("bert-tiny-mlm"));  // 64 positions
  EXPECT_NO_THROW(model->forward(ModelInputs{{"input_ids", at::full({1, 64}, 5, at::kLong)}}));
  try {
    model->forward(ModelInputs{{"input_ids", at::full({1, 65}, 5, at::kLong)}});
    FAIL() << "no error for 65 tokens";
  } catch (const InvalidInputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("65"), std::string::npos) << message;
    EXPECT_NE(message.find("max_position_embeddings (64)"), std::string::npos) << message;
  }
  ModelInputs explicit_positions{{"input_ids", at::full({1, 3}, 5, at::kLong)},
                                 {"position_ids", ids2d({{0, 1, 64}})}};
  EXPECT_THROW(model->forward(explicit_positions), InvalidInputError);
}

TEST(BertBadInput, TokenTypeIdsAbsentOrPresent) {
  c10::InferenceMode guard;
  auto model = AutoModel::from_pretrained(fixture("bert-tiny-seqcls"));
  const at::Tensor ids = ids2d({{2, 9, 14, 3, 30, 3}});
  at::Tensor absent = model->forward(ModelInputs{{"input_ids", ids}})["last_hidden_state"];
  at::Tensor zeros =
      model->forward(ModelInputs{{"input_ids", ids}, {"token_type_ids", at::zeros_like(ids)}})["last_hidden_state"];
  at::Tensor pair = model->forward(ModelInputs{{"input_ids", ids},
                                               {"token_type_ids", ids2d({{0, 0, 0, 0, 1, 1}})}})
                        ["last_hidden_state"];
  EXPECT_EQ(max_diff(absent, zeros), 0.0);
  EXPECT_GT(max_diff(absent, pair), 1e-4);
  // Out of range (type_vocab_size 2) and wrong shape.
  EXPECT_THROW(model->forward(ModelInputs{{"input_ids", ids}, {"token_type_ids", at::full_like(ids, 2)}}),
               InvalidInputError);
  EXPECT_THROW(model->forward(ModelInputs{{"input_ids", ids}, {"token_type_ids", at::zeros({1, 5}, at::kLong)}}),
               InvalidInputError);
}

TEST(BertBadInput, MismatchedBatchShapes) {
  c10::InferenceMode guard;
  auto model = AutoModelForSequenceClassification::from_pretrained(fixture("bert-tiny-seqcls"));
  const at::Tensor ids = ids2d({{2, 9, 14, 3}, {2, 7, 3, 0}});
  EXPECT_NO_THROW(model->forward(ModelInputs{{"input_ids", ids}, {"attention_mask", at::ones({2, 4}, at::kLong)}}));
  EXPECT_THROW(model->forward(ModelInputs{{"input_ids", ids}, {"attention_mask", at::ones({3, 4}, at::kLong)}}),
               InvalidInputError);
  EXPECT_THROW(model->forward(ModelInputs{{"input_ids", ids}, {"attention_mask", at::ones({2, 5}, at::kLong)}}),
               InvalidInputError);
  EXPECT_THROW(model->forward(ModelInputs{{"input_ids", ids}, {"attention_mask", at::ones({8}, at::kLong)}}),
               InvalidInputError);
  EXPECT_THROW(model->forward(ModelInputs{{"input_ids", ids.view({8})}}), InvalidInputError);
  EXPECT_THROW(model->forward(ModelInputs{}), InvalidInputError);
  auto choice = AutoModelForMultipleChoice::from_pretrained(fixture("bert-tiny-multichoice"));
  EXPECT_THROW(choice->forward(ModelInputs{{"input_ids", ids}}), InvalidInputError);  // needs [batch, choices, seq]
  EXPECT_THROW(choice->forward(ModelInputs{{"input_ids", ids.view({2, 1, 4})},
                                           {"attention_mask", at::ones({2, 4}, at::kLong)}}),
               InvalidInputError);
}

TEST(BertTokenizer, AutoTokenizerResolvesBertByModelType) {
  // tokenizer.json of bert-base-uncased next to a bert config.json, no tokenizer_config.json.
  const auto dir = std::filesystem::path(PLUGFORMER_BINARY_DIR) / "test_tmp" / "bert-tokenizer";
  std::filesystem::create_directories(dir);
  const std::string fixtures = PLUGFORMER_FIXTURES_DIR;
  std::filesystem::copy_file(fixtures + "/tokenizers/bert-base-uncased/tokenizer.json", dir / "tokenizer.json",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(fixtures + "/models/bert-tiny-mlm/config.json", dir / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  auto tokenizer = plugformer::AutoTokenizer::from_pretrained(dir.string());
  EXPECT_EQ(tokenizer->encode("Hello world!").ids, (std::vector<int64_t>{101, 7592, 2088, 999, 102}));
  std::filesystem::remove_all(dir);
}
