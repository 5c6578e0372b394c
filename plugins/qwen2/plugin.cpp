// The qwen2 plugin: Qwen2Config, the Qwen2 model classes (core's decoder) and Qwen2TokenizerFast.
#include <plugformer/plugin.h>
#include <plugformer/tokenizers.h>

#include "config.h"

namespace plugformer::qwen2 {

void register_qwen2(Registry& registry) {
  // transformers keeps Qwen2ForQuestionAnswering's base model under "transformer".
  register_decoder_family<Qwen2Config>(registry, {.model_type = "qwen2", .family = "Qwen2", .qa_base_prefix = "transformer"});
  // Qwen's byte-level BPE comes as tokenizer.json in every Qwen2 / Qwen2.5 / Qwen3 repository;
  // the slow class name resolves to the same engine.
  registry.register_tokenizer("Qwen2TokenizerFast", make_fast_tokenizer);
  registry.register_tokenizer_for_model_type("qwen2", "Qwen2Tokenizer", "Qwen2TokenizerFast");
}

}  // namespace plugformer::qwen2

PLUGFORMER_PLUGIN("qwen2", "0.1.0", plugformer::qwen2::register_qwen2)
