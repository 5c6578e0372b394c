// NormalizedString / PreTokenizedString: a string being normalized and split, keeping for every
// byte of the normalized text the byte range of the original text it comes from (the Rust
// library's tokenizer/normalizer.rs and pre_tokenizer.rs, same algorithms, same quirks).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizers/unicode.h"

namespace plugformer::tok {

using Offsets = std::pair<size_t, size_t>;
using Change = std::pair<char32_t, int>;  // (char, +1 inserted / 0 replaced / -n replaced and n removed)

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// A list of ((start, end), is_match) covering the whole input, as Pattern::find_matches gives.
using Matches = std::vector<std::pair<Offsets, bool>>;

struct Token {
  uint32_t id;
  std::string value;
  Offsets offsets;  // bytes, in the normalized string given to the model
};

class NormalizedString {
 public:
  NormalizedString() = default;
  // `s` must outlive this object and its slices: the original text is kept as a view into it
  // (every slice's original is a substring of it at original_shift).
  explicit NormalizedString(std::string_view s);

  const std::string& get() const { return normalized_; }
  std::string_view get_original() const { return root_.substr(original_shift_, original_len_); }
  size_t len() const { return normalized_.size(); }
  size_t len_original() const { return original_len_; }
  bool empty() const { return normalized_.empty(); }
  Offsets offsets_original() const { return {original_shift_, original_shift_ + original_len_}; }

  // Normalized byte range -> original byte range (relative to this string's original).
  std::optional<Offsets> convert_normalized(size_t start, size_t end) const;
  // Original byte range -> normalized byte range.
  std::optional<Offsets> convert_original(size_t start, size_t end) const;

  std::optional<NormalizedString> slice_normalized(size_t start, size_t end) const;

  void transform_range_normalized(size_t n_start, size_t n_end, const std::vector<Change>& dest, size_t initial_offset);
  void transform(const std::vector<Change>& dest, size_t initial_offset);

  void nfd();
  void nfkd();
  void nfc();
  void nfkc();
  template <typename Keep>
  void filter(Keep&& keep);
  template <typename Map>
  void map(Map&& f);
  void lowercase();
  void prepend(std::string_view s);
  void replace(const Matches& matches, std::string_view content);
  // ByteLevel: every byte b of the text becomes table[b] (a UTF-8 char), i.e. transform() with
  // changes [0, +1, +1, ...] for the bytes of each char, done without the intermediate list.
  void map_bytes(const std::string* table);
  void lstrip() { lrstrip(true, false); }
  void rstrip() { lrstrip(false, true); }
  void strip() { lrstrip(true, true); }

  // Splits on matches with the given behavior; empty pieces are kept (the caller drops them).
  std::vector<NormalizedString> split(const Matches& matches, SplitBehavior behavior) const;

 private:
  void lrstrip(bool left, bool right);
  void apply_unicode(int form);

  std::string_view root_;
  size_t original_len_ = 0;
  std::string normalized_;
  std::vector<std::pair<uint32_t, uint32_t>> alignments_;
  size_t original_shift_ = 0;
};

template <typename Keep>
void NormalizedString::filter(Keep&& keep) {
  int removed = 0;
  size_t removed_start = 0;
  std::vector<Change> transforms;
  transforms.reserve(normalized_.size());
  bool has_last = false;
  char32_t last_c = 0;
  size_t i = 0;
  while (i < normalized_.size()) {
    size_t j = i;
    char32_t c;
    {
      unsigned char b = static_cast<unsigned char>(normalized_[i]);
      if (b < 0x80) {
        c = b;
        j = i + 1;
      } else {
        c = utf8_next(normalized_, j);
      }
    }
    i = j;
    if (keep(c)) {
      if (has_last) {
        transforms.emplace_back(last_c, -removed);
      } else {
        removed_start = static_cast<size_t>(removed);
      }
      last_c = c;
      has_last = true;
      removed = 0;
    } else {
      ++removed;
    }
  }
  if (has_last) transforms.emplace_back(last_c, -removed);
  transform(transforms, removed_start);
}

template <typename Map>
void NormalizedString::map(Map&& f) {
  std::vector<Change> transforms;
  transforms.reserve(normalized_.size());
  size_t i = 0;
  while (i < normalized_.size()) transforms.emplace_back(f(utf8_next(normalized_, i)), 0);
  transform(transforms, 0);
}

// Split of a pre-tokenized string: a normalized piece and, once tokenized, its tokens.
struct Split {
  NormalizedString normalized;
  std::optional<std::vector<Token>> tokens;
};

class PreTokenizedString {
 public:
  explicit PreTokenizedString(std::string_view s);  // `s` must outlive this object

  // Applies fn to every split that has no tokens yet; fn returns the replacement pieces.
  template <typename Fn>
  void split(Fn&& fn) {
    std::vector<Split> out;
    out.reserve(splits_.size());
    for (size_t i = 0; i < splits_.size(); ++i) {
      Split& s = splits_[i];
      if (s.tokens) {
        out.push_back(std::move(s));
        continue;
      }
      fn(i, std::move(s.normalized), out);
    }
    splits_ = std::move(out);
  }
  // Helper for fn: pushes a piece unless empty.
  static void push(std::vector<Split>& out, NormalizedString&& n, std::optional<std::vector<Token>> tokens = std::nullopt) {
    if (n.empty()) return;
    out.push_back(Split{std::move(n), std::move(tokens)});
  }

  template <typename Fn>
  void normalize(Fn&& fn) {
    for (auto& s : splits_)
      if (!s.tokens) fn(s.normalized);
  }

  std::vector<Split>& splits() { return splits_; }
  std::string_view original() const { return original_; }

 private:
  std::string_view original_;  // the caller's text; must outlive this object
  std::vector<Split> splits_;
};

// Pattern helpers (Pattern::find_matches of the Rust library).
template <typename Pred>
Matches find_matches_fn(std::string_view s, Pred&& pred) {
  Matches m;
  if (s.empty()) {
    m.push_back({{0, 0}, false});
    return m;
  }
  size_t last_offset = 0, last_seen = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t b = i;
    char32_t c = utf8_next(s, i);
    last_seen = i;
    if (pred(c)) {
      if (last_offset < b) m.push_back({{last_offset, b}, false});
      m.push_back({{b, i}, true});
      last_offset = i;
    }
  }
  if (last_seen > last_offset) m.push_back({{last_offset, last_seen}, false});
  return m;
}
Matches find_matches_str(std::string_view s, std::string_view needle);
inline void invert(Matches& m) {
  for (auto& x : m) x.second = !x.second;
}

}  // namespace plugformer::tok
