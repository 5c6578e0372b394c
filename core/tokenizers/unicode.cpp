#include "tokenizers/unicode.h"

#include <algorithm>

#include <utf8proc.h>

namespace plugformer::tok {

namespace {
inline int category(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c));
}
inline int ccc(char32_t c) {
  if (c < 0x300) return 0;
  return utf8proc_get_property(static_cast<utf8proc_int32_t>(c))->combining_class;
}
}  // namespace

size_t utf8_char_count(std::string_view s) {
  size_t n = 0;
  for (unsigned char b : s) n += (b & 0xC0) != 0x80;
  return n;
}

// Returns the length of the valid UTF-8 sequence at s[i], or 0 if invalid; `bad` receives the
// length of the maximal invalid prefix (at least 1) when invalid.
static size_t valid_seq(std::string_view s, size_t i, size_t& bad) {
  auto at = [&](size_t k) -> int { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : -1; };
  int b0 = at(0);
  bad = 1;
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    int b1 = at(1);
    if (b1 >= 0x80 && b1 <= 0xBF) return 2;
    return 0;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    int lo = 0x80, hi = 0xBF;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
    int b1 = at(1);
    if (b1 < lo || b1 > hi) return 0;
    bad = 2;
    int b2 = at(2);
    if (b2 < 0x80 || b2 > 0xBF) return 0;
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    int lo = 0x80, hi = 0xBF;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
    int b1 = at(1);
    if (b1 < lo || b1 > hi) return 0;
    bad = 2;
    int b2 = at(2);
    if (b2 < 0x80 || b2 > 0xBF) return 0;
    bad = 3;
    int b3 = at(3);
    if (b3 < 0x80 || b3 > 0xBF) return 0;
    return 4;
  }
  return 0;
}

bool utf8_valid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    size_t bad;
    size_t n = valid_seq(s, i, bad);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0;
  while (i < s.size()) {
    size_t bad;
    size_t n = valid_seq(s, i, bad);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      i += bad;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
  return out;
}

bool is_punctuation(char32_t c) {
  int cat = category(c);
  return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

bool is_bert_punctuation(char32_t c) {
  if (c < 0x80) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
  }
  return is_punctuation(c);
}

bool is_numeric(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  int cat = category(c);
  return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
}

bool is_other(char32_t c) {
  int cat = category(c);
  return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CS ||
         cat == UTF8PROC_CATEGORY_CO || cat == UTF8PROC_CATEGORY_CN;
}

bool is_mark_nonspacing(char32_t c) { return c >= 0x300 && category(c) == UTF8PROC_CATEGORY_MN; }

bool is_combining_mark(char32_t c) {
  if (c < 0x300) return false;
  int cat = category(c);
  return cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_MC || cat == UTF8PROC_CATEGORY_ME;
}

bool is_alphanumeric_word(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  int cat = category(c);
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_ME) || cat == UTF8PROC_CATEGORY_ND ||
         cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_PC || c == 0x200C || c == 0x200D;
}

void to_lowercase(char32_t c, std::vector<char32_t>& out) {
  if (c < 0x80) {
    out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
    return;
  }
  if (c == 0x130) {  // the only unconditional multi-char lowercase mapping (SpecialCasing.txt)
    out.push_back('i');
    out.push_back(0x307);
    return;
  }
  out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
}

namespace {

void decompose_char(char32_t c, bool compat, std::vector<char32_t>& out) {
  if (c < 0xC0) {
    if (!compat || c < 0xA0) {
      out.push_back(c);
      return;
    }
  }
  utf8proc_int32_t buf[32];
  int last_boundclass = 0;
  utf8proc_option_t opts = static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | (compat ? UTF8PROC_COMPAT : 0));
  utf8proc_ssize_t n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(c), buf, 32, opts, &last_boundclass);
  if (n <= 0 || n > 32) {
    out.push_back(c);
    return;
  }
  for (utf8proc_ssize_t k = 0; k < n; ++k) out.push_back(static_cast<char32_t>(buf[k]));
}

// Canonical composition of a pair, or 0.
char32_t compose_pair(char32_t a, char32_t b) {
  if (b < 0x300) return 0;
  // Hangul
  constexpr char32_t SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
  constexpr int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;
  if (a >= LBase && a < LBase + LCount && b >= VBase && b < VBase + VCount)
    return SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
  if (a >= SBase && a < SBase + SCount && ((a - SBase) % TCount) == 0 && b > TBase && b < TBase + TCount)
    return a + (b - TBase);
  const utf8proc_property_t* pb = utf8proc_get_property(static_cast<utf8proc_int32_t>(b));
  if (pb->comb_index == UINT16_MAX) return 0;
  if (ccc(a) != 0) return 0;
  utf8proc_int32_t buf[2] = {static_cast<utf8proc_int32_t>(a), static_cast<utf8proc_int32_t>(b)};
  utf8proc_ssize_t n = utf8proc_normalize_utf32(buf, 2, static_cast<utf8proc_option_t>(UTF8PROC_COMPOSE | UTF8PROC_STABLE));
  if (n == 1) return static_cast<char32_t>(buf[0]);
  return 0;
}

