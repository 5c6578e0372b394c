// The `plugformer chat-template --jsonl` contract the fixtures README fixes: one input object per
// line in, one {"text"} or {"error"} per line out, strftime_now at PLUGFORMER_CHAT_TEMPLATE_NOW.
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "../core/test_util.h"

using json = nlohmann::ordered_json;
namespace test = plugformer::test;

namespace {

const std::filesystem::path kRoot = std::filesystem::path(PLUGFORMER_FIXTURES_DIR) / "chat_templates";

TEST(ChatTemplateCli, JsonlContractOnATemplateThatReadsTheDate) {
  const auto dir = kRoot / "meta-llama-Llama-3.2-3B-Instruct";  // strftime_now("%d %b %Y")
  test::TempDir tmp("chat_template_cli");
  std::ifstream cases(dir / "cases.jsonl");
  std::vector<json> expected;
  std::ofstream inputs(tmp / "inputs.jsonl");
  std::string line;
  while (std::getline(cases, line)) {
    json c = json::parse(line);
    inputs << c["input"].dump() << "\n";
    expected.push_back(c["expected"]);
  }
  inputs << "not json\n" << R"({"no_messages": true})" << "\n";
  inputs.close();
  const auto r = test::run_cli("chat-template --template " + (dir / "template.jinja").string() + " --input " +
                                   (tmp / "inputs.jsonl").string() + " --jsonl",
                               "PLUGFORMER_CHAT_TEMPLATE_NOW=2025-01-05T07:08:09 ");
  ASSERT_EQ(r.status, 0) << r.out;
  std::istringstream out(r.out);
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_TRUE(std::getline(out, line)) << "missing output line " << i;
    const json got = json::parse(line);
    if (expected[i].contains("error")) EXPECT_TRUE(got.contains("error")) << line;
    else EXPECT_EQ(got.value("text", "<error: " + got.value("error", "") + ">"), expected[i]["text"].get<std::string>());
  }
  for (int bad = 0; bad < 2; ++bad) {
    ASSERT_TRUE(std::getline(out, line));
    EXPECT_TRUE(json::parse(line).contains("error")) << line;
  }
}

TEST(ChatTemplateCli, TemplateThatDoesNotParseFailsEveryLineAndSingleInputMode) {
  test::TempDir tmp("chat_template_cli_bad");
  test::write_file(tmp / "bad.jinja", "{% for m in messages %}");
  test::write_file(tmp / "good.jinja", "{% for m in messages %}{{ m.content }}{% endfor %}");
  test::write_file(tmp / "inputs.jsonl", R"({"messages": [{"role": "user", "content": "hi"}]})" "\n");
  auto r = test::run_cli("chat-template --template " + (tmp / "bad.jinja").string() + " --input " +
                         (tmp / "inputs.jsonl").string() + " --jsonl");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("\"error\""), std::string::npos) << r.out;
  r = test::run_cli("chat-template --template " + (tmp / "good.jinja").string() + " --input " + (tmp / "inputs.jsonl").string());
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "hi");
  r = test::run_cli("chat-template --template " + (tmp / "missing.jinja").string() + " --input " + (tmp / "inputs.jsonl").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("missing.jinja"), std::string::npos) << r.out;
}

}  // namespace
