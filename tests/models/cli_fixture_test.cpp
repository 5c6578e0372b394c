// Every model fixture's forward cases through `plugformer forward`: what a user of the CLI gets
// equals the golden outputs, for every family.
#include <gtest/gtest.h>

#include <filesystem>

#include "fixture_runner.h"

namespace {

std::vector<std::string> fixtures() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(PLUGFORMER_FIXTURES_DIR) + "/models"))
    if (std::filesystem::exists(entry.path() / "expected.json")) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class CliFixture : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(CliFixture, ForwardMatchesTheGoldenOutputs) { plugformer::testing::check_model_fixture_through_cli(GetParam()); }

INSTANTIATE_TEST_SUITE_P(AllFamilies, CliFixture, ::testing::ValuesIn(fixtures()),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });
