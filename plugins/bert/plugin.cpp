// The bert plugin: BertConfig, the BERT model classes and their Auto task mappings.
#include <plugformer/plugin.h>
#include <plugformer/tokenizers.h>

#include "config.h"
#include "modeling.h"

namespace plugformer::bert {

void register_bert(Registry& registry) {
  registry.register_config("bert", config_factory<BertConfig>());
  registry.register_model(tasks::kAutoModel, "bert", "BertModel", model_factory<BertModel, BertConfig>());
  registry.register_model(tasks::kTextEncoding, "bert", "BertModel", model_factory<BertModel, BertConfig>());
  registry.register_model(tasks::kPreTraining, "bert", "BertForPreTraining",
                          model_factory<BertForPreTraining, BertConfig>());
  registry.register_model(tasks::kCausalLM, "bert", "BertLMHeadModel", model_factory<BertLMHeadModel, BertConfig>());
  registry.register_model(tasks::kMaskedLM, "bert", "BertForMaskedLM", model_factory<BertForMaskedLM, BertConfig>());
  registry.register_model(tasks::kNextSentencePrediction, "bert", "BertForNextSentencePrediction",
                          model_factory<BertForNextSentencePrediction, BertConfig>());
  registry.register_model(tasks::kSequenceClassification, "bert", "BertForSequenceClassification",
                          model_factory<BertForSequenceClassification, BertConfig>());
  registry.register_model(tasks::kMultipleChoice, "bert", "BertForMultipleChoice",
                          model_factory<BertForMultipleChoice, BertConfig>());
  registry.register_model(tasks::kTokenClassification, "bert", "BertForTokenClassification",
                          model_factory<BertForTokenClassification, BertConfig>());
  registry.register_model(tasks::kQuestionAnswering, "bert", "BertForQuestionAnswering",
                          model_factory<BertForQuestionAnswering, BertConfig>());
  // Both names run core's tokenizer.json engine: from tokenizer.json, or converted from vocab.txt
  // exactly as transformers converts BertTokenizer, so slow and fast give the same ids.
  registry.register_tokenizer("BertTokenizer", make_fast_tokenizer);
  registry.register_tokenizer("BertTokenizerFast", make_fast_tokenizer);
  registry.register_tokenizer_for_model_type("bert", "BertTokenizer", "BertTokenizerFast");
}

}  // namespace plugformer::bert

PLUGFORMER_PLUGIN("bert", "0.1.0", plugformer::bert::register_bert)
