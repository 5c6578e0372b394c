// transformers' slow SentencePiece tokenizers (LlamaTokenizer, T5Tokenizer, XLMRobertaTokenizer) over
// libsentencepiece.
#include <sentencepiece_processor.h>

#include <algorithm>

#include "plugformer/error.h"
#include "plugformer/tokenizers.h"

namespace plugformer {

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const TokenizerFiles& files, const SentencePieceDefaults& defaults) {
    const auto model = files.dir / defaults.model_file;
    const auto status = processor_.Load(model.string());
    if (!status.ok()) throw TokenizerError(model.string() + ": cannot load SentencePiece model (" + status.ToString() + ")");
    const nlohmann::ordered_json& cfg = files.tokenizer_config;
    auto flag = [&](const char* name, bool fallback) {
      auto it = cfg.find(name);
      if (it == cfg.end() || it->is_null()) return fallback;
      if (!it->is_boolean()) throw TokenizerError((files.dir / "tokenizer_config.json").string() + ": field '" + name + "' must be a boolean");
      return it->get<bool>();
    };
    add_bos_ = flag("add_bos_token", defaults.add_bos_token);
    add_eos_ = flag("add_eos_token", defaults.add_eos_token);
    legacy_ = flag("legacy", true);
    // T5's sentinel tokens <extra_id_0> .. <extra_id_{n-1}> sit after the SentencePiece vocabulary,
    // numbered from the end (<extra_id_0> is the last id).
    if (auto it = cfg.find("extra_ids"); it != cfg.end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<int64_t>() < 0)
        throw TokenizerError((files.dir / "tokenizer_config.json").string() + ": field 'extra_ids' must be a non-negative integer");
      extra_ids_ = it->get<int64_t>();
    }
    fairseq_ = defaults.fairseq_vocabulary;
    special_ = read_special_tokens(files);
    for (auto [mine, fallback] : {std::pair{&special_.bos_token, &defaults.special_tokens.bos_token},
                                  std::pair{&special_.eos_token, &defaults.special_tokens.eos_token},
                                  std::pair{&special_.unk_token, &defaults.special_tokens.unk_token},
                                  std::pair{&special_.pad_token, &defaults.special_tokens.pad_token},
                                  std::pair{&special_.sep_token, &defaults.special_tokens.sep_token},
                                  std::pair{&special_.cls_token, &defaults.special_tokens.cls_token},
                                  std::pair{&special_.mask_token, &defaults.special_tokens.mask_token}})
      if (!*mine) *mine = *fallback;
    if (auto it = cfg.find("clean_up_tokenization_spaces"); it != cfg.end() && it->is_boolean())
      clean_up_tokenization_spaces = it->get<bool>();
    if (auto it = cfg.find("model_max_length"); it != cfg.end() && it->is_number_integer())
      model_max_length = it->get<int64_t>();
    if (auto it = cfg.find("padding_side"); it != cfg.end() && it->is_string()) padding_side = it->get<std::string>();
    // Special tokens are matched in the text as whole strings, longest first.
    for (const auto& t : {special_.bos_token, special_.eos_token, special_.unk_token, special_.pad_token,
                          special_.sep_token, special_.cls_token, special_.mask_token})
      if (t && !t->empty() && token_to_id(*t)) specials_.push_back(*t);
    // fairseq's mask token behaves like a word: it takes the spaces before it (lstrip).
    if (fairseq_ && special_.mask_token) lstrip_.push_back(*special_.mask_token);
    for (int64_t i = 0; i < extra_ids_; ++i) specials_.push_back(extra_id_token(i));
    if (auto it = cfg.find("added_tokens_decoder"); it != cfg.end() && it->is_object())
      for (const auto& [id, token] : it->items())
        if (token.is_object() && token.value("special", false) && token.contains("content") && token["content"].is_string()) {
          specials_.push_back(token["content"].get<std::string>());
          if (token.value("lstrip", false)) lstrip_.push_back(specials_.back());
        }
    std::sort(specials_.begin(), specials_.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
    specials_.erase(std::unique(specials_.begin(), specials_.end()), specials_.end());
  }

  Encoding encode(std::string_view text, bool add_special_tokens) const override {
    if (fairseq_) return fairseq_sequence(encode_text(text), nullptr, add_special_tokens);
    Encoding enc = encode_text(text);
    if (add_special_tokens && add_bos_ && bos_token_id()) {
      enc.ids.insert(enc.ids.begin(), *bos_token_id());
      enc.tokens.insert(enc.tokens.begin(), *id_to_token(*bos_token_id()));
      enc.special_tokens_mask.insert(enc.special_tokens_mask.begin(), 1);
    }
    if (add_special_tokens && add_eos_ && eos_token_id()) push(enc, *eos_token_id(), true);
    enc.type_ids.assign(enc.ids.size(), 0);
    enc.attention_mask.assign(enc.ids.size(), 1);
    return enc;
  }

  Encoding encode_pair(std::string_view text, std::string_view text_pair, bool add_special_tokens) const override {
    if (!fairseq_) return Tokenizer::encode_pair(text, text_pair, add_special_tokens);
    const Encoding second = encode_text(text_pair);
    return fairseq_sequence(encode_text(text), &second, add_special_tokens);
  }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override {
    return fairseq_ ? decode_fairseq(ids, skip_special_tokens) : decode_pieces(ids, skip_special_tokens);
  }

  std::optional<int64_t> token_to_id(std::string_view token) const override {
    if (fairseq_) {
      for (int64_t id = 0; id < 4; ++id)
        if (token == kFairseqSpecials[id]) return id;
      if (special_.mask_token && token == *special_.mask_token) return pieces() + 1;
    }
    constexpr std::string_view prefix = "<extra_id_";
    if (extra_ids_ > 0 && token.size() > prefix.size() + 1 && token.substr(0, prefix.size()) == prefix &&
        token.back() == '>') {
      const std::string digits(token.substr(prefix.size(), token.size() - prefix.size() - 1));
      if (!digits.empty() && digits.size() < 10 && std::all_of(digits.begin(), digits.end(), ::isdigit) &&
          std::stoll(digits) < extra_ids_)
        return pieces() + extra_ids_ - 1 - std::stoll(digits);
    }
    const int id = processor_.PieceToId(token);
    if (id == processor_.unk_id() && token != processor_.IdToPiece(id)) return std::nullopt;
    return fairseq_ ? id + 1 : id;
  }
  std::optional<std::string> id_to_token(int64_t id) const override {
    if (id < 0 || id >= int64_t(vocab_size())) return std::nullopt;
    if (fairseq_) {
      if (id < 4) return std::string(kFairseqSpecials[id]);
      if (id == pieces() + 1) return special_.mask_token.value_or("<mask>");
      return processor_.IdToPiece(int(id - 1));
    }
    if (id >= pieces()) return extra_id_token(pieces() + extra_ids_ - 1 - id);
    return processor_.IdToPiece(int(id));
  }
  size_t vocab_size() const override { return size_t(fairseq_ ? pieces() + 2 : pieces() + extra_ids_); }

 private:
  // fairseq's first four ids (its dictionary's order), then SentencePiece's pieces shifted by one.
  static constexpr std::string_view kFairseqSpecials[4] = {"<s>", "<pad>", "</s>", "<unk>"};
  static constexpr int64_t kFairseqUnk = 3;

  void push(Encoding& enc, int64_t id, bool special) const {
    enc.ids.push_back(id);
    enc.tokens.push_back(*id_to_token(id));
    enc.special_tokens_mask.push_back(special ? 1 : 0);
  }

  // The text's ids without added sequence tokens: special tokens written in it matched first, the
  // pieces between them encoded by SentencePiece.
  Encoding encode_text(std::string_view text) const {
    Encoding enc;
    size_t pos = 0;
    while (pos <= text.size()) {
      // The next special token written in the text, if any.
      size_t hit = std::string_view::npos;
      const std::string* which = nullptr;
      for (const auto& s : specials_) {
        const size_t at = text.find(s, pos);
        if (at != std::string_view::npos && (at < hit || (at == hit && s.size() > which->size()))) {
          hit = at;
          which = &s;
        }
      }
      std::string_view chunk = text.substr(pos, hit == std::string_view::npos ? std::string_view::npos : hit - pos);
      if (which && std::find(lstrip_.begin(), lstrip_.end(), *which) != lstrip_.end())
        chunk = chunk.substr(0, chunk.find_last_not_of(" \t\n\r\f\v") + 1);
      if (!chunk.empty()) {
        std::vector<int> ids;
        processor_.Encode(chunk, &ids);
        for (int id : ids) push(enc, fairseq_ ? (id == processor_.unk_id() ? kFairseqUnk : id + 1) : id, false);
      }
      if (!which) break;
      push(enc, *token_to_id(*which), true);
      pos = hit + which->size();
    }
    return enc;
  }

  // <s> A </s> or <s> A </s></s> B </s> (XLMRobertaTokenizer.build_inputs_with_special_tokens);
  // only the tokens added here count as special (get_special_tokens_mask), not ones in the text.
  Encoding fairseq_sequence(const Encoding& first, const Encoding* second, bool add_special_tokens) const {
    Encoding enc;
    auto add = [&](const Encoding& part) {
      for (int64_t id : part.ids) push(enc, id, false);
    };
    const int64_t cls = *token_to_id(special_.cls_token.value_or("<s>"));
    const int64_t sep = *token_to_id(special_.sep_token.value_or("</s>"));
    if (add_special_tokens) push(enc, cls, true);
    add(first);
    if (add_special_tokens) push(enc, sep, true);
    if (second) {
      if (add_special_tokens) push(enc, sep, true);
      add(*second);
      if (add_special_tokens) push(enc, sep, true);
    }
    enc.type_ids.assign(enc.ids.size(), 0);
    enc.attention_mask.assign(enc.ids.size(), 1);
    return enc;
  }

  // XLMRobertaTokenizer: every added token is special, so all tokens join into one string with
  // SentencePiece's word marks turned into spaces, then trimmed.
  std::string decode_fairseq(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
    std::string text;
    for (int64_t id : ids) {
      const std::optional<std::string> token = id_to_token(id);
      if (!token) throw TokenizerError("decode: id " + std::to_string(id) + " is outside the vocabulary");
      if (skip_special_tokens && std::find(specials_.begin(), specials_.end(), *token) != specials_.end()) continue;
      text += *token;
    }
    std::string out;
    constexpr std::string_view mark = "\xe2\x96\x81";  // U+2581
    for (size_t i = 0; i < text.size();) {
      if (text.compare(i, mark.size(), mark) == 0) {
        out += ' ';
        i += mark.size();
      } else {
        out += text[i++];
      }
    }
    const size_t first = out.find_first_not_of(" \t\n\r\f\v");
    out = first == std::string::npos ? "" : out.substr(first, out.find_last_not_of(" \t\n\r\f\v") - first + 1);
    return clean_up_tokenization_spaces ? clean_up_tokenization(std::move(out)) : out;
  }

  std::string decode_pieces(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
    // As LlamaTokenizer.convert_tokens_to_string: runs of ordinary pieces go through
    // SentencePiece; special tokens are written as they are.
    std::string out;
    std::vector<int> run;
    bool prev_special = false;
    for (size_t i = 0; i < ids.size(); ++i) {
      const int64_t id = ids[i];
      if (id < 0 || id >= int64_t(vocab_size())) throw TokenizerError("decode: id " + std::to_string(id) + " is outside the vocabulary");
      const std::string piece = *id_to_token(id);
      const bool special = std::find(specials_.begin(), specials_.end(), piece) != specials_.end() ||
                           (id < pieces() && processor_.IsControl(int(id)));
      if (special) {
        if (skip_special_tokens) continue;
        if (!prev_special && i != 0 && legacy_) out += " ";
        out += flush(run) + piece;
        prev_special = true;
      } else {
        run.push_back(int(id));
        prev_special = false;
      }
    }
    return out + flush(run);
  }


  std::string flush(std::vector<int>& run) const {
    if (run.empty()) return "";
    std::string text;
    processor_.Decode(run, &text);
    run.clear();
    return text;
  }

  int64_t pieces() const { return processor_.GetPieceSize(); }
  static std::string extra_id_token(int64_t i) { return "<extra_id_" + std::to_string(i) + ">"; }

  sentencepiece::SentencePieceProcessor processor_;
  bool add_bos_ = false, add_eos_ = false, legacy_ = true, fairseq_ = false;
  int64_t extra_ids_ = 0;
  std::vector<std::string> specials_, lstrip_;  // lstrip_: specials that take the spaces before them
};

}  // namespace

}  // namespace plugformer

// The module's one entry point, opened by make_sentencepiece_tokenizer in libplugformer.
extern "C" __attribute__((visibility("default"))) void plugformer_sentencepiece_create(
    const plugformer::TokenizerFiles& files, const plugformer::SentencePieceDefaults& defaults,
    std::shared_ptr<plugformer::Tokenizer>& out) {
  out = std::make_shared<plugformer::SentencePieceTokenizer>(files, defaults);
}
