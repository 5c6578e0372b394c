// BertConfig: transformers' configuration_bert.py fields and defaults (core's BertStyleConfig).
#pragma once

#include <plugformer/encoder.h>

namespace plugformer::bert {

class BertConfig : public BertStyleConfig {
 public:
  BertConfig();
  std::string model_type() const override { return "bert"; }
};

}  // namespace plugformer::bert
