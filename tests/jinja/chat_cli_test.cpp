// `plugformer chat` as a person uses it: under tmux (keys in, the screen read back), and with
// standard input not a terminal (one message per line, one reply each). The replies must be what
// the API gives for the same conversation (greedy decoding is deterministic).
#include <chrono>
#include <thread>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <plugformer/auto.h>
#include <plugformer/generation.h>

#include "../core/test_util.h"

using json = nlohmann::ordered_json;
namespace test = plugformer::test;

namespace {

const char* kTemplate =
    "{% for m in messages %}{% if m.role == 'system' %}{{ bos_token }}{{ m.content }} {% elif m.role == 'user' %}"
    "{{ m.content }}{% else %} {{ m.content }}{{ eos_token }}{% endif %}{% endfor %}";

// stories260K with a chat template in its tokenizer_config.json.
struct ChatModel {
  test::TempDir dir{"chat_cli_model"};
  ChatModel() {
    test::copy_model(test::kStories, dir.path());
    json config = json::parse(std::ifstream(dir / "tokenizer_config.json"));
    config["chat_template"] = kTemplate;
    test::write_file(dir / "tokenizer_config.json", config.dump(2));
  }
};

// The reply the API gives: template, greedy generation, the new tokens decoded.
std::string api_reply(const std::string& model_dir, const json& conversation, int64_t max_new_tokens) {
  auto tokenizer = plugformer::AutoTokenizer::from_pretrained(model_dir);
  auto model = plugformer::AutoModelForCausalLM::from_pretrained(model_dir);
  plugformer::ChatTemplateOptions o;
  o.add_generation_prompt = true;
  const auto ids = tokenizer->encode(tokenizer->apply_chat_template(conversation, o), false).ids;
  plugformer::GenerationConfig gen = plugformer::GenerationConfig::from_model_config(model->config());
  gen.max_new_tokens = max_new_tokens;
  gen.do_sample = false;
  auto out = plugformer::generate(*model, at::tensor(ids, at::kLong).unsqueeze(0), at::Tensor(), gen);
  at::Tensor seq = out.sequences[0].contiguous();
  std::vector<int64_t> generated(seq.data_ptr<int64_t>() + ids.size(), seq.data_ptr<int64_t>() + seq.numel());
  std::string text = tokenizer->decode(generated, true);
  size_t a = text.find_first_not_of(' '), b = text.find_last_not_of(" \n");
  return a == std::string::npos ? "" : text.substr(a, b - a + 1);
}

TEST(ChatCli, PipedMessagesGetOneReplyEachAndKeepTheHistory) {
  ChatModel m;
  test::write_file(m.dir / "messages.txt", "Once upon a time\nThe cat\n");
  const auto r = test::run_cli("chat " + m.dir.path().string() + " --max-new-tokens 12 < " + (m.dir / "messages.txt").string());
  ASSERT_EQ(r.status, 0) << r.out;
  std::istringstream lines(r.out);
  std::string first, second;
  std::getline(lines, first);
  std::getline(lines, second);
  const json turn1 = json::parse(R"([{"role": "user", "content": "Once upon a time"}])");
  EXPECT_EQ(first, api_reply(m.dir.path().string(), turn1, 12));
  json turn2 = turn1;
  turn2.push_back({{"role", "assistant"}, {"content", first}});
  turn2.push_back({{"role", "user"}, {"content", "The cat"}});
  EXPECT_EQ(second, api_reply(m.dir.path().string(), turn2, 12));
}

TEST(ChatCli, ModelWithoutTemplateIsAClearError) {
  const auto r = test::run_cli("chat " + test::kStories + " < /dev/null");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("no chat template"), std::string::npos) << r.out;
}

class Tmux {
 public:
  Tmux() : socket_("plugformer_chat_test_" + std::to_string(::getpid())) {}
  ~Tmux() { run("kill-server"); }
  int run(const std::string& args) const { return std::system(("tmux -L " + socket_ + " " + args + " >/dev/null 2>&1").c_str()); }
  std::string screen() const {
    const std::string cmd = "tmux -L " + socket_ + " capture-pane -p -t chat -S -200";
    FILE* pipe = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
    ::pclose(pipe);
    return out;
  }
  // Waits (bounded) until the screen satisfies `done`.
  template <typename F>
  bool wait_for(F done, double seconds = 90) const {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      if (done(screen())) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

 private:
  std::string socket_;
};

// Lines that show the "> " prompt (tmux drops the trailing space of a bare prompt).
size_t prompts(const std::string& screen) {
  size_t n = 0;
  std::istringstream lines(screen);
  for (std::string line; std::getline(lines, line);) n += !line.empty() && line[0] == '>';
  return n;
}

TEST(ChatCli, InteractiveSessionUnderTmux) {
  if (std::system("command -v tmux >/dev/null 2>&1") != 0) GTEST_SKIP() << "tmux is not installed (scripts/setup installs it)";
  ChatModel m;
  Tmux tmux;
  const std::string bin = std::string(PLUGFORMER_BINARY_DIR) + "/bin/plugformer";
  ASSERT_EQ(tmux.run("new-session -d -s chat -x 200 -y 50 'PLUGFORMER_PLUGIN_PATH= " + bin + " chat " +
                     m.dir.path().string() + " --max-new-tokens 12'"), 0);
  ASSERT_TRUE(tmux.wait_for([](const std::string& s) { return prompts(s) >= 1; })) << tmux.screen();
  tmux.run("send-keys -t chat 'Once upon a time' Enter");
  const std::string reply = api_reply(m.dir.path().string(), json::parse(R"([{"role": "user", "content": "Once upon a time"}])"), 12);
  ASSERT_TRUE(tmux.wait_for([](const std::string& s) { return prompts(s) >= 2; })) << tmux.screen();
  EXPECT_NE(tmux.screen().find(reply), std::string::npos) << "reply '" << reply << "' not on screen:\n" << tmux.screen();
  tmux.run("send-keys -t chat '/reset' Enter");
  EXPECT_TRUE(tmux.wait_for([](const std::string& s) { return s.find("(history cleared)") != std::string::npos; }));
  tmux.run("send-keys -t chat '/system You tell stories.' Enter");
  EXPECT_TRUE(tmux.wait_for([](const std::string& s) { return s.find("(system prompt set") != std::string::npos; }));
  tmux.run("send-keys -t chat C-d");  // end of input ends the chat, and with it the session
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (tmux.run("has-session -t chat") == 0 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_NE(tmux.run("has-session -t chat"), 0) << "the chat did not end on Ctrl-D";
}

}  // namespace
