// RoBERTa, XLM-RoBERTa, DistilBERT, MPNet and ModernBERT parity on the hfref fixtures (the padding rule's
// position ids with left and right padding, the 1-row token type table, lm_head, classification
// heads, multiple choice, sinusoidal positions, MPNet's relative position bias, ModernBERT's local and
// global layers and both poolings), in fp32, and in
// bf16 / fp16 against fp32.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <plugformer/auto.h>
#include <plugformer/config.h>
#include <plugformer/error.h>

#include "fixture_runner.h"

namespace {

const std::vector<std::string> kEncoderFixtures = {
    "roberta-tiny",    "roberta-tiny-mlm",   "roberta-tiny-multichoice", "roberta-tiny-qa",
    "roberta-tiny-seqcls", "roberta-tiny-tokcls", "xlm-roberta-tiny-mlm", "xlm-roberta-tiny-tokcls",
    "distilbert-tiny-mlm", "distilbert-tiny-multichoice", "distilbert-tiny-qa", "distilbert-tiny-seqcls",
    "distilbert-tiny-tokcls", "mpnet-tiny", "mpnet-tiny-mlm", "modernbert-tiny", "modernbert-tiny-mlm",
    "modernbert-tiny-seqcls-mean"};

class EncoderFamilyFixture : public ::testing::TestWithParam<std::string> {};

std::string encoder_test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

}  // namespace

TEST_P(EncoderFamilyFixture, MatchesTheGoldenOutputs) { plugformer::testing::check_model_fixture(GetParam()); }

TEST_P(EncoderFamilyFixture, Bfloat16AndFloat16AgreeWithFloat32) {
  plugformer::testing::check_reduced_precision_agreement(GetParam(), {"float16"});
}

INSTANTIATE_TEST_SUITE_P(Families, EncoderFamilyFixture, ::testing::ValuesIn(kEncoderFixtures), encoder_test_name);

// Sequence-level heads of the RoBERTa family, for a caller reading pooled outputs only, and base
// models through forward_first_position (MPNet's position bias joins the mask, cut to the first
// query): the last layer computes the first position alone, with the same outputs.
TEST(FirstPositionOnly, RobertaAndMpnetMatchTheGoldenOutputs) {
  for (const char* name : {"roberta-tiny-seqcls", "roberta-tiny-multichoice", "roberta-tiny", "mpnet-tiny"})
    plugformer::testing::check_first_position_only(name);
}

// The slow XLMRobertaTokenizer on a sentencepiece.bpe.model (tests/fixtures/xlm-roberta-spm):
// ids, tokens, special-token masks and decodes of 65 texts (Unicode, whitespace, <mask> taking the
// spaces before it, special tokens written in the text) and 3 pairs, as transformers' class gives
// them (expected.json: its logic over the real SentencePiece library, make_expected.py).
TEST(XLMRobertaTokenizer, SentencePieceWithFairseqIdsMatchesTransformers) {
  using namespace plugformer;
  const std::string dir = std::string(PLUGFORMER_FIXTURES_DIR) + "/xlm-roberta-spm";
  auto tokenizer = AutoTokenizer::from_pretrained(dir);
  const nlohmann::json expected = read_json_file(dir + "/expected.json");
  EXPECT_EQ(tokenizer->vocab_size(), expected["vocab_size"].get<size_t>());
  EXPECT_EQ(tokenizer->token_to_id("<pad>"), 1);
  EXPECT_EQ(tokenizer->token_to_id("<unk>"), 3);
  EXPECT_EQ(tokenizer->token_to_id("<mask>"), 1001);
  EXPECT_EQ(tokenizer->id_to_token(1001), "<mask>");
  EXPECT_EQ(tokenizer->id_to_token(4), "\u2581");  // SentencePiece's piece 3
  EXPECT_FALSE(tokenizer->token_to_id("no such piece").has_value());
  EXPECT_EQ(tokenizer->pad_token_id(), 1);
  for (const auto& c : expected["cases"]) {
    const std::string text = c["text"].get<std::string>();
    SCOPED_TRACE(text + (c.contains("pair") ? " | " + c["pair"].get<std::string>() : ""));
    const Encoding enc = c.contains("pair") ? tokenizer->encode_pair(text, c["pair"].get<std::string>())
                                            : tokenizer->encode(text);
    EXPECT_EQ(enc.ids, c["ids"].get<std::vector<int64_t>>());
    EXPECT_EQ(enc.special_tokens_mask, c["special_tokens_mask"].get<std::vector<int64_t>>());
    EXPECT_EQ(enc.type_ids, std::vector<int64_t>(enc.ids.size(), 0));
    if (c.contains("pair")) continue;
    EXPECT_EQ(enc.tokens, c["tokens"].get<std::vector<std::string>>());
    EXPECT_EQ(tokenizer->decode(enc.ids), c["decode"].get<std::string>());
    EXPECT_EQ(tokenizer->decode(enc.ids, true), c["decode_skip_special"].get<std::string>());
  }
}

