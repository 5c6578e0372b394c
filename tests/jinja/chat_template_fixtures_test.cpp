// Every case of tests/fixtures/chat_templates (35 real templates, rendered by transformers with
// Python's jinja2) through render_chat_template: texts byte for byte, expected errors as errors.
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include <plugformer/chat_template.h>

namespace fs = std::filesystem;
using plugformer::ChatTemplateOptions;
using plugformer::JinjaTemplate;
using json = nlohmann::ordered_json;

namespace {

const fs::path kRoot = fs::path(PLUGFORMER_FIXTURES_DIR) / "chat_templates";

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> template_names() {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(kRoot))
    if (entry.is_directory()) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// The fixtures' input object: apply_chat_template's arguments, every other key a variable.
std::string render(const JinjaTemplate& t, const json& input) {
  ChatTemplateOptions options;
  options.now = "2025-01-05T07:08:09";
  for (auto it = input.begin(); it != input.end(); ++it) {
    if (it.key() == "messages") continue;
    if (it.key() == "tools") options.tools = it.value();
    else if (it.key() == "documents") options.documents = it.value();
    else if (it.key() == "add_generation_prompt") options.add_generation_prompt = it.value().get<bool>();
    else if (it.key() == "continue_final_message") options.continue_final_message = it.value().get<bool>();
    else options.variables[it.key()] = it.value();
  }
  return plugformer::render_chat_template(t, input.at("messages"), options);
}

class ChatTemplateFixtures : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatTemplateFixtures, EveryCaseMatchesTransformers) {
  const fs::path dir = kRoot / GetParam();
  const JinjaTemplate t(read(dir / "template.jinja"));
  std::ifstream cases(dir / "cases.jsonl");
  std::string line;
  size_t count = 0;
  while (std::getline(cases, line)) {
    if (line.empty()) continue;
    const json c = json::parse(line);
    const std::string name = c.at("name").get<std::string>();
    const json& expected = c.at("expected");
    ++count;
    if (expected.contains("error")) {
      EXPECT_THROW(render(t, c.at("input")), plugformer::TemplateError) << name;
      continue;
    }
    try {
      EXPECT_EQ(render(t, c.at("input")), expected.at("text").get<std::string>()) << name;
    } catch (const plugformer::TemplateError& e) {
      ADD_FAILURE() << name << ": " << e.what();
    }
  }
  EXPECT_GT(count, 20u);
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatTemplateFixtures, ::testing::ValuesIn(template_names()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

// The same template object renders from many threads at once (the server shares one per model).
TEST(ChatTemplateFixtures, OneTemplateRendersConcurrently) {
  const fs::path dir = kRoot / "meta-llama-Llama-3.1-8B-Instruct";
  const JinjaTemplate t(read(dir / "template.jinja"));
  std::ifstream cases(dir / "cases.jsonl");
  std::string line;
  std::getline(cases, line);
  const json c = json::parse(line);
  const std::string expected = c.at("expected").at("text").get<std::string>();
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      for (int k = 0; k < 50; ++k)
        if (render(t, c.at("input")) != expected) ++mismatches;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
