// Unicode helpers for the tokenizer engine: UTF-8 decoding/encoding and the character
// predicates the Rust `tokenizers` library uses (char::is_whitespace, is_numeric, unicode
// categories), normalization forms with alignment information and grapheme clusters.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace plugformer::tok {

// Length in bytes of the UTF-8 sequence starting with lead byte `b` (1 for continuation bytes).
inline size_t utf8_len(unsigned char b) {
  if (b < 0x80) return 1;
  if ((b >> 5) == 0x6) return 2;
  if ((b >> 4) == 0xE) return 3;
  if ((b >> 3) == 0x1E) return 4;
  return 1;
}

// Decodes the code point at s[i] (s must be valid UTF-8); advances i.
inline char32_t utf8_next(std::string_view s, size_t& i) {
  unsigned char b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) { ++i; return b; }
  if ((b >> 5) == 0x6) {
    char32_t c = ((b & 0x1F) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3F);
    i += 2;
    return c;
  }
  if ((b >> 4) == 0xE) {
    char32_t c = ((b & 0x0F) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3F) << 6) |
                 (static_cast<unsigned char>(s[i + 2]) & 0x3F);
    i += 3;
    return c;
  }
  char32_t c = ((b & 0x07) << 18) | ((static_cast<unsigned char>(s[i + 1]) & 0x3F) << 12) |
               ((static_cast<unsigned char>(s[i + 2]) & 0x3F) << 6) | (static_cast<unsigned char>(s[i + 3]) & 0x3F);
  i += 4;
  return c;
}

inline size_t utf8_size(char32_t c) { return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4; }

inline void utf8_append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

inline std::string utf8_encode(char32_t c) {
  std::string s;
  utf8_append(s, c);
  return s;
}

size_t utf8_char_count(std::string_view s);
bool utf8_valid(std::string_view s);
// Like Rust's String::from_utf8_lossy: every maximal invalid subsequence becomes U+FFFD.
std::string utf8_lossy(std::string_view s);

// Rust char::is_whitespace (White_Space property).
inline bool is_whitespace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}
bool is_punctuation(char32_t c);      // P* categories
bool is_bert_punctuation(char32_t c);  // ASCII punctuation or P*
bool is_numeric(char32_t c);          // Nd | Nl | No (char::is_numeric)
bool is_other(char32_t c);            // Cc | Cf | Cs | Co | Cn
bool is_mark_nonspacing(char32_t c);  // Mn
bool is_combining_mark(char32_t c);   // Mn | Mc | Me
bool is_alphanumeric_word(char32_t c);  // \w as the Rust regex crate sees it (used for single_word)

// Full lowercase mapping of one char (char::to_lowercase), appended to out.
void to_lowercase(char32_t c, std::vector<char32_t>& out);

// Normalization producing (char, change) pairs exactly like unicode-normalization-alignments.
enum class NormForm { NFD, NFKD, NFC, NFKC };
void normalize_with_changes(std::string_view s, NormForm form, std::vector<std::pair<char32_t, int>>& out);
std::string normalize_string(std::string_view s, NormForm form);

// Extended grapheme clusters: byte ranges.
void graphemes(std::string_view s, std::vector<std::pair<size_t, size_t>>& out);

}  // namespace plugformer::tok
