// Oniguruma regular expressions with the semantics of the Rust `onig` crate's find_iter, which
// is what the Rust `tokenizers` library uses for every regex pattern (SysRegex).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tokenizers/normalized_string.h"

namespace plugformer::tok {

class Regex {
 public:
  // Throws TokenizerError naming `where` if the pattern does not compile.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  const std::string& pattern() const { return pattern_; }
  // Appends (start, end) byte offsets of successive non-overlapping matches.
  void find_iter(std::string_view s, std::vector<Offsets>& out) const;
  // Pattern::find_matches: the whole string as (range, is_match) pieces.
  Matches find_matches(std::string_view s) const;

 private:
  std::string pattern_;
  void* regex_ = nullptr;
};

// Rust `regex::escape`.
std::string regex_escape(std::string_view s);

}  // namespace plugformer::tok
