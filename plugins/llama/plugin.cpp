// The llama plugin: LlamaConfig, the Llama model classes and LlamaTokenizer.
#include <plugformer/plugin.h>
#include <plugformer/tokenizers.h>

#include "config.h"
#include "modeling.h"

namespace plugformer::llama {

void register_llama(Registry& registry) {
  registry.register_config("llama", config_factory<LlamaConfig>());
  registry.register_model(tasks::kAutoModel, "llama", "LlamaModel", model_factory<LlamaModel, LlamaConfig>());
  registry.register_model(tasks::kCausalLM, "llama", "LlamaForCausalLM", model_factory<LlamaForCausalLM, LlamaConfig>());
  registry.register_model(tasks::kSequenceClassification, "llama", "LlamaForSequenceClassification",
                          model_factory<LlamaForSequenceClassification, LlamaConfig>());
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
