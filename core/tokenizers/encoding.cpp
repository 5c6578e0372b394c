// The internal Encoding (truncate, merge, pad as in tokenizers/src/tokenizer/encoding.rs) and
// the JSON helpers shared by the component factories.
#include <algorithm>

#include "plugformer/error.h"
#include "tokenizers/components.h"
#include "tokenizers/unicode.h"

namespace plugformer::tok {

void Enc::reserve(size_t n) {
  ids.reserve(n);
  type_ids.reserve(n);
  tokens.reserve(n);
  words.reserve(n);
  offsets.reserve(n);
  special_tokens_mask.reserve(n);
  attention_mask.reserve(n);
}

void Enc::push(int64_t id, std::string token, Offsets off, std::optional<int64_t> word, int64_t type_id,
               int64_t special, int64_t attention) {
  ids.push_back(id);
  tokens.push_back(std::move(token));
  offsets.push_back(off);
  words.push_back(word);
  type_ids.push_back(type_id);
  special_tokens_mask.push_back(special);
  attention_mask.push_back(attention);
}

std::vector<std::optional<size_t>> Enc::sequence_ids() const {
  // Encoding::get_sequence_ids: for seq in 0..n_sequences, a missing range means the whole encoding.
  std::vector<std::optional<size_t>> out(size());
  const size_t n_seq = sequence_ranges.empty() ? 1 : sequence_ranges.size();
  for (size_t seq = 0; seq < n_seq; ++seq) {
    auto it = sequence_ranges.find(seq);
    size_t b = 0, e = size();
    if (it != sequence_ranges.end()) {
      b = it->second.first;
      e = it->second.second;
    }
    for (size_t i = b; i < e && i < out.size(); ++i) out[i] = seq;
  }
  return out;
}

namespace {
Enc slice_enc(const Enc& e, size_t start, size_t stop) {
  Enc o;
  auto cp = [&](auto& dst, const auto& src) { dst.assign(src.begin() + static_cast<std::ptrdiff_t>(start), src.begin() + static_cast<std::ptrdiff_t>(stop)); };
  cp(o.ids, e.ids);
  cp(o.type_ids, e.type_ids);
  cp(o.tokens, e.tokens);
  cp(o.words, e.words);
  cp(o.offsets, e.offsets);
  cp(o.special_tokens_mask, e.special_tokens_mask);
  cp(o.attention_mask, e.attention_mask);
  return o;
}
}  // namespace

void Enc::truncate(size_t max_len, size_t stride, Direction direction) {
  const size_t len = ids.size();
  if (max_len >= len) return;
  if (max_len == 0) {
    Enc o = std::move(*this);
    *this = Enc{};
    overflowing.push_back(std::move(o));
    return;
  }
  if (stride >= max_len)
    throw TokenizerError("truncation: stride (" + std::to_string(stride) + ") must be strictly less than max_length (" +
                         std::to_string(max_len) + ", after removing the special tokens added by the post-processor)");
  sequence_ranges.clear();
  const size_t step = max_len - stride;
  std::vector<std::pair<size_t, size_t>> parts;
  bool end = false;
  if (direction == Direction::Right) {
    for (size_t start = 0; start < len && !end; start += step) {
      size_t stop = std::min(start + max_len, len);
      end = stop == len;
      parts.emplace_back(start, stop);
    }
  } else {
    // (0..len).rev().step_by(step)
    for (size_t k = 0;; ++k) {
      if (k * step > len - 1) break;
      size_t stop = (len - 1 - k * step) + 1;
      size_t start = stop > max_len ? stop - max_len : 0;
      if (start < stop && !end) {
        end = start == 0;
        parts.emplace_back(start, stop);
      }
    }
  }
  Enc first = slice_enc(*this, parts[0].first, parts[0].second);
  for (size_t i = 1; i < parts.size(); ++i) first.overflowing.push_back(slice_enc(*this, parts[i].first, parts[i].second));
  *this = std::move(first);
}

void Enc::merge_with(Enc pair, bool growing_offsets) {
  // Merging into an empty encoding (no tokens, ranges or overflowing) yields `pair` unchanged.
  if (ids.empty() && overflowing.empty() && sequence_ranges.empty()) {
    *this = std::move(pair);
    return;
  }
  std::vector<Enc> overflowings;
  for (const auto& self_o : overflowing) {
    Enc n = self_o;
    n.merge_with(pair, growing_offsets);
    overflowings.push_back(std::move(n));
    for (const auto& other_o : pair.overflowing) {
      Enc n2 = self_o;
      n2.merge_with(other_o, growing_offsets);
      overflowings.push_back(std::move(n2));
    }
  }
  for (const auto& other_o : pair.overflowing) {
    Enc n = *this;
    n.merge_with(other_o, growing_offsets);
    overflowings.push_back(std::move(n));
  }
  const size_t original_len = size();
  for (const auto& [seq, r] : pair.sequence_ranges) sequence_ranges[seq] = {original_len + r.first, original_len + r.second};
  ids.insert(ids.end(), pair.ids.begin(), pair.ids.end());
  type_ids.insert(type_ids.end(), pair.type_ids.begin(), pair.type_ids.end());
  for (auto& t : pair.tokens) tokens.push_back(std::move(t));
  words.insert(words.end(), pair.words.begin(), pair.words.end());
  size_t starting = 0;
  if (growing_offsets && !offsets.empty()) starting = offsets.back().second;
  for (auto [s, e] : pair.offsets) offsets.emplace_back(s + starting, e + starting);
  special_tokens_mask.insert(special_tokens_mask.end(), pair.special_tokens_mask.begin(), pair.special_tokens_mask.end());
  attention_mask.insert(attention_mask.end(), pair.attention_mask.begin(), pair.attention_mask.end());
  overflowing = std::move(overflowings);
}

Enc Enc::merge(std::vector<Enc> encodings, bool growing_offsets) {
  Enc out;
  for (auto& e : encodings) out.merge_with(std::move(e), growing_offsets);
  return out;
}

void Enc::pad(size_t target, int64_t pad_id, int64_t pad_type_id, const std::string& pad_token, Direction direction) {
  for (auto& o : overflowing) o.pad(target, pad_id, pad_type_id, pad_token, direction);
  if (ids.size() >= target) return;
  const size_t n = target - ids.size();
  auto front = [&](auto& v, auto value) { v.insert(v.begin(), n, value); };
  auto back = [&](auto& v, auto value) { v.insert(v.end(), n, value); };
  if (direction == Direction::Left) {
    front(ids, pad_id);
    front(type_ids, pad_type_id);
    front(tokens, pad_token);
    front(words, std::optional<int64_t>{});
    front(attention_mask, int64_t{0});
    front(special_tokens_mask, int64_t{1});
    front(offsets, Offsets{0, 0});
    for (auto& [seq, r] : sequence_ranges) r = {r.first + n, r.second + n};
  } else {
    back(ids, pad_id);
    back(type_ids, pad_type_id);
    back(tokens, pad_token);
    back(words, std::optional<int64_t>{});
    back(attention_mask, int64_t{0});
    back(special_tokens_mask, int64_t{1});
    back(offsets, Offsets{0, 0});
  }
}

// ---------------------------------------------------------------------------------------------

void json_error(const std::string& path, const std::string& what) { throw TokenizerError(path + ": " + what); }

static std::string type_name(const json& j) { return j.type_name(); }

const json& jfield(const json& j, const char* key, const std::string& path) {
  if (!j.is_object()) json_error(path, std::string("expected an object, got ") + type_name(j));
  auto it = j.find(key);
  if (it == j.end()) json_error(path, std::string("missing field '") + key + "'");
  return *it;
}

bool jbool(const json& j, const char* key, const std::string& path, bool def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean()) json_error(path + "." + key, "expected a boolean, got " + type_name(*it));
  return it->get<bool>();
}

std::string jstring(const json& j, const char* key, const std::string& path, const std::string& def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_string()) json_error(path + "." + key, "expected a string, got " + type_name(*it));
  return it->get<std::string>();
}

std::optional<std::string> jopt_string(const json& j, const char* key, const std::string& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) json_error(path + "." + key, "expected a string or null, got " + type_name(*it));
  return it->get<std::string>();
}

uint64_t juint(const json& j, const char* key, const std::string& path, uint64_t def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0))
    json_error(path + "." + key, "expected a non-negative integer, got " + it->dump());
  return it->get<uint64_t>();
}

char32_t jchar(const json& j, const char* key, const std::string& path, char32_t def) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_string()) json_error(path + "." + key, "expected a one-character string, got " + type_name(*it));
  std::string s = it->get<std::string>();
  if (s.empty() || utf8_char_count(s) != 1)
    json_error(path + "." + key, "expected a one-character string, got \"" + s + "\"");
  size_t i = 0;
  return utf8_next(s, i);
}

}  // namespace plugformer::tok
