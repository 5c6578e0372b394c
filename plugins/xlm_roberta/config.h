// XLMRobertaConfig: transformers' configuration_xlm_roberta.py (BERT's fields, XLM-R's defaults).
#pragma once

#include <plugformer/encoder.h>

namespace plugformer::xlm_roberta {

class XLMRobertaConfig : public BertStyleConfig {
 public:
  XLMRobertaConfig();
  std::string model_type() const override { return "xlm-roberta"; }
};

}  // namespace plugformer::xlm_roberta
