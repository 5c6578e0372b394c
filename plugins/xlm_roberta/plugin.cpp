// The xlm_roberta plugin: XLMRobertaConfig (model_type "xlm-roberta"), the XLMRoberta* classes
// (core's encoder and RoBERTa's heads), XLMRobertaTokenizer and XLMRobertaTokenizerFast.
#include <plugformer/plugin.h>
#include <plugformer/tokenizers.h>

#include "config.h"

namespace plugformer::xlm_roberta {

void register_xlm_roberta(Registry& registry) {
  register_roberta_family<XLMRobertaConfig>(registry, "xlm-roberta", "XLMRoberta");
  // sentencepiece.bpe.model with fairseq's ids (the slow class), and the Unigram tokenizer.json
  // every XLM-R repository ships.
  registry.register_tokenizer("XLMRobertaTokenizer", [](const TokenizerFiles& files) {
    SentencePieceDefaults defaults;  // XLMRobertaTokenizer's own defaults
    defaults.model_file = "sentencepiece.bpe.model";
    defaults.fairseq_vocabulary = true;
    defaults.special_tokens = {.bos_token = "<s>", .eos_token = "</s>", .unk_token = "<unk>", .pad_token = "<pad>",
                               .sep_token = "</s>", .cls_token = "<s>", .mask_token = "<mask>"};
    return make_sentencepiece_tokenizer(files, defaults);
  });
  registry.register_tokenizer("XLMRobertaTokenizerFast", make_fast_tokenizer);
  registry.register_tokenizer_for_model_type("xlm-roberta", "XLMRobertaTokenizer", "XLMRobertaTokenizerFast");
}

}  // namespace plugformer::xlm_roberta

PLUGFORMER_PLUGIN("xlm_roberta", "0.1.0", plugformer::xlm_roberta::register_xlm_roberta)
