// apply_chat_template: transformers' template selection and rendering (render_jinja_template) on
// top of core/jinja, the templates read from a model folder and written back by save_pretrained.
#include <algorithm>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include "jinja/value.h"
#include "plugformer/chat_template.h"
#include "plugformer/tokenizer.h"
#include "tokenizers/chat_template.h"
#include "tokenizers/slow_vocab.h"

namespace plugformer {

namespace {

[[noreturn]] void value_error(const std::string& message) { throw TemplateError(message, "ValueError"); }


}  // namespace

std::string render_chat_template(const JinjaTemplate& chat_template, const nlohmann::ordered_json& messages,
                                 const ChatTemplateOptions& options) {
  return render_chat_template(chat_template, messages, options, nlohmann::ordered_json::object());
}

std::string render_chat_template(const JinjaTemplate& chat_template, const nlohmann::ordered_json& messages,
                                 const ChatTemplateOptions& options, const nlohmann::ordered_json& defaults) {
  if (!messages.is_array()) throw TemplateError("the conversation must be a list of messages", "TypeError");
  if (!options.tools.is_null()) {
    if (!options.tools.is_array()) throw TemplateError("tools must be a list of JSON schemas", "TypeError");
    for (const auto& tool : options.tools)
      if (!tool.is_object())
        value_error("Tools should either be a JSON schema, or a callable function with type hints and a docstring "
                    "suitable for auto-conversion to a schema.");
  }
  if (!options.documents.is_null()) {
    if (!options.documents.is_array()) throw TemplateError("documents must be a list of dicts", "TypeError");
    for (const auto& document : options.documents)
      if (!document.is_object())
        throw TemplateError("Documents should be a list of dicts with 'title' and 'text' keys!", "TypeError");
  }
  // transformers: render(messages=..., tools=..., documents=..., add_generation_prompt=..., **kwargs).
  const nlohmann::ordered_json add_generation_prompt = options.add_generation_prompt;
  JinjaTemplate::Bindings bindings;
  for (const auto* vars : {&defaults, &options.variables})
    if (vars->is_object())
      for (auto it = vars->begin(); it != vars->end(); ++it) bindings.emplace_back(it.key(), &it.value());
  bindings.emplace_back("tools", &options.tools);
  bindings.emplace_back("documents", &options.documents);
  bindings.emplace_back("add_generation_prompt", &add_generation_prompt);

  static const std::string tag = "CONTINUE_FINAL_MESSAGE_TAG ";
  std::string final_text;
  if (!options.continue_final_message) {
    bindings.emplace_back("messages", &messages);
    return chat_template.render(bindings, options.now);
  }
  if (options.add_generation_prompt)
    value_error("continue_final_message and add_generation_prompt are not compatible. Use continue_final_message "
                "when you want the model to continue the final message, and add_generation_prompt when you want to "
                "add a header that will prompt it to start a new assistant message instead.");
  if (messages.empty() || !messages.back().is_object())
    value_error("continue_final_message is set but the conversation has no final message");
  nlohmann::ordered_json chat = messages;
  auto& last = chat.back();
  if (!last.contains("content") || last["content"].is_null())
    value_error("continue_final_message is set but the final message has no content");
  if (chat_template.source().find("content") == std::string::npos)
    value_error("continue_final_message is set but the chat template does not use the message content");
  auto& content = last["content"];
  if (content.is_array()) {
    bool found = false;
    for (auto it = content.rbegin(); it != content.rend(); ++it)
      if (it->is_object() && it->contains("text") && (*it)["text"].is_string()) {
        final_text = (*it)["text"].get<std::string>();
        (*it)["text"] = final_text + tag;
        found = true;
        break;
      }
    if (!found) value_error("continue_final_message is set but we could not find any text to continue in the final message!");
  } else if (content.is_string()) {
    final_text = content.get<std::string>();
    content = final_text + tag;
  } else {
    throw TemplateError("can only concatenate a string content with the continuation tag, not " +
                            std::string(content.type_name()), "TypeError");
  }
  bindings.emplace_back("messages", &chat);
  std::string rendered = chat_template.render(bindings, options.now);
  const std::string stripped_tag(jinja::strip_whitespace(tag, true, true));
  if (rendered.find(jinja::strip_whitespace(final_text, true, true)) == std::string::npos || rendered.find(stripped_tag) == std::string::npos)
    value_error("continue_final_message is set but the final message does not appear in the chat after applying the "
                "chat template! This can happen if the chat template deletes portions of the final message. Please "
                "verify the chat template and final message in your chat to ensure they are compatible.");
  size_t at = rendered.rfind(stripped_tag);
  if (rendered.compare(at, tag.size(), tag) == 0) return rendered.substr(0, at);
  std::string head = rendered.substr(0, at);
  return std::string(jinja::strip_whitespace(head, false, true));
}

namespace {

// transformers compiles each template once (an LRU cache keyed by the text); so does this.
std::shared_ptr<const JinjaTemplate> compiled(const std::string& source) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::shared_ptr<const JinjaTemplate>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(source); it != cache.end()) return it->second;
  auto t = std::make_shared<const JinjaTemplate>(source);
  if (cache.size() >= 64) cache.clear();
  cache.emplace(source, t);
  return t;
}


}  // namespace

