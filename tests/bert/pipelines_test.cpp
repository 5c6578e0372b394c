// The pipelines (fill-mask, text-classification, token-classification, question-answering,
// feature-extraction) on the tiny BERT fixtures with a small WordPiece vocabulary, each checked
// against the model's raw outputs post-processed here by hand; the entity grouping and span
// decoding on hand-made inputs; and `plugformer run`.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/pipelines.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <sys/wait.h>
#include <unistd.h>

#include "../core/test_util.h"

using namespace plugformer;

namespace {

// A copy of a bert fixture with a BertTokenizer (vocab.txt) beside it.
std::filesystem::path with_tokenizer(const std::string& name, const std::function<void(json&)>& edit = {}) {
  const auto dir = std::filesystem::temp_directory_path() / ("bert_pipelines_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string src = std::string(PLUGFORMER_FIXTURES_DIR) + "/models/" + name;
  std::filesystem::copy_file(src + "/model.safetensors", dir / "model.safetensors");
  json config = read_json_file(src + "/config.json");
  if (edit) edit(config);
  write_json_file(dir / "config.json", config);
  test::write_wordpiece_tokenizer(dir);
  return dir;
}

struct Fixture {
  std::filesystem::path dir;
  ModelPtr model;
  std::shared_ptr<Tokenizer> tokenizer;
  Fixture(const std::string& name, const char* task, const std::function<void(json&)>& edit = {})
      : dir(with_tokenizer(name, edit)),
        model(auto_model_from_pretrained(task, dir.string(), {})),
        tokenizer(AutoTokenizer::from_pretrained(dir.string())) {}
  ~Fixture() { std::filesystem::remove_all(dir); }

  // pooled_outputs_only as the pipelines that read per-sequence outputs set it.
  ModelOutput forward(const Encoding& enc, bool pooled_outputs_only = false) const {
    c10::InferenceMode guard;
    ModelInputs inputs{{"input_ids", at::tensor(enc.ids, at::kLong).unsqueeze(0)},
                       {"token_type_ids", at::tensor(enc.type_ids, at::kLong).unsqueeze(0)}};
    inputs.pooled_outputs_only = pooled_outputs_only;
    return model->forward(inputs);
  }
};


// The JSON line `plugformer run --json` prints last (log lines may come before it).
json last_json(const std::string& out) {
  std::string text = out;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return json::parse(text.substr(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1));
}

Entity token(const std::string& label, double score, int64_t id, int64_t start, int64_t end) {
  return {label, score, "", start, end, std::nullopt, {id}};
}

}  // namespace

TEST(FillMask, TopCandidatesAreTheSoftmaxAtTheMask) {
  Fixture f("bert-tiny-mlm", tasks::kMaskedLM);
  const std::string text = "the cat sat on the [MASK] .";
  const auto result = fill_mask(*f.model, *f.tokenizer, text, 5);
  ASSERT_EQ(result.size(), 1u);
  ASSERT_EQ(result[0].size(), 5u);
  const Encoding enc = f.tokenizer->encode(text);
  const auto mask_at = std::find(enc.ids.begin(), enc.ids.end(), 4) - enc.ids.begin();
  const at::Tensor probs = f.forward(enc)["logits"][0][mask_at].to(at::kDouble).softmax(-1);
  const at::Tensor order = probs.argsort(-1, true);
  for (size_t k = 0; k < 5; ++k) {
    const int64_t id = order[int64_t(k)].item<int64_t>();
    EXPECT_EQ(result[0][k].token, id);
    EXPECT_NEAR(result[0][k].score, probs[id].item<double>(), 1e-9);
    EXPECT_EQ(result[0][k].token_str, f.tokenizer->decode({id}));
    std::vector<int64_t> filled = enc.ids;
    filled[size_t(mask_at)] = id;
    EXPECT_EQ(result[0][k].sequence, f.tokenizer->decode(filled, true));
  }
  EXPECT_EQ(result[0][0].sequence.find("[CLS]"), std::string::npos);
}

TEST(FillMask, SeveralMasksKeepTheOthersVisibleAndNoMaskIsAnError) {
  Fixture f("bert-tiny-mlm", tasks::kMaskedLM);
  const auto result = fill_mask(*f.model, *f.tokenizer, "the [MASK] sat on the [MASK] .", 3);
  ASSERT_EQ(result.size(), 2u);
  EXPECT_EQ(result[1].size(), 3u);
  EXPECT_NE(result[0][0].sequence.find("[MASK]"), std::string::npos);  // the second mask is still there
  EXPECT_THROW(fill_mask(*f.model, *f.tokenizer, "the cat sat", 3), InvalidInputError);
}

TEST(TextClassification, SoftmaxByDefaultSigmoidForMultiLabel) {
  Fixture f("bert-tiny-seqcls", tasks::kSequenceClassification);
  const std::string text = "paris is the capital of france .";
  // The pipeline reads pooled outputs only (its last layer computes the first position alone).
  const at::Tensor logits = f.forward(f.tokenizer->encode(text), true)["logits"][0].to(at::kDouble);
  const auto all = text_classification(*f.model, *f.tokenizer, text, std::nullopt);
  ASSERT_EQ(all.size(), 3u);
  double sum = 0;
  for (const auto& l : all) {
    const int64_t i = l.label.back() - '0';
    EXPECT_EQ(l.label, "LABEL_" + std::to_string(i));
    EXPECT_NEAR(l.score, logits.softmax(-1)[i].item<double>(), 1e-9);
    sum += l.score;
  }
  EXPECT_NEAR(sum, 1.0, 1e-9);
  EXPECT_GE(all[0].score, all[1].score);
  const auto best = text_classification(*f.model, *f.tokenizer, text);
  ASSERT_EQ(best.size(), 1u);
  EXPECT_EQ(best[0].label, "LABEL_" + std::to_string(logits.argmax().item<int64_t>()));

  Fixture multi("bert-tiny-seqcls", tasks::kSequenceClassification,
                [](json& c) { c["problem_type"] = "multi_label_classification"; });
  const auto sig = text_classification(*multi.model, *multi.tokenizer, text, std::nullopt);
  for (const auto& l : sig) EXPECT_NEAR(l.score, logits.sigmoid()[l.label.back() - '0'].item<double>(), 1e-9);
  EXPECT_THROW(text_classification(*f.model, *f.tokenizer, text, 1, "tanh"), InvalidInputError);
}

TEST(TokenClassification, OneEntityPerTokenWithOffsets) {
  Fixture f("bert-tiny-tokcls", tasks::kTokenClassification);
  const std::string text = "John lives in Berlin.";
  const Encoding enc = f.tokenizer->encode(text);
  const at::Tensor probs = f.forward(enc)["logits"][0].to(at::kDouble).softmax(-1);
  const auto entities = token_classification(*f.model, *f.tokenizer, text, "none", {});
  ASSERT_EQ(entities.size(), enc.ids.size() - 2);  // every token but [CLS] and [SEP]
  for (const auto& e : entities) {
    const int64_t i = *e.index;
    const int64_t best = probs[i].argmax().item<int64_t>();
    EXPECT_EQ(e.entity, "LABEL_" + std::to_string(best));
    EXPECT_NEAR(e.score, probs[i][best].item<double>(), 1e-9);
    EXPECT_EQ(e.word, enc.tokens[size_t(i)]);
    EXPECT_EQ(e.start, int64_t(enc.offsets[size_t(i)].first));
    EXPECT_EQ(e.end, int64_t(enc.offsets[size_t(i)].second));
  }
  EXPECT_EQ(entities[0].word, "john");
  EXPECT_EQ(text.substr(size_t(entities[0].start), size_t(entities[0].end - entities[0].start)), "John");
  // Ignored labels disappear.
  const std::string dropped = entities[0].entity;
  for (const auto& e : token_classification(*f.model, *f.tokenizer, text, "none", {dropped})) EXPECT_NE(e.entity, dropped);
}

TEST(TokenClassification, SimpleAggregationGroupsBioRuns) {
  Fixture f("bert-tiny-tokcls", tasks::kTokenClassification);
  const auto id = [&](const char* t) { return *f.tokenizer->token_to_id(t); };
  // john lives in berlin paris x: B-PER I-PER O O B-LOC B-LOC I-PER (hand-made per-token results)
  const std::vector<Entity> tokens = {token("B-PER", 0.9, id("j"), 0, 1),     token("I-PER", 0.8, id("##o"), 1, 2),
                                      token("O", 0.99, id("lives"), 3, 8),    token("O", 0.97, id("in"), 9, 11),
                                      token("B-LOC", 0.7, id("berlin"), 12, 18), token("B-LOC", 0.5, id("paris"), 19, 24),
                                      token("I-PER", 0.4, id("x"), 25, 26)};
  const auto groups = group_entities(tokens, *f.tokenizer);
  ASSERT_EQ(groups.size(), 5u);
  EXPECT_EQ(groups[0].entity, "PER");
  EXPECT_NEAR(groups[0].score, 0.85, 1e-12);
  EXPECT_EQ(groups[0].word, "jo");  // "j" + "##o" joined as the WordPiece decoder does
  EXPECT_EQ(groups[0].start, 0);
  EXPECT_EQ(groups[0].end, 2);
  EXPECT_EQ(groups[1].entity, "O");  // consecutive O tokens form one group (dropped later by ignore_labels)
  EXPECT_EQ(groups[1].word, "lives in");
  EXPECT_EQ(groups[2].word, "berlin");  // B- starts a new group even after the same type
  EXPECT_EQ(groups[3].word, "paris");
  EXPECT_EQ(groups[4].entity, "PER");  // I- after another type starts a group too
  // Through the model: groups cover the non-special tokens in order, none spans a label change.
  const auto simple = token_classification(*f.model, *f.tokenizer, "John lives in Berlin.", "simple", {});
  const auto none = token_classification(*f.model, *f.tokenizer, "John lives in Berlin.", "none", {});
  size_t covered = 0;
  for (const auto& g : simple) covered += g.ids.size();
  EXPECT_EQ(covered, none.size());
  EXPECT_THROW(token_classification(*f.model, *f.tokenizer, "x", "max"), InvalidInputError);
}

TEST(QuestionAnswering, DecodeSpansKeepsOrderedShortAllowedSpans) {
  const at::Tensor start = at::tensor({0.5, 0.3, 0.1, 0.1}, at::kDouble);
  const at::Tensor end = at::tensor({0.1, 0.1, 0.7, 0.1}, at::kDouble);
  const at::Tensor allowed = at::tensor({0, 1, 1, 1}, at::kLong).to(at::kBool);
  // Best pairs: (0, 2) 0.35, (1, 2) 0.21. The first starts on a token that is not allowed and is
  // dropped, not replaced by the third best.
  auto spans = decode_spans(start, end, 2, 15, allowed);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].start, 1);
  EXPECT_EQ(spans[0].end, 2);
  EXPECT_NEAR(spans[0].score, 0.21, 1e-12);
  spans = decode_spans(start, end, 1, 1, allowed);  // one-token answers only: (2, 2) 0.07
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].start, 2);
  EXPECT_EQ(spans[0].end, 2);
  EXPECT_NEAR(spans[0].score, 0.07, 1e-12);
  spans = decode_spans(start, end, 10, 2, allowed);  // (1, 3) is 3 tokens long: excluded
  for (const auto& s : spans) EXPECT_LT(s.end - s.start, 2);
}

