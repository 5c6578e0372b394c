#include "tokenizers/regex.h"

#include <mutex>

#include <oniguruma.h>

#include "plugformer/error.h"

namespace plugformer::tok {

namespace {
void init_onig() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encs[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encs, 1);
  });
}

struct RegionHolder {
  OnigRegion* region = onig_region_new();
  ~RegionHolder() { onig_region_free(region, 1); }
};
}  // namespace

Regex::Regex(const std::string& pattern, const std::string& where) : pattern_(pattern) {
  init_onig();
  OnigRegex re = nullptr;
  OnigErrorInfo einfo;
  const auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
  int r = onig_new(&re, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8, ONIG_SYNTAX_RUBY, &einfo);
  if (r != ONIG_NORMAL) {
    OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(msg, r, &einfo);
    throw TokenizerError(where + ": invalid regex pattern '" + pattern + "': " + reinterpret_cast<char*>(msg));
  }
  regex_ = re;
}

Regex::~Regex() {
  if (regex_) onig_free(static_cast<OnigRegex>(regex_));
}

void Regex::find_iter(std::string_view s, std::vector<Offsets>& out) const {
  thread_local RegionHolder holder;
  OnigRegion* region = holder.region;
  const auto* begin = reinterpret_cast<const OnigUChar*>(s.data());
  const auto* end = begin + s.size();
  size_t last_end = 0;
  bool has_last_match = false;
  size_t last_match_end = 0;
  auto re = static_cast<OnigRegex>(regex_);
  while (last_end <= s.size()) {
    onig_region_clear(region);
    int r = onig_search(re, begin, end, begin + last_end, end, region, ONIG_OPTION_NONE);
    if (r < 0) break;  // ONIG_MISMATCH or error
    size_t ms = static_cast<size_t>(region->beg[0]);
    size_t me = static_cast<size_t>(region->end[0]);
    if (me == ms && has_last_match && last_match_end == me) {
      if (last_end < s.size())
        last_end += utf8_len(static_cast<unsigned char>(s[last_end]));
      else
        last_end += 1;
      continue;
    }
    last_end = me;
    has_last_match = true;
    last_match_end = me;
    out.emplace_back(ms, me);
  }
}

Matches Regex::find_matches(std::string_view s) const {
  Matches m;
  if (s.empty()) {
    m.push_back({{0, 0}, false});
    return m;
  }
  std::vector<Offsets> found;
  find_iter(s, found);
  m.reserve(found.size() * 2 + 1);
  size_t prev = 0;
  for (auto [st, en] : found) {
    if (prev != st) m.push_back({{prev, st}, false});
    m.push_back({{st, en}, true});
    prev = en;
  }
  if (prev != s.size()) m.push_back({{prev, s.size()}, false});
  return m;
}

std::string regex_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '\\': case '.': case '+': case '*': case '?': case '(': case ')': case '|': case '[': case ']':
      case '{': case '}': case '^': case '$': case '#': case '&': case '-': case '~':
        out.push_back('\\');
        break;
      default:
        break;
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace plugformer::tok
