// Normalizers of tokenizers/src/normalizers/*.rs.
#include <cstring>

#include "tokenizers/components.h"
#include "tokenizers/regex.h"
#include "tokenizers/unicode.h"

namespace plugformer::tok {

namespace {

bool all_ascii(const std::string& s) {
  for (unsigned char b : s)
    if (b >= 0x80) return false;
  return true;
}

// filter() that skips the identity transform when nothing would be removed.
template <typename Keep>
void filter_chars(NormalizedString& n, Keep&& keep) {
  const std::string& s = n.get();
  size_t i = 0;
  bool any = false;
  while (i < s.size()) {
    if (!keep(utf8_next(s, i))) {
      any = true;
      break;
    }
  }
  if (any) n.filter(keep);
}

template <typename F>
void map_chars(NormalizedString& n, F&& f) {
  const std::string& s = n.get();
  size_t i = 0;
  bool any = false;
  while (i < s.size()) {
    char32_t c = utf8_next(s, i);
    if (f(c) != c) {
      any = true;
      break;
    }
  }
  if (any) n.map(f);
}

bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

class BertNormalizer : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool chinese, std::optional<bool> strip_accents, bool lowercase)
      : clean_text_(clean_text), chinese_(chinese), strip_accents_(strip_accents.value_or(lowercase)), lowercase_(lowercase) {}
  void normalize(NormalizedString& n) const override {
    if (clean_text_) {
      filter_chars(n, [](char32_t c) {
        bool control = (c == '\t' || c == '\n' || c == '\r') ? false : is_other(c);
        return !(c == 0 || c == 0xFFFD || control);
      });
      map_chars(n, [](char32_t c) -> char32_t {
        bool ws = c == '\t' || c == '\n' || c == '\r' || is_whitespace(c);
        return ws ? U' ' : c;
      });
    }
    if (chinese_) {
      const std::string& s = n.get();
      bool any = false;
      if (!all_ascii(s)) {
        size_t i = 0;
        while (i < s.size())
          if (is_chinese_char(utf8_next(s, i))) {
            any = true;
            break;
          }
      }
      if (any) {
        std::vector<Change> changes;
        size_t i = 0;
        while (i < s.size()) {
          char32_t c = utf8_next(s, i);
          if (is_chinese_char(c)) {
            changes.emplace_back(U' ', 0);
            changes.emplace_back(c, 1);
            changes.emplace_back(U' ', 1);
          } else {
            changes.emplace_back(c, 0);
          }
        }
        n.transform(changes, 0);
      }
    }
    if (strip_accents_ && !all_ascii(n.get())) {
      n.nfd();
      filter_chars(n, [](char32_t c) { return !is_mark_nonspacing(c); });
    }
    if (lowercase_) n.lowercase();
  }

 private:
  bool clean_text_, chinese_, strip_accents_, lowercase_;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormForm f) : form_(f) {}
  void normalize(NormalizedString& n) const override {
    if (all_ascii(n.get())) return;  // every form is the identity on ASCII
    switch (form_) {
      case NormForm::NFD: n.nfd(); break;
      case NormForm::NFKD: n.nfkd(); break;
      case NormForm::NFC: n.nfc(); break;
      case NormForm::NFKC: n.nfkc(); break;
    }
  }

 private:
  NormForm form_;
};

class Lowercase : public Normalizer {
 public:
  void normalize(NormalizedString& n) const override { n.lowercase(); }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool l, bool r) : left_(l), right_(r) {}
  void normalize(NormalizedString& n) const override {
    if (left_ && right_)
      n.strip();
    else {
      if (left_) n.lstrip();
      if (right_) n.rstrip();
    }
  }

 private:
  bool left_, right_;
};

class StripAccents : public Normalizer {
 public:
  void normalize(NormalizedString& n) const override {
    filter_chars(n, [](char32_t c) { return !is_combining_mark(c); });
  }
};

class Nmt : public Normalizer {
 public:
  void normalize(NormalizedString& n) const override {
    filter_chars(n, [](char32_t c) {
      return !((c >= 0x1 && c <= 0x8) || c == 0xB || (c >= 0xE && c <= 0x1F) || c == 0x7F || c == 0x8F || c == 0x9F);
    });
    map_chars(n, [](char32_t c) -> char32_t {
      switch (c) {
        case 0x9: case 0xA: case 0xC: case 0xD: case 0x1680: case 0x2028: case 0x2029: case 0x2581: case 0xFEFF:
        case 0xFFFD:
          return U' ';
        default:
          if (c >= 0x200B && c <= 0x200F) return U' ';
          return c;
      }
    });
  }
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string p) : prepend_(std::move(p)) {}
  void normalize(NormalizedString& n) const override {
    if (!n.empty()) n.prepend(prepend_);
  }

 private:
  std::string prepend_;
};

