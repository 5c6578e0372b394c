// Post-processors of tokenizers/src/processors: TemplateProcessing, BertProcessing,
// RobertaProcessing, ByteLevel, Sequence.
#include <algorithm>

#include "tokenizers/components.h"
#include "tokenizers/unicode.h"

namespace plugformer::tok {

Enc PostProcessor::process(Enc encoding, std::optional<Enc> pair, bool add_special_tokens) const {
  std::vector<Enc> encodings;
  encodings.push_back(std::move(encoding));
  if (pair) encodings.push_back(std::move(*pair));
  for (size_t i = 0; i < encodings.size(); ++i) {
    encodings[i].set_sequence_id(i);
    for (auto& o : encodings[i].overflowing) o.set_sequence_id(i);
    encodings[i].set_type_ids(static_cast<int64_t>(i));
  }
  process_encodings(encodings, add_special_tokens);
  return Enc::merge(std::move(encodings), false);
}

Enc default_process(Enc encoding, std::optional<Enc> pair) {
  if (!pair) return encoding;
  Enc out;
  encoding.set_sequence_id(0);
  out.merge_with(std::move(encoding), false);
  pair->set_sequence_id(1);
  out.merge_with(std::move(*pair), false);
  return out;
}

void process_byte_level_offsets(Enc& e, bool add_prefix_space) {
  static const char32_t kSpace = 0x120;  // 'Ġ'
  for (size_t i = 0; i < e.tokens.size(); ++i) {
    const std::string& tok = e.tokens[i];
    auto& off = e.offsets[i];
    std::vector<char32_t> chars;
    size_t k = 0;
    while (k < tok.size()) chars.push_back(utf8_next(tok, k));
    size_t leading = 0, trailing = 0;
    while (leading < chars.size() && (chars[leading] == kSpace || is_whitespace(chars[leading]))) ++leading;
    while (trailing < chars.size() && (chars[chars.size() - 1 - trailing] == kSpace || is_whitespace(chars[chars.size() - 1 - trailing])))
      ++trailing;
    if (leading == 0 && trailing == 0) continue;
    if (leading > 0) {
      bool is_first = i == 0 || off.first == 0;
      if (is_first && add_prefix_space && leading == 1) leading = 0;
      off.first = std::min(off.first + leading, off.second);
    }
    if (trailing > 0 && off.second >= trailing) off.second = std::max(off.second - trailing, off.first);
  }
}

namespace {

std::pair<std::string, uint32_t> parse_pair(const json& j, const char* key, const std::string& path) {
  const json& v = jfield(j, key, path);
  if (!v.is_array() || v.size() != 2 || !v[0].is_string() || !v[1].is_number_integer() || v[1].get<int64_t>() < 0)
    json_error(path + "." + key, "expected [token, id], got " + v.dump());
  return {v[0].get<std::string>(), v[1].get<uint32_t>()};
}

Enc wrap(const Enc& e, const std::pair<std::string, uint32_t>* first, const std::pair<std::string, uint32_t>& last,
         uint32_t first_type, uint32_t last_type, bool keep_type_ids, uint32_t all_type, size_t seq_id) {
  Enc o;
  o.reserve(e.size() + 2);
  if (first) o.push(first->second, first->first, {0, 0}, std::nullopt, first_type, 1, 1);
  for (size_t i = 0; i < e.size(); ++i)
    o.push(e.ids[i], e.tokens[i], e.offsets[i], e.words[i], keep_type_ids ? e.type_ids[i] : all_type, 0, 1);
  o.push(last.second, last.first, {0, 0}, std::nullopt, last_type, 1, 1);
  size_t begin = first ? 1 : 0;
  o.sequence_ranges[seq_id] = {begin, o.size() - 1};
  return o;
}

class BertProcessing : public PostProcessor {
 public:
  BertProcessing(std::pair<std::string, uint32_t> sep, std::pair<std::string, uint32_t> cls) : sep_(std::move(sep)), cls_(std::move(cls)) {}
  size_t added_tokens(bool is_pair) const override { return is_pair ? 3 : 2; }
  void process_encodings(std::vector<Enc>& encs, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    for (size_t i = 0; i < encs.size(); ++i) {
      Enc& e = encs[i];
      Enc out;
      if (i == 0) {
        out = wrap(e, &cls_, sep_, 0, 0, true, 0, 0);
        for (auto& o : e.overflowing) out.overflowing.push_back(wrap(o, &cls_, sep_, 0, 0, true, 0, 0));
      } else {
        out = wrap(e, nullptr, sep_, 0, 1, true, 0, 1);
        for (auto& o : e.overflowing) out.overflowing.push_back(wrap(o, nullptr, sep_, 0, 1, true, 0, 1));
      }
      e = std::move(out);
    }
  }

