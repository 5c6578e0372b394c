// JSON text into nlohmann::ordered_json without ordered_json's quadratic key search.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace plugformer {

// Parses JSON text as nlohmann::ordered_json::parse does (same values, key order and exceptions),
// in time linear in an object's keys: ordered_json's own parser searches the keys so far for every
// key, which takes seconds for a 32k-token vocabulary or ImageNet-21k's id2label.
nlohmann::ordered_json parse_json_text(const std::string& text);

}  // namespace plugformer
