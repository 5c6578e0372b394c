// The llama plugin: LlamaConfig, the Llama model classes (core's decoder) and LlamaTokenizer.
#include <plugformer/plugin.h>
#include <plugformer/tokenizers.h>

#include "config.h"

namespace plugformer::llama {

void register_llama(Registry& registry) {
  // transformers keeps LlamaForQuestionAnswering's base model under "transformer".
  register_decoder_family<LlamaConfig>(registry, {.model_type = "llama", .family = "Llama", .qa_base_prefix = "transformer"});
  registry.register_tokenizer("LlamaTokenizer", [](const TokenizerFiles& files) {
    SentencePieceDefaults defaults;  // LlamaTokenizer's own defaults
    defaults.add_bos_token = true;
    defaults.special_tokens.bos_token = "<s>";
    defaults.special_tokens.eos_token = "</s>";
    defaults.special_tokens.unk_token = "<unk>";
    return make_sentencepiece_tokenizer(files, defaults);
  });
  registry.register_tokenizer("LlamaTokenizerFast", make_fast_tokenizer);
  registry.register_tokenizer_for_model_type("llama", "LlamaTokenizer", "LlamaTokenizerFast");
}

}  // namespace plugformer::llama

PLUGFORMER_PLUGIN("llama", "0.1.0", plugformer::llama::register_llama)
