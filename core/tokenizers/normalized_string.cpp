#include "tokenizers/normalized_string.h"

#include <algorithm>

namespace plugformer::tok {

NormalizedString::NormalizedString(std::string_view s) : root_(s), original_len_(s.size()), normalized_(s) {
  alignments_.resize(normalized_.size());
  size_t i = 0;
  const size_t n = normalized_.size();
  while (i < n) {
    size_t l = utf8_len(static_cast<unsigned char>(normalized_[i]));
    if (i + l > n) l = n - i;
    for (size_t k = 0; k < l; ++k) alignments_[i + k] = {static_cast<uint32_t>(i), static_cast<uint32_t>(i + l)};
    i += l;
  }
}

std::optional<Offsets> NormalizedString::convert_normalized(size_t start, size_t end) const {
  if (start == end) return Offsets{start, end};
  if (start > end) return std::nullopt;
  if (end > alignments_.size()) return std::nullopt;
  return Offsets{alignments_[start].first, alignments_[end - 1].second};
}

std::optional<Offsets> NormalizedString::convert_original(size_t start, size_t end) const {
  if (start == end) return Offsets{start, end};
  if (start > end) return std::nullopt;
  std::optional<size_t> s, e;
  for (size_t i = 0; i < alignments_.size(); ++i) {
    const auto& a = alignments_[i];
    if (!(end >= a.second)) break;
    if (!s && start <= a.first && a.first != a.second) s = i;
    e = i + 1;
  }
  if (s && !e) return Offsets{*s, *s};
  if (!s && e) return Offsets{*e, *e};
  if (s && e) return Offsets{*s, *e};
  return std::nullopt;
}

static bool is_boundary(const std::string& s, size_t i) {
  if (i == 0 || i == s.size()) return true;
  if (i > s.size()) return false;
  return (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80;
}

std::optional<NormalizedString> NormalizedString::slice_normalized(size_t start, size_t end) const {
  if (start > end || !is_boundary(normalized_, start) || !is_boundary(normalized_, end)) return std::nullopt;
  auto orig = convert_normalized(start, end);
  if (!orig) return std::nullopt;
  if (end > alignments_.size()) return std::nullopt;
  NormalizedString out;
  size_t os = orig->first, oe = orig->second;
  auto orig_boundary = [&](size_t i) {
    if (i == 0 || i == original_len_) return true;
    if (i > original_len_) return false;
    return (static_cast<unsigned char>(root_[original_shift_ + i]) & 0xC0) != 0x80;
  };
  out.root_ = root_;
  if (os <= oe && oe <= original_len_ && orig_boundary(os) && orig_boundary(oe)) out.original_len_ = oe - os;
  out.normalized_ = normalized_.substr(start, end - start);
  const uint32_t shift = static_cast<uint32_t>(os);
  out.alignments_.resize(end - start);
  for (size_t i = start; i < end; ++i)
    out.alignments_[i - start] = {alignments_[i].first - shift, alignments_[i].second - shift};
  out.original_shift_ = original_shift_ + os;
  return out;
}

void NormalizedString::transform_range_normalized(size_t n_start, size_t n_end, const std::vector<Change>& dest,
                                                  size_t initial_offset) {
  size_t rp = n_start;
  auto next_replaced = [&]() -> size_t {
    if (rp >= n_end) return 0;
    size_t l = utf8_len(static_cast<unsigned char>(normalized_[rp]));
    rp += l;
    return l;
  };
  size_t initial_removed = 0;
  for (size_t k = 0; k < initial_offset; ++k) initial_removed += next_replaced();
  size_t offset = initial_removed + n_start;
  std::string new_norm;
  new_norm.reserve(dest.size() + 8);
  std::vector<std::pair<uint32_t, uint32_t>> new_align;
  new_align.reserve(dest.size() + 8);
  for (const auto& [c, changes] : dest) {
    size_t idx = offset;
    std::pair<uint32_t, uint32_t> align;
    if (changes > 0) {
      align = idx < 1 ? std::pair<uint32_t, uint32_t>{0, 0}
                      : (idx - 1 < alignments_.size() ? alignments_[idx - 1] : alignments_.back());
    } else {
      align = idx < alignments_.size() ? alignments_[idx]
                                       : (alignments_.empty() ? std::pair<uint32_t, uint32_t>{0, 0} : alignments_.back());
    }
    size_t replaced = changes <= 0 ? next_replaced() : 0;
    size_t removed = 0;
    if (changes < 0)
      for (int k = 0; k < -changes; ++k) removed += next_replaced();
    offset += replaced + removed;
    size_t before = new_norm.size();
    utf8_append(new_norm, c);
    for (size_t k = before; k < new_norm.size(); ++k) new_align.push_back(align);
  }
  alignments_.erase(alignments_.begin() + static_cast<std::ptrdiff_t>(n_start),
                    alignments_.begin() + static_cast<std::ptrdiff_t>(n_end));
  alignments_.insert(alignments_.begin() + static_cast<std::ptrdiff_t>(n_start), new_align.begin(), new_align.end());
  normalized_.replace(n_start, n_end - n_start, new_norm);
}

void NormalizedString::transform(const std::vector<Change>& dest, size_t initial_offset) {
  auto r = convert_original(0, original_len_);
  if (!r) return;
  transform_range_normalized(r->first, r->second, dest, initial_offset);
}

void NormalizedString::apply_unicode(int form) {
  std::vector<Change> changes;
  changes.reserve(normalized_.size());
  normalize_with_changes(normalized_, static_cast<NormForm>(form), changes);
  transform(changes, 0);
}
void NormalizedString::nfd() { apply_unicode(static_cast<int>(NormForm::NFD)); }
void NormalizedString::nfkd() { apply_unicode(static_cast<int>(NormForm::NFKD)); }
void NormalizedString::nfc() { apply_unicode(static_cast<int>(NormForm::NFC)); }
void NormalizedString::nfkc() { apply_unicode(static_cast<int>(NormForm::NFKC)); }

void NormalizedString::map_bytes(const std::string* table) {
  auto r = convert_original(0, original_len_);
  if (!r) return;
  if (r->first != 0 || r->second != normalized_.size()) {
    std::vector<Change> changes;
    size_t i = 0;
    while (i < normalized_.size()) {
      size_t l = utf8_len(static_cast<unsigned char>(normalized_[i]));
      for (size_t k = 0; k < l && i + k < normalized_.size(); ++k) {
        const std::string& m = table[static_cast<unsigned char>(normalized_[i + k])];
        size_t z = 0;
        changes.emplace_back(utf8_next(m, z), k > 0 ? 1 : 0);
      }
      i += l;
    }
    transform(changes, 0);
    return;
  }
  std::string out;
  out.reserve(normalized_.size() * 2);
  std::vector<std::pair<uint32_t, uint32_t>> al;
  al.reserve(normalized_.size() * 2);
  const size_t n = normalized_.size();
  size_t i = 0;
  while (i < n) {
    size_t l = std::min(utf8_len(static_cast<unsigned char>(normalized_[i])), n - i);
    const auto first = alignments_[i];
    const auto rest = alignments_[i + l - 1];
    for (size_t k = 0; k < l; ++k) {
      const std::string& m = table[static_cast<unsigned char>(normalized_[i + k])];
      out.append(m);
      al.insert(al.end(), m.size(), k == 0 ? first : rest);
    }
    i += l;
  }
  normalized_ = std::move(out);
  alignments_ = std::move(al);
}

void NormalizedString::lowercase() {
  // Fast path: ASCII-only strings keep their byte layout, so alignments do not change.
  bool ascii = true;
  for (unsigned char b : normalized_)
    if (b >= 0x80) {
      ascii = false;
      break;
    }
  if (ascii) {
    auto r = convert_original(0, original_len_);
    if (!r || r->first != 0 || r->second != normalized_.size()) ascii = false;
  }
  if (ascii) {
    for (auto& ch : normalized_)
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch + 32);
    return;
  }
  std::vector<Change> changes;
  changes.reserve(normalized_.size());
  std::vector<char32_t> lower;
  size_t i = 0;
  while (i < normalized_.size()) {
    char32_t c = utf8_next(normalized_, i);
    lower.clear();
    to_lowercase(c, lower);
    for (size_t k = 0; k < lower.size(); ++k) changes.emplace_back(lower[k], k > 0 ? 1 : 0);
  }
  transform(changes, 0);
}

void NormalizedString::prepend(std::string_view s) {
  if (normalized_.empty()) return;
  size_t i = 0;
  char32_t next = utf8_next(normalized_, i);
  std::vector<Change> changes;
  size_t k = 0, idx = 0;
  while (k < s.size()) {
    char32_t c = utf8_next(s, k);
    changes.emplace_back(c, idx != 0 ? 1 : 0);
    ++idx;
  }
  changes.emplace_back(next, 1);
  transform_range_normalized(0, i, changes, 0);
}

void NormalizedString::replace(const Matches& matches, std::string_view content) {
  std::string new_norm;
  new_norm.reserve(normalized_.size());
  std::vector<std::pair<uint32_t, uint32_t>> new_align;
  new_align.reserve(alignments_.size());
  size_t last_end = 0;
  std::vector<char32_t> content_chars;
  {
    size_t k = 0;
    while (k < content.size()) content_chars.push_back(utf8_next(content, k));
  }
  for (const auto& [off, is_match] : matches) {
    if (!is_match) continue;
    size_t start = off.first, end = off.second;
    new_norm.append(normalized_, last_end, start - last_end);
    new_align.insert(new_align.end(), alignments_.begin() + static_cast<std::ptrdiff_t>(last_end),
                     alignments_.begin() + static_cast<std::ptrdiff_t>(start));
    // All inserted chars share the alignment of the byte before `end` (see the Rust code).
    std::pair<uint32_t, uint32_t> align = end < 1 ? std::pair<uint32_t, uint32_t>{0, 0} : alignments_[end - 1];
    for (char32_t c : content_chars) {
      size_t before = new_norm.size();
      utf8_append(new_norm, c);
      for (size_t k = before; k < new_norm.size(); ++k) new_align.push_back(align);
    }
    last_end = end;
  }
  new_norm.append(normalized_, last_end, std::string::npos);
  new_align.insert(new_align.end(), alignments_.begin() + static_cast<std::ptrdiff_t>(last_end), alignments_.end());
  normalized_ = std::move(new_norm);
  alignments_ = std::move(new_align);
}

void NormalizedString::lrstrip(bool left, bool right) {
  std::vector<char32_t> chars;
  size_t i = 0;
  while (i < normalized_.size()) chars.push_back(utf8_next(normalized_, i));
  size_t leading = 0, trailing = 0;
  if (left)
    while (leading < chars.size() && is_whitespace(chars[leading])) ++leading;
  if (right)
    while (trailing < chars.size() && is_whitespace(chars[chars.size() - 1 - trailing])) ++trailing;
  if (leading == 0 && trailing == 0) return;
  const size_t count = chars.size();
  std::vector<Change> changes;
  for (size_t k = 0; k < count; ++k) {
    if (k < leading || k >= count - trailing) continue;
    // The Rust code compares the char index with the *byte* length here; for the last kept char
    // the effect is the same, and any other position only changes alignments of removed chars.
    if (k == normalized_.size() - trailing - 1)
      changes.emplace_back(chars[k], -static_cast<int>(trailing));
    else
      changes.emplace_back(chars[k], 0);
  }
  transform(changes, leading);
}

std::vector<NormalizedString> NormalizedString::split(const Matches& matches, SplitBehavior behavior) const {
  std::vector<std::pair<Offsets, bool>> splits;  // (offsets, remove)
  splits.reserve(matches.size());
  switch (behavior) {
    case SplitBehavior::Isolated:
      for (const auto& m : matches) splits.push_back({m.first, false});
      break;
    case SplitBehavior::Removed:
      splits = matches;
      break;
    case SplitBehavior::Contiguous: {
      bool prev = false;
      for (const auto& [off, is_match] : matches) {
        if (is_match == prev) {
          if (!splits.empty())
            splits.back().first.second = off.second;
          else
            splits.push_back({off, false});
        } else {
          splits.push_back({off, false});
        }
        prev = is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithPrevious: {
      bool prev = false;
      for (const auto& [off, is_match] : matches) {
        if (is_match && !prev) {
          if (!splits.empty())
            splits.back().first.second = off.second;
          else
            splits.push_back({off, false});
        } else {
          splits.push_back({off, false});
        }
        prev = is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool prev = false;
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        const auto& [off, is_match] = *it;
        if (is_match && !prev) {
          if (!splits.empty())
            splits.back().first.first = off.first;
          else
            splits.push_back({off, false});
        } else {
          splits.push_back({off, false});
        }
        prev = is_match;
      }
      std::reverse(splits.begin(), splits.end());
      break;
    }
  }
  std::vector<NormalizedString> out;
  out.reserve(splits.size());
  for (const auto& [off, remove] : splits) {
    if (remove) continue;
    auto s = slice_normalized(off.first, off.second);
    if (s) out.push_back(std::move(*s));
  }
  return out;
}

PreTokenizedString::PreTokenizedString(std::string_view s) : original_(s) {
  splits_.push_back(Split{NormalizedString(s), std::nullopt});
}

Matches find_matches_str(std::string_view s, std::string_view needle) {
  Matches m;
  if (needle.empty()) {
    m.push_back({{0, utf8_char_count(s)}, false});
    return m;
  }
  if (s.empty()) {
    m.push_back({{0, 0}, false});
    return m;
  }
  size_t prev = 0;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t f = s.find(needle, pos);
    if (f == std::string_view::npos) break;
    if (prev != f) m.push_back({{prev, f}, false});
    m.push_back({{f, f + needle.size()}, true});
    prev = f + needle.size();
    pos = prev;
  }
  if (prev != s.size()) m.push_back({{prev, s.size()}, false});
  return m;
}

}  // namespace plugformer::tok
