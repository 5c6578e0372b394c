// The xlm_roberta plugin: XLMRobertaConfig (model_type "xlm-roberta"), the XLMRoberta* classes
// (core's encoder and RoBERTa's heads) and XLMRobertaTokenizerFast.
#include <plugformer/plugin.h>
#include <plugformer/tokenizers.h>

#include "config.h"

namespace plugformer::xlm_roberta {

void register_xlm_roberta(Registry& registry) {
  register_roberta_family<XLMRobertaConfig>(registry, "xlm-roberta", "XLMRoberta");
  // The Unigram tokenizer.json every XLM-R repository ships; the slow class (sentencepiece.bpe.model
  // with fairseq's id offset) resolves to it.
  registry.register_tokenizer("XLMRobertaTokenizerFast", make_fast_tokenizer);
  registry.register_tokenizer_for_model_type("xlm-roberta", "XLMRobertaTokenizer", "XLMRobertaTokenizerFast");
}

}  // namespace plugformer::xlm_roberta

PLUGFORMER_PLUGIN("xlm_roberta", "0.1.0", plugformer::xlm_roberta::register_xlm_roberta)
