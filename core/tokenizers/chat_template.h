// Where a model folder keeps its chat templates (transformers' layout), for AutoTokenizer and
// save_pretrained.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace plugformer {

class JinjaTemplate;
struct ChatTemplateOptions;

// render_chat_template with `defaults` bound first (the tokenizer's special tokens), so that
// options.variables override them.
std::string render_chat_template(const JinjaTemplate& chat_template, const nlohmann::ordered_json& messages,
                                 const ChatTemplateOptions& options, const nlohmann::ordered_json& defaults);

// tokenizer_config.json's "chat_template": a string ("default") or a list of {"name", "template"}.
// `where` names the file in errors.
std::map<std::string, std::string> chat_templates_from_config(const nlohmann::ordered_json& tokenizer_config,
                                                              const std::string& where);
// tokenizer_config.json's "chat_template" (a string, or a list of {"name", "template"}), then
// dir/chat_template.jinja ("default") and dir/additional_chat_templates/<name>.jinja.
std::map<std::string, std::string> read_chat_templates(const std::filesystem::path& dir,
                                                       const nlohmann::ordered_json& tokenizer_config);
// The files save_pretrained writes for `templates` (chat_template.jinja for "default",
// additional_chat_templates/<name>.jinja for the others); "chat_template" leaves `config`.
std::vector<std::pair<std::filesystem::path, std::string>> chat_template_files(
    const std::map<std::string, std::string>& templates, nlohmann::ordered_json& config);

}  // namespace plugformer
