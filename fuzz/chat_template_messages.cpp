// Real chat templates (tests/fixtures/chat_templates) rendered with fuzzed conversations: the input
// is a JSON value given as the messages (through render_chat_template's checks), or an object
// holding "messages" (and "tools", "documents", like the fixtures' cases.jsonl lines); a hash of the
// input picks the template and add_generation_prompt.
#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <vector>

#include <plugformer/chat_template.h>

#include "fuzz_target.h"

namespace {

std::vector<plugformer::JinjaTemplate>& templates() {
  static std::vector<plugformer::JinjaTemplate> all = [] {
    std::vector<plugformer::JinjaTemplate> out;
    std::vector<std::filesystem::path> files;
    for (const auto& dir : std::filesystem::directory_iterator(std::string(PLUGFORMER_FIXTURES_DIR) + "/chat_templates"))
      if (std::filesystem::exists(dir.path() / "template.jinja")) files.push_back(dir.path() / "template.jinja");
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      std::ifstream in(file);
      std::stringstream text;
      text << in.rdbuf();
      out.emplace_back(text.str(), PLUGFORMER_FUZZ_TEMPLATE_LIMITS);
    }
    return out;
  }();
  return all;
}

}  // namespace

// Parsed before fuzzing starts, so no input is charged for it.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  templates();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (templates().empty()) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const size_t hash = std::hash<std::string_view>{}(text);
  const auto& chosen = templates()[hash % templates().size()];
  const auto value = nlohmann::ordered_json::parse(text.begin(), text.end(), nullptr, false);
  if (value.is_discarded()) return 0;
  return run_fuzz_input([&] {
    plugformer::ChatTemplateOptions options;
    options.add_generation_prompt = (hash >> 32) & 1;
    options.variables = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
    options.now = "2025-01-05T07:08:09";
    // A cases.jsonl line keeps the arguments under "input".
    const auto& box = value.is_object() && value.contains("input") ? value["input"] : value;
    nlohmann::ordered_json messages = box;
    if (box.is_object() && box.contains("messages")) {
      messages = box["messages"];
      if (box.contains("tools")) options.tools = box["tools"];
      if (box.contains("documents")) options.documents = box["documents"];
      if (auto flag = box.find("continue_final_message"); flag != box.end() && flag->is_boolean())
        options.continue_final_message = flag->get<bool>();
    }
    plugformer::render_chat_template(chosen, messages, options);
  });
}
