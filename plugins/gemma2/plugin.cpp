// The gemma2 plugin: Gemma2Config and the Gemma 2 model classes (core's decoder). Gemma 2 uses
// Gemma's tokenizer classes (registered by the gemma plugin).
#include <plugformer/plugin.h>

#include "config.h"

namespace plugformer::gemma2 {

void register_gemma2(Registry& registry) {
  register_decoder_family<Gemma2Config>(registry, {.model_type = "gemma2", .family = "Gemma2", .question_answering = false});
  registry.register_tokenizer_for_model_type("gemma2", "GemmaTokenizer", "GemmaTokenizerFast");
}

}  // namespace plugformer::gemma2

PLUGFORMER_PLUGIN("gemma2", "0.1.0", plugformer::gemma2::register_gemma2)
