// The pipelines of the BERT issue (fill-mask, text-classification, token-classification,
// question-answering, feature-extraction) on every encoder family added since (RoBERTa,
// XLM-RoBERTa, DistilBERT, MPNet, ModernBERT): each tiny fixture gets a small WordPiece vocabulary,
// and each pipeline's result is checked against the model's raw outputs post-processed here.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <filesystem>

#include <plugformer/auto.h>
#include <plugformer/pipelines.h>

#include "../core/test_util.h"

using namespace plugformer;

namespace {

struct Fixture {
  test::TempDir dir;
  ModelPtr model;
  std::shared_ptr<Tokenizer> tokenizer;
  json config;
  Fixture(const std::string& name, const char* task) : dir("encoder_pipelines_" + name) {
    const std::string src = std::string(PLUGFORMER_FIXTURES_DIR) + "/models/" + name;
    std::filesystem::copy_file(src + "/model.safetensors", dir / "model.safetensors");
    std::filesystem::copy_file(src + "/config.json", dir / "config.json");
    config = read_json_file(src + "/config.json");
    test::write_wordpiece_tokenizer(dir.path());
    if (name.rfind("roberta", 0) == 0 || name.rfind("xlm-roberta", 0) == 0) {
      // RoBERTa's pairs: <s> A </s></s> B </s>, all of token type 0 (its table has one row).
      AutoTokenizer::from_pretrained(dir.path().string())->save_pretrained(dir / "converted");
      json tokenizer = read_json_file(dir / "converted" / "tokenizer.json");
      tokenizer["post_processor"] = {{"type", "RobertaProcessing"}, {"sep", {"[SEP]", 3}}, {"cls", {"[CLS]", 2}},
                                     {"trim_offsets", true}, {"add_prefix_space", false}};
      write_json_file(dir / "tokenizer.json", tokenizer);
    }
    model = auto_model_from_pretrained(task, dir.path().string(), {});
    tokenizer = AutoTokenizer::from_pretrained(dir.path().string());
  }
  // What the pipelines feed a model for one text.
  ModelOutput forward(const Encoding& enc) const {
    c10::InferenceMode guard;
    return model->forward(ModelInputs{{"input_ids", at::tensor(enc.ids, at::kLong).unsqueeze(0)},
                                      {"attention_mask", at::tensor(enc.attention_mask, at::kLong).unsqueeze(0)}});
  }
  std::string label(int64_t id) const {
    if (config.contains("id2label")) return config["id2label"][std::to_string(id)].get<std::string>();
    return "LABEL_" + std::to_string(id);
  }
};

class Pipelines : public ::testing::TestWithParam<std::string> {};

std::string name_of(const ::testing::TestParamInfo<std::string>& info) {
  std::string n = info.param;
  for (char& c : n)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
}

class FillMask : public Pipelines {};
TEST_P(FillMask, CandidatesAreTheSoftmaxAtTheMask) {
  Fixture f(GetParam(), tasks::kMaskedLM);
  const std::string text = "the cat sat on the [MASK] .";
  const auto result = fill_mask(*f.model, *f.tokenizer, text, 3);
  ASSERT_EQ(result.size(), 1u);
  ASSERT_EQ(result[0].size(), 3u);
  const Encoding enc = f.tokenizer->encode(text);
  const auto at_mask = std::find(enc.ids.begin(), enc.ids.end(), 4) - enc.ids.begin();
  const at::Tensor probs = f.forward(enc)["logits"][0][at_mask].to(at::kDouble).softmax(-1);
  const at::Tensor order = probs.argsort(-1, true);
  for (int64_t k = 0; k < 3; ++k) {
    EXPECT_EQ(result[0][size_t(k)].token, order[k].item<int64_t>());
    EXPECT_NEAR(result[0][size_t(k)].score, probs[order[k]].item<double>(), 1e-6);
  }
}
INSTANTIATE_TEST_SUITE_P(Encoders, FillMask,
                         ::testing::Values("roberta-tiny-mlm", "xlm-roberta-tiny-mlm", "distilbert-tiny-mlm",
                                           "mpnet-tiny-mlm", "modernbert-tiny-mlm"),
                         name_of);

class TextClassification : public Pipelines {};
TEST_P(TextClassification, BestLabelIsTheArgmax) {
  Fixture f(GetParam(), tasks::kSequenceClassification);
  const std::string text = "john lives in berlin";
  const auto result = text_classification(*f.model, *f.tokenizer, text, std::nullopt);
  const at::Tensor logits = f.forward(f.tokenizer->encode(text))["logits"][0].to(at::kDouble);
  ASSERT_EQ(int64_t(result.size()), logits.size(0));
  EXPECT_EQ(result[0].label, f.label(logits.argmax().item<int64_t>()));
  EXPECT_NEAR(result[0].score, logits.softmax(-1).max().item<double>(), 1e-6);
}
INSTANTIATE_TEST_SUITE_P(Encoders, TextClassification,
                         ::testing::Values("roberta-tiny-seqcls", "distilbert-tiny-seqcls", "modernbert-tiny-seqcls-mean"),
                         name_of);

class TokenClassification : public Pipelines {};
TEST_P(TokenClassification, EveryTokenGetsItsArgmaxLabel) {
  Fixture f(GetParam(), tasks::kTokenClassification);
  const std::string text = "john lives in berlin";
  const auto entities = token_classification(*f.model, *f.tokenizer, text, "none", {});
  const Encoding enc = f.tokenizer->encode(text);
  const at::Tensor logits = f.forward(enc)["logits"][0];
  ASSERT_EQ(entities.size(), enc.ids.size() - 2);  // every token but [CLS] and [SEP]
  for (const auto& e : entities) EXPECT_EQ(e.entity, f.label(logits[*e.index].argmax().item<int64_t>())) << e.word;
}
INSTANTIATE_TEST_SUITE_P(Encoders, TokenClassification,
                         ::testing::Values("roberta-tiny-tokcls", "xlm-roberta-tiny-tokcls", "distilbert-tiny-tokcls"),
                         name_of);

class QuestionAnswering : public Pipelines {};
TEST_P(QuestionAnswering, TheAnswerIsASpanOfTheContext) {
  Fixture f(GetParam(), tasks::kQuestionAnswering);
  const std::string context = "john lives in berlin .";
  const auto answers = question_answering(*f.model, *f.tokenizer, "where does john live ?", context, 2);
  ASSERT_EQ(answers.size(), 2u);
  for (const auto& a : answers) {
    ASSERT_LE(0, a.start);
    ASSERT_LE(a.start, a.end);
    ASSERT_LE(a.end, int64_t(context.size()));
    EXPECT_EQ(a.answer, context.substr(size_t(a.start), size_t(a.end - a.start)));
  }
  EXPECT_GE(answers[0].score, answers[1].score);
}
INSTANTIATE_TEST_SUITE_P(Encoders, QuestionAnswering, ::testing::Values("roberta-tiny-qa", "distilbert-tiny-qa"), name_of);

class FeatureExtraction : public Pipelines {};
TEST_P(FeatureExtraction, FeaturesAreTheLastHiddenState) {
  Fixture f(GetParam(), tasks::kAutoModel);
  const std::string text = "the cat sat on the mat";
  const at::Tensor features = feature_extraction(*f.model, *f.tokenizer, text);
  const at::Tensor hidden = f.forward(f.tokenizer->encode(text))["last_hidden_state"][0];
  ASSERT_EQ(features.sizes(), hidden.sizes());
  EXPECT_TRUE(at::allclose(features, hidden, 1e-6, 1e-6));
}
INSTANTIATE_TEST_SUITE_P(Encoders, FeatureExtraction, ::testing::Values("roberta-tiny", "mpnet-tiny", "modernbert-tiny"),
                         name_of);

}  // namespace
