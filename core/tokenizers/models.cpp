// Models of tokenizers/src/models: BPE, WordPiece, WordLevel, Unigram.
#include <algorithm>
#include <cmath>
#include <limits>
#include <queue>
#include <shared_mutex>

#include "plugformer/error.h"
#include "plugformer/log.h"
#include "tokenizers/components.h"
#include "tokenizers/hash_map.h"
#include "tokenizers/unicode.h"

namespace plugformer::tok {

namespace {

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return static_cast<size_t>(hash_bytes(s.data(), s.size())); }
};
struct SvEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const noexcept { return a == b; }
};
using Vocab = StringIdMap;

constexpr size_t kCacheMaxLength = 256;
constexpr size_t kCacheCapacity = 10000;

// A bounded cache shared by threads, like utils/cache.rs (no eviction: stops inserting when full;
// a busy lock skips the cache rather than waiting).
template <typename V>
class Cache {
 public:
  bool get(std::string_view key, V& out) const {
    std::shared_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    auto it = map_.find(key);
    if (it == map_.end()) return false;
    out = it->second;
    return true;
  }
  // Calls f(value) under the read lock; false when absent or the lock is busy.
  template <typename F>
  bool visit(std::string_view key, F&& f) const {
    std::shared_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    auto it = map_.find(key);
    if (it == map_.end()) return false;
    f(it->second);
    return true;
  }
  void set(std::string_view key, const V& v) const {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) return;
    if (map_.size() >= kCacheCapacity) return;
    map_.emplace(std::string(key), v);
  }

 private:
  mutable std::shared_mutex mu_;
  mutable std::unordered_map<std::string, V, SvHash, SvEq> map_;
};

Vocab parse_vocab_map(const json& v, const std::string& path) {
  if (!v.is_object()) json_error(path, std::string("expected an object {token: id}, got ") + v.type_name());
  Vocab vocab;
  vocab.reserve(v.size());
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!it.value().is_number_unsigned() && !(it.value().is_number_integer() && it.value().get<int64_t>() >= 0))
      json_error(path + "[\"" + it.key() + "\"]", "expected a non-negative integer id, got " + it.value().dump());
    uint64_t id = it.value().get<uint64_t>();
    if (id > std::numeric_limits<uint32_t>::max()) json_error(path + "[\"" + it.key() + "\"]", "id out of range");
    vocab.insert(it.key(), static_cast<uint32_t>(id));
  }
  return vocab;
}

// id -> token of a vocab: indexed by id when the ids are dense, as in every real vocab; a map when
// they are sparse, so a file giving six tokens ids up to 666666664 costs six entries, not the
// gigabytes of a table that long (found by fuzz_tokenizer_json).
class ReverseVocab {
 public:
  ReverseVocab() = default;
  explicit ReverseVocab(const Vocab& vocab) {
    uint32_t max_id = 0;
    vocab.for_each([&](std::string_view, uint32_t v) { max_id = std::max(max_id, v); });
    sparse_ = vocab.size() > 0 && max_id / 2 > vocab.size() + 512;
    if (!sparse_ && vocab.size() > 0) {
      dense_.resize(static_cast<size_t>(max_id) + 1);
      present_.assign(dense_.size(), false);
    }
    vocab.for_each([&](std::string_view k, uint32_t v) {
      if (sparse_) {
        by_id_.emplace(v, std::string(k));
      } else {
        dense_[v] = std::string(k);
        present_[v] = true;
      }
    });
  }
  const std::string* find(uint32_t id) const {
    if (sparse_) {
      auto it = by_id_.find(id);
      return it == by_id_.end() ? nullptr : &it->second;
    }
    return id < dense_.size() && present_[id] ? &dense_[id] : nullptr;
  }
  const std::string& operator[](uint32_t id) const { return *find(id); }  // an id of the vocab

 private:
  bool sparse_ = false;
  std::vector<std::string> dense_;
  std::vector<bool> present_;
  std::unordered_map<uint32_t, std::string> by_id_;
};

// ------------------------------------------------------------------------------------------ BPE

