// apply_chat_template on a real tokenizer: templates read from a model folder the ways
// transformers stores them, special tokens as variables, encoding, save_pretrained round trip.
#include <gtest/gtest.h>

#include <plugformer/auto.h>
#include <plugformer/tokenizer.h>

#include "../core/test_util.h"

using json = nlohmann::ordered_json;
using plugformer::AutoTokenizer;
namespace test = plugformer::test;

namespace {

const char* kTemplate =
    "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{% if not loop.last %}{{ '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '\\n' }}[assistant]{% endif %}";

json conversation() {
  return json::parse(R"([{"role": "user", "content": "Once upon a time"}, {"role": "assistant", "content": "there was"}])");
}

TEST(ChatTemplateTokenizer, ReadsTheTemplateFromTokenizerConfig) {
  test::TempDir dir("chat_template_config");
  test::copy_model(test::kStories, dir.path());
  json config = json::parse(std::ifstream(dir / "tokenizer_config.json"));
  config["chat_template"] = kTemplate;
  test::write_file(dir / "tokenizer_config.json", config.dump(2));
  auto tok = AutoTokenizer::from_pretrained(dir.path().string());
  ASSERT_EQ(tok->chat_templates.count("default"), 1u);
  plugformer::ChatTemplateOptions o;
  o.add_generation_prompt = true;
  const std::string text = tok->apply_chat_template(conversation(), o);
  EXPECT_EQ(text, "<s>[user] Once upon a time\n[assistant] there was\n[assistant]");
  // Encoded without adding special tokens again: exactly one <s>, from the template.
  const auto enc = tok->encode_chat(conversation(), o);
  ASSERT_EQ(enc.size(), 1u);
  EXPECT_EQ(enc[0].ids, tok->encode(text, false).ids);
  EXPECT_EQ(std::count(enc[0].ids.begin(), enc[0].ids.end(), *tok->bos_token_id()), 1);
  // A batch of conversations gives one encoding each.
  EXPECT_EQ(tok->encode_chat(json::array({conversation(), conversation()}), o).size(), 2u);
  // Variables override the special tokens; a template text can be passed instead of a name.
  o.variables["bos_token"] = "";
  EXPECT_EQ(tok->apply_chat_template(conversation(), o, "{{ bos_token }}{{ messages | length }}"), "2");
}

TEST(ChatTemplateTokenizer, ReadsJinjaFilesAndNamedTemplatesAndWritesThemBack) {
  test::TempDir dir("chat_template_files");
  test::copy_model(test::kStories, dir.path());
  test::write_file(dir / "chat_template.jinja", kTemplate);
  std::filesystem::create_directories(dir / "additional_chat_templates");
  test::write_file(dir / "additional_chat_templates" / "tool_use.jinja", "tools: {{ tools | length if tools else 0 }}");
  auto tok = AutoTokenizer::from_pretrained(dir.path().string());
  EXPECT_EQ(tok->chat_templates.size(), 2u);
  plugformer::ChatTemplateOptions with_tools;
  with_tools.tools = json::parse(R"([{"type": "function", "function": {"name": "f"}}])");
  EXPECT_EQ(tok->apply_chat_template(conversation(), with_tools), "tools: 1");  // tools pick "tool_use"
  EXPECT_EQ(tok->apply_chat_template(conversation(), {}, "tool_use"), "tools: 0");
  EXPECT_EQ(tok->apply_chat_template(conversation()).substr(0, 9), "<s>[user]");

  test::TempDir saved("chat_template_saved");
  tok->save_pretrained(saved.path());
  EXPECT_TRUE(std::filesystem::exists(saved / "chat_template.jinja"));
  EXPECT_TRUE(std::filesystem::exists(saved / "additional_chat_templates" / "tool_use.jinja"));
  EXPECT_FALSE(json::parse(std::ifstream(saved / "tokenizer_config.json")).contains("chat_template"));
  auto reloaded = AutoTokenizer::from_pretrained(saved.path().string());
  EXPECT_EQ(reloaded->chat_templates, tok->chat_templates);
}

TEST(ChatTemplateTokenizer, ListOfNamedTemplatesAndBadInput) {
  test::TempDir dir("chat_template_list");
  test::copy_model(test::kStories, dir.path());
  json config = json::parse(std::ifstream(dir / "tokenizer_config.json"));
  config["chat_template"] = json::parse(R"([{"name": "default", "template": "A"}, {"name": "rag", "template": "B"}])");
  test::write_file(dir / "tokenizer_config.json", config.dump(2));
  auto tok = AutoTokenizer::from_pretrained(dir.path().string());
  EXPECT_EQ(tok->apply_chat_template(conversation()), "A");
  EXPECT_EQ(tok->apply_chat_template(conversation(), {}, "rag"), "B");
  tok->chat_templates.erase("default");
  EXPECT_THROW(tok->apply_chat_template(conversation()), plugformer::TokenizerError);  // several, none default
  tok->chat_templates.clear();
  EXPECT_THROW(tok->apply_chat_template(conversation()), plugformer::TokenizerError);  // none at all

  config["chat_template"] = 42;
  test::write_file(dir / "tokenizer_config.json", config.dump(2));
  try {
    AutoTokenizer::from_pretrained(dir.path().string());
    FAIL();
  } catch (const plugformer::TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("chat_template"), std::string::npos) << e.what();
  }
}

}  // namespace
