#include "plugformer/error.h"
#include "plugformer/tokenizers.h"

namespace plugformer {

namespace {
std::optional<std::string> token_text(const nlohmann::ordered_json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string())
    return value["content"].get<std::string>();
  return std::nullopt;
}
}  // namespace

SpecialTokens read_special_tokens(const TokenizerFiles& files) {
  SpecialTokens out;
  for (const auto& [name, slot] : SpecialTokens::named(out)) {
    for (const nlohmann::ordered_json* source : {&files.tokenizer_config, &files.special_tokens_map}) {
      auto it = source->find(name);
      if (it == source->end()) continue;
      if (it->is_null()) break;  // explicitly none
      auto text = token_text(*it);
      if (!text) throw TokenizerError((files.dir / "tokenizer_config.json").string() + ": field '" + name +
                                      "' must be a string or an object with 'content'");
      *slot = *text;
      break;
    }
  }
  return out;
}

}  // namespace plugformer