 private:
  std::pair<std::string, uint32_t> sep_, cls_;
};

class RobertaProcessing : public PostProcessor {
 public:
  RobertaProcessing(std::pair<std::string, uint32_t> sep, std::pair<std::string, uint32_t> cls, bool trim, bool aps)
      : sep_(std::move(sep)), cls_(std::move(cls)), trim_offsets_(trim), add_prefix_space_(aps) {}
  size_t added_tokens(bool is_pair) const override { return is_pair ? 4 : 2; }
  void process_encodings(std::vector<Enc>& encs, bool add_special_tokens) const override {
    if (trim_offsets_) {
      for (auto& e : encs) {
        process_byte_level_offsets(e, add_prefix_space_);
        for (auto& o : e.overflowing) process_byte_level_offsets(o, add_prefix_space_);
      }
    }
    for (auto& e : encs) e.set_type_ids(0);
    if (!add_special_tokens) return;
    for (size_t i = 0; i < encs.size(); ++i) {
      Enc& e = encs[i];
      Enc out;
      if (i == 0) {
        out = wrap(e, &cls_, sep_, 0, 0, true, 0, 0);
        for (auto& o : e.overflowing) out.overflowing.push_back(wrap(o, &cls_, sep_, 0, 0, false, 0, 0));
      } else {
        out = wrap(e, &sep_, sep_, 0, 0, false, 0, 1);
        for (auto& o : e.overflowing) out.overflowing.push_back(wrap(o, &sep_, sep_, 0, 0, false, 0, 1));
      }
      e = std::move(out);
    }
  }

 private:
  std::pair<std::string, uint32_t> sep_, cls_;
  bool trim_offsets_, add_prefix_space_;
};

class ByteLevelProcessor : public PostProcessor {
 public:
  ByteLevelProcessor(bool trim, bool aps) : trim_offsets_(trim), add_prefix_space_(aps) {}
  size_t added_tokens(bool) const override { return 0; }
  void process_encodings(std::vector<Enc>& encs, bool) const override {
    if (trim_offsets_) {
      for (auto& e : encs) {
        process_byte_level_offsets(e, add_prefix_space_);
        for (auto& o : e.overflowing) process_byte_level_offsets(o, add_prefix_space_);
      }
    }
    for (size_t i = 0; i < encs.size(); ++i) encs[i].set_sequence_id(i);
  }

