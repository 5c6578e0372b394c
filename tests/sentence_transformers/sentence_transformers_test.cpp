// SentenceTransformer / CrossEncoder against sentence-transformers' own outputs
// (tests/fixtures/sentence_transformers: prompts, max_seq_length over the tokenizer's settings,
// lower-casing, pooling modes, Dense, Normalize, cross-encoder activations), through the API and
// through `plugformer embed` / `rerank`; and the typed errors for broken model folders and inputs.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include <c10/core/InferenceMode.h>

#include <plugformer/auto.h>
#include <plugformer/error.h>
#include <plugformer/safetensors.h>
#include <plugformer/sentence_transformers.h>

#include "../core/test_util.h"

using namespace plugformer;

namespace {

const std::string kDir = std::string(PLUGFORMER_FIXTURES_DIR) + "/sentence_transformers/";

std::vector<json> cases_of(const std::string& name) {
  std::ifstream in(kDir + name + "/cases.jsonl");
  std::vector<json> cases;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) cases.push_back(json::parse(line));
  return cases;
}

at::Tensor expected(const std::string& name, const std::string& output) {
  return SafetensorsFile::open(kDir + name + "/expected.safetensors")->get(output).to(at::kFloat);
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return a.sizes() == b.sizes() ? (a - b).abs().max().item<double>() : 1e9;
}

EncodeOptions encode_options(const json& c) {
  EncodeOptions o;
  if (c.contains("prompt_name")) o.prompt_name = c["prompt_name"].get<std::string>();
  if (c.contains("prompt")) o.prompt = c["prompt"].get<std::string>();
  o.normalize_embeddings = c.value("normalize_embeddings", false);
  o.normalize_modules = !c.value("skip_normalize", false);
  return o;
}

std::vector<std::pair<std::string, std::string>> pairs_of(const json& c) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const auto& p : c["pairs"]) pairs.emplace_back(p[0].get<std::string>(), p[1].get<std::string>());
  return pairs;
}

class Embedder : public ::testing::TestWithParam<std::string> {};

std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string n = info.param;
  for (char& c : n)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return n;
}

// Where the tests below write their inputs and edited models; removed when the program ends.
const test::TempDir scratch("sentence_transformers_test");

// A file with one JSON value per line.
std::string json_lines(const std::string& name, const json& values) {
  const auto file = scratch / (name + ".jsonl");
  std::ofstream out(file);
  for (const auto& v : values) out << v.dump() << "\n";
  return file.string();
}

}  // namespace

TEST_P(Embedder, EncodeMatchesSentenceTransformers) {
  const std::string name = GetParam();
  auto model = SentenceTransformer::from_pretrained(kDir + name);
  for (const auto& c : cases_of(name)) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const auto texts = c["texts"].get<std::vector<std::string>>();
    const at::Tensor want = expected(name, c["output"].get<std::string>());
    EXPECT_LE(max_diff(model->encode(texts, encode_options(c)), want), 1e-4);
    // Batches of any size give the same rows (sorted by length, padded per batch): the texts many
    // times over, so that rows are reordered across many batches of mixed lengths.
    EncodeOptions small = encode_options(c);
    small.batch_size = 3;
    std::vector<std::string> many;
    while (many.size() < 1200) many.insert(many.end(), texts.begin(), texts.end());
    EXPECT_LE(max_diff(model->encode(many, small), want.repeat({int64_t(many.size() / texts.size()), 1})), 1e-4);
  }
}

