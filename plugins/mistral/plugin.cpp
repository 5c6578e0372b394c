// The mistral plugin: MistralConfig and the Mistral model classes (core's decoder). Mistral
// checkpoints use Llama's tokenizer classes (registered by the llama plugin).
#include <plugformer/plugin.h>

#include "config.h"

namespace plugformer::mistral {

void register_mistral(Registry& registry) {
  register_decoder_family<MistralConfig>(registry, {.model_type = "mistral", .family = "Mistral"});
  registry.register_tokenizer_for_model_type("mistral", "LlamaTokenizer", "LlamaTokenizerFast");
}

}  // namespace plugformer::mistral

PLUGFORMER_PLUGIN("mistral", "0.1.0", plugformer::mistral::register_mistral)
