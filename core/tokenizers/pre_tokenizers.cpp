// Pre-tokenizers of tokenizers/src/pre_tokenizers/*.rs.
#include "tokenizers/components.h"
#include "tokenizers/regex.h"
#include "tokenizers/unicode.h"

namespace plugformer::tok {

namespace {

SplitBehavior parse_behavior(const json& j, const std::string& path, SplitBehavior def) {
  auto it = j.find("behavior");
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_string()) json_error(path + ".behavior", "expected a string");
  std::string b = it->get<std::string>();
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  json_error(path + ".behavior", "unknown split behavior '" + b +
                                     "' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
}

// True when slicing n over its whole normalized range gives n back unchanged.
bool whole_slice_is_identity(const NormalizedString& n) {
  auto r = n.convert_normalized(0, n.len());
  return r && r->first == 0 && r->second == n.len_original();
}

template <typename Pred>
void split_on_fn(PreTokenizedString& p, Pred&& pred, SplitBehavior behavior) {
  p.split([&](size_t, NormalizedString&& n, std::vector<Split>& out) {
    // Fast path: nothing matches and the behaviour keeps non-matching text whole.
    Matches m = find_matches_fn(n.get(), pred);
    if (m.size() == 1 && !m[0].second && whole_slice_is_identity(n)) {
      PreTokenizedString::push(out, std::move(n));
      return;
    }
    for (auto& piece : n.split(m, behavior)) PreTokenizedString::push(out, std::move(piece));
  });
}

// Whitespace split (Removed) then punctuation split (Isolated), done in one pass: slicing a
// slice equals slicing the parent over the composed range, so the pieces are the same.
class BertPreTokenizer : public PreTokenizer {
 public:
  void pre_tokenize(PreTokenizedString& p) const override {
    p.split([&](size_t, NormalizedString&& n, std::vector<Split>& out) {
      const std::string& s = n.get();
      std::vector<Offsets> pieces;
      size_t i = 0, start = 0;
      while (i < s.size()) {
        size_t b = i;
        char32_t c = utf8_next(s, i);
        if (is_whitespace(c)) {
          if (start < b) pieces.emplace_back(start, b);
          start = i;
        } else if (is_bert_punctuation(c)) {
          if (start < b) pieces.emplace_back(start, b);
          pieces.emplace_back(b, i);
          start = i;
        }
      }
      if (start < s.size()) pieces.emplace_back(start, s.size());
      if (pieces.size() == 1 && pieces[0].first == 0 && pieces[0].second == s.size() && whole_slice_is_identity(n)) {
        PreTokenizedString::push(out, std::move(n));
        return;
      }
      for (auto [a, b] : pieces)
        if (auto piece = n.slice_normalized(a, b)) PreTokenizedString::push(out, std::move(*piece));
    });
  }
};

class WhitespaceSplit : public PreTokenizer {
 public:
  void pre_tokenize(PreTokenizedString& p) const override {
    split_on_fn(p, [](char32_t c) { return is_whitespace(c); }, SplitBehavior::Removed);
  }
};

class Whitespace : public PreTokenizer {
 public:
  Whitespace() : re_(R"(\w+|[^\w\s]+)", "Whitespace") {}
  void pre_tokenize(PreTokenizedString& p) const override {
    p.split([&](size_t, NormalizedString&& n, std::vector<Split>& out) {
      Matches m = re_.find_matches(n.get());
      invert(m);
      for (auto& piece : n.split(m, SplitBehavior::Removed)) PreTokenizedString::push(out, std::move(piece));
    });
  }

 private:
  Regex re_;
};

class Punctuation : public PreTokenizer {
 public:
  explicit Punctuation(SplitBehavior b) : b_(b) {}
  void pre_tokenize(PreTokenizedString& p) const override {
    split_on_fn(p, [](char32_t c) { return is_bert_punctuation(c); }, b_);
  }

 private:
  SplitBehavior b_;
};

class Digits : public PreTokenizer {
 public:
  explicit Digits(bool individual) : individual_(individual) {}
  void pre_tokenize(PreTokenizedString& p) const override {
    split_on_fn(p, [](char32_t c) { return is_numeric(c); }, individual_ ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
  }

 private:
  bool individual_;
};

class CharDelimiterSplit : public PreTokenizer {
 public:
  explicit CharDelimiterSplit(char32_t d) : d_(d) {}
  void pre_tokenize(PreTokenizedString& p) const override {
    char32_t d = d_;
    split_on_fn(p, [d](char32_t c) { return c == d; }, SplitBehavior::Removed);
  }

