// `plugformer serve` over real sockets on loopback: OpenAI completions and chat against
// `plugformer generate`, continuous batching that changes nothing in greedy output, seeded sampling,
// TEI embeddings and reranking against sentence-transformers' classes, the limits and bad input
// (each an HTTP error while the server keeps serving), API keys, metrics, disconnects, SIGTERM.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <ATen/ATen.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>
#include <plugformer/auto.h>
#include <plugformer/distributed.h>
#include <plugformer/sentence_transformers.h>

#include "mock_hub.h"
#include "server_process.h"

using nlohmann::json;
using plugformer::test::ServerProcess;

namespace {

const std::string kStories = std::string(PLUGFORMER_SOURCE_DIR) + "/models/stories260K";
const std::string kSentence = std::string(PLUGFORMER_FIXTURES_DIR) + "/sentence_transformers/";
const std::string kBin = std::string(PLUGFORMER_BINARY_DIR) + "/bin/plugformer";

std::string run_command(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  ::pclose(pipe);
  return out;
}

struct Reply {
  int status = 0;
  json body;
  std::string raw;
  httplib::Headers headers;
};

Reply post(int port, const std::string& path, const std::string& body, const httplib::Headers& headers = {}) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(120);
  auto res = client.Post(path, headers, body, "application/json");
  if (!res) return {};
  Reply r{res->status, json(), res->body, res->headers};
  r.body = json::parse(res->body, nullptr, false);
  return r;
}
Reply post(int port, const std::string& path, const json& body, const httplib::Headers& headers = {}) {
  return post(port, path, body.dump(), headers);
}
Reply get(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get(path);
  if (!res) return {};
  return {res->status, json::parse(res->body, nullptr, false), res->body, res->headers};
}

// The events of an SSE response: each `data:` payload (the final [DONE] as the string "[DONE]").
std::vector<json> stream(int port, const std::string& path, json body) {
  body["stream"] = true;
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(120);
  auto res = client.Post(path, body.dump(), "application/json");
  EXPECT_TRUE(res);
  if (!res) return {};
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  std::vector<json> events;
  std::stringstream lines(res->body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    EXPECT_EQ(line.rfind("data: ", 0), 0u) << line;
    const std::string payload = line.substr(6);
    events.push_back(payload == "[DONE]" ? json("[DONE]") : json::parse(payload));
  }
  return events;
}

void expect_error(const Reply& r, int status, const std::string& param = "") {
  EXPECT_EQ(r.status, status) << r.raw;
  ASSERT_TRUE(r.body.contains("error")) << r.raw;
  const json& e = r.body["error"];
  for (const char* key : {"message", "type", "param", "code"}) EXPECT_TRUE(e.contains(key)) << r.raw;
  EXPECT_FALSE(e["message"].get<std::string>().empty());
  if (!param.empty()) EXPECT_EQ(e["param"], param) << r.raw;
}

// Written per process: ctest runs this program's tests side by side, and one's rewrite must not
// meet another's server reading it.
std::string chat_template_file() {
  const std::string path = std::string(PLUGFORMER_BINARY_DIR) + "/test_tmp/chatml-" + std::to_string(::getpid()) + ".jinja";
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << "{% if tools %}<|tools|>{{ tools | map(attribute='function.name') | join(',') }}\n{% endif %}"
                         "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}";
  return path;
}

class Serve : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    template_ = chat_template_file();
    server_ = new ServerProcess({kStories, "--chat-template", template_, "--max-num-seqs", "8"});
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    std::filesystem::remove(template_);
  }
  static int port() { return server_->port(); }
  static json completion(const std::string& prompt, int64_t max_tokens, json extra = json::object()) {
    json body = {{"model", "stories260K"}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}};
    body.update(extra);
    Reply r = post(port(), "/v1/completions", body);
    EXPECT_EQ(r.status, 200) << r.raw;
    return r.body;
  }
  static ServerProcess* server_;
  static std::string template_;
};
ServerProcess* Serve::server_ = nullptr;
std::string Serve::template_;

