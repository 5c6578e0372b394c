// MPNetConfig: transformers' configuration_mpnet.py (BERT's fields without token types, and the
// size of the relative position bias table).
#pragma once

#include <plugformer/encoder.h>

namespace plugformer::mpnet {

class MPNetConfig : public BertStyleConfig {
 public:
  MPNetConfig();
  std::string model_type() const override { return "mpnet"; }
  void visit_fields(ConfigFieldVisitor& v) override;
  void validate() const override;
  int64_t relative_attention_table_size() const override { return relative_attention_num_buckets; }

  int64_t relative_attention_num_buckets = 32;
};

}  // namespace plugformer::mpnet