 private:
  bool trim_offsets_, add_prefix_space_;
};

struct Piece {
  bool is_sequence;
  size_t seq;  // 0 = A, 1 = B
  std::string id;
  uint32_t type_id;
};

struct SpecialTok {
  std::vector<int64_t> ids;
  std::vector<std::string> tokens;
};

Piece parse_piece_string(const std::string& s, const std::string& path) {
  std::string id = s;
  uint32_t type_id = 0;
  size_t colon = s.find(':');
  if (colon != std::string::npos) {
    if (s.find(':', colon + 1) != std::string::npos) json_error(path, "cannot build Piece from string \"" + s + "\"");
    id = s.substr(0, colon);
    try {
      type_id = static_cast<uint32_t>(std::stoul(s.substr(colon + 1)));
    } catch (...) {
      json_error(path, "cannot build Piece from string \"" + s + "\"");
    }
  }
  if (!id.empty() && id[0] == '$') {
    std::string rest = id.substr(1);
    if (rest.empty() || rest == "A" || rest == "a") return {true, 0, "", type_id};
    if (rest == "B" || rest == "b") return {true, 1, "", type_id};
    try {
      uint32_t t = static_cast<uint32_t>(std::stoul(rest));
      return {true, 0, "", colon != std::string::npos ? type_id : t};
    } catch (...) {
      json_error(path, "cannot build Piece from string \"" + s + "\"");
    }
  }
  return {false, 0, id, type_id};
}

std::vector<Piece> parse_template(const json& j, const std::string& path) {
  std::vector<Piece> out;
  if (j.is_string()) {
    std::string s = j.get<std::string>();
    size_t start = 0;
    while (true) {
      size_t sp = s.find(' ', start);
      out.push_back(parse_piece_string(s.substr(start, sp == std::string::npos ? std::string::npos : sp - start), path));
      if (sp == std::string::npos) break;
      start = sp + 1;
    }
    return out;
  }
  if (!j.is_array()) json_error(path, "expected a template (array of pieces)");
  for (size_t k = 0; k < j.size(); ++k) {
    const json& p = j[k];
    std::string pp = path + "[" + std::to_string(k) + "]";
    if (p.is_string()) {
      out.push_back(parse_piece_string(p.get<std::string>(), pp));
      continue;
    }
    if (p.is_object() && p.contains("Sequence")) {
      const json& s = p["Sequence"];
      std::string id = jstring(s, "id", pp + ".Sequence", "A");
      if (id != "A" && id != "B") json_error(pp + ".Sequence.id", "expected \"A\" or \"B\", got \"" + id + "\"");
      out.push_back({true, id == "A" ? 0u : 1u, "", static_cast<uint32_t>(juint(s, "type_id", pp + ".Sequence", 0))});
    } else if (p.is_object() && p.contains("SpecialToken")) {
      const json& s = p["SpecialToken"];
      const json& id = jfield(s, "id", pp + ".SpecialToken");
      if (!id.is_string()) json_error(pp + ".SpecialToken.id", "expected a string");
      out.push_back({false, 0, id.get<std::string>(), static_cast<uint32_t>(juint(s, "type_id", pp + ".SpecialToken", 0))});
    } else {
      json_error(pp, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}, got " + p.dump());
    }
  }
  return out;
}

class TemplateProcessing : public PostProcessor {
 public:
  TemplateProcessing(const json& j, const std::string& path) {
    single_ = parse_template(jfield(j, "single", path), path + ".single");
    pair_ = parse_template(jfield(j, "pair", path), path + ".pair");
    auto st = j.find("special_tokens");
    if (st != j.end() && !st->is_null()) {
      if (!st->is_object()) json_error(path + ".special_tokens", "expected an object");
      for (auto it = st->begin(); it != st->end(); ++it) {
        std::string sp = path + ".special_tokens[\"" + it.key() + "\"]";
        const json& v = it.value();
        const json& ids = jfield(v, "ids", sp);
        const json& toks = jfield(v, "tokens", sp);
        if (!ids.is_array() || !toks.is_array() || ids.size() != toks.size())
          json_error(sp, "ids and tokens must be arrays of the same length");
        SpecialTok t;
        for (auto& x : ids) {
          if (!x.is_number_integer() || x.get<int64_t>() < 0) json_error(sp + ".ids", "expected non-negative integers");
          t.ids.push_back(x.get<int64_t>());
        }
        for (auto& x : toks) {
          if (!x.is_string()) json_error(sp + ".tokens", "expected strings");
          t.tokens.push_back(x.get<std::string>());
        }
        std::string id = v.contains("id") && v["id"].is_string() ? v["id"].get<std::string>() : it.key();
        specials_[id] = std::move(t);
      }
    }
    for (const auto* tpl : {&single_, &pair_})
      for (const auto& p : *tpl)
        if (!p.is_sequence && !specials_.count(p.id))
          json_error(path, "template uses special token '" + p.id + "' missing from special_tokens");
    added_single_ = count(single_);
    added_pair_ = count(pair_);
  }
  size_t added_tokens(bool is_pair) const override { return is_pair ? added_pair_ : added_single_; }
  void process_encodings(std::vector<Enc>& encs, bool add_special_tokens) const override {
    const auto& tpl = encs.size() == 2 ? pair_ : single_;
    size_t uses[2] = {0, 0};
    for (const auto& p : tpl)
      if (p.is_sequence) ++uses[std::min<size_t>(p.seq, encs.size() - 1)];
    std::vector<Enc> out;
    out.reserve(tpl.size());
    for (const auto& p : tpl) {
      if (p.is_sequence) {
        size_t i = p.seq;
        if (i >= encs.size()) i = encs.size() - 1;  // single template referencing $B: not reachable with valid files
        Enc& e = encs[i];
        e.set_type_ids(p.type_id);
        e.set_sequence_id(i);
        if (--uses[i] == 0)
          out.push_back(std::move(e));  // last use: no copy needed
        else
          out.push_back(e);
      } else if (add_special_tokens) {
        const SpecialTok& t = specials_.at(p.id);
        Enc e;
        for (size_t k = 0; k < t.ids.size(); ++k) e.push(t.ids[k], t.tokens[k], {0, 0}, std::nullopt, p.type_id, 1, 1);
        out.push_back(std::move(e));
      }
    }
    encs = std::move(out);
  }

