// Pieces of task heads that every family shares: losses with transformers' semantics and the
// pooling of decoder-only sequence classifiers.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

#include "plugformer/config.h"
#include "plugformer/modeling.h"

namespace plugformer {

// Next-token cross entropy: logits [batch, seq, vocab] predict labels shifted by one; -100 is ignored.
at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels);
// Cross entropy over the last dimension with -100 ignored (masked LM, token classification, seq2seq).
at::Tensor token_cross_entropy(const at::Tensor& logits, const at::Tensor& labels);
// Sequence classification loss by config.problem_type (inferred as transformers does when unset):
// regression (MSE), single_label_classification (CE), multi_label_classification (BCE with logits).
at::Tensor sequence_classification_loss(const PretrainedConfig& config, const at::Tensor& logits,
                                        const at::Tensor& labels);
// logits [batch, seq, n] -> [batch, n] at each row's rightmost token that is not pad_token_id.
at::Tensor pool_last_non_pad_token(const at::Tensor& logits, const at::Tensor& input_ids,
                                   std::optional<int64_t> pad_token_id);

// Decoder-only sequence classification: `logits` [batch, seq, labels] from the score layer pooled at
// each row's rightmost non-pad token (the caller checks that input_ids are given), the loss by problem_type with labels, and the base model's outputs moved over.
ModelOutput last_token_classification_outputs(const at::Tensor& logits, const ModelInputs& inputs,
                                              const PretrainedConfig& config, ModelOutput& base);

// resize_token_embeddings for an LM head's own bias (BERT's cls.predictions.bias, RoBERTa's
// lm_head.bias): kept entries stay, new tokens start at zero, as transformers pads the tied bias.
void resize_vocabulary_bias(at::Tensor& bias, int64_t vocab_size);

// What a head model's output keeps of its base model's: last_hidden_state, the KV cache, the
// hidden states and the attentions (moved out of `base`).
void move_base_outputs(ModelOutput& out, ModelOutput& base);

// Extractive question answering: logits [batch, seq, 2] -> start_logits and end_logits [batch, seq]
// set in `out`; with start_positions and end_positions ([batch]) in `inputs` also the loss, the mean
// of both cross entropies, positions outside the sequence clamped to seq_len and ignored.
void question_answering_outputs(const at::Tensor& logits, const ModelInputs& inputs, ModelOutput& out);

}  // namespace plugformer
