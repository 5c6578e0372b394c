// The t5 plugin: T5Config, the T5 model classes and their Auto task mappings, T5Tokenizer
// (spiece.model through SentencePiece) and T5TokenizerFast (tokenizer.json, Unigram).
#include <plugformer/plugin.h>
#include <plugformer/tokenizers.h>

#include "config.h"
#include "modeling.h"

namespace plugformer::t5 {

void register_t5(Registry& registry) {
  registry.register_config("t5", config_factory<T5Config>());
  registry.register_model(tasks::kAutoModel, "t5", "T5Model", model_factory<T5Model, T5Config>());
  registry.register_model(tasks::kSeq2SeqLM, "t5", "T5ForConditionalGeneration",
                          model_factory<T5ForConditionalGeneration, T5Config>());
  registry.register_model(tasks::kTextEncoding, "t5", "T5EncoderModel", model_factory<T5EncoderModel, T5Config>());
  registry.register_model(tasks::kSequenceClassification, "t5", "T5ForSequenceClassification",
                          model_factory<T5ForSequenceClassification, T5Config>());
  registry.register_model(tasks::kQuestionAnswering, "t5", "T5ForQuestionAnswering",
                          model_factory<T5ForQuestionAnswering, T5Config>());
  registry.register_tokenizer("T5Tokenizer", [](const TokenizerFiles& files) {
    SentencePieceDefaults defaults;  // T5Tokenizer's own defaults: eos appended, no bos
    defaults.model_file = "spiece.model";
    defaults.add_eos_token = true;
    defaults.special_tokens.eos_token = "</s>";
    defaults.special_tokens.unk_token = "<unk>";
    defaults.special_tokens.pad_token = "<pad>";
    return make_sentencepiece_tokenizer(files, defaults);
  });
  registry.register_tokenizer("T5TokenizerFast", make_fast_tokenizer);
  registry.register_tokenizer_for_model_type("t5", "T5Tokenizer", "T5TokenizerFast");
}

}  // namespace plugformer::t5

PLUGFORMER_PLUGIN("t5", "0.1.0", plugformer::t5::register_t5)
