// DecodeStream: incremental detokenization over a sliding window of tokens.
#include <algorithm>
#include <string_view>

#include "plugformer/error.h"
#include "plugformer/tokenizer.h"

namespace plugformer {

namespace {

// Tokens of context decoded before the new ones. Decoders look at one neighbour at most (the
// leading space of a first token, WordPiece's "##", the bytes of one character: at most 4).
constexpr size_t kContextTokens = 4;
// The window is cut back to its context once it holds this many tokens and nothing is held back,
// so each step decodes a bounded number of tokens.
constexpr size_t kMaxWindowTokens = 16;

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD: the decoders' mark for incomplete bytes

bool ends_with_replacement(const std::string& text) {
  return text.size() >= kReplacement.size() &&
         std::string_view(text).substr(text.size() - kReplacement.size()) == kReplacement;
}

bool starts_with_replacement(const std::string& text) { return std::string_view(text).substr(0, 3) == kReplacement; }

// Bytes a and b share from the start, cut back to a character boundary.
size_t common_prefix(const std::string& a, const std::string& b) {
  size_t n = std::mismatch(a.begin(), a.begin() + std::ptrdiff_t(std::min(a.size(), b.size())), b.begin()).first - a.begin();
  while (n > 0 && n < a.size() && (static_cast<unsigned char>(a[n]) & 0xC0) == 0x80) --n;
  return n;
}

// The start of a context of at least kContextTokens before `end` that begins at a character: a
// window starting inside one decodes its bytes as U+FFFD (a byte-fallback decoder turns the whole
// run of byte tokens into U+FFFD), which the full decode does not have. A character spans at most
// four tokens.
size_t context_start(const Tokenizer& tokenizer, const std::vector<int64_t>& ids, size_t end, bool skip_special_tokens) {
  size_t start = end - std::min(kContextTokens, end);
  while (start > 0 && end - start < kContextTokens + 3 &&
         starts_with_replacement(tokenizer.decode({ids.begin() + std::ptrdiff_t(start), ids.begin() + std::ptrdiff_t(end)},
                                                  skip_special_tokens)))
    --start;
  return start;
}

}  // namespace

DecodeStream::DecodeStream(std::shared_ptr<const Tokenizer> tokenizer, const std::vector<int64_t>& prompt_ids,
                           bool skip_special_tokens)
    : tokenizer_(std::move(tokenizer)), skip_special_tokens_(skip_special_tokens) {
  if (!tokenizer_) throw InvalidInputError("DecodeStream: no tokenizer");
  // A prompt ending inside a character (its last tokens decode to U+FFFD): that character is the
  // generated text's, so those tokens stay pending.
  auto prefix = [&](size_t n) { return std::vector<int64_t>(prompt_ids.begin(), prompt_ids.begin() + std::ptrdiff_t(n)); };
  size_t complete = prompt_ids.size();
  while (complete > 0 && prompt_ids.size() - complete < 4 &&
         ends_with_replacement(tokenizer_->decode(prefix(complete), skip_special_tokens_)))
    --complete;
  const size_t start = context_start(*tokenizer_, prompt_ids, complete, skip_special_tokens_);
  const std::vector<int64_t> context(prompt_ids.begin() + std::ptrdiff_t(start), prompt_ids.begin() + std::ptrdiff_t(complete));
  text_ = tokenizer_->decode(context, skip_special_tokens_);
  done_ = text_.size();
  window_.assign(prompt_ids.begin() + std::ptrdiff_t(start), prompt_ids.end());
}

std::string DecodeStream::step(int64_t id) {
  window_.push_back(id);
  std::string text = tokenizer_->decode(window_, skip_special_tokens_);
  if (ends_with_replacement(text)) return "";  // the character's remaining bytes are still to come
  // Text already counted that the new token changed (clean_up_tokenization_spaces joining a
  // prompt's trailing space to punctuation): what follows the common part is new.
  done_ = std::min(done_, common_prefix(text, text_));
  size_t end = text.size();
  while (end > done_ && text[end - 1] == ' ') --end;
  std::string piece = text.substr(done_, end - done_);
  done_ = end;
  text_ = std::move(text);
  if (done_ == text_.size() && window_.size() >= kMaxWindowTokens) {
    window_.erase(window_.begin(),
                  window_.begin() + std::ptrdiff_t(context_start(*tokenizer_, window_, window_.size(), skip_special_tokens_)));
    text_ = tokenizer_->decode(window_, skip_special_tokens_);
    done_ = text_.size();
  }
  return piece;
}

std::string DecodeStream::finish() {
  std::string text = tokenizer_->decode(window_, skip_special_tokens_);
  done_ = std::min(done_, common_prefix(text, text_));
  std::string rest = text.substr(done_);
  text_ = std::move(text);
  done_ = text_.size();
  return rest;
}

}  // namespace plugformer
