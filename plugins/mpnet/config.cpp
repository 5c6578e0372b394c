#include "config.h"

#include <plugformer/error.h>

namespace plugformer::mpnet {

MPNetConfig::MPNetConfig() {
  model_type_ = "mpnet";
  vocab_size = 30527;
  hidden_act = "gelu";
  max_position_embeddings = 514;
  layer_norm_eps = 1e-12;
  pad_token_id = 1;
  bos_token_id = 0;
  eos_token_id = {2};
}

void MPNetConfig::visit_fields(ConfigFieldVisitor& v) {
  BertStyleConfig::visit_fields(v);
  v.field("relative_attention_num_buckets", relative_attention_num_buckets);
}

void MPNetConfig::validate() const {
  BertStyleConfig::validate();
  // MPNetEncoder's forward always asks for 32 buckets: a smaller table cannot serve it.
  if (relative_attention_num_buckets < 32)
    throw ConfigError("field 'relative_attention_num_buckets' must be at least 32 (the forward uses 32 buckets), got " +
                      std::to_string(relative_attention_num_buckets));
}

}  // namespace plugformer::mpnet