 private:
  size_t count(const std::vector<Piece>& tpl) const {
    size_t n = 0;
    for (const auto& p : tpl)
      if (!p.is_sequence) {
        auto it = specials_.find(p.id);
        if (it != specials_.end()) n += it->second.ids.size();
      }
    return n;
  }
  std::vector<Piece> single_, pair_;
  std::map<std::string, SpecialTok> specials_;
  size_t added_single_ = 0, added_pair_ = 0;
};

class SequenceProcessor : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> v) : v_(std::move(v)) {}
  size_t added_tokens(bool is_pair) const override {
    size_t n = 0;
    for (const auto& p : v_) n += p->added_tokens(is_pair);
    return n;
  }
  void process_encodings(std::vector<Enc>& encs, bool add_special_tokens) const override {
    for (const auto& p : v_) p->process_encodings(encs, add_special_tokens);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> v_;
};

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& path) {
  if (!j.is_object()) json_error(path, std::string("expected a post-processor object, got ") + j.type_name());
  std::string type = jstring(j, "type", path, "");
  if (type.empty()) {
    if (j.contains("single")) type = "TemplateProcessing";
    else if (j.contains("processors")) type = "Sequence";
    else if (j.contains("sep") && j.contains("trim_offsets")) type = "RobertaProcessing";
    else if (j.contains("sep")) type = "BertProcessing";
    else if (j.contains("trim_offsets")) type = "ByteLevel";
  }
  if (type == "TemplateProcessing") return std::make_unique<TemplateProcessing>(j, path);
  if (type == "BertProcessing") return std::make_unique<BertProcessing>(parse_pair(j, "sep", path), parse_pair(j, "cls", path));
  if (type == "RobertaProcessing")
    return std::make_unique<RobertaProcessing>(parse_pair(j, "sep", path), parse_pair(j, "cls", path),
                                               jbool(j, "trim_offsets", path, true), jbool(j, "add_prefix_space", path, true));
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelProcessor>(jbool(j, "trim_offsets", path, true), jbool(j, "add_prefix_space", path, true));
  if (type == "Sequence") {
    const json& arr = jfield(j, "processors", path);
    if (!arr.is_array()) json_error(path + ".processors", "expected an array");
    std::vector<std::unique_ptr<PostProcessor>> v;
    for (size_t k = 0; k < arr.size(); ++k) v.push_back(make_post_processor(arr[k], path + ".processors[" + std::to_string(k) + "]"));
    return std::make_unique<SequenceProcessor>(std::move(v));
  }
  if (type.empty()) json_error(path, "post-processor has no 'type' and its fields match no known post-processor");
  json_error(path, "unknown post-processor type '" + type +
                       "' (expected one of TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence)");
}

}  // namespace plugformer::tok
