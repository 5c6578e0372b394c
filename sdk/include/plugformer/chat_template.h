// Jinja2 templates as transformers renders chat templates: compiled once, rendered many times,
// in transformers' environment (jinja2's ImmutableSandboxedEnvironment with trim_blocks,
// lstrip_blocks, the loopcontrols extension and the {% generation %} block; its own tojson;
// raise_exception and strftime_now). Every failure is a TemplateError (plugformer/error.h).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugformer/error.h"

namespace plugformer {

// Bounds for templates and inputs from strangers; exceeding one is a TemplateError.
struct TemplateLimits {
  size_t max_output_bytes = size_t{64} << 20;  // per render (and per captured block)
  size_t max_steps = 20'000'000;               // loop iterations and calls per render
  size_t max_call_depth = 200;                 // nested macro calls (recursion)
  size_t max_nesting = 256;                    // nested blocks / brackets in the source
};

class JinjaTemplate {
 public:
  // Parses `source`; a TemplateSyntaxError names the line and column of a mistake.
  explicit JinjaTemplate(std::string_view source, TemplateLimits limits = {});
  ~JinjaTemplate();
  JinjaTemplate(const JinjaTemplate&) = default;
  JinjaTemplate& operator=(const JinjaTemplate&) = default;

  // Renders with `variables` (a JSON object) as the template's variables. `now`, when not empty
  // ("2025-01-05T07:08:09"), is the instant strftime_now formats; else the local clock.
  std::string render(const nlohmann::ordered_json& variables, const std::string& now = "") const;
  // The same with the variables bound one by one, by reference (nothing is copied); a later
  // binding of a name wins.
  using Bindings = std::vector<std::pair<std::string_view, const nlohmann::ordered_json*>>;
  std::string render(const Bindings& variables, const std::string& now = "") const;
  const std::string& source() const;

 private:
  struct Compiled;
  std::shared_ptr<const Compiled> compiled_;
};

// apply_chat_template's arguments other than the conversation and the template.
struct ChatTemplateOptions {
  nlohmann::ordered_json tools = nullptr;      // a list of JSON schemas (dicts), or null
  nlohmann::ordered_json documents = nullptr;  // a list of dicts, or null
  bool add_generation_prompt = false;
  // The last message is a prefix the model continues (no end-of-turn after it).
  bool continue_final_message = false;
  // Further template variables: special tokens (bos_token, eos_token, ...), enable_thinking, ...
  nlohmann::ordered_json variables = nlohmann::ordered_json::object();
  std::string now;  // as JinjaTemplate::render
};

// transformers' render_jinja_template for one conversation (a list of {"role", "content", ...}
// messages): the checks on tools and documents, and continue_final_message's tag logic.
std::string render_chat_template(const JinjaTemplate& chat_template, const nlohmann::ordered_json& messages,
                                 const ChatTemplateOptions& options);

}  // namespace plugformer
