// The modernbert plugin: ModernBertConfig and the ModernBERT model classes (checkpoints ship a
// tokenizer.json for PreTrainedTokenizerFast).
#include <plugformer/plugin.h>

#include "config.h"
#include "modeling.h"

namespace plugformer::modernbert {

void register_modernbert(Registry& registry) {
  registry.register_config("modernbert", config_factory<ModernBertConfig>());
  for (const char* task : {tasks::kAutoModel, tasks::kTextEncoding})
    registry.register_model(task, "modernbert", "ModernBertModel", model_factory<ModernBertModel, ModernBertConfig>());
  registry.register_model(tasks::kMaskedLM, "modernbert", "ModernBertForMaskedLM",
                          model_factory<ModernBertHeadClass<ModernBertHead::masked_lm>, ModernBertConfig>());
  registry.register_model(tasks::kSequenceClassification, "modernbert", "ModernBertForSequenceClassification",
                          model_factory<ModernBertHeadClass<ModernBertHead::sequence_classification>, ModernBertConfig>());
  registry.register_model(tasks::kTokenClassification, "modernbert", "ModernBertForTokenClassification",
                          model_factory<ModernBertHeadClass<ModernBertHead::token_classification>, ModernBertConfig>());
  registry.register_model(tasks::kQuestionAnswering, "modernbert", "ModernBertForQuestionAnswering",
                          model_factory<ModernBertHeadClass<ModernBertHead::question_answering>, ModernBertConfig>());
}

}  // namespace plugformer::modernbert

PLUGFORMER_PLUGIN("modernbert", "0.1.0", plugformer::modernbert::register_modernbert)
