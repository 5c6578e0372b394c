// Request parsing (server/openai_api.h, server/tei_api.h) without a server or a model, with
// fuzz/server_request's finds.
#include <gtest/gtest.h>

#include <functional>

#include "openai_api.h"
#include "tei_api.h"
#include "tokenizers/fast_tokenizer.h"

using namespace plugformer::server;

namespace {

ModelContext gpt2_context() {
  ModelContext m;
  m.name = "tiny";
  m.tokenizer = plugformer::FastTokenizer::from_file(std::string(PLUGFORMER_FIXTURES_DIR) + "/tokenizers/gpt2/tokenizer.json");
  m.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
  m.max_model_len = 256;
  m.vocab_size = int64_t(m.tokenizer->vocab_size());
  return m;
}

// The request gets a 400 naming `param`.
void expect_bad_field(const std::function<void()>& parse, const std::string& param) {
  try {
    parse();
    ADD_FAILURE() << "expected a 400 naming " << param;
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400) << e.what();
    EXPECT_EQ(e.param, param) << e.what();
  }
}

json user_message(const json& content) { return {{"messages", json::array({{{"role", "user"}, {"content", content}}})}}; }

}  // namespace

TEST(OpenAiApi, ContentPartTypesOfAnyJsonTypeAreChecked) {
  // A part whose "type" was not a string escaped as nlohmann's type_error (a 500, not a 400).
  const ModelContext model = gpt2_context();
  for (const json& type : {json(5), json(nullptr), json::array(), json::object()})
    expect_bad_field([&] { parse_chat_request(user_message(json::array({{{"type", type}, {"text", "Hi"}}})), model); },
                     "messages[0].content[0]");
  const CompletionJob job = parse_chat_request(user_message(json::array({{{"type", "text"}, {"text", "Hi"}}})), model);
  EXPECT_EQ(job.prompts.at(0), model.tokenizer->encode("user: Hi\n", false).ids);
}

TEST(OpenAiApi, GenerationConfigTopKBeyondTheRequestRangeIsCapped) {
  // generation_config.json's top_k (any int64) reached an undefined double -> int64 conversion.
  ModelContext model = gpt2_context();
  read_generation_config(model, json{{"top_k", std::numeric_limits<int64_t>::max()}}, "generation_config.json");
  EXPECT_EQ(parse_completion_request(json{{"prompt", "Hello"}}, model).request.config.top_k, 1000000000);
  read_generation_config(model, json{{"top_k", 40}}, "generation_config.json");
  EXPECT_EQ(parse_completion_request(json{{"prompt", "Hello"}}, model).request.config.top_k, 40);
}