class BPE : public Model {
 public:
  BPE(const json& j, const std::string& path) {
    vocab_ = parse_vocab_map(jfield(j, "vocab", path), path + ".vocab");
    vocab_r_ = ReverseVocab(vocab_);
    unk_token_ = jopt_string(j, "unk_token", path);
    prefix_ = jopt_string(j, "continuing_subword_prefix", path);
    suffix_ = jopt_string(j, "end_of_word_suffix", path);
    fuse_unk_ = jbool(j, "fuse_unk", path, false);
    byte_fallback_ = jbool(j, "byte_fallback", path, false);
    ignore_merges_ = jbool(j, "ignore_merges", path, false);
    if (j.contains("dropout") && !j["dropout"].is_null()) {
      double d = j["dropout"].get<double>();
      if (d < 0.0 || d > 1.0) json_error(path + ".dropout", "dropout should be between 0 and 1, inclusive");
      if (d > 0.0) logger().warn("{}: BPE dropout {} is ignored (encoding is deterministic)", path, d);
    }
    const json& merges = jfield(j, "merges", path);
    if (!merges.is_array()) json_error(path + ".merges", "expected an array");
    const size_t prefix_len = prefix_ ? prefix_->size() : 0;
    merges_.reserve(merges.size());
    uint32_t rank = 0;
    for (size_t k = 0; k < merges.size(); ++k) {
      const json& m = merges[k];
      std::string mp = path + ".merges[" + std::to_string(k) + "]";
      std::string a, b;
      if (m.is_string()) {
        const std::string& line = m.get_ref<const std::string&>();
        if (line.rfind("#version", 0) == 0) continue;
        size_t sp = line.find(' ');
        if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
          json_error(mp, "merge \"" + line + "\" is not two tokens separated by one space");
        a = line.substr(0, sp);
        b = line.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        json_error(mp, "expected \"a b\" or [\"a\", \"b\"], got " + m.dump());
      }
      auto ia = vocab_.find(a);
      if (!ia) json_error(mp, "merge token `" + a + "` is not in the vocabulary");
      auto ib = vocab_.find(b);
      if (!ib) json_error(mp, "merge token `" + b + "` is not in the vocabulary");
      std::string merged = a + (prefix_len <= b.size() ? b.substr(prefix_len) : std::string());
      auto in = vocab_.find(merged);
      if (!in) json_error(mp, "merged token `" + merged + "` is not in the vocabulary");
      merges_.insert_or_assign(key(*ia, *ib), std::pair<uint32_t, uint32_t>{rank, *in});
      ++rank;
    }
    // Byte-fallback ids.
    if (byte_fallback_) {
      char buf[8];
      for (int bt = 0; bt < 256; ++bt) {
        std::snprintf(buf, sizeof buf, "<0x%02X>", bt);
        auto it = vocab_.find(std::string_view(buf));
        byte_ids_[bt] = it ? static_cast<int64_t>(*it) : -1;
      }
    }
  }

  void tokenize(std::string_view s, std::vector<Token>& out) const override {
    if (s.empty()) return;
    if (ignore_merges_) {
      if (auto id = vocab_.find(s)) {
        out.push_back(Token{*id, std::string(s), {0, s.size()}});
        return;
      }
    }
    auto emit = [&](const Word& w) {
      size_t pos = 0;
      for (auto [id, len] : w) {
        out.push_back(Token{id, vocab_r_[id], {pos, pos + len}});
        pos += len;
      }
    };
    const bool cacheable = s.size() < kCacheMaxLength;
    if (cacheable && cache_.visit(s, emit)) return;
    Word w;
    merge_word(s, w);
    if (cacheable) cache_.set(s, w);
    emit(w);
  }

  std::optional<uint32_t> token_to_id(std::string_view t) const override { return vocab_.find(t); }
  const std::string* id_to_token(uint32_t id) const override {
    return vocab_r_.find(id);
  }
  size_t vocab_size() const override { return vocab_.size(); }

