#include "config.h"

namespace plugformer::xlm_roberta {

XLMRobertaConfig::XLMRobertaConfig() {
  model_type_ = "xlm-roberta";
  pad_token_id = 1;
  bos_token_id = 0;
  eos_token_id = {2};
  use_cache = true;
}

}  // namespace plugformer::xlm_roberta