TEST_F(Serve, GreedyCompletionIsWhatGeneratePrints) {
  for (const auto& [prompt, length] : std::vector<std::pair<std::string, int>>{{"Once upon a time", 30}, {"The cat", 12}}) {
    const std::string printed = run_command(kBin + " generate " + kStories + " '" + prompt + "' --max-new-tokens " +
                                            std::to_string(length) + " 2>/dev/null");
    const json body = completion(prompt, length);
    ASSERT_EQ(body["choices"].size(), 1u);
    EXPECT_EQ(prompt + body["choices"][0]["text"].get<std::string>() + "\n", printed);
    EXPECT_EQ(body["object"], "text_completion");
    EXPECT_EQ(body["model"], "stories260K");
    EXPECT_EQ(body["id"].get<std::string>().rfind("cmpl-", 0), 0u);
    EXPECT_EQ(body["usage"]["completion_tokens"], length);
    EXPECT_EQ(body["usage"]["total_tokens"], body["usage"]["prompt_tokens"].get<int>() + length);
    EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
    // Streamed: the same text in pieces, then usage and [DONE].
    const auto events = stream(port(), "/v1/completions",
                               {{"prompt", prompt}, {"max_tokens", length}, {"temperature", 0},
                                {"stream_options", {{"include_usage", true}}}});
    ASSERT_GE(events.size(), 3u);
    EXPECT_EQ(events.back(), "[DONE]");
    const json usage = events[events.size() - 2];
    EXPECT_TRUE(usage["choices"].empty());
    EXPECT_EQ(usage["usage"]["completion_tokens"], length);
    std::string text;
    for (size_t i = 0; i + 2 < events.size(); ++i) {
      text += events[i]["choices"][0]["text"].get<std::string>();
      EXPECT_TRUE(events[i]["usage"].is_null());
    }
    EXPECT_EQ(text, body["choices"][0]["text"]);
    EXPECT_EQ(events[events.size() - 3]["choices"][0]["finish_reason"], "length");
  }
}

TEST_F(Serve, ConcurrentRequestsGetWhatTheyGetAlone) {
  const std::vector<std::string> prompts = {"Once upon a time", "The dog", "Lily wanted", "One day",
                                            "Tom and Sam", "The sun was", "A little bird", "Mom said"};
  std::vector<std::string> alone;
  for (size_t i = 0; i < prompts.size(); ++i)
    alone.push_back(completion(prompts[i], int64_t(8 + 5 * i))["choices"][0]["text"].get<std::string>());
  std::vector<std::future<std::string>> together;
  for (size_t i = 0; i < prompts.size(); ++i)
    together.push_back(std::async(std::launch::async, [&, i] {
      return completion(prompts[i], int64_t(8 + 5 * i))["choices"][0]["text"].get<std::string>();
    }));
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(together[i].get(), alone[i]) << prompts[i];
  // They were decoded together: the batch size histogram saw steps of more than one sequence.
  const std::string metrics = get(port(), "/metrics").raw;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(metrics, m, std::regex("plugformer_batch_size_bucket\\{le=\"1\"\\} (\\d+)")));
  std::smatch total;
  ASSERT_TRUE(std::regex_search(metrics, total, std::regex("plugformer_batch_size_count (\\d+)")));
  EXPECT_LT(std::stoll(m[1]), std::stoll(total[1]));
}

