// The tokenizer.json engine: the encode pipeline of tokenizers/src/tokenizer/mod.rs (added
// vocabulary -> normalizer -> pre-tokenizer -> model -> truncation -> post-processor -> padding),
// decode, batch encoding on all cores, added tokens and save_pretrained.
#include "tokenizers/fast_tokenizer.h"

#include <atomic>
#include <exception>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "plugformer/error.h"
#include "plugformer/json_text.h"
#include "plugformer/log.h"
#include "tokenizers/chat_template.h"
#include "tokenizers/components.h"
#include "tokenizers/unicode.h"

namespace plugformer {

using tok::Enc;
using tok::json;
using tok::NormalizedString;
using tok::Offsets;
using tok::PreTokenizedString;

namespace {

// Leftmost-longest multi-pattern matcher over bytes (the aho-corasick MatchKind::LeftmostLongest
// results the library uses for added tokens).
class MatchTrie {
 public:
  void build(const std::vector<std::pair<std::string, uint32_t>>& patterns) {
    term_.assign(1, -1);
    edges_.clear();
    std::fill(std::begin(first_), std::end(first_), false);
    empty_ = true;
    for (const auto& [p, id] : patterns) {
      if (p.empty()) continue;
      empty_ = false;
      first_[static_cast<unsigned char>(p[0])] = true;
      uint32_t node = 0;
      for (unsigned char c : p) {
        uint64_t k = (static_cast<uint64_t>(node) << 8) | c;
        auto it = edges_.find(k);
        if (it == edges_.end()) {
          uint32_t nn = static_cast<uint32_t>(term_.size());
          term_.push_back(-1);
          edges_.emplace(k, nn);
          node = nn;
        } else {
          node = it->second;
        }
      }
      if (term_[node] < 0) term_[node] = id;
    }
  }
  bool empty() const { return empty_; }
  // Finds the leftmost-longest match starting at or after `from`.
  bool find(std::string_view s, size_t from, size_t& ms, size_t& me, uint32_t& id) const {
    for (size_t pos = from; pos < s.size(); ++pos) {
      if (!first_[static_cast<unsigned char>(s[pos])]) continue;
      uint32_t node = 0;
      int64_t best = -1;
      size_t best_end = 0;
      for (size_t p = pos; p < s.size(); ++p) {
        auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(s[p]));
        if (it == edges_.end()) break;
        node = it->second;
        if (term_[node] >= 0) {
          best = term_[node];
          best_end = p + 1;
        }
      }
      if (best >= 0) {
        ms = pos;
        me = best_end;
        id = static_cast<uint32_t>(best);
        return true;
      }
    }
    return false;
  }

 private:
  std::vector<int64_t> term_{-1};
  std::unordered_map<uint64_t, uint32_t> edges_;
  bool first_[256] = {};
  bool empty_ = true;
};

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  size_t j = i;
  return tok::is_alphanumeric_word(tok::utf8_next(s, j));
}
bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t j = 0;
  return tok::is_alphanumeric_word(tok::utf8_next(s, j));
}
// Start of the trailing whitespace run (regex \s*$).
size_t space_leftmost_at_end(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t i = end - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    size_t j = i;
    if (!tok::is_whitespace(tok::utf8_next(s, j))) break;
    end = i;
  }
  return end;
}
// End of the leading whitespace run (regex ^\s*).
size_t space_rightmost_at_start(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (!tok::is_whitespace(tok::utf8_next(s, j))) break;
    i = j;
  }
  return i;
}