TEST_P(Embedder, EmbedCommandPrintsTheSameJson) {
  const std::string name = GetParam();
  for (const auto& c : cases_of(name)) {
    if (c.contains("prompt") || c.contains("normalize_embeddings")) continue;  // no flags for these (see README)
    SCOPED_TRACE(c["name"].get<std::string>());
    std::string args = "embed " + kDir + name + " --input " + json_lines(name, c["texts"]) + " --json";
    if (c.contains("prompt_name")) args += " --prompt-name " + c["prompt_name"].get<std::string>();
    if (c.value("skip_normalize", false)) args += " --no-normalize";
    const auto r = test::run_cli(args);
    ASSERT_EQ(r.status, 0) << r.out;
    const json rows = json::parse(r.out.substr(r.out.find('[')));
    std::vector<at::Tensor> got;
    for (const auto& row : rows) got.push_back(at::tensor(row.get<std::vector<double>>()).to(at::kFloat));
    EXPECT_LE(max_diff(at::stack(got), expected(name, c["output"].get<std::string>())), 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Embedder,
                         ::testing::Values("minilm-mean-normalize", "bge-cls-normalize", "mean-dense-tanh"), param_name);

TEST(CrossEncoderFixture, PredictMatchesSentenceTransformers) {
  auto model = CrossEncoder::from_pretrained(kDir + "cross-encoder-minilm");
  EXPECT_EQ(model->max_length(), 32);
  EXPECT_EQ(model->default_activation(), "sigmoid");
  for (const auto& c : cases_of("cross-encoder-minilm")) {
    SCOPED_TRACE(c["name"].get<std::string>());
    PredictOptions o;
    if (c.contains("activation")) o.activation = c["activation"].get<std::string>();
    const at::Tensor want = expected("cross-encoder-minilm", c["output"].get<std::string>());
    EXPECT_LE(max_diff(model->predict(pairs_of(c), o), want), 1e-4);
    // The pairs many times over, reordered across many batches of mixed lengths, at batch size 3.
    const auto pairs = pairs_of(c);
    std::vector<std::pair<std::string, std::string>> many;
    while (many.size() < 1200) many.insert(many.end(), pairs.begin(), pairs.end());
    o.batch_size = 3;
    const int64_t copies = int64_t(many.size() / pairs.size());
    EXPECT_LE(max_diff(model->predict(many, o), want.dim() == 1 ? want.repeat({copies}) : want.repeat({copies, 1})), 1e-4);
    // The rerank command gives the same scores.
    std::string args = "rerank " + kDir + "cross-encoder-minilm --input " + json_lines("pairs", c["pairs"]) + " --json";
    if (c.contains("activation")) args += " --activation " + c["activation"].get<std::string>();
    const auto r = test::run_cli(args);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto scores = json::parse(r.out.substr(r.out.find('['))).get<std::vector<double>>();
    EXPECT_LE(max_diff(at::tensor(scores).to(at::kFloat), expected("cross-encoder-minilm", c["output"].get<std::string>())),
              1e-4);
  }
}

TEST(CrossEncoderFixture, RankSortsTheDocumentsByScore) {
  auto model = CrossEncoder::from_pretrained(kDir + "cross-encoder-minilm");
  const std::vector<std::string> docs = {"Paris is the capital of France.", "Bananas are yellow.",
                                         "France's capital city is Paris, on the Seine.", "The stock market fell."};
  const auto ranked = model->rank("what is the capital of france?", docs, 2);
  ASSERT_EQ(ranked.size(), 2u);
  const at::Tensor scores = model->predict({{"what is the capital of france?", docs[0]},
                                            {"what is the capital of france?", docs[1]},
                                            {"what is the capital of france?", docs[2]},
                                            {"what is the capital of france?", docs[3]}});
  const int64_t best = scores.argmax().item<int64_t>();
  EXPECT_EQ(ranked[0].corpus_id, best);
  EXPECT_EQ(ranked[0].text, docs[size_t(best)]);
  EXPECT_GE(ranked[0].score, ranked[1].score);
  EXPECT_NEAR(ranked[0].score, scores[best].item<double>(), 1e-6);
}

TEST(SentenceTransformerSimilarity, CosineByDefault) {
  auto model = SentenceTransformer::from_pretrained(kDir + "mean-dense-tanh");
  const at::Tensor e = model->encode({"a cat", "a dog", "stock markets"});
  const at::Tensor s = model->similarity(e, e);
  EXPECT_EQ(model->similarity_fn_name(), "cosine");
  EXPECT_LE((s.diagonal() - 1).abs().max().item<double>(), 1e-5);
  EXPECT_NEAR(s[0][1].item<double>(), at::cosine_similarity(e[0], e[1], 0).item<double>(), 1e-5);
}

// --- Pooling modes computed by hand from the token embeddings ---

TEST(SentenceTransformerPooling, EveryModeWithoutThePromptAsTheLibraryDefinesThem) {
  namespace fs = std::filesystem;
  const fs::path dir = scratch / "pooling";
  fs::remove_all(dir);
  fs::copy(kDir + "minilm-mean-normalize", dir, fs::copy_options::recursive);
  json pooling = read_json_file(dir / "1_Pooling/config.json");
  for (const char* mode : {"pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_tokens",
                           "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"})
    pooling[mode] = true;
  pooling["include_prompt"] = false;
  write_json_file(dir / "1_Pooling/config.json", pooling);
  json modules = read_json_file(dir / "modules.json");
  modules.erase(2);  // no Normalize
  write_json_file(dir / "modules.json", modules);

  auto st = SentenceTransformer::from_pretrained(dir.string());
  EncodeOptions query;
  query.prompt_name = "query";
  const at::Tensor got = st->encode({"  Hello world, a test  "}, query)[0];

  // By hand: "query: " + text, stripped; the prompt "query:" is [CLS] query : [SEP], so 3 tokens
  // (its last, special, token not counted) leave the pooling.
  auto tokenizer = AutoTokenizer::from_pretrained(dir.string());
  tokenizer->set_padding(std::nullopt);  // tokenizer.json pads to a multiple of 8 on its own
  const Encoding e = tokenizer->encode("query: Hello world, a test");
  ASSERT_LE(e.ids.size(), 16u);
  auto model = AutoModel::from_pretrained(dir.string());
  at::Tensor h;
  {
    c10::InferenceMode guard;
    h = model->forward(ModelInputs{{"input_ids", at::tensor(e.ids, at::kLong).unsqueeze(0)}})["last_hidden_state"][0].clone();
  }
  const int64_t len = h.size(0), prompt = 3;
  const at::Tensor kept = h.narrow(0, prompt, len - prompt);
  const at::Tensor weights = at::arange(prompt + 1, len + 1, at::kFloat).unsqueeze(1);
  const at::Tensor want = at::cat({h[0], kept.amax(0), kept.mean(0), kept.sum(0) / std::sqrt(double(len - prompt)),
                                   (kept * weights).sum(0) / weights.sum(), h[len - 1]});
  EXPECT_LE(max_diff(got, want), 1e-5);
}

// --- Broken folders and inputs ---

namespace {

// A copy of fixture `name` changed by `edit(dir)`.
std::string edited(const std::string& name, const std::function<void(const std::filesystem::path&)>& edit) {
  namespace fs = std::filesystem;
  const fs::path dir = scratch / ("bad_" + name);
  fs::remove_all(dir);
  fs::copy(kDir + name, dir, fs::copy_options::recursive);
  edit(dir);
  return dir.string();
}

template <class E>
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "(no error of the expected type)";
}

}  // namespace

TEST(SentenceTransformerBadInput, UnknownModuleTypeAndMissingModuleFolder) {
  const std::string unknown = edited("mean-dense-tanh", [](const auto& dir) {
    json m = read_json_file(dir / "modules.json");
    m[1]["type"] = "sentence_transformers.models.LSTM";
    write_json_file(dir / "modules.json", m);
  });
  std::string message = error_of<ConfigError>([&] { SentenceTransformer::from_pretrained(unknown); });
  EXPECT_NE(message.find("modules.json[1]: module type 'sentence_transformers.models.LSTM' is not supported"),
            std::string::npos)
      << message;
  const std::string missing = edited("mean-dense-tanh", [](const auto& dir) { std::filesystem::remove_all(dir / "2_Dense"); });
  message = error_of<Error>([&] { SentenceTransformer::from_pretrained(missing); });
  EXPECT_NE(message.find("2_Dense/config.json"), std::string::npos) << message;
}

TEST(SentenceTransformerBadInput, PoolingWithoutAModeAndDenseWeightsThatDisagree) {
  const std::string no_mode = edited("minilm-mean-normalize", [](const auto& dir) {
    json c = read_json_file(dir / "1_Pooling/config.json");
    c["pooling_mode_mean_tokens"] = false;
    write_json_file(dir / "1_Pooling/config.json", c);
  });
  std::string message = error_of<ConfigError>([&] { SentenceTransformer::from_pretrained(no_mode); });
  EXPECT_NE(message.find("1_Pooling/config.json: no pooling mode is set"), std::string::npos) << message;
  const std::string wrong = edited("mean-dense-tanh", [](const auto& dir) {
    json c = read_json_file(dir / "2_Dense/config.json");
    c["out_features"] = 30;
    write_json_file(dir / "2_Dense/config.json", c);
  });
  message = error_of<CheckpointError>([&] { SentenceTransformer::from_pretrained(wrong); });
  EXPECT_NE(message.find("'linear.weight' has shape [24, 32] but 2_Dense/config.json says [30, 32]"), std::string::npos)
      << message;
}

TEST(SentenceTransformerBadInput, EmptyInputsPairsThatAreNotPairsAndUnknownPrompts) {
  auto model = SentenceTransformer::from_pretrained(kDir + "minilm-mean-normalize");
  EXPECT_THROW(model->encode({}), InvalidInputError);
  EncodeOptions unknown;
  unknown.prompt_name = "passage_v2";
  const std::string message = error_of<InvalidInputError>([&] { model->encode({"x"}, unknown); });
  EXPECT_NE(message.find("prompt_name 'passage_v2' is not one of the model's prompts"), std::string::npos) << message;
  EXPECT_THROW(CrossEncoder::from_pretrained(kDir + "cross-encoder-minilm")->predict({}), InvalidInputError);

  const auto empty = test::run_cli("embed " + kDir + "minilm-mean-normalize --input " + json_lines("empty", json::array()) + " --json");
  EXPECT_NE(empty.status, 0);
  EXPECT_NE(empty.out.find("no inputs"), std::string::npos) << empty.out;
  const auto not_pair = test::run_cli("rerank " + kDir + "cross-encoder-minilm --input " +
                                      json_lines("bad_pairs", json::array({json::array({"q", "p"}), json::array({"only"})})) +
                                      " --json");
  EXPECT_NE(not_pair.status, 0);
  EXPECT_NE(not_pair.out.find("input 2 is not a [query, passage] pair"), std::string::npos) << not_pair.out;
  const auto not_string = test::run_cli("embed " + kDir + "minilm-mean-normalize --input " +
                                        json_lines("not_string", json::array({"a", 3})) + " --json");
  EXPECT_NE(not_string.status, 0);
  EXPECT_NE(not_string.out.find("input 2 is not a JSON string"), std::string::npos) << not_string.out;
}