std::string Tokenizer::chat_template_text(const std::string& name_or_text, bool with_tools) const {
  if (!name_or_text.empty()) {
    auto it = chat_templates.find(name_or_text);
    return it != chat_templates.end() ? it->second : name_or_text;
  }
  if (with_tools)
    if (auto it = chat_templates.find("tool_use"); it != chat_templates.end()) return it->second;
  if (auto it = chat_templates.find("default"); it != chat_templates.end()) return it->second;
  if (chat_templates.empty())
    throw TokenizerError("Cannot use chat template functions because tokenizer.chat_template is not set and no "
                         "template argument was passed! (no chat_template in tokenizer_config.json, no chat_template.jinja)");
  std::string names;
  for (const auto& [name, text] : chat_templates) names += (names.empty() ? "" : ", ") + name;
  throw TokenizerError("This model has multiple chat templates with no default specified! Pass the name of the "
                       "template to use; available template names are [" + names + "]");
}

std::string Tokenizer::apply_chat_template(const nlohmann::ordered_json& conversation, const ChatTemplateOptions& options,
                                           const std::string& chat_template) const {
  auto t = compiled(chat_template_text(chat_template, !options.tools.is_null()));
  return render_chat_template(*t, conversation, options, special_.to_json());
}

std::vector<Encoding> Tokenizer::encode_chat(const nlohmann::ordered_json& conversations,
                                             const ChatTemplateOptions& options, const std::string& chat_template) const {
  if (!conversations.is_array()) throw TemplateError("a conversation must be a list of messages", "TypeError");
  const bool batched = !conversations.empty() && conversations.front().is_array();
  std::vector<std::string> texts;
  if (batched)
    for (const auto& c : conversations) texts.push_back(apply_chat_template(c, options, chat_template));
  else
    texts.push_back(apply_chat_template(conversations, options, chat_template));
  return encode_batch(texts, /*add_special_tokens=*/false);
}

std::map<std::string, std::string> chat_templates_from_config(const nlohmann::ordered_json& tokenizer_config,
                                                              const std::string& where) {
  std::map<std::string, std::string> templates;
  auto it = tokenizer_config.find("chat_template");
  if (it == tokenizer_config.end() || it->is_null()) return templates;
  if (it->is_string()) {
    templates["default"] = it->get<std::string>();
  } else if (it->is_array()) {
    for (const auto& entry : *it) {
      if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() || !entry.contains("template") ||
          !entry["template"].is_string())
        throw TokenizerError(where + ": 'chat_template' entries must be {\"name\": string, \"template\": string}");
      templates[entry["name"].get<std::string>()] = entry["template"].get<std::string>();
    }
  } else {
    throw TokenizerError(where + ": 'chat_template' must be a string or a list of {name, template}, got " +
                         std::string(it->type_name()));
  }
  return templates;
}

std::map<std::string, std::string> read_chat_templates(const std::filesystem::path& dir,
                                                       const nlohmann::ordered_json& tokenizer_config) {
  std::map<std::string, std::string> templates =
      chat_templates_from_config(tokenizer_config, (dir / "tokenizer_config.json").string());
  std::error_code ec;
  if (std::filesystem::is_regular_file(dir / "chat_template.jinja", ec))
    templates["default"] = read_text(dir / "chat_template.jinja");
  const auto extra = dir / "additional_chat_templates";
  if (std::filesystem::is_directory(extra, ec))
    for (const auto& entry : std::filesystem::directory_iterator(extra, ec))
      if (entry.is_regular_file() && entry.path().extension() == ".jinja")
        templates[entry.path().stem().string()] = read_text(entry.path());
  return templates;
}

std::vector<std::pair<std::filesystem::path, std::string>> chat_template_files(
    const std::map<std::string, std::string>& templates, nlohmann::ordered_json& config) {
  config.erase("chat_template");
  std::vector<std::pair<std::filesystem::path, std::string>> files;
  for (const auto& [name, text] : templates) {
    if (name == "default") {
      files.emplace_back("chat_template.jinja", text);
      continue;
    }
    // A name becomes a file name: refuse path separators and dot names.
    if (name.empty() || name == "." || name == ".." || name.find_first_of("/\\") != std::string::npos)
      throw TokenizerError("chat template name '" + name + "' cannot be a file name");
    files.emplace_back(std::filesystem::path("additional_chat_templates") / (name + ".jinja"), text);
  }
  return files;
}

}  // namespace plugformer
