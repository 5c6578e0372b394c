// The qwen3 plugin: Qwen3Config and the Qwen3 model classes (core's decoder). Qwen3 uses Qwen2's
// tokenizer classes (registered by the qwen2 plugin).
#include <plugformer/plugin.h>

#include "config.h"

namespace plugformer::qwen3 {

void register_qwen3(Registry& registry) {
  register_decoder_family<Qwen3Config>(registry, {.model_type = "qwen3", .family = "Qwen3", .qa_base_prefix = "transformer"});
  registry.register_tokenizer_for_model_type("qwen3", "Qwen2Tokenizer", "Qwen2TokenizerFast");
}

}  // namespace plugformer::qwen3

PLUGFORMER_PLUGIN("qwen3", "0.1.0", plugformer::qwen3::register_qwen3)