// The prompts of one request are queued at once and prefilled together, in one packed forward;
// each choice is still what its prompt gets alone.
TEST_F(Serve, PromptsOfOneRequestPrefillTogetherAndGetWhatTheyGetAlone) {
  const std::vector<std::string> prompts = {"Once upon a time", "The dog", "Lily wanted to play with her friend", "Mom"};
  std::vector<std::string> alone;
  for (const auto& prompt : prompts) alone.push_back(completion(prompt, 12)["choices"][0]["text"].get<std::string>());
  const auto prefill_steps = [&](const std::string& bucket) {
    std::smatch m;
    const std::string metrics = get(port(), "/metrics").raw;
    EXPECT_TRUE(std::regex_search(metrics, m, std::regex("plugformer_prefill_batch_size_" + bucket + " (\\d+)"))) << bucket;
    return m.empty() ? int64_t(-1) : std::stoll(m[1]);
  };
  const int64_t steps = prefill_steps("count"), small = prefill_steps("bucket\\{le=\"2\"\\}");
  const json together = completion("", 12, {{"prompt", prompts}});
  ASSERT_EQ(together["choices"].size(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(together["choices"][i]["index"], int64_t(i));
    EXPECT_EQ(together["choices"][i]["text"], alone[i]) << prompts[i];
  }
  EXPECT_EQ(prefill_steps("count"), steps + 1);  // one forward for the four prompts
  EXPECT_EQ(prefill_steps("bucket\\{le=\"2\"\\}"), small);
}

TEST_F(Serve, SeededSamplingRepeats) {
  const json sampled = {{"temperature", 1.0}, {"top_p", 0.95}, {"seed", 42}};
  const std::string a = completion("Once upon a time", 24, sampled)["choices"][0]["text"];
  const std::string b = completion("Once upon a time", 24, sampled)["choices"][0]["text"];
  EXPECT_EQ(a, b);
  std::set<std::string> seeds;
  for (int seed = 0; seed < 4; ++seed)
    seeds.insert(completion("Once upon a time", 24, {{"temperature", 1.0}, {"seed", seed}})["choices"][0]["text"].get<std::string>());
  EXPECT_GT(seeds.size(), 1u);
  // n choices: seed, seed + 1, ...; the second choice of seed 42 is the first of seed 43.
  const json two = completion("Once upon a time", 24, {{"temperature", 1.0}, {"seed", 42}, {"n", 2}});
  ASSERT_EQ(two["choices"].size(), 2u);
  EXPECT_EQ(two["choices"][1]["index"], 1);
  EXPECT_EQ(two["choices"][1]["text"], completion("Once upon a time", 24, {{"temperature", 1.0}, {"seed", 43}})["choices"][0]["text"]);
}

TEST_F(Serve, StopStringsPenaltiesLogprobsEchoAndTokenPrompts) {
  const std::string full = completion("Once upon a time", 30)["choices"][0]["text"];
  const std::string stop = full.substr(full.find(' ', 5), 4);  // a piece from the middle
  const json stopped = completion("Once upon a time", 30, {{"stop", {"zzz", stop}}});
  EXPECT_EQ(stopped["choices"][0]["text"], full.substr(0, full.find(stop)));
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");
  const auto events = stream(port(), "/v1/completions", {{"prompt", "Once upon a time"}, {"max_tokens", 30}, {"temperature", 0}, {"stop", stop}});
  std::string streamed;
  for (const auto& e : events)
    if (e != "[DONE]") streamed += e["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(streamed, stopped["choices"][0]["text"]);

  // A frequency penalty changes greedy text (the story repeats itself otherwise) and counts only generated tokens.
  const std::string penalised = completion("Once upon a time", 60, {{"frequency_penalty", 2.0}})["choices"][0]["text"];
  EXPECT_NE(penalised, completion("Once upon a time", 60)["choices"][0]["text"]);

  // logprobs: the greedy token is the most likely one; echo prepends the prompt and its logprobs.
  const json lp = completion("Once upon a time", 5, {{"logprobs", 3}, {"echo", true}});
  const json& l = lp["choices"][0]["logprobs"];
  EXPECT_EQ(lp["choices"][0]["text"].get<std::string>().rfind("Once upon a time", 0), 0u);
  const size_t prompt_tokens = lp["usage"]["prompt_tokens"];
  ASSERT_EQ(l["tokens"].size(), prompt_tokens + 5);
  EXPECT_TRUE(l["token_logprobs"][0].is_null());
  for (size_t i = prompt_tokens; i < prompt_tokens + 5; ++i) {
    ASSERT_EQ(l["top_logprobs"][i].size(), 3u);
    double best = -1e9;
    for (const auto& [token, value] : l["top_logprobs"][i].items()) best = std::max(best, value.get<double>());
    EXPECT_NEAR(l["token_logprobs"][i].get<double>(), best, 1e-6);
    EXPECT_LE(best, 0.0);
  }

  // Each token's text is what it adds: together they are the text.
  const json plain = completion("Once upon a time", 12, {{"logprobs", 0}});
  std::string joined;
  for (const auto& t : plain["choices"][0]["logprobs"]["tokens"]) joined += t.get<std::string>();
  EXPECT_EQ(joined, plain["choices"][0]["text"]);
  EXPECT_EQ(plain["choices"][0]["logprobs"]["text_offset"][1], plain["choices"][0]["logprobs"]["tokens"][0].get<std::string>().size());

  // Token-id prompts, several prompts in one request.
  const json ids = post(port(), "/tokenize", json{{"content", "Once upon a time"}, {"add_special", true}}).body;
  const json multi = completion("", 30, {{"prompt", {ids["tokens"], "The cat"}}});
  ASSERT_EQ(multi["choices"].size(), 2u);
  EXPECT_EQ(multi["choices"][0]["text"], full);
  EXPECT_EQ(multi["choices"][1]["text"], completion("The cat", 30)["choices"][0]["text"]);
  EXPECT_EQ(post(port(), "/detokenize", json{{"tokens", ids["tokens"]}}).body["content"], "<s> Once upon a time");
}

TEST_F(Serve, ChatCompletionsApplyTheTemplate) {
  const json messages = {{{"role", "system"}, {"content", "Be brief."}},
                         {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Tell"}}, {{"type", "text"}, {"text", "a story"}}}}}};
  const Reply r = post(port(), "/v1/chat/completions", json{{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["object"], "chat.completion");
  EXPECT_EQ(r.body["choices"][0]["message"]["role"], "assistant");
  // The rendered prompt, tokenized without special tokens, is what the model continued.
  const std::string rendered = "<|system|>Be brief.\n<|user|>Tell\na story\n<|assistant|>";
  const json ids = post(port(), "/tokenize", json{{"content", rendered}}).body["tokens"];
  EXPECT_EQ(r.body["usage"]["prompt_tokens"], ids.size());
  const json same = completion("", 12, {{"prompt", ids}});
  EXPECT_EQ(r.body["choices"][0]["message"]["content"], same["choices"][0]["text"]);
  // Streamed: role first, then content pieces that add up, a finish_reason, [DONE].
  const auto events = stream(port(), "/v1/chat/completions", {{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}});
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(events.front()["object"], "chat.completion.chunk");
  std::string content;
  for (size_t i = 0; i + 1 < events.size(); ++i) content += events[i]["choices"][0]["delta"].value("content", "");
  EXPECT_EQ(content, r.body["choices"][0]["message"]["content"]);
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
  // Chat logprobs have OpenAI's content list.
  const Reply lp = post(port(), "/v1/chat/completions",
                        json{{"messages", messages}, {"max_tokens", 3}, {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 2}});
  ASSERT_EQ(lp.body["choices"][0]["logprobs"]["content"].size(), 3u);
  std::string pieces;
  for (const auto& c : lp.body["choices"][0]["logprobs"]["content"]) {
    pieces += c["token"].get<std::string>();
    EXPECT_EQ(c["bytes"].size(), c["token"].get<std::string>().size());
  }
  EXPECT_EQ(pieces, lp.body["choices"][0]["message"]["content"]);
  EXPECT_EQ(lp.body["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size(), 2u);
  // Tools reach the template (and tool_choice "none" keeps them out).
  const json tools = {{{"type", "function"}, {"function", {{"name", "get_weather"}, {"parameters", json::object()}}}}};
  const Reply with_tools = post(port(), "/v1/chat/completions", json{{"messages", messages}, {"max_tokens", 1}, {"tools", tools}});
  const json tool_ids = post(port(), "/tokenize", json{{"content", "<|tools|>get_weather\n" + rendered}}).body["tokens"];
  EXPECT_EQ(with_tools.body["usage"]["prompt_tokens"], tool_ids.size()) << with_tools.raw;
  const Reply none = post(port(), "/v1/chat/completions",
                          json{{"messages", messages}, {"max_tokens", 1}, {"tools", tools}, {"tool_choice", "none"}});
  EXPECT_EQ(none.body["usage"]["prompt_tokens"], ids.size());
  expect_error(post(port(), "/v1/chat/completions", json{{"messages", json::array()}}), 400, "messages");
  expect_error(post(port(), "/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}}), 400);
}

TEST_F(Serve, BadRequestsGetErrorsAndTheServerKeepsServing) {
  const int p = port();
  expect_error(post(p, "/v1/completions", std::string("{\"prompt\": \"x\",")), 400);
  expect_error(post(p, "/v1/completions", std::string("[1, 2]")), 400);
  // A number beyond double's range is a JSON error too (found by fuzzing the JSON readers).
  expect_error(post(p, "/v1/completions", std::string("{\"prompt\": \"x\", \"temperature\": 2e7777777}")), 400);
  expect_error(post(p, "/v1/completions", json{{"prompt", 5}}), 400, "prompt");
  expect_error(post(p, "/v1/completions", json{{"prompt", "x"}, {"max_tokens", "ten"}}), 400, "max_tokens");
  expect_error(post(p, "/v1/completions", json{{"prompt", "x"}, {"temperature", "hot"}}), 400, "temperature");
  expect_error(post(p, "/v1/completions", json{{"prompt", "x"}, {"temperature", 7}}), 400, "temperature");
  expect_error(post(p, "/v1/completions", json{{"prompt", "x"}, {"stream", "yes"}}), 400, "stream");
  expect_error(post(p, "/v1/completions", json{{"prompt", {1, 2, 999999}}}), 400, "prompt");
  const Reply unknown = post(p, "/v1/completions", json{{"model", "gpt-4"}, {"prompt", "x"}});
  expect_error(unknown, 404, "model");
  EXPECT_EQ(unknown.body["error"]["code"], "model_not_found");
  expect_error(post(p, "/v1/completions", json{{"prompt", "x"}, {"max_tokens", 0}}), 400, "max_tokens");
  expect_error(post(p, "/v1/completions", json{{"prompt", "x"}, {"max_tokens", -1}}), 400, "max_tokens");
  expect_error(post(p, "/v1/completions", json{{"prompt", "x"}, {"max_tokens", 100000}}), 400, "max_tokens");
  expect_error(post(p, "/v1/completions", json{{"prompt", "x"}, {"max_tokens", 1e30}}), 400, "max_tokens");
  std::string long_prompt;
  for (int i = 0; i < 600; ++i) long_prompt += "cat ";
  const Reply too_long = post(p, "/v1/completions", json{{"prompt", long_prompt}});
  expect_error(too_long, 400, "prompt");
  EXPECT_EQ(too_long.body["error"]["code"], "context_length_exceeded");
  expect_error(post(p, "/v1/embeddings", json{{"input", "x"}}), 400, "model");
  expect_error(post(p, "/v1/nothing", json::object()), 404);
  // 100 MB body: refused from its Content-Length, before it is read.
  const Reply huge = post(p, "/v1/completions", std::string(100 << 20, ' '));
  expect_error(huge, 400);
  EXPECT_NE(huge.body["error"]["message"].get<std::string>().find("larger than"), std::string::npos);
  EXPECT_EQ(completion("Once upon a time", 4)["choices"].size(), 1u);
}

// A raw connection on loopback.
int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval timeout{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  return fd;
}
std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  while (true) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  return out;
}

TEST_F(Serve, SlowClientsAndConnectionFloodsDoNotStopIt) {
  // A client that announces a body and never finishes it is dropped after the read timeout.
  const int slow = connect_to(port());
  ASSERT_GE(slow, 0);
  const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"prompt\":";
  ASSERT_GT(::send(slow, head.data(), head.size(), 0), 0);
  // Meanwhile others are served.
  EXPECT_EQ(completion("Once upon a time", 4)["choices"].size(), 1u);
  const auto start = std::chrono::steady_clock::now();
  const std::string answer = read_all(slow);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(25));
  EXPECT_TRUE(answer.empty() || answer.rfind("HTTP/1.1 4", 0) == 0) << answer;
  ::close(slow);

  // 200 connections at once, each with a request: every one is answered.
  std::vector<int> fds;
  for (int i = 0; i < 200; ++i) fds.push_back(connect_to(port()));
  const std::string request = "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  for (int fd : fds) {
    ASSERT_GE(fd, 0);
    ASSERT_GT(::send(fd, request.data(), request.size(), 0), 0);
  }
  int answered = 0;
  std::string other;
  for (int fd : fds) {
    const std::string reply = read_all(fd);
    if (reply.rfind("HTTP/1.1 200", 0) == 0) ++answered;
    else other = reply.empty() ? std::string("(nothing, errno ") + std::strerror(errno) + ")" : reply.substr(0, 100);
    ::close(fd);
  }
  EXPECT_EQ(answered, 200) << other;
  EXPECT_EQ(get(port(), "/health").status, 200);
}

// One raw request and the whole answer (the connection is closed after it).
std::string raw_request(int port, const std::string& request) {
  const int fd = connect_to(port);
  if (fd < 0) return "";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string answer = read_all(fd);
  ::close(fd);
  return answer;
}

// Found by the soak test (tests/server/soak): an error message quoting bytes that are not UTF-8 (a
// percent-decoded path, the JSON parser's "last read") threw from json::dump() in the error path:
// GET /%FF ended the server (std::terminate), a body with such bytes answered 500 and left the
// request counted as running, so SIGTERM then waited the whole --shutdown-timeout.
TEST(ServeLimits, BytesThatAreNotUtf8GetA4xxNotACrash) {
  ServerProcess server({kStories});
  const int p = server.port();
  for (const char* path : {"/%FF%FE", "/v1/models/%FF"}) {
    const std::string answer = raw_request(p, std::string("GET ") + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ASSERT_EQ(answer.rfind("HTTP/1.1 404", 0), 0u) << path << ": " << answer;
    const json body = json::parse(answer.substr(answer.find("\r\n\r\n") + 4), nullptr, false);
    ASSERT_TRUE(body.contains("error")) << answer;
    EXPECT_NE(body["error"]["message"].get<std::string>().find("\xEF\xBF\xBD"), std::string::npos) << answer;  // U+FFFD
  }
  expect_error(post(p, "/v1/completions", std::string("{\"prompt\": \"\xFF\xFE\", \"max_tokens\": 2}")), 400);
  EXPECT_EQ(get(p, "/health").status, 200);
  EXPECT_EQ(post(p, "/v1/completions", json{{"prompt", "Once upon a time"}, {"max_tokens", 4}}).status, 200);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(server.terminate(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

// Found by the soak test: httplib 0.11 applies the body limit to a Content-Length only, so a
// chunked body was read whole however large (a 20 MB prompt: 28 s and 4.2 GB of tokenizer memory).
TEST(ServeLimits, ChunkedBodiesObeyTheBodyLimit) {
  ServerProcess server({kStories, "--max-body-bytes", "65536"});
  const int p = server.port();
  auto chunked = [&](const std::string& body) {
    std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    for (size_t at = 0; at < body.size(); at += 4096) {
      const std::string piece = body.substr(at, 4096);
      char size[16];
      std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
      request += size + piece + "\r\n";
    }
    return raw_request(p, request + "0\r\n\r\n");
  };
  const std::string big = chunked(json{{"prompt", std::string(1 << 20, 'a')}, {"max_tokens", 1}}.dump());
  EXPECT_EQ(big.rfind("HTTP/1.1 400", 0), 0u) << big.substr(0, 300);
  EXPECT_NE(big.find("larger than the server's limit of 65536 bytes"), std::string::npos) << big.substr(0, 300);
  // Within the limit, a chunked body is read as any other.
  const std::string small = chunked(json{{"prompt", "Once upon a time"}, {"max_tokens", 4}, {"temperature", 0}}.dump());
  EXPECT_EQ(small.rfind("HTTP/1.1 200", 0), 0u) << small.substr(0, 300);
  EXPECT_NE(small.find("\"finish_reason\":\"length\""), std::string::npos) << small;
  // A JSON body sent as a form (curl -d's default type) is not cut at httplib's 8 KB form limit.
  const std::string form_body = json{{"prompt", std::string(20000, 'a')}}.dump();
  const std::string form = raw_request(p, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                          "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " +
                                              std::to_string(form_body.size()) + "\r\n\r\n" + form_body);
  EXPECT_NE(form.find("context_length_exceeded"), std::string::npos) << form.substr(0, 300);
  EXPECT_EQ(get(p, "/health").status, 200);
}

TEST_F(Serve, ADisconnectedStreamIsCancelled) {
  const int fd = connect_to(port());
  const std::string body = json{{"prompt", "Once upon a time"}, {"max_tokens", 400}, {"temperature", 0}, {"stream", true}, {"ignore_eos", true}}.dump();
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_GT(::send(fd, request.data(), request.size(), 0), 0);
  char buf[512];
  ASSERT_GT(::recv(fd, buf, sizeof buf, 0), 0);  // the stream began
  ::close(fd);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bool idle = false;
  while (!idle && std::chrono::steady_clock::now() < deadline) {
    idle = get(port(), "/metrics").raw.find("plugformer_running_sequences 0\n") != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(idle);
}

TEST_F(Serve, HealthModelsAndMetrics) {
  EXPECT_EQ(get(port(), "/health").body["status"], "ok");
  const json models = get(port(), "/v1/models").body;
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["id"], "stories260K");
  EXPECT_EQ(models["data"][0]["object"], "model");
  EXPECT_EQ(get(port(), "/v1/models/stories260K").body, models["data"][0]);
  const Reply unknown = get(port(), "/v1/models/gpt-4o");
  expect_error(unknown, 404, "model");
  EXPECT_EQ(unknown.body["error"]["code"], "model_not_found");
  completion("Once upon a time", 3);
  const std::string metrics = get(port(), "/metrics").raw;
  for (const char* name : {"plugformer_requests_total{endpoint=\"/v1/completions\",status=\"200\"}",
                           "plugformer_prompt_tokens_total", "plugformer_generation_tokens_total", "plugformer_queue_length",
                           "plugformer_running_sequences", "plugformer_batch_size_bucket", "plugformer_prefill_batch_size_bucket",
                           "plugformer_kv_cache_bytes",
                           "plugformer_time_to_first_token_seconds_bucket", "plugformer_inter_token_latency_seconds_count",
                           "# TYPE plugformer_requests_total counter"})
    EXPECT_NE(metrics.find(name), std::string::npos) << name;
}

// The model comes from a Hub that answers its first request with 503 and Retry-After: 3, so
// the server listens for a few seconds before the model is there.
TEST(ServeLimits, HealthIs503WhileTheModelLoadsThen200) {
  plugformer::testing::MockHub hub;
  std::map<std::string, std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(kStories)) {
    std::ifstream in(e.path(), std::ios::binary);
    files[e.path().filename().string()] = std::string(std::istreambuf_iterator<char>(in), {});
  }
  hub.add_commit("org/stories", files);
  hub.set_fault("config.json", plugformer::testing::MockFault{.fail_5xx = 1, .retry_after = "3"});
  const std::string cache = std::string(PLUGFORMER_BINARY_DIR) + "/test_tmp/health-cache-" + std::to_string(::getpid());
  const int port = plugformer::free_local_port();
  ServerProcess server({"org/stories"}, {"HF_ENDPOINT=" + hub.endpoint(), "HF_HUB_CACHE=" + cache}, port);
  Reply loading;
  for (int i = 0; i < 200 && loading.status == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    loading = get(port, "/health");
  }
  EXPECT_EQ(loading.status, 503) << loading.raw;
  EXPECT_EQ(loading.body["status"], "loading");
  const Reply early = post(port, "/v1/completions", json{{"prompt", "Once"}, {"max_tokens", 2}});
  expect_error(early, 503);
  EXPECT_NE(early.body["error"]["message"].get<std::string>().find("still loading"), std::string::npos);
  Reply ready;
  for (int i = 0; i < 600 && ready.status != 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ready = get(port, "/health");
  }
  EXPECT_EQ(ready.status, 200) << server.log();
  EXPECT_EQ(ready.body["status"], "ok");
  EXPECT_EQ(post(port, "/v1/completions", json{{"prompt", "Once"}, {"max_tokens", 2}}).status, 200);
  EXPECT_EQ(server.terminate(), 0);
  std::filesystem::remove_all(cache);
}

TEST(ServeLimits, AFullQueueAnswers429WithRetryAfter) {
  ServerProcess server({kStories, "--max-num-seqs", "1", "--max-queue", "0"});
  const json slow = {{"prompt", "Once upon a time"}, {"max_tokens", 400}, {"ignore_eos", true}, {"temperature", 0}};
  auto first = std::async(std::launch::async, [&] { return post(server.port(), "/v1/completions", slow); });
  // Wait until it runs, then a second request finds no slot and no queue room.
  for (int i = 0; i < 200 && get(server.port(), "/metrics").raw.find("plugformer_running_sequences 1\n") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const Reply second = post(server.port(), "/v1/completions", slow);
  expect_error(second, 429);
  EXPECT_EQ(second.headers.count("Retry-After"), 1u);
  EXPECT_EQ(first.get().status, 200);
}

TEST(ServeLimits, ApiKeysAreRequiredAndNeverLogged) {
  ServerProcess server({kStories, "--api-key", "sk-first"}, {"PLUGFORMER_API_KEY=sk-second", "PLUGFORMER_LOG_LEVEL=debug"});
  const json body = {{"prompt", "Once"}, {"max_tokens", 2}};
  expect_error(post(server.port(), "/v1/completions", body), 401);
  const Reply wrong = post(server.port(), "/v1/completions", body, {{"Authorization", "Bearer sk-nope"}});
  expect_error(wrong, 401);
  EXPECT_EQ(wrong.body["error"]["code"], "invalid_api_key");
  EXPECT_EQ(post(server.port(), "/v1/completions", body, {{"Authorization", "Bearer sk-first"}}).status, 200);
  EXPECT_EQ(post(server.port(), "/v1/completions", body, {{"Authorization", "Bearer sk-second"}}).status, 200);
  EXPECT_EQ(get(server.port(), "/health").status, 200);  // probes need no key
  EXPECT_EQ(server.terminate(), 0);
  const std::string log = server.log();
  EXPECT_EQ(log.find("sk-first"), std::string::npos);
  EXPECT_EQ(log.find("sk-second"), std::string::npos);
}

TEST(ServeLimits, SigtermFinishesRunningRequestsThenExits) {
  ServerProcess server({kStories});
  auto running = std::async(std::launch::async, [&] {
    return post(server.port(), "/v1/completions",
                json{{"prompt", "Once upon a time"}, {"max_tokens", 300}, {"ignore_eos", true}, {"temperature", 0}});
  });
  for (int i = 0; i < 200 && get(server.port(), "/metrics").raw.find("plugformer_running_sequences 1\n") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ::kill(server.pid(), SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const Reply refused = post(server.port(), "/v1/completions", json{{"prompt", "x"}});
  EXPECT_TRUE(refused.status == 503 || refused.status == 0) << refused.raw;  // refused, or no longer listening
  const Reply done = running.get();
  EXPECT_EQ(done.status, 200) << done.raw;
  EXPECT_EQ(done.body["usage"]["completion_tokens"], 300);
  EXPECT_EQ(server.wait_exit(30), 0);
}

TEST(ServeLimits, ModelsWithoutAChatTemplateRefuseChat) {
  ServerProcess server({kStories});
  expect_error(post(server.port(), "/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", "hi"}}}}}), 400);
  EXPECT_THROW(ServerProcess({kStories, "--chat-template", "/nonexistent.jinja"}), std::runtime_error);
}

TEST(ServeEncoders, EmbeddingsAreSentenceTransformersOutputs) {
  const std::string dir = kSentence + "minilm-mean-normalize";
  ServerProcess server({dir, "--served-model-name", "minilm"});
  auto model = plugformer::SentenceTransformer::from_pretrained(dir);
  const std::vector<std::string> texts = {"A man is eating food.", "A cheetah chases prey."};
  const at::Tensor expected = model->encode(texts);
  const Reply r = post(server.port(), "/v1/embeddings", json{{"model", "minilm"}, {"input", texts}});
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["object"], "list");
  EXPECT_GT(r.body["usage"]["prompt_tokens"].get<int>(), 4);
  ASSERT_EQ(r.body["data"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(r.body["data"][i]["index"], i);
    const auto values = r.body["data"][i]["embedding"].get<std::vector<float>>();
    EXPECT_TRUE(at::allclose(at::tensor(values), expected[i], 1e-5, 1e-6));
  }
  const Reply b64 = post(server.port(), "/v1/embeddings", json{{"input", texts[0]}, {"encoding_format", "base64"}});
  ASSERT_EQ(b64.status, 200) << b64.raw;
  const std::string encoded = b64.body["data"][0]["embedding"];
  std::string bytes;
  uint32_t bits = 0;
  int count = 0;
  for (char ch : encoded) {
    const auto at = std::string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/").find(ch);
    if (at == std::string::npos) break;  // '=' padding
    bits = bits << 6 | uint32_t(at);
    if ((count += 6) >= 8) bytes += char(bits >> (count -= 8) & 0xff);
  }
  ASSERT_EQ(bytes.size(), size_t(expected.size(1)) * sizeof(float));
  std::vector<float> decoded(size_t(expected.size(1)));
  std::memcpy(decoded.data(), bytes.data(), bytes.size());
  EXPECT_TRUE(at::allclose(at::tensor(decoded), expected[0], 1e-6, 1e-7));
  const Reply tei = post(server.port(), "/embed", json{{"inputs", texts}});
  ASSERT_EQ(tei.status, 200) << tei.raw;
  const at::Tensor normalized = expected / expected.norm(2, 1, true);
  EXPECT_TRUE(at::allclose(at::tensor(tei.body[1].get<std::vector<float>>()), normalized[1], 1e-5, 1e-6));
  // Token ids embed as the tokenizer's ids of the same text do.
  const auto encoding = plugformer::AutoTokenizer::from_pretrained(dir)->encode(texts[1]);
  std::vector<int64_t> ids;  // without the padding this tokenizer.json adds
  for (size_t i = 0; i < encoding.ids.size(); ++i)
    if (encoding.attention_mask[i]) ids.push_back(encoding.ids[i]);
  const Reply by_ids = post(server.port(), "/v1/embeddings", json{{"input", {ids}}});
  ASSERT_EQ(by_ids.status, 200) << by_ids.raw;
  EXPECT_TRUE(at::allclose(at::tensor(by_ids.body["data"][0]["embedding"].get<std::vector<float>>()), expected[1], 1e-5, 1e-6));
  EXPECT_EQ(by_ids.body["usage"]["prompt_tokens"], ids.size());
  expect_error(post(server.port(), "/v1/embeddings", json{{"input", {1, 2, 99999999}}}), 400);
  expect_error(post(server.port(), "/v1/embeddings", json{{"input", json::array()}}), 400, "input");
  expect_error(post(server.port(), "/v1/embeddings", json{{"input", "x"}, {"encoding_format", "int8"}}), 400, "encoding_format");
  expect_error(post(server.port(), "/v1/completions", json{{"prompt", "x"}}), 400);
  const Reply tei_bad = post(server.port(), "/embed", json{{"inputs", 3}});
  EXPECT_EQ(tei_bad.status, 400);
  EXPECT_TRUE(tei_bad.body["error"].is_string());
  EXPECT_EQ(tei_bad.body["error_type"], "Validation");
}

TEST(ServeEncoders, RerankIsTheCrossEncodersRanking) {
  const std::string dir = kSentence + "cross-encoder-minilm";
  ServerProcess server({dir});
  auto model = plugformer::CrossEncoder::from_pretrained(dir);
  const std::string query = "How many people live in Berlin?";
  const std::vector<std::string> docs = {"Berlin has 3.5 million inhabitants.", "Paris is in France.", "Cats sleep a lot."};
  const auto ranked = model->rank(query, docs);
  const Reply r = post(server.port(), "/rerank", json{{"query", query}, {"texts", docs}, {"return_text", true}});
  ASSERT_EQ(r.status, 200) << r.raw;
  ASSERT_EQ(r.body.size(), docs.size());
  for (size_t i = 0; i < ranked.size(); ++i) {
    EXPECT_EQ(r.body[i]["index"], ranked[i].corpus_id);
    EXPECT_NEAR(r.body[i]["score"].get<double>(), ranked[i].score, 1e-5);
    EXPECT_EQ(r.body[i]["text"], docs[size_t(ranked[i].corpus_id)]);
  }
  const Reply raw = post(server.port(), "/rerank", json{{"query", query}, {"texts", docs}, {"raw_scores", true}});
  ASSERT_EQ(raw.status, 200);
  const double logit = raw.body[0]["score"];
  EXPECT_NEAR(1 / (1 + std::exp(-logit)), ranked[0].score, 1e-5);
  EXPECT_EQ(post(server.port(), "/rerank", json{{"texts", docs}}).status, 400);
}

}  // namespace
