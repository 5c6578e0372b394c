// Tokenizer implementations that live in core, for family plugins to register under their
// transformers class names (LlamaTokenizer, T5Tokenizer, BertTokenizerFast, ...).
#pragma once

#include <memory>
#include <string>

#include "plugformer/tokenizer.h"

namespace plugformer {

// Special tokens named by tokenizer_config.json (strings or {"content": ...} objects), then
// special_tokens_map.json for the ones it leaves out.
SpecialTokens read_special_tokens(const TokenizerFiles& files);

// The tokenizer.json engine (transformers' *TokenizerFast): tokenizer.json when present, otherwise
// converted from vocab.txt (BERT) or vocab.json + merges.txt (GPT-2), with tokenizer_config.json's
// special tokens and options applied.
std::shared_ptr<Tokenizer> make_fast_tokenizer(const TokenizerFiles& files);

// A slow SentencePiece tokenizer (transformers' LlamaTokenizer / T5Tokenizer) over
// `model_file` in files.dir. tokenizer_config.json's add_bos_token / add_eos_token override
// the defaults; special tokens written in the text are matched before SentencePiece runs.
struct SentencePieceDefaults {
  std::string model_file = "tokenizer.model";
  bool add_bos_token = false;
  bool add_eos_token = false;
  SpecialTokens special_tokens;  // the class's defaults, for tokens the files do not name
  // fairseq's vocabulary (XLMRobertaTokenizer): <s> <pad> </s> <unk> take ids 0-3, SentencePiece's
  // pieces follow shifted by one, the mask token comes last and takes the spaces before it; a
  // sequence is built as <s> A </s> and a pair as <s> A </s></s> B </s>, token types all 0.
  bool fairseq_vocabulary = false;
};

// transformers' clean_up_tokenization: the spaces decoding leaves before punctuation and English
// contractions (" ." -> ".", " n't" -> "n't", ...) removed.
std::string clean_up_tokenization(std::string text);
std::shared_ptr<Tokenizer> make_sentencepiece_tokenizer(const TokenizerFiles& files,
                                                        const SentencePieceDefaults& defaults);

}  // namespace plugformer