template <typename F>
void parallel_for(size_t n, size_t threads, F&& f) {
  if (threads == 0) threads = std::max<size_t>(1, std::thread::hardware_concurrency());
  threads = std::min(threads, n);
  if (threads <= 1) {
    for (size_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mu;
  auto worker = [&]() {
    while (true) {
      size_t i = next.fetch_add(1);
      if (i >= n) return;
      try {
        f(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
        next.store(n);
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

const char* side_name(Side s) { return s == Side::Left ? "Left" : "Right"; }

}  // namespace

std::string clean_up_tokenization(std::string s) {
  auto rep = [&](std::string_view from, std::string_view to) {
    std::string out;
    size_t pos = 0;
    bool any = false;
    while (true) {
      size_t f = s.find(from, pos);
      if (f == std::string::npos) break;
      any = true;
      out.append(s, pos, f - pos);
      out.append(to);
      pos = f + from.size();
    }
    if (!any) return;
    out.append(s, pos, std::string::npos);
    s = std::move(out);
  };
  rep(" .", ".");
  rep(" ?", "?");
  rep(" !", "!");
  rep(" ,", ",");
  rep(" ' ", "'");
  rep(" n't", "n't");
  rep(" 'm", "'m");
  rep(" 's", "'s");
  rep(" 've", "'ve");
  rep(" 're", "'re");
  return s;
}

struct FastTokenizer::Impl {
  std::string source;
  std::unique_ptr<tok::Normalizer> normalizer;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer;
  std::unique_ptr<tok::Model> model;
  std::unique_ptr<tok::PostProcessor> post_processor;
  std::unique_ptr<tok::Decoder> decoder;
  std::optional<TruncationParams> truncation;
  std::optional<PaddingParams> padding;

  // Added vocabulary.
  std::unordered_map<std::string, uint32_t> added_map;
  std::map<uint32_t, AddedToken> added_map_r;
  std::unordered_set<std::string> special_set;
  std::vector<AddedToken> special_tokens, added_tokens;
  MatchTrie split_trie, split_normalized_trie;

  std::string json_text;  // the tokenizer.json it was built from (for save_pretrained)
  nlohmann::ordered_json config = nlohmann::ordered_json::object();

  std::optional<uint32_t> added_token_to_id(std::string_view t) const {
    auto it = added_map.find(std::string(t));
    if (it != added_map.end()) return it->second;
    return model->token_to_id(t);
  }

  size_t add_tokens(const std::vector<AddedToken>& tokens) {
    for (const auto& t : tokens)
      if (t.special && !t.content.empty() && !special_set.count(t.content)) {
        special_tokens.push_back(t);
        special_set.insert(t.content);
      }
    auto same = [](const AddedToken& a, const AddedToken& b) {
      return a.content == b.content && a.single_word == b.single_word && a.lstrip == b.lstrip && a.rstrip == b.rstrip &&
             a.normalized == b.normalized && a.special == b.special;
    };
    size_t ignored = 0;
    const uint32_t vsize = static_cast<uint32_t>(model->vocab_size());
    uint32_t next_id = vsize;
    if (!added_map_r.empty()) {
      uint32_t max = added_map_r.rbegin()->first;
      next_id = (max >= vsize || vsize == 0) ? max + 1 : vsize;
    }
    for (const auto& t : tokens) {
      bool exists = false;
      for (const auto& [id, e] : added_map_r)
        if (same(e, t)) {
          exists = true;
          break;
        }
      if (t.content.empty() || exists) {
        ++ignored;
        continue;
      }
      uint32_t new_id;
      if (auto id = added_token_to_id(t.content)) {
        new_id = *id;
      } else {
        new_id = next_id++;
      }
      added_map[t.content] = new_id;
      added_map_r[new_id] = t;
      if (!special_set.count(t.content)) added_tokens.push_back(t);
    }
    refresh();
    return tokens.size() - ignored;
  }

  void refresh() {
    std::vector<std::pair<std::string, uint32_t>> normalized, plain;
    std::vector<const AddedToken*> all;
    for (const auto& t : special_tokens) all.push_back(&t);
    for (const auto& t : added_tokens) all.push_back(&t);
    for (const AddedToken* t : all) {
      auto id = added_token_to_id(t->content);
      if (!id) continue;
      if (t->normalized) {
        NormalizedString n(t->content);
        if (normalizer) normalizer->normalize(n);
        normalized.emplace_back(n.get(), *id);
      } else {
        plain.emplace_back(t->content, *id);
      }
    }
    split_trie.build(plain);
    split_normalized_trie.build(normalized);
  }

  void split_with_indices(NormalizedString&& n, const MatchTrie& trie, std::vector<tok::Split>& out) const {
    const std::string& s = n.get();
    // Whole-string slice with no matches: identical to `n` when its alignments span the original.
    if (trie.empty() || s.empty()) {
      if (s.empty()) return;
      auto r = n.convert_normalized(0, s.size());
      if (r && r->first == 0 && r->second == n.len_original()) {
        PreTokenizedString::push(out, std::move(n));
        return;
      }
      if (auto piece = n.slice_normalized(0, s.size())) PreTokenizedString::push(out, std::move(*piece));
      return;
    }
    std::vector<std::pair<std::optional<uint32_t>, Offsets>> splits;
    size_t start_offset = 0;
    size_t from = 0, ms, me;
    uint32_t id;
    while (from < s.size() && trie.find(s, from, ms, me, id)) {
      from = me;
      const AddedToken& t = added_map_r.at(id);
      size_t start = ms, stop = me;
      if (t.single_word) {
        bool start_space = start == 0 || !ends_with_word(std::string_view(s).substr(0, start));
        bool stop_space = stop == s.size() || !starts_with_word(std::string_view(s).substr(stop));
        if (!stop_space || !start_space) continue;
      }
      if (t.lstrip) {
        size_t newstart = space_leftmost_at_end(std::string_view(s).substr(0, start));
        start = std::max(newstart, start_offset);
      }
      if (t.rstrip) stop += space_rightmost_at_start(std::string_view(s).substr(stop));
      if (start_offset < start) splits.push_back({std::nullopt, {start_offset, start}});
      splits.push_back({id, {start, stop}});
      start_offset = stop;
    }
    if (start_offset != s.size()) splits.push_back({std::nullopt, {start_offset, s.size()}});
    for (const auto& [tid, off] : splits) {
      auto piece = n.slice_normalized(off.first, off.second);
      if (!piece) continue;
      if (tid) {
        std::string value = piece->get();
        size_t len = value.size();
        std::vector<tok::Token> toks;
        toks.push_back(tok::Token{*tid, std::move(value), {0, len}});
        PreTokenizedString::push(out, std::move(*piece), std::move(toks));
      } else {
        PreTokenizedString::push(out, std::move(*piece));
      }
    }
  }

  Enc encode_single(std::string_view text, uint32_t type_id) const {
    PreTokenizedString p(text);
    p.split([&](size_t, NormalizedString&& n, std::vector<tok::Split>& out) { split_with_indices(std::move(n), split_trie, out); });
    p.split([&](size_t, NormalizedString&& n, std::vector<tok::Split>& out) {
      if (normalizer) normalizer->normalize(n);
      split_with_indices(std::move(n), split_normalized_trie, out);
    });
    if (pre_tokenizer) pre_tokenizer->pre_tokenize(p);
    auto& splits = p.splits();
    size_t total = 0;
    for (auto& sp : splits) {
      if (!sp.tokens) {
        std::vector<tok::Token> toks;
        model->tokenize(sp.normalized.get(), toks);
        sp.tokens = std::move(toks);
      }
      total += sp.tokens->size();
    }
    Enc e;
    if (splits.empty()) return e;
    e.reserve(total);
    // Byte -> char index over the original text (BytesToCharOffsetConverter).
    const std::string_view orig = p.original();
    std::vector<uint32_t> char_of(orig.size());
    {
      uint32_t ci = 0;
      size_t i = 0;
      while (i < orig.size()) {
        size_t l = tok::utf8_len(static_cast<unsigned char>(orig[i]));
        for (size_t k = 0; k < l && i + k < orig.size(); ++k) char_of[i + k] = ci;
        i += l;
        ++ci;
      }
    }
    const size_t olen = orig.size();
    for (size_t idx = 0; idx < splits.size(); ++idx) {
      auto& sp = splits[idx];
      const size_t shift = sp.normalized.offsets_original().first;
      for (auto& t : *sp.tokens) {
        Offsets off = t.offsets;
        if (auto r = sp.normalized.convert_normalized(t.offsets.first, t.offsets.second)) off = {shift + r->first, shift + r->second};
        if (off.first < olen) {
          size_t s = char_of[off.first];
          size_t en;
          if (off.second < olen)
            en = char_of[off.second];
          else
            en = (off.second >= 1 && off.second - 1 < olen ? char_of[off.second - 1] : s + 1) + 1;
          off = {s, en};
        }
        e.push(t.id, std::move(t.value), off, static_cast<int64_t>(idx), type_id);
      }
    }
    return e;
  }

  static void truncate_encodings(Enc& enc, std::optional<Enc>& pair, const TruncationParams& params) {
    const auto dir = params.direction == Side::Left ? tok::Direction::Left : tok::Direction::Right;
    if (params.max_length == 0) {
      enc.truncate(0, params.stride, dir);
      if (pair) pair->truncate(0, params.stride, dir);
      return;
    }
    size_t total = enc.size() + (pair ? pair->size() : 0);
    if (total <= params.max_length) return;
    size_t to_remove = total - params.max_length;
    if (params.strategy == TruncationStrategy::LongestFirst) {
      if (pair) {
        size_t n1 = enc.size(), n2 = pair->size();
        bool swap = false;
        if (n1 > n2) {
          swap = true;
          std::swap(n1, n2);
        }
        if (n1 > params.max_length)
          n2 = n1;
        else
          n2 = std::max(n1, params.max_length - n1);
        if (n1 + n2 > params.max_length) {
          n1 = params.max_length / 2;
          n2 = n1 + params.max_length % 2;
        }
        if (swap) std::swap(n1, n2);
        enc.truncate(n1, params.stride, dir);
        pair->truncate(n2, params.stride, dir);
      } else {
        enc.truncate(total - to_remove, params.stride, dir);
      }
      return;
    }
    Enc* target = nullptr;
    if (params.strategy == TruncationStrategy::OnlyFirst)
      target = &enc;
    else if (pair)
      target = &*pair;
    else
      throw TokenizerError("truncation error: second sequence not provided (strategy only_second)");
    if (target->size() > to_remove)
      target->truncate(target->size() - to_remove, params.stride, dir);
    else
      throw TokenizerError("truncation error: sequence to truncate too short to respect the provided max_length");
  }

  static void pad_encodings(std::vector<Enc>& encs, const PaddingParams& params) {
    if (encs.empty()) return;
    size_t len = 0;
    if (params.length)
      len = *params.length;
    else
      for (const auto& e : encs) len = std::max(len, e.size());
    if (params.pad_to_multiple_of && *params.pad_to_multiple_of > 0 && len % *params.pad_to_multiple_of > 0)
      len += *params.pad_to_multiple_of - len % *params.pad_to_multiple_of;
    for (auto& e : encs)
      e.pad(len, params.pad_id, params.pad_type_id, params.pad_token,
            params.direction == Side::Left ? tok::Direction::Left : tok::Direction::Right);
  }

  Enc post_process(Enc enc, std::optional<Enc> pair, bool add_special_tokens) const {
    if (truncation) {
      size_t n_added = post_processor ? post_processor->added_tokens(pair.has_value()) : 0;
      TruncationParams params = *truncation;
      if (add_special_tokens && n_added > 0) {
        if (n_added > params.max_length)
          throw TokenizerError("truncation: max_length " + std::to_string(params.max_length) + " is smaller than the " +
                               std::to_string(n_added) + " special tokens the post-processor adds");
        params.max_length -= n_added;
      }
      truncate_encodings(enc, pair, params);
    }
    Enc out = post_processor ? post_processor->process(std::move(enc), std::move(pair), add_special_tokens)
                             : tok::default_process(std::move(enc), std::move(pair));
    if (padding) {
      std::vector<Enc> v;
      v.push_back(std::move(out));
      pad_encodings(v, *padding);
      out = std::move(v[0]);
    }
    return out;
  }

  Enc encode_raw(std::string_view text, const std::string_view* pair, bool add_special_tokens) const {
    std::string fixed_a, fixed_b;
    if (!tok::utf8_valid(text)) {
      fixed_a = tok::utf8_lossy(text);
      text = fixed_a;
    }
    Enc a = encode_single(text, 0);
    std::optional<Enc> b;
    if (pair) {
      std::string_view pt = *pair;
      if (!tok::utf8_valid(pt)) {
        fixed_b = tok::utf8_lossy(pt);
        pt = fixed_b;
      }
      b = encode_single(pt, 1);
    }
    return post_process(std::move(a), std::move(b), add_special_tokens);
  }

  static Encoding to_public(Enc&& e) {
    Encoding o;
    const size_t n = e.size();
    auto seq = e.sequence_ids();
    o.ids = std::move(e.ids);
    o.type_ids = std::move(e.type_ids);
    o.tokens = std::move(e.tokens);
    o.offsets = std::move(e.offsets);
    o.attention_mask = std::move(e.attention_mask);
    o.special_tokens_mask = std::move(e.special_tokens_mask);
    o.word_ids = std::move(e.words);
    o.sequence_ids.resize(n);
    for (size_t i = 0; i < n; ++i)
      if (seq[i]) o.sequence_ids[i] = static_cast<int64_t>(*seq[i]);
    for (auto& ov : e.overflowing) o.overflowing.push_back(to_public(std::move(ov)));
    return o;
  }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int64_t id : ids) {
      if (id < 0 || id > static_cast<int64_t>(UINT32_MAX)) continue;
      const uint32_t uid = static_cast<uint32_t>(id);
      auto it = added_map_r.find(uid);
      const std::string* t = nullptr;
      if (it != added_map_r.end())
        t = &it->second.content;
      else
        t = model->id_to_token(uid);
      if (!t) continue;
      if (skip_special && special_set.count(*t)) continue;
      tokens.push_back(*t);
    }
    if (decoder) {
      decoder->decode_chain(tokens);
      std::string out;
      for (auto& t : tokens) out += t;
      return out;
    }
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out.push_back(' ');
      out += tokens[i];
    }
    return out;
  }
};

FastTokenizer::FastTokenizer() : impl_(std::make_unique<Impl>()) {}
FastTokenizer::~FastTokenizer() = default;

namespace {

TruncationParams parse_truncation(const json& j, const std::string& path) {
  if (!j.is_object()) tok::json_error(path, "expected an object or null");
  TruncationParams t;
  t.max_length = tok::juint(j, "max_length", path, 512);
  t.stride = tok::juint(j, "stride", path, 0);
  std::string strat = tok::jstring(j, "strategy", path, "LongestFirst");
  if (strat == "LongestFirst") t.strategy = TruncationStrategy::LongestFirst;
  else if (strat == "OnlyFirst") t.strategy = TruncationStrategy::OnlyFirst;
  else if (strat == "OnlySecond") t.strategy = TruncationStrategy::OnlySecond;
  else tok::json_error(path + ".strategy", "unknown truncation strategy '" + strat + "' (expected LongestFirst, OnlyFirst or OnlySecond)");
  std::string dir = tok::jstring(j, "direction", path, "Right");
  if (dir == "Left") t.direction = Side::Left;
  else if (dir == "Right") t.direction = Side::Right;
  else tok::json_error(path + ".direction", "unknown direction '" + dir + "' (expected Left or Right)");
  return t;
}

PaddingParams parse_padding(const json& j, const std::string& path) {
  if (!j.is_object()) tok::json_error(path, "expected an object or null");
  PaddingParams p;
  auto st = j.find("strategy");
  if (st != j.end()) {
    if (st->is_string() && st->get<std::string>() == "BatchLongest") {
    } else if (st->is_object() && st->contains("Fixed") && (*st)["Fixed"].is_number_unsigned()) {
      p.length = (*st)["Fixed"].get<size_t>();
    } else {
      tok::json_error(path + ".strategy", "expected \"BatchLongest\" or {\"Fixed\": n}, got " + st->dump());
    }
  }
  std::string dir = tok::jstring(j, "direction", path, "Right");
  if (dir == "Left") p.direction = Side::Left;
  else if (dir == "Right") p.direction = Side::Right;
  else tok::json_error(path + ".direction", "unknown direction '" + dir + "' (expected Left or Right)");
  auto m = j.find("pad_to_multiple_of");
  if (m != j.end() && !m->is_null()) p.pad_to_multiple_of = tok::juint(j, "pad_to_multiple_of", path, 0);
  p.pad_id = static_cast<int64_t>(tok::juint(j, "pad_id", path, 0));
  p.pad_type_id = static_cast<int64_t>(tok::juint(j, "pad_type_id", path, 0));
  p.pad_token = tok::jstring(j, "pad_token", path, "[PAD]");
  return p;
}

json truncation_json(const TruncationParams& t) {
  const char* strat = t.strategy == TruncationStrategy::LongestFirst ? "LongestFirst"
                      : t.strategy == TruncationStrategy::OnlyFirst  ? "OnlyFirst"
                                                                     : "OnlySecond";
  return json{{"direction", side_name(t.direction)}, {"max_length", t.max_length}, {"strategy", strat}, {"stride", t.stride}};
}

json padding_json(const PaddingParams& p) {
  json j;
  if (p.length)
    j["strategy"] = json{{"Fixed", *p.length}};
  else
    j["strategy"] = "BatchLongest";
  j["direction"] = side_name(p.direction);
  j["pad_to_multiple_of"] = p.pad_to_multiple_of ? json(*p.pad_to_multiple_of) : json(nullptr);
  j["pad_id"] = p.pad_id;
  j["pad_type_id"] = p.pad_type_id;
  j["pad_token"] = p.pad_token;
  return j;
}

AddedToken parse_added_token(const json& j, const std::string& path) {
  if (!j.is_object()) tok::json_error(path, "expected an added token object");
  AddedToken t;
  const json& c = tok::jfield(j, "content", path);
  if (!c.is_string()) tok::json_error(path + ".content", "expected a string");
  t.content = c.get<std::string>();
  t.special = tok::jbool(j, "special", path, false);
  t.single_word = tok::jbool(j, "single_word", path, false);
  t.lstrip = tok::jbool(j, "lstrip", path, false);
  t.rstrip = tok::jbool(j, "rstrip", path, false);
  t.normalized = tok::jbool(j, "normalized", path, !t.special);
  return t;
}

}  // namespace

std::shared_ptr<FastTokenizer> FastTokenizer::from_json(const std::string& text, const std::string& source) {
  try {
    return build_from_json(text, source);
  } catch (const json::exception& e) {  // found by fuzzing: e.g. "dropout": false
    throw TokenizerError(source + ": a field has an unexpected JSON type or value (" + e.what() + ")");
  }
}

std::shared_ptr<FastTokenizer> FastTokenizer::build_from_json(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // syntax, or a number beyond double's range
    throw TokenizerError(source + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw TokenizerError(source + ": expected a JSON object at the top level, got " + std::string(j.type_name()));
  const std::string root = source + ": ";
  auto tokenizer = std::shared_ptr<FastTokenizer>(new FastTokenizer());
  Impl& impl = *tokenizer->impl_;
  impl.source = source;
  if (auto v = j.find("version"); v != j.end() && !(v->is_string() && v->get<std::string>() == "1.0"))
    throw TokenizerError(root + "version: unknown tokenizer version " + v->dump() + " (expected \"1.0\")");
  auto get = [&](const char* key) -> const json* {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  };
  if (auto n = get("normalizer")) impl.normalizer = tok::make_normalizer(*n, root + "normalizer");
  if (auto n = get("pre_tokenizer")) impl.pre_tokenizer = tok::make_pre_tokenizer(*n, root + "pre_tokenizer");
  const json* m = get("model");
  if (!m) throw TokenizerError(root + "missing field 'model'");
  impl.model = tok::make_model(*m, root + "model");
  if (auto n = get("post_processor")) impl.post_processor = tok::make_post_processor(*n, root + "post_processor");
  if (auto n = get("decoder")) impl.decoder = tok::make_decoder(*n, root + "decoder");
  if (auto n = get("truncation")) impl.truncation = parse_truncation(*n, root + "truncation");
  if (auto n = get("padding")) impl.padding = parse_padding(*n, root + "padding");
  if (auto a = get("added_tokens")) {
    if (!a->is_array()) throw TokenizerError(root + "added_tokens: expected an array");
    std::vector<AddedToken> tokens;
    for (size_t k = 0; k < a->size(); ++k) {
      std::string p = root + "added_tokens[" + std::to_string(k) + "]";
      tokens.push_back(parse_added_token((*a)[k], p));
      const json& e = (*a)[k];
      if (e.contains("id") && e["id"].is_number_unsigned()) {
        if (auto rid = impl.added_token_to_id(tokens.back().content); rid && *rid != e["id"].get<uint32_t>())
          logger().warn("{}: token '{}' was expected to have id {} but was given id {}", p, tokens.back().content,
                        e["id"].get<uint32_t>(), *rid);
      }
    }
    impl.add_tokens(tokens);
  }
  impl.json_text = text;
  return tokenizer;
}

std::shared_ptr<FastTokenizer> FastTokenizer::from_file(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) throw FileNotFoundError(file.string() + ": no such file");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw IOError(file.string() + ": cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IOError(file.string() + ": read error");
  return from_json(ss.str(), file.string());
}

Encoding FastTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return Impl::to_public(impl_->encode_raw(text, nullptr, add_special_tokens));
}

Encoding FastTokenizer::encode_pair(std::string_view text, std::string_view text_pair, bool add_special_tokens) const {
  return Impl::to_public(impl_->encode_raw(text, &text_pair, add_special_tokens));
}

std::vector<Encoding> FastTokenizer::encode_batch(const std::vector<std::string>& texts, bool add_special_tokens) const {
  std::vector<Enc> encs(texts.size());
  parallel_for(texts.size(), num_threads, [&](size_t i) { encs[i] = impl_->encode_raw(texts[i], nullptr, add_special_tokens); });
  if (impl_->padding) Impl::pad_encodings(encs, *impl_->padding);
  std::vector<Encoding> out(encs.size());
  for (size_t i = 0; i < encs.size(); ++i) out[i] = Impl::to_public(std::move(encs[i]));
  return out;
}

std::vector<Encoding> FastTokenizer::encode_batch_pairs(const std::vector<std::pair<std::string, std::string>>& pairs,
                                                        bool add_special_tokens) const {
  std::vector<Enc> encs(pairs.size());
  parallel_for(pairs.size(), num_threads, [&](size_t i) {
    std::string_view b = pairs[i].second;
    encs[i] = impl_->encode_raw(pairs[i].first, &b, add_special_tokens);
  });
  if (impl_->padding) Impl::pad_encodings(encs, *impl_->padding);
  std::vector<Encoding> out(encs.size());
  for (size_t i = 0; i < encs.size(); ++i) out[i] = Impl::to_public(std::move(encs[i]));
  return out;
}

std::string FastTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string s = impl_->decode(ids, skip_special_tokens);
  if (clean_up_tokenization_spaces) s = clean_up_tokenization(std::move(s));
  return s;
}

std::vector<std::string> FastTokenizer::batch_decode(const std::vector<std::vector<int64_t>>& sequences, bool skip_special_tokens) const {
  std::vector<std::string> out(sequences.size());
  parallel_for(sequences.size(), num_threads, [&](size_t i) { out[i] = decode(sequences[i], skip_special_tokens); });
  return out;
}

std::optional<int64_t> FastTokenizer::token_to_id(std::string_view token) const {
  if (auto id = impl_->added_token_to_id(token)) return static_cast<int64_t>(*id);
  return std::nullopt;
}

std::optional<std::string> FastTokenizer::id_to_token(int64_t id) const {
  if (id < 0 || id > static_cast<int64_t>(UINT32_MAX)) return std::nullopt;
  auto it = impl_->added_map_r.find(static_cast<uint32_t>(id));
  if (it != impl_->added_map_r.end()) return it->second.content;
  if (const std::string* t = impl_->model->id_to_token(static_cast<uint32_t>(id))) return *t;
  return std::nullopt;
}

size_t FastTokenizer::vocab_size() const {
  size_t n = impl_->model->vocab_size();
  for (const auto& [id, t] : impl_->added_map_r)
    if (!impl_->model->id_to_token(id)) ++n;
  return n;
}

void FastTokenizer::set_truncation(const std::optional<TruncationParams>& params) {
  if (params && params->max_length > 0 && params->stride >= params->max_length)
    throw TokenizerError("truncation: stride (" + std::to_string(params->stride) + ") must be smaller than max_length (" +
                         std::to_string(params->max_length) + ")");
  impl_->truncation = params;
}
void FastTokenizer::set_padding(const std::optional<PaddingParams>& params) { impl_->padding = params; }
std::optional<TruncationParams> FastTokenizer::truncation() const { return impl_->truncation; }
std::optional<PaddingParams> FastTokenizer::padding() const { return impl_->padding; }

size_t FastTokenizer::add_tokens(const std::vector<AddedToken>& tokens) { return impl_->add_tokens(tokens); }

size_t FastTokenizer::add_special_tokens(const std::vector<AddedToken>& tokens) {
  std::vector<AddedToken> v = tokens;
  for (auto& t : v) {
    if (!t.special) t.normalized = false;  // transformers: special tokens are not normalized by default
    t.special = true;
  }
  return impl_->add_tokens(v);
}

std::vector<AddedToken> FastTokenizer::added_tokens() const {
  std::vector<AddedToken> out;
  for (const auto& [id, t] : impl_->added_map_r) out.push_back(t);
  return out;
}

void FastTokenizer::apply_tokenizer_config(const nlohmann::json& config, const nlohmann::json& special_map) {
  if (!config.is_object()) throw TokenizerError("tokenizer_config.json: expected a JSON object");
  impl_->config = parse_json_text(config.dump());
  chat_templates = chat_templates_from_config(impl_->config, "tokenizer_config.json");
  auto num = config.find("model_max_length");
  if (num != config.end() && num->is_number()) {
    double v = num->get<double>();
    model_max_length = v >= 9.2e18 ? INT64_MAX : static_cast<int64_t>(v);
  }
  if (auto ps = config.find("padding_side"); ps != config.end() && ps->is_string()) {
    std::string side = ps->get<std::string>();
    if (side != "left" && side != "right")
      throw TokenizerError("tokenizer_config.json: padding_side must be \"left\" or \"right\", got \"" + side + "\"");
    padding_side = side;
  }
  if (auto c = config.find("clean_up_tokenization_spaces"); c != config.end() && c->is_boolean())
    clean_up_tokenization_spaces = c->get<bool>();
  std::string cls;
  if (auto c = config.find("tokenizer_class"); c != config.end() && c->is_string()) cls = c->get<std::string>();
  if (cls.size() > 4 && cls.compare(cls.size() - 4, 4, "Fast") == 0) cls.resize(cls.size() - 4);
  const bool bos_eos_template = cls == "LlamaTokenizer" || cls == "CodeLlamaTokenizer" || cls == "GemmaTokenizer";
  for (const auto& [name, slot] : SpecialTokens::named(special_)) {
    for (const nlohmann::json* src : {&config, &special_map}) {
      if (!src->is_object()) continue;
      auto it = src->find(name);
      if (it == src->end()) continue;
      if (it->is_null()) break;
      if (it->is_string()) {
        *slot = it->get<std::string>();
      } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
        *slot = (*it)["content"].get<std::string>();
      } else {
        throw TokenizerError(std::string("tokenizer_config.json: field '") + name + "' must be a string or an object with 'content'");
      }
      break;
    }
  }
  if (bos_eos_template) {
    auto flag = [&](const char* key, bool def) {
      auto it = config.find(key);
      return it != config.end() && it->is_boolean() ? it->get<bool>() : def;
    };
    update_post_processor(flag("add_bos_token", true), flag("add_eos_token", false));
  }
}

void FastTokenizer::update_post_processor(bool add_bos, bool add_eos) {
  auto id_of_token = [&](const std::optional<std::string>& t, const char* what) -> int64_t {
    if (!t) throw TokenizerError(std::string("add_") + what + "_token = true but " + what + "_token is not set");
    auto id = token_to_id(*t);
    if (!id) throw TokenizerError(std::string(what) + "_token '" + *t + "' is not in the vocabulary");
    return *id;
  };
  json single = json::array(), pair = json::array(), specials = json::object();
  auto sp = [](const std::string& id, int type) { return json{{"SpecialToken", {{"id", id}, {"type_id", type}}}}; };
  auto sq = [](const char* id, int type) { return json{{"Sequence", {{"id", id}, {"type_id", type}}}}; };
  if (add_bos) {
    int64_t id = id_of_token(special_.bos_token, "bos");
    specials[*special_.bos_token] = {{"id", *special_.bos_token}, {"ids", {id}}, {"tokens", {*special_.bos_token}}};
  }
  if (add_eos) {
    int64_t id = id_of_token(special_.eos_token, "eos");
    specials[*special_.eos_token] = {{"id", *special_.eos_token}, {"ids", {id}}, {"tokens", {*special_.eos_token}}};
  }
  if (add_bos) single.push_back(sp(*special_.bos_token, 0));
  single.push_back(sq("A", 0));
  if (add_eos) single.push_back(sp(*special_.eos_token, 0));
  pair = single;
  if (add_bos) pair.push_back(sp(*special_.bos_token, 1));
  pair.push_back(sq("B", 1));
  if (add_eos) pair.push_back(sp(*special_.eos_token, 1));
  json pp = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
  impl_->post_processor = tok::make_post_processor(pp, "post_processor (add_bos_token / add_eos_token)");
  nlohmann::ordered_json tj = parse_json_text(impl_->json_text);
  tj["post_processor"] = nlohmann::ordered_json::parse(pp.dump());
  impl_->json_text = tj.dump();
}

namespace {
void write_atomically(const std::filesystem::path& file, const std::string& content) {
  std::filesystem::path tmp = file;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IOError(file.string() + ": cannot open for writing");
    out << content;
    out.flush();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      throw IOError(file.string() + ": write failed");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw IOError(file.string() + ": cannot rename temporary file: " + ec.message());
  }
}
}  // namespace