// A missing or broken sentencepiece.bpe.model is a TokenizerError naming the file.
TEST(XLMRobertaTokenizer, MissingOrBrokenModelFileIsATypedError) {
  using namespace plugformer;
  const auto dir = std::filesystem::temp_directory_path() / ("xlmr_spm_bad_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(std::string(PLUGFORMER_FIXTURES_DIR) + "/xlm-roberta-spm/tokenizer_config.json",
                             dir / "tokenizer_config.json");
  for (bool broken : {false, true}) {
    SCOPED_TRACE(broken ? "broken" : "missing");
    if (broken) std::ofstream(dir / "sentencepiece.bpe.model") << "not a SentencePiece model";
    try {
      AutoTokenizer::from_pretrained(dir.string());
      FAIL() << "no error";
    } catch (const TokenizerError& e) {
      EXPECT_NE(std::string(e.what()).find("sentencepiece.bpe.model"), std::string::npos) << e.what();
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(RobertaBadInput, PositionsStartAfterThePaddingIndex) {
  using namespace plugformer;
  // max_position_embeddings 40 and padding_idx 1: real tokens take positions 2..39, so 38 fit.
  auto model = plugformer::testing::load("roberta-tiny", "RobertaModel");
  c10::InferenceMode guard;
  EXPECT_NO_THROW(model->forward(ModelInputs{{"input_ids", at::full({1, 38}, 5, at::kLong)}}));
  try {
    model->forward(ModelInputs{{"input_ids", at::full({1, 39}, 5, at::kLong)}});
    FAIL() << "no error for 39 tokens";
  } catch (const InvalidInputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("of this RobertaModel allows; truncate the input to at most 38 tokens"), std::string::npos)
        << message;
  }
}

TEST(DistilBert, SinusoidalPositionsOfAFreshModelEqualTheCheckpointsTable) {
  using namespace plugformer;
  // distilbert-tiny-qa was saved by a sinusoidal_pos_embds model: its stored table is the rule's.
  auto loaded = plugformer::testing::load("distilbert-tiny-qa", "DistilBertForQuestionAnswering");
  auto fresh = AutoModelForQuestionAnswering::from_config(loaded->config_ptr());
  auto table = [](PreTrainedModel& m) {
    for (const auto& p : m.named_parameters(true))
      if (p.key() == "distilbert.embeddings.position_embeddings.weight") return p.value().detach().clone();
    return at::Tensor();
  };
  const at::Tensor stored = table(*loaded), built = table(*fresh);
  ASSERT_TRUE(stored.defined() && built.defined());
  EXPECT_LE((stored - built).abs().max().item<double>(), 1e-6);
}

TEST(ModernBertBadInput, ConfigAndInputsAreChecked) {
  using namespace plugformer;
  auto config = AutoConfig::from_pretrained(std::string(PLUGFORMER_FIXTURES_DIR) + "/models/modernbert-tiny");
  json values = config->to_json();
  values["classifier_pooling"] = "max";
  EXPECT_THROW(AutoConfig::for_model("modernbert", values), ConfigError);
  values["classifier_pooling"] = "mean";
  values["num_attention_heads"] = 5;  // 64 is not a multiple of 5
  EXPECT_THROW(AutoConfig::for_model("modernbert", values), ConfigError);

  auto model = plugformer::testing::load("modernbert-tiny", "ModernBertModel");
  c10::InferenceMode guard;
  const at::Tensor ids = at::full({1, 4}, 5, at::kLong);
  EXPECT_THROW(model->forward(ModelInputs{{"input_ids", ids}, {"inputs_embeds", at::zeros({1, 4, 64})}}), InvalidInputError);
  EXPECT_THROW(model->forward(ModelInputs{{"input_ids", ids}, {"attention_mask", at::ones({1, 3}, at::kLong)}}),
               InvalidInputError);
  EXPECT_THROW(model->forward(ModelInputs{{"input_ids", at::full({4}, 5, at::kLong)}}), InvalidInputError);
}