 private:
  char32_t d_;
};

class FixedLength : public PreTokenizer {
 public:
  explicit FixedLength(size_t n) : n_(n) {}
  void pre_tokenize(PreTokenizedString& p) const override {
    p.split([&](size_t, NormalizedString&& n, std::vector<Split>& out) {
      const std::string& s = n.get();
      if (s.empty() || n_ == 0) return;
      size_t i = 0;
      while (i < s.size()) {
        size_t start = i;
        for (size_t k = 0; k < n_ && i < s.size(); ++k) i += utf8_len(static_cast<unsigned char>(s[i]));
        if (auto piece = n.slice_normalized(start, i)) PreTokenizedString::push(out, std::move(*piece));
      }
    });
  }

 private:
  size_t n_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::optional<std::string> literal, std::unique_ptr<Regex> re, SplitBehavior b, bool invert)
      : literal_(std::move(literal)), re_(std::move(re)), b_(b), invert_(invert) {}
  void pre_tokenize(PreTokenizedString& p) const override {
    p.split([&](size_t, NormalizedString&& n, std::vector<Split>& out) {
      Matches m = literal_ ? find_matches_str(n.get(), *literal_) : re_->find_matches(n.get());
      if (invert_) invert(m);
      for (auto& piece : n.split(m, b_)) PreTokenizedString::push(out, std::move(piece));
    });
  }

