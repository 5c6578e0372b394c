// The generation engine on the real stories260K model: strategies, processors, stopping.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <set>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/generation.h>

using namespace plugformer;

namespace {

const std::string kStories = std::string(PLUGFORMER_SOURCE_DIR) + "/models/stories260K";
const std::vector<int64_t> kPrompt = {1, 403, 407, 261, 378};  // <s> Once upon a time

ModelPtr model() {
  static ModelPtr m = AutoModelForCausalLM::from_pretrained(kStories);
  return m;
}
at::Tensor prompt() { return at::tensor(kPrompt, at::kLong).unsqueeze(0); }
std::vector<int64_t> row(const at::Tensor& t, int64_t r = 0) {
  at::Tensor x = t[r].contiguous();
  return {x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel()};
}
GenerationConfig config(int64_t new_tokens) {
  GenerationConfig c = GenerationConfig::from_model_config(model()->config());
  c.max_new_tokens = new_tokens;
  return c;
}

}  // namespace

TEST(Generation, SeededSamplingIsReproducible) {
  auto c = config(30);
  c.do_sample = true;
  c.temperature = 1.3;
  c.seed = 42;
  auto a = generate(*model(), prompt(), {}, c), b = generate(*model(), prompt(), {}, c);
  EXPECT_EQ(row(a.sequences), row(b.sequences));
  c.seed = 43;
  EXPECT_NE(row(generate(*model(), prompt(), {}, c).sequences), row(a.sequences));
  c.top_k = 1;  // keeps only the argmax: sampling becomes greedy
  auto greedy = config(30);
  EXPECT_EQ(row(generate(*model(), prompt(), {}, c).sequences), row(generate(*model(), prompt(), {}, greedy).sequences));
}

TEST(Generation, WarpersFollowTransformers) {
  auto c = config(1);
  c.do_sample = true;
  c.seed = 1;
  c.temperature = 0.5;
  c.top_k = 10;
  c.top_p = 0.9;
  auto out = generate(*model(), prompt(), {}, c);
  c10::InferenceMode guard;
  ModelInputs inputs;
  inputs.tensors["input_ids"] = prompt();
  at::Tensor raw = model()->forward(inputs)["logits"][0][-1] / 0.5;
  // Top-k 10, then the smallest set whose probability exceeds 0.9.
  auto [sorted, order] = raw.sort(-1, true);
  at::Tensor probs = sorted.narrow(0, 0, 10).softmax(-1);
  at::Tensor cumulative = probs.cumsum(0);
  const int64_t kept = std::min<int64_t>(10, (cumulative < 0.9).sum().item<int64_t>() + 1);
  at::Tensor scores = out.scores[0][0];
  EXPECT_EQ(at::isfinite(scores).sum().item<int64_t>(), kept);
  for (int64_t i = 0; i < kept; ++i)
    EXPECT_NEAR(scores[order[i].item<int64_t>()].item<float>(), sorted[i].item<float>(), 1e-5);
}

TEST(Generation, RepetitionPenaltyScalesSeenTokens) {
  auto c = config(1);
  c.repetition_penalty = 2.0;
  auto out = generate(*model(), prompt(), {}, c);
  c10::InferenceMode guard;
  ModelInputs inputs;
  inputs.tensors["input_ids"] = prompt();
  at::Tensor raw = model()->forward(inputs)["logits"][0][-1];
  for (int64_t id : kPrompt) {
    const float r = raw[id].item<float>();
    EXPECT_NEAR(out.scores[0][0][id].item<float>(), r < 0 ? r * 2 : r / 2, 1e-5);
  }
}

TEST(Generation, NoRepeatNgramsAndBadWords) {
  auto c = config(60);
  c.no_repeat_ngram_size = 2;
  auto seq = row(generate(*model(), prompt(), {}, c).sequences);
  std::set<std::pair<int64_t, int64_t>> bigrams;
  for (size_t i = 0; i + 1 < seq.size(); ++i) EXPECT_TRUE(bigrams.insert({seq[i], seq[i + 1]}).second) << "repeated bigram at " << i;
  auto plain = row(generate(*model(), prompt(), {}, config(20)).sequences);
  auto b = config(20);
  b.bad_words_ids = {{plain[kPrompt.size()]}};  // the token greedy picks first
  auto banned = row(generate(*model(), prompt(), {}, b).sequences);
  for (size_t i = kPrompt.size(); i < banned.size(); ++i) EXPECT_NE(banned[i], plain[kPrompt.size()]);
}

TEST(Generation, BeamSearch) {
  auto c = config(8);
  c.num_beams = 1;
  auto greedy = row(generate(*model(), prompt(), {}, c).sequences);
  c.num_beams = 4;
  c.num_return_sequences = 3;
  c.length_penalty = 1.0;
  auto out = generate(*model(), prompt(), {}, c);
  ASSERT_EQ(out.sequences.size(0), 3);
  EXPECT_EQ(out.sequences.size(1), int64_t(kPrompt.size()) + 8);
  // Each returned score is the sum of the sequence's token log-probabilities / its new length.
  c10::InferenceMode guard;
  for (int64_t r = 0; r < 3; ++r) {
    ModelInputs inputs;
    inputs.tensors["input_ids"] = out.sequences[r].unsqueeze(0);
    at::Tensor logprobs = model()->forward(inputs)["logits"][0].log_softmax(-1);
    double sum = 0;
    for (int64_t t = int64_t(kPrompt.size()); t < out.sequences.size(1); ++t)
      sum += logprobs[t - 1][out.sequences[r][t].item<int64_t>()].item<double>();
    EXPECT_NEAR(out.sequences_scores[r].item<double>(), sum / 8.0, 1e-4);
  }
  EXPECT_GE(out.sequences_scores[0].item<double>(), out.sequences_scores[1].item<double>());
  EXPECT_GE(out.sequences_scores[1].item<double>(), out.sequences_scores[2].item<double>());
  EXPECT_EQ(greedy.size(), kPrompt.size() + 8);
}

