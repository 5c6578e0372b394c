// A LoRA config's target_modules given as one regex (PEFT matches it against the whole module
// path), compiled for peft_config.cpp's check and peft_model.cpp's matching alike.
#pragma once

#include <regex>
#include <string>

namespace plugformer {

// ConfigError "<field> must be a list of module names or a valid regular expression (why)" when
// `pattern` is not one this build can compile safely.
std::regex compile_target_regex(const std::string& pattern, const std::string& field);

}  // namespace plugformer
