// add_model_tags / read_model_tags on README.md front matter.
#include "hub_test_util.h"
#include "plugformer/error.h"

namespace plugformer::testing {
namespace {

class ModelCardTest : public ::testing::Test {
 protected:
  void SetUp() override { dir = make_temp_dir("card"); }
  void TearDown() override { fs::remove_all(dir); }
  fs::path dir;
};

TEST_F(ModelCardTest, CreatesCardWhenMissing) {
  hub::add_model_tags(dir, {"plugformer", "llama"});
  EXPECT_EQ(read_text(dir / "README.md"), "---\ntags:\n- plugformer\n- llama\n---\n");
  EXPECT_EQ(hub::read_model_tags(dir), (std::vector<std::string>{"plugformer", "llama"}));
}

TEST_F(ModelCardTest, MergesIntoExistingBlockListKeepingEverythingElse) {
  const std::string card =
      "---\nlicense: mit\ntags:\n  - text-generation\n  - \"quoted: tag\"\nlanguage:\n- en\n---\n\n# My model\n\ntags: not yaml\n";
  write_text(dir / "README.md", card);
  hub::add_model_tags(dir / "README.md", {"plugformer", "text-generation"});
  EXPECT_EQ(read_text(dir / "README.md"),
            "---\nlicense: mit\ntags:\n- text-generation\n- \"quoted: tag\"\n- plugformer\nlanguage:\n- en\n---\n\n"
            "# My model\n\ntags: not yaml\n");
  EXPECT_EQ(hub::read_model_tags(dir), (std::vector<std::string>{"text-generation", "quoted: tag", "plugformer"}));
  const std::string before = read_text(dir / "README.md");
  hub::add_model_tags(dir, {"plugformer"});  // already there: file unchanged
  EXPECT_EQ(read_text(dir / "README.md"), before);
}

TEST_F(ModelCardTest, FlowListScalarNoTagsAndNoFrontMatter) {
  write_text(dir / "a.md", "---\ntags: [a, 'b c']\nlicense: apache-2.0\n---\ntext\n");
  hub::add_model_tags(dir / "a.md", {"d"});
  EXPECT_EQ(read_text(dir / "a.md"), "---\ntags:\n- a\n- b c\n- d\nlicense: apache-2.0\n---\ntext\n");
  write_text(dir / "b.md", "---\ntags: single\n---\n");
  EXPECT_EQ(hub::read_model_tags(dir / "b.md"), std::vector<std::string>{"single"});
  write_text(dir / "c.md", "---\nlicense: mit\n---\nbody\n");
  hub::add_model_tags(dir / "c.md", {"x", "true"});
  EXPECT_EQ(read_text(dir / "c.md"), "---\nlicense: mit\ntags:\n- x\n- \"true\"\n---\nbody\n");
  EXPECT_EQ(hub::read_model_tags(dir / "c.md"), (std::vector<std::string>{"x", "true"}));
  write_text(dir / "d.md", "# Just text\n");
  hub::add_model_tags(dir / "d.md", {"x"});
  EXPECT_EQ(read_text(dir / "d.md"), "---\ntags:\n- x\n---\n# Just text\n");
  EXPECT_THROW(hub::add_model_tags(dir / "d.md", {"bad\ntag"}), InvalidInputError);
}

}  // namespace
}  // namespace plugformer::testing
