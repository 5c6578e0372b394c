// Continuous batching's steps (KVCache::batch_of): sequences of different lengths, each with its
// own cache, decoded or prefilled together give the logits each gets alone; and TokenChooser picks
// what generate() picks for the same settings and seed.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/generation.h>

using namespace plugformer;

namespace {

const std::string kModels = std::string(PLUGFORMER_FIXTURES_DIR) + "/models/";

at::Tensor last_logits(PreTrainedModel& model, const std::vector<int64_t>& ids, const std::shared_ptr<KVCache>& cache) {
  ModelInputs inputs;
  inputs.tensors["input_ids"] = at::tensor(ids, at::kLong).unsqueeze(0);
  inputs.past_key_values = cache;
  inputs.use_cache = true;
  inputs.logits_to_keep = 1;
  return model.forward(inputs)["logits"][0][-1];
}

std::vector<int64_t> tokens_of_length(int64_t length, int64_t vocab) {
  std::vector<int64_t> p;
  for (int64_t i = 0; i < length; ++i) p.push_back((7 * i + 3 * length + 1) % vocab);
  return p;
}

// `steps` decode steps of the `together` caches as one batch, each row checked against the same
// token run alone on its `alone` cache (within `tolerance`, absolute and relative); next[r] is row
// r's first token.
void expect_decoding_alike(PreTrainedModel& model, const std::vector<std::shared_ptr<KVCache>>& together,
                           const std::vector<std::shared_ptr<KVCache>>& alone, std::vector<int64_t> next, int steps,
                           double tolerance, const std::string& label) {
  for (int step = 0; step < steps; ++step) {
    ModelInputs inputs;
    inputs.tensors["input_ids"] = at::tensor(next, at::kLong).unsqueeze(1);
    inputs.past_key_values = KVCache::batch_of(together);
    inputs.use_cache = true;
    const at::Tensor batched = model.forward(inputs)["logits"].select(1, 0);
    for (size_t r = 0; r < together.size(); ++r) {
      const at::Tensor single = last_logits(model, {next[r]}, alone[r]);
      EXPECT_TRUE(at::allclose(batched[int64_t(r)], single, tolerance, tolerance))
          << label << " row " << r << " step " << step << ": max diff "
          << (batched[int64_t(r)] - single).abs().max().item<double>();
      EXPECT_EQ(together[r]->seq_length(0), alone[r]->seq_length(0));
      next[r] = single.argmax().item<int64_t>();
    }
  }
}

class CacheBatch : public ::testing::TestWithParam<std::string> {};

// Prompts of 3, 9 and 14 tokens (past the windows of the windowed fixtures), then 6 decode steps.
TEST_P(CacheBatch, DecodingTogetherMatchesEachSequenceAlone) {
  c10::InferenceMode guard;
  ModelPtr model = AutoModelForCausalLM::from_pretrained(kModels + GetParam());
  ASSERT_TRUE(model->decodes_cache_batches());
  const int64_t vocab = model->config().get("vocab_size").get<int64_t>();
  std::vector<std::shared_ptr<KVCache>> alone, together;
  std::vector<int64_t> next;
  for (int64_t length : {3, 9, 14}) {
    const std::vector<int64_t> p = tokens_of_length(length, vocab);
    alone.push_back(std::make_shared<KVCache>());
    together.push_back(std::make_shared<KVCache>());
    const at::Tensor a = last_logits(*model, p, alone.back());
    ASSERT_TRUE(at::allclose(a, last_logits(*model, p, together.back()), 1e-5, 1e-5));
    next.push_back(a.argmax().item<int64_t>());
  }
  expect_decoding_alike(*model, together, alone, next, 6, 1e-5, GetParam());
}

// Prompts prefilled together in one packed step (3, 9, 1 and 14 tokens into empty caches, and 4
// more tokens after a sequence's first 6, past the fixtures' windows) give each row the logits and
// the cache it gets alone; decode steps then continue alike. Within 1e-4, not 1e-5: the packed
// step's products are taller than each prompt's alone, and sgemm libraries round a row
// differently with the matrix's height (OpenBLAS on an AVX2-only Zen 3: llama-tiny's logits 1.5e-5
// to 1.9e-5 apart through libtorch's own ops, 1.8e-5 through ours).
TEST_P(CacheBatch, PrefillingTogetherMatchesEachSequenceAlone) {
  constexpr double kTolerance = 1e-4;
  c10::InferenceMode guard;
  ModelPtr model = AutoModelForCausalLM::from_pretrained(kModels + GetParam());
  const int64_t vocab = model->config().get("vocab_size").get<int64_t>();
  std::vector<std::vector<int64_t>> rows;
  for (int64_t length : {3, 9, 1, 14, 4}) rows.push_back(tokens_of_length(length, vocab));
  std::vector<std::shared_ptr<KVCache>> alone, together;
  for (size_t r = 0; r < rows.size(); ++r) {
    alone.push_back(std::make_shared<KVCache>());
    together.push_back(std::make_shared<KVCache>());
  }
  const std::vector<int64_t> history = tokens_of_length(6, vocab);  // the last row continues a sequence
  last_logits(*model, history, alone.back());
  last_logits(*model, history, together.back());

  ModelInputs inputs;
  std::vector<int64_t> packed, counts;
  for (const auto& row : rows) {
    packed.insert(packed.end(), row.begin(), row.end());
    counts.push_back(int64_t(row.size()));
  }
  inputs.tensors["input_ids"] = at::tensor(packed, at::kLong).unsqueeze(0);
  inputs.past_key_values = KVCache::batch_of(together, counts);
  inputs.use_cache = true;
  const at::Tensor batched = model->forward(inputs)["logits"];
  ASSERT_EQ(batched.sizes(), (std::vector<int64_t>{int64_t(rows.size()), 1, vocab}));
  std::vector<int64_t> next;
  for (size_t r = 0; r < rows.size(); ++r) {
    const at::Tensor single = last_logits(*model, rows[r], alone[r]);
    EXPECT_TRUE(at::allclose(batched[int64_t(r)][0], single, kTolerance, kTolerance))
        << GetParam() << " prompt row " << r << ": max diff " << (batched[int64_t(r)][0] - single).abs().max().item<double>();
    EXPECT_EQ(together[r]->seq_length(0), alone[r]->seq_length(0));
    EXPECT_EQ(together[r]->stored_length(0), alone[r]->stored_length(0));
    next.push_back(single.argmax().item<int64_t>());
  }
  expect_decoding_alike(*model, together, alone, next, 4, kTolerance, GetParam());
}

INSTANTIATE_TEST_SUITE_P(DecoderFamilies, CacheBatch,
                         ::testing::Values("llama-tiny", "gemma2-tiny", "mistral-tiny-window", "qwen3-tiny",
                                           "qwen2-tiny", "gemma-tiny"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(CacheBatch, RefusesWhatItCannotRun) {
  c10::InferenceMode guard;
  EXPECT_THROW(KVCache::batch_of({}), InvalidInputError);
  auto a = std::make_shared<KVCache>(), b = std::make_shared<KVCache>();
  EXPECT_THROW(KVCache::batch_of({KVCache::batch_of({a})}), InvalidInputError);
  ModelPtr model = AutoModelForCausalLM::from_pretrained(kModels + "llama-tiny");
  last_logits(*model, {1, 2, 3}, a);
  last_logits(*model, {4, 5}, b);
  ModelInputs two_tokens;  // a batch step takes one new token per row
  two_tokens.tensors["input_ids"] = at::tensor({1, 2, 3, 4}, at::kLong).view({2, 2});
  two_tokens.past_key_values = KVCache::batch_of({a, b});
  EXPECT_THROW(model->forward(two_tokens), InvalidInputError);
  ModelInputs wrong_rows;
  wrong_rows.tensors["input_ids"] = at::tensor({1, 2, 3}, at::kLong).view({3, 1});
  wrong_rows.past_key_values = KVCache::batch_of({a, b});
  EXPECT_THROW(model->forward(wrong_rows), InvalidInputError);
  // A packed step takes the rows' new tokens in one row, as many as the counts say.
  EXPECT_THROW(KVCache::batch_of({a, b}, {2}), InvalidInputError);
  EXPECT_THROW(KVCache::batch_of({a, b}, {2, 0}), InvalidInputError);
  ModelInputs short_packed;
  short_packed.tensors["input_ids"] = at::tensor({1, 2, 3, 4}, at::kLong).unsqueeze(0);
  short_packed.past_key_values = KVCache::batch_of({a, b}, {2, 3});
  EXPECT_THROW(model->forward(short_packed), InvalidInputError);
  ModelInputs rows_packed = short_packed;
  rows_packed.tensors["input_ids"] = at::tensor({1, 2, 3, 4, 5}, at::kLong).view({5, 1});
  EXPECT_THROW(model->forward(rows_packed), InvalidInputError);
  EXPECT_EQ(a->seq_length(0), 3);  // refused steps leave the rows' caches as they were
  EXPECT_EQ(b->seq_length(0), 2);
  EXPECT_THROW(KVCache::batch_of({a, b})->update(0, at::zeros({2, 1, 1, 4}), at::zeros({2, 1, 1, 4})), InvalidInputError);
  EXPECT_GT(a->bytes(), b->bytes() / 2);
  EXPECT_EQ(KVCache::batch_of({a, b})->bytes(), a->bytes() + b->bytes());
}

// A reserved cache stores the same keys / values as one that grows, and its storage never moves
// within the reservation; a windowed one reserves no more than its window.
TEST(KVCacheReserve, KeepsItsStorageAndContents) {
  c10::InferenceMode guard;
  KVCache grown, reserved, windowed;
  reserved.reserve(12);
  windowed.reserve(100);
  windowed.set_window(4);
  const void* storage = nullptr;
  for (int64_t step = 0; step < 6; ++step) {
    const int64_t add = step == 0 ? 5 : 1;  // a prompt of 5, then decode steps
    const at::Tensor k = at::randn({2, 3, add, 4}), v = at::randn({2, 3, add, 4});
    const auto [gk, gv] = grown.update(0, k, v);
    const auto [rk, rv] = reserved.update(0, k, v);
    windowed.update(0, k, v);
    EXPECT_TRUE(at::equal(gk, rk) && at::equal(gv, rv)) << "step " << step;
    if (step == 0) storage = rk.data_ptr();
    EXPECT_EQ(rk.data_ptr(), storage) << "step " << step;
  }
  EXPECT_EQ(reserved.seq_length(), 10);
  EXPECT_EQ(reserved.bytes(), 2 * 2 * 3 * 12 * 4 * int64_t(sizeof(float)));
  EXPECT_EQ(windowed.bytes(), 2 * 2 * 3 * (3 + 5) * 4 * int64_t(sizeof(float)));  // window - 1 + the prompt
  // generate() reserves prompt + new tokens and computes what an unreserved cache computes.
  ModelPtr model = AutoModelForCausalLM::from_pretrained(kModels + "llama-tiny");
  GenerationConfig c = GenerationConfig::from_model_config(model->config());
  c.max_new_tokens = 8;
  c.eos_token_id.clear();
  const std::vector<int64_t> prompt = {1, 5, 9, 13};
  const at::Tensor sequences = generate(*model, at::tensor(prompt, at::kLong).unsqueeze(0), at::Tensor(), c).sequences;
  std::vector<int64_t> tokens = prompt;
  auto cache = std::make_shared<KVCache>();
  at::Tensor logits = last_logits(*model, tokens, cache);
  for (int step = 0; step < 8; ++step) {
    tokens.push_back(logits.argmax().item<int64_t>());
    logits = last_logits(*model, {tokens.back()}, cache);
  }
  EXPECT_EQ(std::vector<int64_t>(sequences[0].data_ptr<int64_t>(), sequences[0].data_ptr<int64_t>() + sequences.size(1)),
            tokens);
}

// The chooser draws what generate() draws for one prompt with the same seed, step after step.
TEST(TokenChooser, PicksWhatGeneratePicks) {
  c10::InferenceMode guard;
  ModelPtr model = AutoModelForCausalLM::from_pretrained(kModels + "llama-tiny");
  GenerationConfig c = GenerationConfig::from_model_config(model->config());
  c.do_sample = true, c.temperature = 0.8, c.top_k = 20, c.top_p = 0.9, c.repetition_penalty = 1.3, c.seed = 1234;
  c.max_new_tokens = 12;
  c.eos_token_id.clear();
  const std::vector<int64_t> prompt = {1, 5, 9, 13};
  const at::Tensor sequences = generate(*model, at::tensor(prompt, at::kLong).unsqueeze(0), at::Tensor(), c).sequences;
  TokenChooser chooser(c, int64_t(prompt.size()));
  std::vector<int64_t> tokens = prompt;
  auto cache = std::make_shared<KVCache>();
  at::Tensor logits = last_logits(*model, tokens, cache).to(at::kFloat).unsqueeze(0).clone();
  for (int step = 0; step < 12; ++step) {
    const int64_t token = chooser.choose(logits, tokens);
    tokens.push_back(token);
    logits = last_logits(*model, {token}, cache).to(at::kFloat).unsqueeze(0).clone();
  }
  EXPECT_EQ(std::vector<int64_t>(sequences[0].data_ptr<int64_t>(), sequences[0].data_ptr<int64_t>() + sequences.size(1)),
            tokens);
  at::Tensor wrong = at::zeros({2, 8});
  EXPECT_THROW(chooser.choose(wrong, tokens), InvalidInputError);
}

}  // namespace
