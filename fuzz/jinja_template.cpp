// Any template source: parsed, then rendered with a conversation, tools and the usual special
// tokens (what a chat template sees).
#include <plugformer/chat_template.h>

#include "fuzz_target.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::ordered_json variables = nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <b>there</b>"},
                 {"role": "assistant", "content": "Hello!", "tool_calls": [{"type": "function",
                  "function": {"name": "get_time", "arguments": {"zone": "UTC"}}}]},
                 {"role": "tool", "content": "12:00"}, {"role": "user", "content": [{"type": "text", "text": "and?"}]}],
    "tools": [{"type": "function", "function": {"name": "get_time", "description": "Time now",
               "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "enable_thinking": false})");
  return run_fuzz_input([&] {
    plugformer::JinjaTemplate t(std::string_view(reinterpret_cast<const char*>(data), size), PLUGFORMER_FUZZ_TEMPLATE_LIMITS);
    t.render(variables, "2025-01-05T07:08:09");
  });
}