class Replace : public Normalizer {
 public:
  Replace(std::optional<std::string> literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  void normalize(NormalizedString& n) const override {
    Matches m = literal_ ? find_matches_str(n.get(), *literal_) : regex_->find_matches(n.get());
    // A literal that never matches leaves the string untouched: skip the rebuild.
    bool any = false;
    for (auto& x : m)
      if (x.second) {
        any = true;
        break;
      }
    if (!any) return;
    n.replace(m, content_);
  }

 private:
  std::optional<std::string> literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class ByteLevelNormalizer : public Normalizer {
 public:
  void normalize(NormalizedString& n) const override {
    if (n.empty()) return;
    n.map_bytes(&byte_to_char_utf8(0));
  }
};

// The SentencePiece precompiled charsmap (spm_precompiled crate).
class Precompiled : public Normalizer {
 public:
  Precompiled(const std::string& blob, const std::string& path) {
    if (blob.size() < 4) json_error(path, "precompiled_charsmap is too short");
    uint32_t trie_size;
    std::memcpy(&trie_size, blob.data(), 4);
    size_t units = trie_size / 4;
    if (4 + static_cast<size_t>(units) * 4 > blob.size()) json_error(path, "precompiled_charsmap: trie size exceeds the data");
    array_.resize(units);
    for (size_t k = 0; k < units; ++k) {
      uint32_t u;
      std::memcpy(&u, blob.data() + 4 + k * 4, 4);
      array_[k] = u;
    }
    normalized_ = blob.substr(4 + units * 4);
    if (!utf8_valid(normalized_)) json_error(path, "precompiled_charsmap: normalized strings are not valid UTF-8");
    if (array_.empty()) json_error(path, "precompiled_charsmap: empty trie");
  }

  void normalize(NormalizedString& n) const override {
    const std::string& s = n.get();
    std::vector<Change> changes;
    changes.reserve(s.size());
    bool modified = false;
    std::vector<std::pair<size_t, size_t>> gs;
    graphemes(s, gs);
    for (auto [gb, ge] : gs) {
      std::string_view g(s.data() + gb, ge - gb);
      if (g.size() < 6) {
        if (auto norm = transform(g)) {
          modified = true;
          replace(changes, g, *norm);
          continue;
        }
      }
      size_t i = 0;
      while (i < g.size()) {
        size_t st = i;
        char32_t c = utf8_next(g, i);
        std::string_view part = g.substr(st, i - st);
        if (auto norm = transform(part)) {
          modified = true;
          replace(changes, part, *norm);
        } else {
          changes.emplace_back(c, 0);
        }
      }
    }
    if (modified) n.transform(changes, 0);
  }

 private:
  static bool has_leaf(uint64_t u) { return ((u >> 8) & 1) == 1; }
  static uint64_t value(uint64_t u) { return u & ((1ull << 31) - 1); }
  static uint64_t label(uint64_t u) { return u & ((1ull << 31) | 0xFF); }
  static uint64_t offset(uint64_t u) { return (u >> 10) << ((u & (1ull << 9)) >> 6); }

  std::optional<std::string_view> transform(std::string_view chunk) const {
    size_t node = 0;
    uint64_t unit = array_[node];
    node ^= offset(unit);
    for (unsigned char c : chunk) {
      if (c == 0) break;
      node ^= c;
      if (node >= array_.size()) return std::nullopt;
      unit = array_[node];
      if (label(unit) != c) return std::nullopt;
      node ^= offset(unit);
      if (node >= array_.size()) return std::nullopt;
      if (has_leaf(unit)) {
        size_t idx = value(array_[node]);
        // First (shortest) match wins, as in spm_precompiled's transform().
        if (idx > normalized_.size()) return std::nullopt;
        size_t e = idx;
        while (e < normalized_.size() && normalized_[e] != 0) ++e;
        return std::string_view(normalized_.data() + idx, e - idx);
      }
    }
    return std::nullopt;
  }

  static void replace(std::vector<Change>& changes, std::string_view old_part, std::string_view new_part) {
    long old_count = static_cast<long>(utf8_char_count(old_part));
    long new_count = static_cast<long>(utf8_char_count(new_part));
    long diff = new_count - old_count;
    size_t i = 0;
    while (i < new_part.size()) changes.emplace_back(utf8_next(new_part, i), 0);
    if (diff > 0) {
      long k = 0;
      for (auto it = changes.rbegin(); it != changes.rend() && k < diff; ++it, ++k) it->second = 1;
    } else if (diff < 0) {
      if (!changes.empty()) changes.back().second += static_cast<int>(diff);
    }
  }

  std::vector<uint64_t> array_;
  std::string normalized_;
};

std::string base64_decode(const std::string& in, const std::string& path) {
  static int T[256];
  static bool init = false;
  if (!init) {
    for (int& t : T) t = -1;
    const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int k = 0; k < 64; ++k) T[static_cast<unsigned char>(a[k])] = k;
    init = true;
  }
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t val = 0;
  int bits = -8;
  for (unsigned char c : in) {
    if (c == '=') break;
    if (T[c] < 0) json_error(path, "precompiled_charsmap is not valid base64");
    val = (val << 6) + static_cast<uint32_t>(T[c]);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xFF));
      bits -= 8;
    }
  }
  return out;
}

