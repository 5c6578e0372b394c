// RobertaConfig: transformers' configuration_roberta.py (BERT's fields, RoBERTa's defaults).
#pragma once

#include <plugformer/encoder.h>

namespace plugformer::roberta {

class RobertaConfig : public BertStyleConfig {
 public:
  RobertaConfig();
  std::string model_type() const override { return "roberta"; }
};

}  // namespace plugformer::roberta
