// The mpnet plugin: MPNetConfig, the MPNet model classes (core's BERT-style encoder in MPNet's
// layout, with RoBERTa's heads) and MPNetTokenizer(Fast).
#include <plugformer/plugin.h>
#include <plugformer/tokenizers.h>

#include "config.h"

namespace plugformer::mpnet {

void register_mpnet(Registry& registry) {
  EncoderLayout layout;
  layout.prefix = "mpnet";
  layout.positions = PositionIds::after_padding_idx;
  layout.padding_idx = 1;  // MPNetEmbeddings hard-codes it, whatever pad_token_id says
  layout.token_type_embeddings = false;
  layout.mpnet_attention_names = true;
  register_roberta_family<MPNetConfig>(registry, "mpnet", "MPNet", layout, /*causal_lm=*/false);
  // WordPiece: tokenizer.json, or vocab.txt converted as transformers' MPNetConverter does.
  registry.register_tokenizer("MPNetTokenizer", make_fast_tokenizer);
  registry.register_tokenizer("MPNetTokenizerFast", make_fast_tokenizer);
  registry.register_tokenizer_for_model_type("mpnet", "MPNetTokenizer", "MPNetTokenizerFast");
}

}  // namespace plugformer::mpnet

PLUGFORMER_PLUGIN("mpnet", "0.1.0", plugformer::mpnet::register_mpnet)
