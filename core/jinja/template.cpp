#include <algorithm>
#include <cstddef>
#include <memory_resource>

#include "jinja/frame.h"
#include "plugformer/chat_template.h"
#include "tokenizers/unicode.h"

namespace plugformer {

struct JinjaTemplate::Compiled {
  std::string source;
  TemplateLimits limits;
  std::unique_ptr<jinja::Program> program;
};

JinjaTemplate::JinjaTemplate(std::string_view source, TemplateLimits limits) {
  auto compiled = std::make_shared<Compiled>();
  compiled->source = std::string(source);
  compiled->limits = limits;
  jinja::SyntaxOptions options;
  options.max_nesting = limits.max_nesting;
  compiled->program = jinja::parse(source, options);
  compiled_ = std::move(compiled);
}

JinjaTemplate::~JinjaTemplate() = default;

const std::string& JinjaTemplate::source() const { return compiled_->source; }

std::string JinjaTemplate::render(const nlohmann::ordered_json& variables, const std::string& now) const {
  if (!variables.is_object()) throw TemplateError("template variables must be a JSON object", "TypeError");
  Bindings bindings;
  bindings.reserve(variables.size());
  for (auto it = variables.begin(); it != variables.end(); ++it) bindings.emplace_back(it.key(), &it.value());
  return render(bindings, now);
}

std::string JinjaTemplate::render(const Bindings& variables, const std::string& now) const {
  const jinja::Program& program = *compiled_->program;
  std::string out;
  out.reserve(compiled_->source.size() * 2);
  // The variables' lists and dicts, released in one piece after the render (declared before the
  // interpreter, whose scopes hold them, so it outlives them). They start on the stack: the same
  // memory every render, still in cache (a chat of 20 messages with two tools needs ~8 KB).
  alignas(std::max_align_t) std::byte initial_memory[16384];
  std::pmr::monotonic_buffer_resource variables_memory(initial_memory, sizeof initial_memory);
  jinja::Interpreter interp;
  interp.out = &out;
  interp.frame = std::make_shared<jinja::Frame>();
  interp.max_output_bytes = compiled_->limits.max_output_bytes;
  interp.max_steps = compiled_->limits.max_steps;
  interp.max_call_depth = compiled_->limits.max_call_depth;
  interp.now = now;
  try {
    // Only the variables the template mentions are converted.
    for (const auto& [name, json_value] : variables) {
      auto slot = program.slots.find(name);
      if (slot == program.slots.end()) continue;
      interp.frame->set(slot->second, jinja::Value::from_json(*json_value, &variables_memory));
    }
    jinja::render_body(interp, program.body);
  } catch (const jinja::RenderError& e) {
    if (e.kind == "TemplateError") throw TemplateError(e.message, e.kind);  // raise_exception: verbatim
    throw TemplateError(e.kind + ": " + e.message, e.kind);
  }
  return out;
}

}  // namespace plugformer
