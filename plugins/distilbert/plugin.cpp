// The distilbert plugin: DistilBertConfig, the DistilBERT model classes and DistilBertTokenizer(Fast).
#include <plugformer/plugin.h>
#include <plugformer/tokenizers.h>

#include "config.h"
#include "modeling.h"

namespace plugformer::distilbert {

void register_distilbert(Registry& registry) {
  registry.register_config("distilbert", config_factory<DistilBertConfig>());
  registry.register_model(tasks::kAutoModel, "distilbert", "DistilBertModel",
                          model_factory<DistilBertModel, DistilBertConfig>());
  registry.register_model(tasks::kTextEncoding, "distilbert", "DistilBertModel",
                          model_factory<DistilBertModel, DistilBertConfig>());
  registry.register_model(tasks::kMaskedLM, "distilbert", "DistilBertForMaskedLM",
                          model_factory<DistilBertHeadClass<DistilBertHead::masked_lm>, DistilBertConfig>());
  registry.register_model(tasks::kSequenceClassification, "distilbert", "DistilBertForSequenceClassification",
                          model_factory<DistilBertHeadClass<DistilBertHead::sequence_classification>, DistilBertConfig>());
  registry.register_model(tasks::kTokenClassification, "distilbert", "DistilBertForTokenClassification",
                          model_factory<DistilBertHeadClass<DistilBertHead::token_classification>, DistilBertConfig>());
  registry.register_model(tasks::kQuestionAnswering, "distilbert", "DistilBertForQuestionAnswering",
                          model_factory<DistilBertHeadClass<DistilBertHead::question_answering>, DistilBertConfig>());
  registry.register_model(tasks::kMultipleChoice, "distilbert", "DistilBertForMultipleChoice",
                          model_factory<DistilBertHeadClass<DistilBertHead::multiple_choice>, DistilBertConfig>());
  // BERT's WordPiece: tokenizer.json, or vocab.txt converted as transformers converts it.
  registry.register_tokenizer("DistilBertTokenizer", make_fast_tokenizer);
  registry.register_tokenizer("DistilBertTokenizerFast", make_fast_tokenizer);
  registry.register_tokenizer_for_model_type("distilbert", "DistilBertTokenizer", "DistilBertTokenizerFast");
}

}  // namespace plugformer::distilbert

PLUGFORMER_PLUGIN("distilbert", "0.1.0", plugformer::distilbert::register_distilbert)