TEST(OpenAiApi, EmbeddingInputsAreTextsOrTokenIdsInTheVocabulary) {
  const ModelContext model = gpt2_context();
  const EmbeddingsJob texts = parse_embeddings_request(json{{"input", {"a", "b"}}, {"encoding_format", "base64"}}, model);
  EXPECT_EQ(texts.texts, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(texts.base64);
  const EmbeddingsJob ids = parse_embeddings_request(json{{"input", {{1, 2}, {3}}}}, model);
  EXPECT_EQ(ids.ids, (std::vector<std::vector<int64_t>>{{1, 2}, {3}}));
  expect_bad_field([&] { parse_embeddings_request(json{{"input", {1, 2, 99999999}}}, model); }, "input");
  expect_bad_field([&] { parse_embeddings_request(json{{"input", json::array()}}, model); }, "input");
  expect_bad_field([&] { parse_embeddings_request(json{{"input", "x"}, {"encoding_format", 5}}, model); }, "encoding_format");
}

TEST(TeiApi, EmbedRequestsTakeTeiDefaultsAndNameWrongFields) {
  const EmbedJob job = parse_embed_request(json{{"inputs", "one text"}});
  EXPECT_EQ(job.texts, std::vector<std::string>{"one text"});
  EXPECT_TRUE(job.normalize);  // TEI normalizes unless told not to
  EXPECT_FALSE(job.truncate);
  EXPECT_FALSE(job.prompt_name.has_value());
  const EmbedJob full = parse_embed_request(
      json{{"inputs", {"a", "b"}}, {"normalize", false}, {"truncate", true}, {"prompt_name", "query"}});
  EXPECT_EQ(full.texts.size(), 2u);
  EXPECT_FALSE(full.normalize);
  EXPECT_TRUE(full.truncate);
  EXPECT_EQ(full.prompt_name, "query");
  expect_bad_field([] { parse_embed_request(json{{"inputs", json::array()}}); }, "inputs");
  expect_bad_field([] { parse_embed_request(json{{"inputs", {"a", 1}}}); }, "inputs");
  expect_bad_field([] { parse_embed_request(json{{"inputs", "a"}, {"normalize", "yes"}}); }, "normalize");
  expect_bad_field([] { parse_embed_request(json{{"inputs", "a"}, {"prompt_name", 3}}); }, "prompt_name");
  EXPECT_THROW(parse_embed_request(json::array({"a"})), ApiError);
}

TEST(TeiApi, RerankRanksByScoreKeepingInputOrderOnTies) {
  const RerankJob job = parse_rerank_request(json{{"query", "q"}, {"texts", {"x", "y", "z"}}, {"return_text", true}});
  EXPECT_FALSE(job.raw_scores);
  const json ranked = rerank_response(job, {0.5, 0.9, 0.5});
  ASSERT_EQ(ranked.size(), 3u);
  EXPECT_EQ(ranked[0]["index"], 1);
  EXPECT_EQ(ranked[1]["index"], 0);
  EXPECT_EQ(ranked[2]["index"], 2);
  EXPECT_EQ(ranked[0]["text"], "y");
  EXPECT_EQ(ranked[0]["score"], 0.9);
  EXPECT_FALSE(rerank_response(parse_rerank_request(json{{"query", "q"}, {"texts", {"x"}}}), {0.1})[0].contains("text"));
  expect_bad_field([] { parse_rerank_request(json{{"texts", {"x"}}}); }, "query");
  expect_bad_field([] { parse_rerank_request(json{{"query", 1}, {"texts", {"x"}}}); }, "query");
  expect_bad_field([] { parse_rerank_request(json{{"query", "q"}}); }, "texts");
  expect_bad_field([] { parse_rerank_request(json{{"query", "q"}, {"texts", {"x"}}, {"raw_scores", 1}}); }, "raw_scores");
}

TEST(TeiApi, InputsLongerThanTheModelTakesAre413) {
  const ModelContext model = gpt2_context();
  const std::vector<std::string> texts = {"short", "one two three four five six"};
  EXPECT_NO_THROW(check_input_lengths(texts, *model.tokenizer, 6));
  try {
    check_input_lengths(texts, *model.tokenizer, 5);
    ADD_FAILURE() << "expected a 413";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 413);
    EXPECT_NE(std::string(e.what()).find("Given: 6 (input 1)"), std::string::npos) << e.what();
  }
}

TEST(TokenizeApi, TokenizeAndDetokenizeAsLlamaServer) {
  const ModelContext model = gpt2_context();
  const TokenizeJob job = parse_tokenize_request(json{{"content", "Hello world"}, {"with_pieces", true}});
  EXPECT_EQ(tokenize_response(job, *model.tokenizer),
            json::parse(R"({"tokens": [{"id": 15496, "piece": "Hello"}, {"id": 995, "piece": " world"}]})"));
  EXPECT_EQ(tokenize_response(parse_tokenize_request(json{{"content", "Hello world"}}), *model.tokenizer),
            json::parse(R"({"tokens": [15496, 995]})"));
  expect_bad_field([] { parse_tokenize_request(json{{"content", 5}}); }, "content");
  expect_bad_field([] { parse_tokenize_request(json::array()); }, "content");
  expect_bad_field([] { parse_tokenize_request(json{{"content", "a"}, {"add_special", "no"}}); }, "add_special");

  EXPECT_EQ(parse_detokenize_request(json{{"tokens", {15496, 995}}}, model), (std::vector<int64_t>{15496, 995}));
  EXPECT_TRUE(parse_detokenize_request(json{{"tokens", json::array()}}, model).empty());
  for (const json& tokens : {json(5), json({1, "a"}), json({1.5}), json({-1}), json({50257}),
                             json::parse("[18446744073709551615]")})
    expect_bad_field([&] { parse_detokenize_request(json{{"tokens", tokens}}, model); }, "tokens");
}
