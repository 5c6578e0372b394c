// The phi3 plugin: Phi3Config and the Phi-3 model classes (core's decoder). Phi-3 checkpoints use
// Llama's tokenizer classes (registered by the llama plugin).
#include <plugformer/plugin.h>

#include "config.h"

namespace plugformer::phi3 {

void register_phi3(Registry& registry) {
  register_decoder_family<Phi3Config>(registry, {.model_type = "phi3", .family = "Phi3", .question_answering = false});
  registry.register_tokenizer_for_model_type("phi3", "LlamaTokenizer", "LlamaTokenizerFast");
}

}  // namespace plugformer::phi3

PLUGFORMER_PLUGIN("phi3", "0.1.0", plugformer::phi3::register_phi3)