 private:
  using Word = std::vector<std::pair<uint32_t, uint32_t>>;  // (id, byte length)
  static uint64_t key(uint32_t a, uint32_t b) { return (static_cast<uint64_t>(a) << 32) | b; }

  struct Symbol {
    uint32_t c;
    int32_t prev, next;
    uint32_t len;
  };
  struct Merge {
    uint32_t pos, rank, new_id;
    bool operator<(const Merge& o) const {  // priority_queue: top = lowest rank, then lowest pos
      if (rank != o.rank) return rank > o.rank;
      return pos > o.pos;
    }
  };

  uint32_t unk_id() const {
    auto it = vocab_.find(*unk_token_);
    if (!it) throw TokenizerError("BPE: unk token `" + *unk_token_ + "` not found in the vocabulary");
    return *it;
  }

  void merge_word(std::string_view w, Word& out) const {
    std::vector<Symbol> symbols;
    symbols.reserve(w.size());
    auto add = [&](uint32_t c, uint32_t len) {
      int32_t n = static_cast<int32_t>(symbols.size());
      if (!symbols.empty()) symbols.back().next = n;
      symbols.push_back(Symbol{c, n - 1, -1, len});
    };
    bool has_unk = false;
    uint32_t unk_c = 0, unk_len = 0;
    std::string buf;
    size_t i = 0;
    while (i < w.size()) {
      size_t start = i;
      size_t l = utf8_len(static_cast<unsigned char>(w[i]));
      i = std::min(w.size(), i + l);
      const bool is_first = start == 0, is_last = i >= w.size();
      std::string_view piece = w.substr(start, i - start);
      std::string_view lookup = piece;
      if ((!is_first && prefix_) || (is_last && suffix_)) {
        buf.clear();
        if (!is_first && prefix_) buf += *prefix_;
        buf.append(piece);
        if (is_last && suffix_) buf += *suffix_;
        lookup = buf;
      }
      const uint32_t byte_len = static_cast<uint32_t>(piece.size());
      if (auto it = vocab_.find(lookup)) {
        if (has_unk) {
          add(unk_c, unk_len);
          has_unk = false;
        }
        add(*it, byte_len);
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (unsigned char b : lookup)
          if (byte_ids_[b] < 0) {
            all = false;
            break;
          }
        if (all) {
          for (unsigned char b : lookup) add(static_cast<uint32_t>(byte_ids_[b]), 1);
          continue;
        }
      }
      if (unk_token_) {
        if (has_unk && fuse_unk_) {
          unk_len += byte_len;
        } else {
          if (has_unk) add(unk_c, unk_len);
          unk_c = unk_id();
          unk_len = byte_len;
          has_unk = true;
        }
      }
    }
    if (has_unk) add(unk_c, unk_len);

    // merge_all
    std::priority_queue<Merge> queue;
    for (size_t k = 0; k + 1 < symbols.size(); ++k) {
      if (auto m = merges_.find(key(symbols[k].c, symbols[k + 1].c))) queue.push(Merge{static_cast<uint32_t>(k), m->first, m->second});
    }
    while (!queue.empty()) {
      Merge top = queue.top();
      queue.pop();
      Symbol& cur = symbols[top.pos];
      if (cur.len == 0 || cur.next == -1) continue;
      const size_t next_pos = static_cast<size_t>(cur.next);
      Symbol right = symbols[next_pos];
      auto m = merges_.find(key(cur.c, right.c));
      if (!m || m->second != top.new_id) continue;
      cur.c = top.new_id;
      cur.len += right.len;
      cur.next = right.next;
      symbols[next_pos].len = 0;
      if (right.next > -1 && static_cast<size_t>(right.next) < symbols.size())
        symbols[static_cast<size_t>(right.next)].prev = static_cast<int32_t>(top.pos);
      const Symbol& current = symbols[top.pos];
      if (current.prev >= 0) {
        const Symbol& prev = symbols[static_cast<size_t>(current.prev)];
        if (auto pm = merges_.find(key(prev.c, current.c))) queue.push(Merge{static_cast<uint32_t>(current.prev), pm->first, pm->second});
      }
      if (current.next >= 0 && static_cast<size_t>(current.next) < symbols.size()) {
        const Symbol& nx = symbols[static_cast<size_t>(current.next)];
        if (auto nm = merges_.find(key(current.c, nx.c))) queue.push(Merge{top.pos, nm->first, nm->second});
      }
    }
    out.clear();
    for (const auto& s : symbols)
      if (s.len != 0) out.emplace_back(s.c, s.len);
  }

