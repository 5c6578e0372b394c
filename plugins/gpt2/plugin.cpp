// The gpt2 plugin: GPT2Config, the GPT-2 model classes and their Auto task mappings.
//
// Tokenizers: the SDK (plugformer/tokenizers.h) offers no GPT2Tokenizer / GPT2TokenizerFast
// factory yet; core's AutoTokenizer reads gpt2's tokenizer.json and vocab.json + merges.txt
// itself, so nothing is registered here (see README.md).
#include <plugformer/plugin.h>

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
}

}  // namespace plugformer::gpt2

PLUGFORMER_PLUGIN("gpt2", "0.1.0", plugformer::gpt2::register_gpt2)