struct Decomposer {
  // (ccc, char, change)
  struct Item {
    int cls;
    char32_t ch;
    int change;
  };
  std::vector<Item> buffer;
  size_t ready_end = 0;

  void sort_pending() {
    std::stable_sort(buffer.begin() + static_cast<std::ptrdiff_t>(ready_end), buffer.end(),
                     [](const Item& x, const Item& y) { return x.cls < y.cls; });
    ready_end = buffer.size();
  }
};

// Decomposition stream with canonical reordering: emits (char, change).
template <typename Emit>
void decompose_stream(std::string_view s, bool compat, Emit&& emit) {
  Decomposer d;
  std::vector<char32_t> tmp;
  size_t i = 0;
  auto flush_ready = [&]() {
    for (size_t k = 0; k < d.ready_end; ++k) emit(d.buffer[k].ch, d.buffer[k].change);
    d.buffer.erase(d.buffer.begin(), d.buffer.begin() + static_cast<std::ptrdiff_t>(d.ready_end));
    d.ready_end = 0;
  };
  while (i < s.size()) {
    char32_t c = utf8_next(s, i);
    tmp.clear();
    decompose_char(c, compat, tmp);
    bool first = true;
    for (char32_t dc : tmp) {
      int cls = ccc(dc);
      if (cls == 0) d.sort_pending();
      d.buffer.push_back({cls, dc, first ? 0 : 1});
      first = false;
    }
    if (d.ready_end > 0) flush_ready();
  }
  d.sort_pending();
  flush_ready();
}

}  // namespace

void normalize_with_changes(std::string_view s, NormForm form, std::vector<std::pair<char32_t, int>>& out) {
  bool compat = form == NormForm::NFKD || form == NormForm::NFKC;
  if (form == NormForm::NFD || form == NormForm::NFKD) {
    decompose_stream(s, compat, [&](char32_t c, int ch) { out.emplace_back(c, ch); });
    return;
  }
  // Recomposition, mirroring unicode-normalization-alignments' Recompositions state machine.
  std::vector<std::pair<char32_t, int>> decomposed;
  decomposed.reserve(s.size());
  decompose_stream(s, compat, [&](char32_t c, int ch) { decomposed.emplace_back(c, ch); });
  bool has_composee = false;
  std::pair<char32_t, int> composee{0, 0};
  int last_ccc = -1;  // -1 = None
  std::vector<std::pair<char32_t, int>> buffer;
  for (auto [ch, change] : decomposed) {
    int ch_class = ccc(ch);
    if (!has_composee) {
      if (ch_class != 0) {
        out.emplace_back(ch, change);
        continue;
      }
      composee = {ch, change};
      has_composee = true;
      continue;
    }
    auto k = composee;
    if (last_ccc < 0) {
      char32_t r = compose_pair(k.first, ch);
      if (r) {
        composee = {r, k.second + change - 1};
        continue;
      }
      if (ch_class == 0) {
        composee = {ch, change};
        out.push_back(k);
        continue;
      }
      buffer.emplace_back(ch, change);
      last_ccc = ch_class;
    } else {
      int l_class = last_ccc;
      if (l_class >= ch_class) {
        if (ch_class == 0) {
          composee = {ch, change};
          last_ccc = -1;
          out.push_back(k);
          for (auto& b : buffer) out.push_back(b);
          buffer.clear();
          continue;
        }
        buffer.emplace_back(ch, change);
        last_ccc = ch_class;
        continue;
      }
      char32_t r = compose_pair(k.first, ch);
      if (r) {
        composee = {r, k.second + change - 1};
        continue;
      }
      buffer.emplace_back(ch, change);
      last_ccc = ch_class;
    }
  }
  // Finished: the composee first, then the buffer (Finished state emits composee.take() first).
  if (has_composee) out.push_back(composee);
  for (auto& b : buffer) out.push_back(b);
}

std::string normalize_string(std::string_view s, NormForm form) {
  std::vector<std::pair<char32_t, int>> v;
  normalize_with_changes(s, form, v);
  std::string out;
  out.reserve(s.size());
  for (auto& p : v) utf8_append(out, p.first);
  return out;
}

void graphemes(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) {
  size_t i = 0;
  size_t start = 0;
  utf8proc_int32_t state = 0;
  bool have_prev = false;
  utf8proc_int32_t prev = 0;
  while (i < s.size()) {
    size_t pos = i;
    char32_t c = utf8_next(s, i);
    if (have_prev) {
      if (utf8proc_grapheme_break_stateful(prev, static_cast<utf8proc_int32_t>(c), &state)) {
        out.emplace_back(start, pos);
        start = pos;
      }
    }
    prev = static_cast<utf8proc_int32_t>(c);
    have_prev = true;
  }
  if (start < s.size()) out.emplace_back(start, s.size());
}

}  // namespace plugformer::tok