  Vocab vocab_;
  ReverseVocab vocab_r_;
  U64Map<std::pair<uint32_t, uint32_t>> merges_;
  std::optional<std::string> unk_token_, prefix_, suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  int64_t byte_ids_[256] = {};
  mutable Cache<Word> cache_;
};

// ------------------------------------------------------------------------------------ WordPiece

class WordPiece : public Model {
 public:
  WordPiece(const json& j, const std::string& path) {
    vocab_ = parse_vocab_map(jfield(j, "vocab", path), path + ".vocab");
    vocab_r_ = ReverseVocab(vocab_);
    unk_ = jstring(j, "unk_token", path, "[UNK]");
    prefix_ = jstring(j, "continuing_subword_prefix", path, "##");
    max_chars_ = juint(j, "max_input_chars_per_word", path, 100);
  }

  void tokenize(std::string_view s, std::vector<Token>& out) const override {
    if (utf8_char_count(s) > max_chars_) {
      out.push_back(Token{unk_id(), unk_, {0, s.size()}});
      return;
    }
    const size_t first = out.size();
    std::string buf;
    size_t start = 0;
    while (start < s.size()) {
      size_t end = s.size();
      bool found = false;
      while (start < end) {
        std::string_view sub = s.substr(start, end - start);
        std::string_view lookup = sub;
        if (start > 0) {
          buf.assign(prefix_);
          buf.append(sub);
          lookup = buf;
        }
        if (auto it = vocab_.find(lookup)) {
          out.push_back(Token{*it, std::string(lookup), {start, end}});
          found = true;
          break;
        }
        // step back one char (the last char of `lookup` is the last char of `sub`)
        size_t k = end - 1;
        while (k > start && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        end = k;
      }
      if (!found) {
        out.resize(first);
        out.push_back(Token{unk_id(), unk_, {0, s.size()}});
        return;
      }
      start = end;
    }
  }
  std::optional<uint32_t> token_to_id(std::string_view t) const override { return vocab_.find(t); }
  const std::string* id_to_token(uint32_t id) const override {
    return vocab_r_.find(id);
  }
  size_t vocab_size() const override { return vocab_.size(); }

 private:
  uint32_t unk_id() const {
    auto it = vocab_.find(unk_);
    if (!it) throw TokenizerError("WordPiece: missing [UNK] token `" + unk_ + "` in the vocabulary");
    return *it;
  }
  Vocab vocab_;
  ReverseVocab vocab_r_;
  std::string unk_, prefix_;
  size_t max_chars_ = 100;
};

// ------------------------------------------------------------------------------------ WordLevel

class WordLevel : public Model {
 public:
  WordLevel(const json& j, const std::string& path) {
    vocab_ = parse_vocab_map(jfield(j, "vocab", path), path + ".vocab");
    vocab_r_ = ReverseVocab(vocab_);
    unk_ = jstring(j, "unk_token", path, "<unk>");
  }
  void tokenize(std::string_view s, std::vector<Token>& out) const override {
    if (auto it = vocab_.find(s)) {
      out.push_back(Token{*it, std::string(s), {0, s.size()}});
      return;
    }
    auto u = vocab_.find(unk_);
    if (!u) throw TokenizerError("WordLevel: missing unk token `" + unk_ + "` in the vocabulary");
    out.push_back(Token{*u, unk_, {0, s.size()}});
  }
  std::optional<uint32_t> token_to_id(std::string_view t) const override { return vocab_.find(t); }
  const std::string* id_to_token(uint32_t id) const override {
    return vocab_r_.find(id);
  }
  size_t vocab_size() const override { return vocab_.size(); }

