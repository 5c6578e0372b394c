// Request bodies for the server's JSON endpoints, read into what the engine or the encoders run
// (server/openai_api.h), against a context like `plugformer serve` builds: a real tokenizer (GPT-2's)
// and chat template (Qwen2.5's), generation_config.json defaults. The first byte picks the endpoint,
// the rest is the body: /v1/completions (with the response built and serialised, echo included),
// /v1/chat/completions, /v1/embeddings, the body as generation_config.json under a completion
// request that falls back to its sampling values, TEI's /embed and /rerank (lengths checked, the
// ranking built from made-up scores), or llama-server's /tokenize (answered) and /detokenize.
#include <fstream>
#include <sstream>

#include "openai_api.h"
#include "tei_api.h"
#include "tokenizers/fast_tokenizer.h"

#include "fuzz_target.h"

namespace {

using namespace plugformer::server;  // its json is nlohmann::json, as the server parses bodies

const ModelContext& context() {
  static const ModelContext model = [] {
    ModelContext m;
    m.name = "tiny";
    m.tokenizer = plugformer::FastTokenizer::from_file(std::string(PLUGFORMER_FIXTURES_DIR) + "/tokenizers/gpt2/tokenizer.json");
    std::ifstream in(std::string(PLUGFORMER_FIXTURES_DIR) + "/chat_templates/Qwen-Qwen2.5-7B-Instruct/template.jinja");
    std::stringstream text;
    text << in.rdbuf();
    m.chat_template = text.str();
    m.defaults.eos_token_id = {50256};
    m.max_model_len = 256;
    m.vocab_size = int64_t(m.tokenizer->vocab_size());
    return m;
  }();
  return model;
}

// What the server sends back for a parsed job (every choice finished after one token).
void respond(const CompletionJob& job, const ModelContext& model) {
  std::vector<ChoiceResult> results(job.choices());
  for (auto& r : results) r = {"!", {0}, {}, {}, "length"};
  completion_response(job, model, results, new_response_id(job.chat), 0).dump();
  completion_chunk(job, model, "id", 0, 0, "!", {}, std::string("stop"), true).dump();
  for (size_t i = 0; i < job.choices(); ++i) job.choice_request(i);
}

}  // namespace

// Loaded before fuzzing starts, so no input is charged for it.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  context();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const json body = json::parse(data + 1, data + size, nullptr, false);  // the server answers 400 when not JSON
  if (body.is_discarded()) return 0;
  return run_fuzz_input([&] {
    switch (data[0] % 8) {
      case 0: respond(parse_completion_request(body, context()), context()); break;
      case 1: respond(parse_chat_request(body, context()), context()); break;
      case 2: parse_embeddings_request(body, context()); break;
      case 3: {
        ModelContext model = context();
        read_generation_config(model, body, "generation_config.json");
        respond(parse_completion_request(json{{"prompt", "Hello"}, {"max_tokens", 4}}, model), model);
        break;
      }
      case 4: {
        const EmbedJob job = parse_embed_request(body);
        if (!job.truncate) check_input_lengths(job.texts, *context().tokenizer, 16);
        break;
      }
      case 5: {
        const RerankJob job = parse_rerank_request(body);
        std::vector<double> scores;
        for (const auto& t : job.texts) scores.push_back(double(t.size() % 3));  // ties keep input order
        rerank_response(job, scores).dump();
        break;
      }
      case 6: tokenize_response(parse_tokenize_request(body), *context().tokenizer).dump(); break;
      case 7: context().tokenizer->decode(parse_detokenize_request(body, context()), false); break;
    }
  });
}