TEST(Generation, StoppingAndStreaming) {
  auto tokenizer = AutoTokenizer::from_pretrained(kStories, {}, false);
  auto c = config(60);
  c.stop_strings = {"."};
  auto out = generate(*model(), prompt(), {}, c, {}, tokenizer.get());
  auto seq = row(out.sequences);
  const std::string text = tokenizer->decode(std::vector<int64_t>(seq.begin() + 5, seq.end()), true);
  EXPECT_EQ(text.back(), '.');
  EXPECT_LT(seq.size(), kPrompt.size() + 60);
  int streamed = 0;
  auto stopped = generate(*model(), prompt(), {}, config(50), [&](int64_t, int64_t) { return ++streamed < 7; });
  EXPECT_EQ(streamed, 7);
  EXPECT_EQ(stopped.sequences.size(1), int64_t(kPrompt.size()) + 7);
  auto none = generate(*model(), prompt(), {}, config(0));
  EXPECT_EQ(row(none.sequences), kPrompt);
  // eos stops a row; without eos configured, generation runs to the length limit.
  auto e = config(10);
  e.eos_token_id = {row(generate(*model(), prompt(), {}, config(3)).sequences).back()};
  EXPECT_EQ(generate(*model(), prompt(), {}, e).sequences.size(1), int64_t(kPrompt.size()) + 3);
  e.eos_token_id.clear();
  EXPECT_EQ(generate(*model(), prompt(), {}, e).sequences.size(1), int64_t(kPrompt.size()) + 10);
}

TEST(Generation, LeftPaddedBatchEqualsSinglePrompts) {
  const std::vector<int64_t> short_prompt = {1, 403, 407};
  at::Tensor batch = at::tensor(std::vector<int64_t>{1, 403, 407, 261, 378, 0, 0, 1, 403, 407}, at::kLong).view({2, 5});
  at::Tensor mask = at::tensor(std::vector<int64_t>{1, 1, 1, 1, 1, 0, 0, 1, 1, 1}, at::kLong).view({2, 5});
  auto c = config(12);
  c.pad_token_id = 0;
  auto both = generate(*model(), batch, mask, c);
  auto first = generate(*model(), prompt(), {}, c);
  auto second = generate(*model(), at::tensor(short_prompt, at::kLong).unsqueeze(0), {}, c);
  EXPECT_EQ(row(both.sequences, 0), row(first.sequences));
  auto r1 = row(both.sequences, 1);
  EXPECT_EQ(std::vector<int64_t>(r1.begin() + 2, r1.end()), row(second.sequences));
  // The padded row's scores too, step by step (its greedy tokens alone could survive a pad that is
  // attended to, or positions shifted by it).
  ASSERT_EQ(both.scores.size(), second.scores.size());
  for (size_t step = 0; step < both.scores.size(); ++step)
    EXPECT_TRUE(at::allclose(both.scores[step][1], second.scores[step][0], 1e-4, 1e-4)) << "step " << step;
}

TEST(Generation, InvalidSettingsAndPrompts) {
  auto bad = [&](auto mutate) {
    auto c = config(5);
    mutate(c);
    return c;
  };
  EXPECT_THROW(generate(*model(), prompt(), {}, bad([](auto& c) { c.top_p = 0; })), InvalidInputError);
  EXPECT_THROW(generate(*model(), prompt(), {}, bad([](auto& c) { c.top_p = 1.5; })), InvalidInputError);
  EXPECT_THROW(generate(*model(), prompt(), {}, bad([](auto& c) { c.do_sample = true; c.temperature = 0; })), InvalidInputError);
  EXPECT_THROW(generate(*model(), prompt(), {}, bad([](auto& c) { c.num_beams = 0; })), InvalidInputError);
  EXPECT_THROW(generate(*model(), prompt(), {}, bad([](auto& c) { c.stop_strings = {"x"}; })), InvalidInputError);
  EXPECT_THROW(generate(*model(), at::zeros({1, 0}, at::kLong), {}, config(5)), InvalidInputError);
  EXPECT_THROW(generate(*model(), at::ones({1, 600}, at::kLong), {}, config(5)), InvalidInputError);  // context is 512
}

TEST(Generation, ConfigFileRoundTrip) {
  GenerationConfig c;
  c.update_from_json(json::parse(R"({"do_sample": true, "top_p": 0.8, "eos_token_id": [2, 3], "early_stopping": "never",
                                     "bad_words_ids": [[5, 6]], "stop_strings": "END", "custom": 1})"));
  EXPECT_EQ(c.eos_token_id, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(c.early_stopping, "never");
  EXPECT_EQ(c.stop_strings, std::vector<std::string>{"END"});
  const json out = c.to_json();
  EXPECT_EQ(out["top_p"], 0.8);
  EXPECT_EQ(out["custom"], 1);
  EXPECT_FALSE(out.contains("num_beams"));
  GenerationConfig back;
  back.update_from_json(out);
  EXPECT_EQ(back.to_json(), out);
  EXPECT_THROW(c.update_from_json(json::parse(R"({"top_k": "many"})")), ConfigError);
}