TEST(QuestionAnswering, BestSpanOfTheContext) {
  Fixture f("bert-tiny-qa", tasks::kQuestionAnswering);
  const std::string question = "where does john live?", context = "john lives in berlin, paris is the capital of france.";
  const Encoding enc = f.tokenizer->encode_pair(question, context);
  ModelOutput out = f.forward(enc);
  // By hand: softmax over context tokens and [CLS], [CLS] zeroed, best product with end >= start
  // and at most 15 tokens, both ends inside the context.
  const int64_t n = int64_t(enc.ids.size());
  auto probs = [&](const at::Tensor& logits) {
    at::Tensor l = logits[0].to(at::kDouble).clone();
    for (int64_t i = 0; i < n; ++i)
      if (enc.sequence_ids[size_t(i)] != 1 && i != 0) l[i] = -10000.0;
    at::Tensor p = l.softmax(-1);
    p[0] = 0.0;
    return p;
  };
  const at::Tensor ps = probs(out["start_logits"]), pe = probs(out["end_logits"]);
  double best = -1;
  int64_t bs = 0, be = 0;
  for (int64_t s = 1; s < n; ++s)
    for (int64_t e = s; e < std::min(n, s + 15); ++e) {
      if (enc.sequence_ids[size_t(s)] != 1 || enc.sequence_ids[size_t(e)] != 1) continue;
      const double v = ps[s].item<double>() * pe[e].item<double>();
      if (v > best) best = v, bs = s, be = e;
    }
  const auto answers = question_answering(*f.model, *f.tokenizer, question, context);
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_NEAR(answers[0].score, best, 1e-9);
  EXPECT_EQ(answers[0].start, int64_t(enc.offsets[size_t(bs)].first));
  EXPECT_EQ(answers[0].end, int64_t(enc.offsets[size_t(be)].second));
  EXPECT_EQ(answers[0].answer, context.substr(size_t(answers[0].start), size_t(answers[0].end - answers[0].start)));
  const auto three = question_answering(*f.model, *f.tokenizer, question, context, 3, 15, true);
  ASSERT_EQ(three.size(), 3u);
  EXPECT_GE(three[0].score, three[1].score);
  EXPECT_THROW(question_answering(*f.model, *f.tokenizer, question, ""), InvalidInputError);
}

