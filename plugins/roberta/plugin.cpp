// The roberta plugin: RobertaConfig, the RoBERTa model classes (core's encoder and heads) and
// RobertaTokenizer(Fast).
#include <plugformer/plugin.h>
#include <plugformer/tokenizers.h>

#include "config.h"

namespace plugformer::roberta {

void register_roberta(Registry& registry) {
  register_roberta_family<RobertaConfig>(registry, "roberta", "Roberta");
  // Byte-level BPE: tokenizer.json, or vocab.json + merges.txt converted as transformers converts them.
  registry.register_tokenizer("RobertaTokenizer", make_fast_tokenizer);
  registry.register_tokenizer("RobertaTokenizerFast", make_fast_tokenizer);
  registry.register_tokenizer_for_model_type("roberta", "RobertaTokenizer", "RobertaTokenizerFast");
}

}  // namespace plugformer::roberta

PLUGFORMER_PLUGIN("roberta", "0.1.0", plugformer::roberta::register_roberta)