 private:
  std::optional<std::string> literal_;
  std::unique_ptr<Regex> re_;
  SplitBehavior b_;
  bool invert_;
};

enum class PrependScheme { First, Never, Always };

class Metaspace : public PreTokenizer {
 public:
  Metaspace(char32_t replacement, PrependScheme scheme, bool split)
      : replacement_(replacement), rep_(utf8_encode(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(PreTokenizedString& p) const override {
    p.split([&](size_t, NormalizedString&& n, std::vector<Split>& out) {
      Matches spaces = find_matches_fn(n.get(), [](char32_t c) { return c == U' '; });
      bool any = false;
      for (auto& m : spaces)
        if (m.second) any = true;
      if (any) n.replace(spaces, rep_);
      bool starts = n.get().compare(0, rep_.size(), rep_) == 0;
      if (scheme_ == PrependScheme::Always) {
        if (!starts) n.prepend(rep_);
      } else if (scheme_ == PrependScheme::First) {
        if (!starts && n.offsets_original().first == 0) n.prepend(rep_);
      }
      if (split_) {
        char32_t r = replacement_;
        Matches m = find_matches_fn(n.get(), [r](char32_t c) { return c == r; });
        for (auto& piece : n.split(m, SplitBehavior::MergedWithNext)) PreTokenizedString::push(out, std::move(piece));
      } else {
        PreTokenizedString::push(out, std::move(n));
      }
    });
  }

 private:
  char32_t replacement_;
  std::string rep_;
  PrependScheme scheme_;
  bool split_;
};

const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void byte_level_transform(NormalizedString& n) { n.map_bytes(&byte_to_char_utf8(0)); }

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {
    if (use_regex_) re_ = std::make_unique<Regex>(kGpt2Pattern, "ByteLevel");
  }
  void pre_tokenize(PreTokenizedString& p) const override {
    p.split([&](size_t, NormalizedString&& n, std::vector<Split>& out) {
      if (add_prefix_space_ && (n.get().empty() || n.get()[0] != ' ')) n.prepend(" ");
      if (use_regex_) {
        Matches m = re_->find_matches(n.get());
        for (auto& piece : n.split(m, SplitBehavior::Isolated)) PreTokenizedString::push(out, std::move(piece));
      } else {
        PreTokenizedString::push(out, std::move(n));
      }
    });
    p.normalize([](NormalizedString& n) { byte_level_transform(n); });
  }

 private:
  bool add_prefix_space_, use_regex_;
  std::unique_ptr<Regex> re_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> v) : v_(std::move(v)) {}
  void pre_tokenize(PreTokenizedString& p) const override {
    for (const auto& x : v_) x->pre_tokenize(p);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> v_;
};

std::string infer_pre_tokenizer_type(const json& j) {
  if (j.contains("pretokenizers")) return "Sequence";
  if (j.contains("replacement")) return "Metaspace";
  if (j.contains("pattern")) return "Split";
  if (j.contains("add_prefix_space")) return "ByteLevel";
  if (j.contains("delimiter")) return "CharDelimiterSplit";
  if (j.contains("individual_digits")) return "Digits";
  return "";
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& path) {
  if (!j.is_object()) json_error(path, std::string("expected a pre-tokenizer object, got ") + j.type_name());
  std::string type = j.contains("type") ? jstring(j, "type", path, "") : infer_pre_tokenizer_type(j);
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplit>();
  if (type == "Whitespace") return std::make_unique<Whitespace>();
  if (type == "Punctuation") return std::make_unique<Punctuation>(parse_behavior(j, path, SplitBehavior::Isolated));
  if (type == "Digits") return std::make_unique<Digits>(jbool(j, "individual_digits", path, false));
  if (type == "CharDelimiterSplit" || type == "Delimiter") return std::make_unique<CharDelimiterSplit>(jchar(j, "delimiter", path, U' '));
  if (type == "FixedLength") return std::make_unique<FixedLength>(juint(j, "length", path, 5));
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(jbool(j, "add_prefix_space", path, true), jbool(j, "use_regex", path, true));
  if (type == "Metaspace") {
    char32_t rep = jchar(j, "replacement", path, U'\u2581');
    std::string scheme_s = jstring(j, "prepend_scheme", path, "always");
    PrependScheme scheme;
    if (scheme_s == "always") scheme = PrependScheme::Always;
    else if (scheme_s == "first") scheme = PrependScheme::First;
    else if (scheme_s == "never") scheme = PrependScheme::Never;
    else json_error(path + ".prepend_scheme", "unknown prepend_scheme '" + scheme_s + "' (expected first, always or never)");
    auto aps = j.find("add_prefix_space");
    if (aps != j.end() && aps->is_boolean() && !aps->get<bool>()) {
      if (scheme != PrependScheme::Never && j.contains("prepend_scheme"))
        json_error(path, "add_prefix_space does not match declared prepend_scheme");
      scheme = PrependScheme::Never;
    }
    return std::make_unique<Metaspace>(rep, scheme, jbool(j, "split", path, true));
  }
  if (type == "Split") {
    const json& pat = jfield(j, "pattern", path);
    SplitBehavior b = parse_behavior(j, path, SplitBehavior::Removed);
    if (!j.contains("behavior")) json_error(path, "missing field 'behavior'");
    bool inv = jbool(j, "invert", path, false);
    // A literal pattern is searched directly; the empty one goes through the regex engine, whose
    // empty matches (at every position) the library gets from regex::escape("").
    if (pat.is_object() && pat.contains("String") && pat["String"].is_string() && !pat["String"].get<std::string>().empty())
      return std::make_unique<SplitPreTokenizer>(pat["String"].get<std::string>(), nullptr, b, inv);
    if (pat.is_object() && pat.contains("String") && pat["String"].is_string())
      return std::make_unique<SplitPreTokenizer>(std::nullopt, std::make_unique<Regex>("", path + ".pattern"), b, inv);
    if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string())
      return std::make_unique<SplitPreTokenizer>(std::nullopt, std::make_unique<Regex>(pat["Regex"].get<std::string>(), path + ".pattern"), b, inv);
    json_error(path + ".pattern", "expected {\"String\": ...} or {\"Regex\": ...}");
  }
  if (type == "Sequence") {
    const json& arr = jfield(j, "pretokenizers", path);
    if (!arr.is_array()) json_error(path + ".pretokenizers", "expected an array");
    std::vector<std::unique_ptr<PreTokenizer>> v;
    for (size_t k = 0; k < arr.size(); ++k)
      v.push_back(make_pre_tokenizer(arr[k], path + ".pretokenizers[" + std::to_string(k) + "]"));
    return std::make_unique<SequencePreTokenizer>(std::move(v));
  }
  if (type.empty()) json_error(path, "pre-tokenizer has no 'type' and its fields match no known pre-tokenizer");
  json_error(path, "unknown pre-tokenizer type '" + type +
                       "' (expected one of BertPreTokenizer, ByteLevel, Whitespace, WhitespaceSplit, Metaspace, Split, "
                       "Punctuation, Digits, CharDelimiterSplit, FixedLength, Sequence)");
}

}  // namespace plugformer::tok
