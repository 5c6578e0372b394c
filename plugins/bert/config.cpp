#include "config.h"

namespace plugformer::bert {

BertConfig::BertConfig() {
  model_type_ = "bert";
  pad_token_id = 0;
  use_cache = true;
}

}  // namespace plugformer::bert