std::string infer_normalizer_type(const json& j) {
  if (j.contains("clean_text")) return "BertNormalizer";
  if (j.contains("strip_left")) return "Strip";
  if (j.contains("normalizers")) return "Sequence";
  if (j.contains("precompiled_charsmap")) return "Precompiled";
  if (j.contains("pattern") && j.contains("content")) return "Replace";
  if (j.contains("prepend")) return "Prepend";
  return "";
}

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> v) : v_(std::move(v)) {}
  void normalize(NormalizedString& n) const override {
    for (const auto& x : v_) x->normalize(n);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> v_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& path) {
  if (!j.is_object()) json_error(path, std::string("expected a normalizer object, got ") + j.type_name());
  std::string type = j.contains("type") ? jstring(j, "type", path, "") : infer_normalizer_type(j);
  if (type == "BertNormalizer" || type == "Bert") {
    std::optional<bool> strip;
    if (j.contains("strip_accents") && !j["strip_accents"].is_null()) strip = jbool(j, "strip_accents", path, false);
    return std::make_unique<BertNormalizer>(jbool(j, "clean_text", path, true), jbool(j, "handle_chinese_chars", path, true),
                                            strip, jbool(j, "lowercase", path, true));
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormForm::NFKD);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Strip") return std::make_unique<StripNormalizer>(jbool(j, "strip_left", path, false), jbool(j, "strip_right", path, false));
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Nmt") return std::make_unique<Nmt>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "Prepend") {
    const json& p = jfield(j, "prepend", path);
    if (!p.is_string()) json_error(path + ".prepend", "expected a string");
    return std::make_unique<Prepend>(p.get<std::string>());
  }
  if (type == "Replace") {
    const json& pat = jfield(j, "pattern", path);
    const json& content = jfield(j, "content", path);
    if (!content.is_string()) json_error(path + ".content", "expected a string");
    // A literal pattern is searched directly; the empty one goes through the regex engine, whose
    // empty matches (at every position) the library gets from regex::escape("").
    if (pat.is_object() && pat.contains("String") && pat["String"].is_string() && !pat["String"].get<std::string>().empty())
      return std::make_unique<Replace>(pat["String"].get<std::string>(), nullptr, content.get<std::string>());
    if (pat.is_object() && pat.contains("String") && pat["String"].is_string())
      return std::make_unique<Replace>(std::nullopt, std::make_unique<Regex>("", path + ".pattern"), content.get<std::string>());
    if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string())
      return std::make_unique<Replace>(std::nullopt, std::make_unique<Regex>(pat["Regex"].get<std::string>(), path + ".pattern"),
                                       content.get<std::string>());
    json_error(path + ".pattern", "expected {\"String\": ...} or {\"Regex\": ...}");
  }
  if (type == "Precompiled") {
    const json& b = jfield(j, "precompiled_charsmap", path);
    if (!b.is_string()) json_error(path + ".precompiled_charsmap", "expected a base64 string");
    return std::make_unique<Precompiled>(base64_decode(b.get<std::string>(), path), path);
  }
  if (type == "Sequence") {
    const json& arr = jfield(j, "normalizers", path);
    if (!arr.is_array()) json_error(path + ".normalizers", "expected an array");
    std::vector<std::unique_ptr<Normalizer>> v;
    for (size_t k = 0; k < arr.size(); ++k) v.push_back(make_normalizer(arr[k], path + ".normalizers[" + std::to_string(k) + "]"));
    return std::make_unique<SequenceNormalizer>(std::move(v));
  }
  if (type.empty()) json_error(path, "normalizer has no 'type' and its fields match no known normalizer");
  json_error(path, "unknown normalizer type '" + type +
                       "' (expected one of BertNormalizer, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Nmt, "
                       "Replace, Prepend, Precompiled, ByteLevel, Sequence)");
}

}  // namespace plugformer::tok
