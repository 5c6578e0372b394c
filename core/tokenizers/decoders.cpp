// Decoders of tokenizers/src/decoders (+ the ByteLevel and Metaspace decoders) and the
// ByteLevel byte <-> char tables.
#include <array>

#include "tokenizers/components.h"
#include "tokenizers/regex.h"
#include "tokenizers/unicode.h"

namespace plugformer::tok {

namespace {
struct ByteTables {
  std::array<std::string, 256> to_char;
  std::array<char32_t, 256> to_cp;
  std::unordered_map<char32_t, int> from_char;
  ByteTables() {
    std::vector<int> bs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    std::vector<char32_t> cs(bs.begin(), bs.end());
    std::vector<bool> in(256, false);
    for (int b : bs) in[static_cast<size_t>(b)] = true;
    char32_t n = 0;
    for (int b = 0; b < 256; ++b)
      if (!in[static_cast<size_t>(b)]) {
        bs.push_back(b);
        cs.push_back(256 + n);
        ++n;
      }
    for (size_t k = 0; k < bs.size(); ++k) {
      to_cp[static_cast<size_t>(bs[k])] = cs[k];
      to_char[static_cast<size_t>(bs[k])] = utf8_encode(cs[k]);
      from_char[cs[k]] = bs[k];
    }
  }
};
const ByteTables& tables() {
  static const ByteTables t;
  return t;
}
}  // namespace

const std::string& byte_to_char_utf8(unsigned char b) { return tables().to_char[b]; }
int char_to_byte(char32_t c) {
  const auto& m = tables().from_char;
  auto it = m.find(c);
  return it == m.end() ? -1 : it->second;
}

namespace {

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t f = s.find(from, pos);
    if (f == std::string::npos) break;
    out.append(s, pos, f - pos);
    out.append(to);
    pos = f + from.size();
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

std::string wordpiece_cleanup(std::string s) {
  replace_all(s, " .", ".");
  replace_all(s, " ?", "?");
  replace_all(s, " !", "!");
  replace_all(s, " ,", ",");
  replace_all(s, " ' ", "'");
  replace_all(s, " n't", "n't");
  replace_all(s, " 'm", "'m");
  replace_all(s, " do not", " don't");
  replace_all(s, " 's", "'s");
  replace_all(s, " 've", "'ve");
  replace_all(s, " 're", "'re");
  return s;
}

class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      size_t start = bytes.size();
      bool ok = true;
      size_t i = 0;
      while (i < t.size()) {
        int b = char_to_byte(utf8_next(t, i));
        if (b < 0) {
          ok = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      if (!ok) {
        bytes.resize(start);
        bytes += t;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class WordPieceDecoder : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup) : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (i != 0) {
        if (t.compare(0, prefix_.size(), prefix_) == 0)
          t.erase(0, prefix_.size());
        else
          t.insert(0, " ");
      }
      if (cleanup_) t = wordpiece_cleanup(std::move(t));
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(char32_t rep, bool prepend_never) : rep_(rep), never_(prepend_never) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      size_t k = 0;
      while (k < t.size()) {
        size_t st = k;
        char32_t c = utf8_next(t, k);
        if (c == rep_) {
          if (!(i == 0 && !never_)) out.push_back(' ');
        } else {
          out.append(t, st, k - st);
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  char32_t rep_;
  bool never_;
};

class BPEDecoder : public Decoder {
 public:
  explicit BPEDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) replace_all(tokens[i], suffix_, i + 1 == tokens.size() ? "" : " ");
  }

 private:
  std::string suffix_;
};

class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&]() {
      if (pending.empty()) return;
      if (utf8_valid(pending)) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    for (auto& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        int h = hex(t[3]), l = hex(t[4]);
        if (h >= 0 && l >= 0) byte = h * 16 + l;
      }
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string s;
    for (auto& t : tokens) s += t;
    tokens.assign(1, std::move(s));
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t c, size_t start, size_t stop) : c_(c), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<std::pair<size_t, size_t>> chars;  // byte ranges
      std::vector<char32_t> cps;
      size_t k = 0;
      while (k < t.size()) {
        size_t st = k;
        cps.push_back(utf8_next(t, k));
        chars.emplace_back(st, k);
      }
      size_t start_cut = 0;
      for (size_t i = 0; i < std::min(start_, cps.size()); ++i) {
        if (cps[i] == c_)
          start_cut = i + 1;
        else
          break;
      }
      size_t stop_cut = cps.size();
      for (size_t i = 0; i < stop_ && i < cps.size(); ++i) {
        size_t index = cps.size() - i - 1;
        if (cps[index] == c_)
          stop_cut = index;
        else
          break;
      }
      if (stop_cut <= start_cut) {
        t.clear();
        continue;
      }
      size_t b0 = start_cut < chars.size() ? chars[start_cut].first : t.size();
      size_t b1 = stop_cut < chars.size() ? chars[stop_cut].first : t.size();
      t = t.substr(b0, b1 - b0);
    }
  }

 private:
  char32_t c_;
  size_t start_, stop_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::optional<std::string> literal, std::unique_ptr<Regex> re, std::string content)
      : literal_(std::move(literal)), re_(std::move(re)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      Matches m = literal_ ? find_matches_str(t, *literal_) : re_->find_matches(t);
      std::string out;
      for (auto& [off, is_match] : m) {
        if (is_match)
          out += content_;
        else if (off.second <= t.size() && off.first <= off.second)
          out.append(t, off.first, off.second - off.first);
      }
      t = std::move(out);
    }
  }

 private:
  std::optional<std::string> literal_;
  std::unique_ptr<Regex> re_;
  std::string content_;
};