 private:
  Vocab vocab_;
  ReverseVocab vocab_r_;
  std::string unk_;
};

// -------------------------------------------------------------------------------------- Unigram

class Unigram : public Model {
 public:
  Unigram(const json& j, const std::string& path) {
    const json& v = jfield(j, "vocab", path);
    if (!v.is_array()) json_error(path + ".vocab", std::string("expected an array of [piece, score], got ") + v.type_name());
    pieces_.reserve(v.size());
    scores_.reserve(v.size());
    for (size_t k = 0; k < v.size(); ++k) {
      const json& e = v[k];
      if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number())
        json_error(path + ".vocab[" + std::to_string(k) + "]", "expected [piece, score], got " + e.dump());
      pieces_.push_back(e[0].get<std::string>());
      scores_.push_back(e[1].get<double>());
    }
    if (j.contains("unk_id") && !j["unk_id"].is_null()) {
      uint64_t u = juint(j, "unk_id", path, 0);
      if (pieces_.empty()) json_error(path, "the vocabulary is empty but at least <unk> is needed");
      if (u >= pieces_.size()) json_error(path + ".unk_id", "unk_id is larger than the vocabulary size");
      unk_id_ = static_cast<uint32_t>(u);
    }
    byte_fallback_ = jbool(j, "byte_fallback", path, false);
    min_score_ = std::numeric_limits<double>::infinity();
    for (size_t id = 0; id < pieces_.size(); ++id) {
      ids_.insert(pieces_[id], static_cast<uint32_t>(id));
      if (scores_[id] < min_score_) min_score_ = scores_[id];
    }
    // Trie over bytes; terminal nodes carry the id (token_to_ids: the last duplicate wins).
    nodes_.push_back(-1);
    ids_.for_each([&](std::string_view piece, uint32_t id) {
      uint32_t node = 0;
      for (unsigned char c : piece) {
        uint64_t k = (static_cast<uint64_t>(node) << 8) | c;
        if (const uint32_t* nx = edges_.find(k)) {
          node = *nx;
        } else {
          uint32_t nn = static_cast<uint32_t>(nodes_.size());
          nodes_.push_back(-1);
          edges_.insert_or_assign(k, nn);
          node = nn;
        }
      }
      nodes_[node] = id;
    });
  }

  void tokenize(std::string_view s, std::vector<Token>& out) const override {
    if (s.empty()) return;
    std::vector<std::string> pieces;
    bool cacheable = s.size() < kCacheMaxLength;
    if (!(cacheable && cache_.get(s, pieces))) {
      encode_optimized(s, pieces);
      if (cacheable) cache_.set(s, pieces);
    }
    size_t offset = 0;
    for (auto& p : pieces) {
      const size_t len = p.size();
      auto it = ids_.find(p);
      uint32_t id;
      if (it) {
        id = *it;
      } else {
        if (byte_fallback_) {
          bool all = true;
          std::vector<Token> bytes;
          char buf[8];
          for (unsigned char b : p) {
            std::snprintf(buf, sizeof buf, "<0x%02X>", b);
            auto bi = ids_.find(std::string_view(buf));
            if (!bi) {
              all = false;
              break;
            }
            bytes.push_back(Token{*bi, buf, {offset, offset + len}});
          }
          if (all) {
            for (auto& t : bytes) out.push_back(std::move(t));
            offset += len;
            continue;
          }
        }
        if (!unk_id_) throw TokenizerError("Unigram: encountered an unknown token but `unk_id` is missing");
        id = *unk_id_;
      }
      out.push_back(Token{id, std::move(p), {offset, offset + len}});
      offset += len;
    }
  }
  std::optional<uint32_t> token_to_id(std::string_view t) const override { return ids_.find(t); }
  const std::string* id_to_token(uint32_t id) const override { return id < pieces_.size() ? &pieces_[id] : nullptr; }
  size_t vocab_size() const override { return pieces_.size(); }

