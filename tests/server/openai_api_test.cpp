// Request parsing (server/openai_api.h) without a server or a model, with fuzz/server_request's finds.
#include <gtest/gtest.h>

#include <functional>

#include "openai_api.h"
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