void FastTokenizer::save_pretrained(const std::filesystem::path& dir) const {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw IOError(dir.string() + ": cannot create directory: " + ec.message());
  nlohmann::ordered_json tj = parse_json_text(impl_->json_text);
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  nlohmann::ordered_json decoder_map = nlohmann::ordered_json::object();
  for (const auto& [id, t] : impl_->added_map_r) {
    added.push_back({{"id", id}, {"content", t.content}, {"single_word", t.single_word}, {"lstrip", t.lstrip},
                     {"rstrip", t.rstrip}, {"normalized", t.normalized}, {"special", t.special}});
    decoder_map[std::to_string(id)] = {{"content", t.content}, {"lstrip", t.lstrip}, {"normalized", t.normalized},
                                       {"rstrip", t.rstrip}, {"single_word", t.single_word}, {"special", t.special}};
  }
  tj["added_tokens"] = added;
  tj["truncation"] = impl_->truncation ? nlohmann::ordered_json::parse(truncation_json(*impl_->truncation).dump()) : nullptr;
  tj["padding"] = impl_->padding ? nlohmann::ordered_json::parse(padding_json(*impl_->padding).dump()) : nullptr;

  nlohmann::ordered_json cfg = impl_->config;
  cfg["added_tokens_decoder"] = decoder_map;
  cfg["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces;
  if (model_max_length != INT64_MAX) cfg["model_max_length"] = model_max_length;
  cfg["padding_side"] = padding_side;
  if (!cfg.contains("tokenizer_class")) cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
  const nlohmann::ordered_json smap = special_.to_json();
  for (auto it = smap.begin(); it != smap.end(); ++it) cfg[it.key()] = it.value();
  for (const auto& [file, text] : chat_template_files(chat_templates, cfg)) {
    std::filesystem::create_directories((dir / file).parent_path(), ec);
    if (ec) throw IOError((dir / file).parent_path().string() + ": cannot create directory: " + ec.message());
    write_atomically(dir / file, text);
  }
  write_atomically(dir / "tokenizer.json", tj.dump(2));
  write_atomically(dir / "tokenizer_config.json", cfg.dump(2));
  write_atomically(dir / "special_tokens_map.json", smap.dump(2));
}

}  // namespace plugformer