 private:
  void encode_optimized(std::string_view s, std::vector<std::string>& results) const {
    struct Node {
      uint32_t id = 0;
      double score = 0.0;
      int64_t starts_at = -1;
    };
    const size_t size = s.size();
    const double unk_score = min_score_ - 10.0;
    std::vector<Node> best(size + 1);
    size_t starts_at = 0;
    while (starts_at < size) {
      const double till_here = best[starts_at].score;
      bool has_single = false;
      const size_t mblen = std::min(utf8_len(static_cast<unsigned char>(s[starts_at])), size - starts_at);
      uint32_t node = 0;
      for (size_t p = starts_at; p < size; ++p) {
        const uint32_t* nx = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(s[p]));
        if (!nx) break;
        node = *nx;
        if (nodes_[node] < 0) continue;
        const size_t key_pos = p + 1;
        const uint32_t id = static_cast<uint32_t>(nodes_[node]);
        Node& target = best[key_pos];
        const double cand = scores_[id] + till_here;
        if (target.starts_at < 0 || cand > target.score) {
          target.score = cand;
          target.starts_at = static_cast<int64_t>(starts_at);
          target.id = id;
        }
        if (!has_single && key_pos - starts_at == mblen) has_single = true;
      }
      if (!has_single) {
        Node& target = best[starts_at + mblen];
        const double cand = unk_score + till_here;
        if (target.starts_at < 0 || cand > target.score) {
          if (!unk_id_) throw TokenizerError("Unigram: encountered an unknown token but `unk_id` is missing");
          target.score = cand;
          target.starts_at = static_cast<int64_t>(starts_at);
          target.id = *unk_id_;
        }
      }
      starts_at += mblen;
    }
    results.clear();
    size_t ends_at = size;
    std::vector<std::string_view> token;
    while (ends_at > 0) {
      const Node& node = best[ends_at];
      size_t st = static_cast<size_t>(node.starts_at);
      if (unk_id_ && node.id == *unk_id_) {
        token.push_back(s.substr(st, ends_at - st));
      } else {
        if (!token.empty()) {
          std::string t;
          for (auto it = token.rbegin(); it != token.rend(); ++it) t.append(*it);
          results.push_back(std::move(t));
          token.clear();
        }
        results.emplace_back(s.substr(st, ends_at - st));
      }
      ends_at = st;
    }
    if (!token.empty()) {
      std::string t;
      for (auto it = token.rbegin(); it != token.rend(); ++it) t.append(*it);
      results.push_back(std::move(t));
    }
    std::reverse(results.begin(), results.end());
  }

  std::vector<std::string> pieces_;
  std::vector<double> scores_;
  Vocab ids_;
  std::optional<uint32_t> unk_id_;
  bool byte_fallback_ = false;
  double min_score_ = 0.0;
  std::vector<int64_t> nodes_;
  U64Map<uint32_t> edges_;
  mutable Cache<std::vector<std::string>> cache_;
};

}  // namespace

std::unique_ptr<Model> make_model(const json& j, const std::string& path) {
  if (!j.is_object()) json_error(path, std::string("expected a model object, got ") + j.type_name());
  std::string type;
  if (j.contains("type")) {
    type = jstring(j, "type", path, "");
  } else {
    const json* v = j.contains("vocab") ? &j["vocab"] : nullptr;
    if (v && v->is_array()) type = "Unigram";
    else if (j.contains("merges")) type = "BPE";
    else if (j.contains("continuing_subword_prefix") || j.contains("max_input_chars_per_word")) type = "WordPiece";
    else if (v) type = "WordLevel";
    else json_error(path, "model has no 'type' and no 'vocab'");
  }
  if (type == "BPE") return std::make_unique<BPE>(j, path);
  if (type == "WordPiece") return std::make_unique<WordPiece>(j, path);
  if (type == "WordLevel") return std::make_unique<WordLevel>(j, path);
  if (type == "Unigram") return std::make_unique<Unigram>(j, path);
  json_error(path, "unknown model type '" + type + "' (expected one of BPE, WordPiece, WordLevel, Unigram)");
}

}  // namespace plugformer::tok