TEST(FeatureExtraction, TokensClsAndNormalisedMean) {
  Fixture f("bert-tiny-mlm", tasks::kAutoModel);
  const std::string text = "the cat sat on the mat .";
  const at::Tensor hidden = f.forward(f.tokenizer->encode(text))["last_hidden_state"][0];
  EXPECT_TRUE(at::allclose(feature_extraction(*f.model, *f.tokenizer, text), hidden));
  EXPECT_TRUE(at::allclose(feature_extraction(*f.model, *f.tokenizer, text, "cls"), hidden[0]));
  const at::Tensor mean = feature_extraction(*f.model, *f.tokenizer, text, "mean", true);
  EXPECT_TRUE(at::allclose(mean, hidden.mean(0) / hidden.mean(0).norm()));
  EXPECT_NEAR(mean.norm().item<double>(), 1.0, 1e-6);
  EXPECT_THROW(feature_extraction(*f.model, *f.tokenizer, text, "max"), InvalidInputError);
}

TEST(PipelineCli, RunPrintsWhatThePipelineReturns) {
  const auto mlm = with_tokenizer("bert-tiny-mlm");
  auto r = test::run_cli("run fill-mask " + mlm.string() + " \"the cat sat on the [MASK] .\" --top-k 3 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const json fill = last_json(r.out);
  ASSERT_EQ(fill.size(), 3u);
  const json api = run_pipeline("fill-mask", mlm.string(), {"the cat sat on the [MASK] ."}, {{"top_k", 3}});
  EXPECT_EQ(fill[0]["token"], api[0]["token"]);
  EXPECT_NEAR(fill[0]["score"].get<double>(), api[0]["score"].get<double>(), 1e-12);
  EXPECT_TRUE(fill[0].contains("sequence") && fill[0].contains("token_str"));

  r = test::run_cli("run feature-extraction " + mlm.string() + " \"the cat\" \"the mat\" --pooling mean --normalize --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const json features = last_json(r.out);
  ASSERT_EQ(features.size(), 2u);  // one vector per input
  double norm = 0;
  for (double v : features[1]) norm += v * v;
  EXPECT_NEAR(norm, 1.0, 1e-5);

  r = test::run_cli("run fill-mask " + mlm.string() + " \"the cat sat on the [MASK] .\"");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find(" | the cat sat on the "), std::string::npos) << r.out;  // readable lines

  const auto ner = with_tokenizer("bert-tiny-tokcls");
  r = test::run_cli("run ner " + ner.string() + " \"John lives in Berlin.\" --aggregation-strategy simple --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const json groups = last_json(r.out);
  ASSERT_FALSE(groups.empty());
  EXPECT_TRUE(groups[0].contains("entity_group") && groups[0].contains("start") && !groups[0].contains("index"));

  const auto qa = with_tokenizer("bert-tiny-qa");
  r = test::run_cli("run question-answering " + qa.string() + " \"where does john live?\" \"john lives in berlin.\" --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const json answer = last_json(r.out);
  EXPECT_TRUE(answer.is_object() && answer.contains("answer") && answer.contains("score")) << r.out;

  const auto cls = with_tokenizer("bert-tiny-seqcls");
  r = test::run_cli("run text-classification " + cls.string() + " \"paris is the capital of france.\" --top-k 2 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(last_json(r.out).size(), 2u);

  r = test::run_cli("run summarization " + cls.string() + " \"x\"");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("unknown pipeline task"), std::string::npos) << r.out;
  for (const auto& d : {mlm, ner, qa, cls}) std::filesystem::remove_all(d);
}
