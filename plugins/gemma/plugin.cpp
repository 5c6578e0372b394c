// The gemma plugin: GemmaConfig, the Gemma model classes (core's decoder) and GemmaTokenizer(Fast).
#include <plugformer/plugin.h>
#include <plugformer/tokenizers.h>

#include "config.h"

namespace plugformer::gemma {

void register_gemma(Registry& registry) {
  register_decoder_family<GemmaConfig>(registry, {.model_type = "gemma", .family = "Gemma", .question_answering = false});
  registry.register_tokenizer("GemmaTokenizer", [](const TokenizerFiles& files) {
    SentencePieceDefaults defaults;  // GemmaTokenizer's own defaults
    defaults.add_bos_token = true;
    defaults.special_tokens.bos_token = "<bos>";
    defaults.special_tokens.eos_token = "<eos>";
    defaults.special_tokens.unk_token = "<unk>";
    defaults.special_tokens.pad_token = "<pad>";
    return make_sentencepiece_tokenizer(files, defaults);
  });
  registry.register_tokenizer("GemmaTokenizerFast", make_fast_tokenizer);
  registry.register_tokenizer_for_model_type("gemma", "GemmaTokenizer", "GemmaTokenizerFast");
}

}  // namespace plugformer::gemma

PLUGFORMER_PLUGIN("gemma", "0.1.0", plugformer::gemma::register_gemma)
