#include "config.h"

namespace plugformer::roberta {

RobertaConfig::RobertaConfig() {
  model_type_ = "roberta";
  vocab_size = 50265;
  pad_token_id = 1;
  bos_token_id = 0;
  eos_token_id = {2};
  use_cache = true;
}

}  // namespace plugformer::roberta