class CTCDecoder : public Decoder {
 public:
  CTCDecoder(std::string pad, std::string delim, bool cleanup) : pad_(std::move(pad)), delim_(std::move(delim)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0 && tokens[i] == tokens[i - 1]) continue;  // dedup consecutive
      std::string r = tokens[i];
      replace_all(r, pad_, "");
      if (cleanup_) {
        r = wordpiece_cleanup(std::move(r));
        replace_all(r, delim_, " ");
      }
      if (!r.empty()) out.push_back(std::move(r));
    }
    tokens = std::move(out);
  }

 private:
  std::string pad_, delim_;
  bool cleanup_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> v) : v_(std::move(v)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& d : v_) d->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> v_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& path) {
  if (!j.is_object()) json_error(path, std::string("expected a decoder object, got ") + j.type_name());
  std::string type = jstring(j, "type", path, "");
  if (type.empty()) {
    if (j.contains("decoders")) type = "Sequence";
    else if (j.contains("suffix")) type = "BPEDecoder";
    else if (j.contains("replacement")) type = "Metaspace";
    else if (j.contains("prefix")) type = "WordPiece";
    else if (j.contains("word_delimiter_token")) type = "CTC";
    else if (j.contains("add_prefix_space")) type = "ByteLevel";
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "WordPiece") return std::make_unique<WordPieceDecoder>(jstring(j, "prefix", path, "##"), jbool(j, "cleanup", path, true));
  if (type == "Metaspace") {
    char32_t rep = jchar(j, "replacement", path, U'\u2581');
    std::string scheme = jstring(j, "prepend_scheme", path, "always");
    bool never = scheme == "never";
    auto aps = j.find("add_prefix_space");
    if (aps != j.end() && aps->is_boolean() && !aps->get<bool>()) never = true;
    if (scheme != "always" && scheme != "first" && scheme != "never")
      json_error(path + ".prepend_scheme", "unknown prepend_scheme '" + scheme + "' (expected first, always or never)");
    return std::make_unique<MetaspaceDecoder>(rep, never);
  }
  if (type == "BPEDecoder") return std::make_unique<BPEDecoder>(jstring(j, "suffix", path, "</w>"));
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip")
    return std::make_unique<StripDecoder>(jchar(j, "content", path, U' '), juint(j, "start", path, 0), juint(j, "stop", path, 0));
  if (type == "CTC")
    return std::make_unique<CTCDecoder>(jstring(j, "pad_token", path, "<pad>"), jstring(j, "word_delimiter_token", path, "|"),
                                        jbool(j, "cleanup", path, true));
  if (type == "Replace") {
    const json& pat = jfield(j, "pattern", path);
    const json& content = jfield(j, "content", path);
    if (!content.is_string()) json_error(path + ".content", "expected a string");
    // A literal pattern is searched directly; the empty one goes through the regex engine, whose
    // empty matches (at every position) the library gets from regex::escape("").
    if (pat.is_object() && pat.contains("String") && pat["String"].is_string() && !pat["String"].get<std::string>().empty())
      return std::make_unique<ReplaceDecoder>(pat["String"].get<std::string>(), nullptr, content.get<std::string>());
    if (pat.is_object() && pat.contains("String") && pat["String"].is_string())
      return std::make_unique<ReplaceDecoder>(std::nullopt, std::make_unique<Regex>("", path + ".pattern"), content.get<std::string>());
    if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string())
      return std::make_unique<ReplaceDecoder>(std::nullopt, std::make_unique<Regex>(pat["Regex"].get<std::string>(), path + ".pattern"),
                                              content.get<std::string>());
    json_error(path + ".pattern", "expected {\"String\": ...} or {\"Regex\": ...}");
  }
  if (type == "Sequence") {
    const json& arr = jfield(j, "decoders", path);
    if (!arr.is_array()) json_error(path + ".decoders", "expected an array");
    std::vector<std::unique_ptr<Decoder>> v;
    for (size_t k = 0; k < arr.size(); ++k) v.push_back(make_decoder(arr[k], path + ".decoders[" + std::to_string(k) + "]"));
    return std::make_unique<SequenceDecoder>(std::move(v));
  }
  if (type.empty()) json_error(path, "decoder has no 'type' and its fields match no known decoder");
  json_error(path, "unknown decoder type '" + type +
                       "' (expected one of ByteLevel, WordPiece, Metaspace, BPEDecoder, ByteFallback, Fuse, Strip, Replace, "
                       "CTC, Sequence)");
}

}  // namespace plugformer::tok
