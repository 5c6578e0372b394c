// The gpt2 plugin: GPT2Config, the GPT-2 model classes and their Auto task mappings.
//
// GPT2TokenizerFast is core's tokenizer.json engine (byte-level BPE; from tokenizer.json, or
// converted from vocab.json + merges.txt). The SDK has no separate slow byte-level BPE, so
// GPT2Tokenizer requests resolve to the fast class, which gives the same ids.
#include <plugformer/plugin.h>
#include <plugformer/tokenizers.h>

#include "config.h"
#include "modeling.h"

namespace plugformer::gpt2 {

void register_gpt2(Registry& registry) {
  registry.register_config("gpt2", config_factory<GPT2Config>());
  registry.register_model(tasks::kAutoModel, "gpt2", "GPT2Model", model_factory<GPT2Model, GPT2Config>());
  registry.register_model(tasks::kCausalLM, "gpt2", "GPT2LMHeadModel", model_factory<GPT2LMHeadModel, GPT2Config>());
  registry.register_model(tasks::kSequenceClassification, "gpt2", "GPT2ForSequenceClassification",
                          model_factory<GPT2ForSequenceClassification, GPT2Config>());
  registry.register_model(tasks::kTokenClassification, "gpt2", "GPT2ForTokenClassification",
                          model_factory<GPT2ForTokenClassification, GPT2Config>());
  registry.register_model(tasks::kQuestionAnswering, "gpt2", "GPT2ForQuestionAnswering",
                          model_factory<GPT2ForQuestionAnswering, GPT2Config>());
  registry.register_tokenizer("GPT2TokenizerFast", make_fast_tokenizer);
  registry.register_tokenizer_for_model_type("gpt2", "GPT2Tokenizer", "GPT2TokenizerFast");
}

}  // namespace plugformer::gpt2

PLUGFORMER_PLUGIN("gpt2", "0.1.0", plugformer::gpt2::register_gpt2)
