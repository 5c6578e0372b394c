// Text generation for decoder-only and encoder-decoder models: GenerationConfig
// (generation_config.json) and generate() with a KV cache, batched prompts (left padding),
// stopping on eos / length, and a streaming callback.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "plugformer/config.h"
#include "plugformer/modeling.h"
#include "plugformer/tokenizer.h"

namespace plugformer {

struct GenerationConfig {
  // Length.
  int64_t max_length = 20;
  std::optional<int64_t> max_new_tokens;  // wins over max_length
  int64_t min_length = 0;
  std::optional<int64_t> min_new_tokens;
  std::optional<double> max_time;         // seconds
  std::vector<std::string> stop_strings;  // needs the tokenizer passed to generate()
  // Strategy.
  bool do_sample = false;
  int64_t num_beams = 1;
  int64_t num_return_sequences = 1;
  double length_penalty = 1.0;
  std::string early_stopping = "false";  // "true", "false" or "never", as transformers' True/False/"never"
  bool use_cache = true;
  // Logits processors and warpers, applied in transformers' order.
  double temperature = 1.0;
  int64_t top_k = 50;
  double top_p = 1.0;
  std::optional<double> min_p;
  double typical_p = 1.0;
  double repetition_penalty = 1.0;
  int64_t no_repeat_ngram_size = 0;
  std::vector<std::vector<int64_t>> bad_words_ids;
  std::optional<int64_t> forced_bos_token_id, forced_eos_token_id;
  // Special tokens.
  std::optional<int64_t> bos_token_id, pad_token_id, decoder_start_token_id;
  std::vector<int64_t> eos_token_id;
  // Not a transformers field: seeds the sampling generator so runs are reproducible.
  std::optional<uint64_t> seed;
  json extra = json::object();  // other keys of generation_config.json, kept for round trips

  // transformers' rule: the model config's token ids, then generation_config.json on top.
  static GenerationConfig from_model_config(const PretrainedConfig& config);
  void update_from_json(const json& values, const std::string& source = "generation_config.json");
  json to_json() const;
  void save_pretrained(const std::filesystem::path& dir) const;
  // InvalidInputError for settings that cannot work (max_new_tokens < 0, num_beams < 1, ...).
  void validate() const;
};

// Called with (batch row, new token id) after each step; return false to stop generating.
using TokenCallback = std::function<bool(int64_t row, int64_t token)>;

struct GenerateOutput {
  at::Tensor sequences;            // [batch * num_return_sequences, prompt + new], prompt as given
  std::vector<at::Tensor> scores;  // per step: [batch * beams, vocab] processed scores
  at::Tensor sequences_scores;     // beam search: the final (length-penalised) score of each sequence
};

// input_ids [batch, prompt_len]; attention_mask [batch, prompt_len] (left padding) or undefined.
// Encoder-decoder models (config.is_encoder_decoder): input_ids go to the encoder, run once; the
// decoder starts from decoder_start_token_id (else bos_token_id; InvalidInputError without
// either) and `sequences` are the decoder's, starting with that token, as in transformers.
// `tokenizer` is needed for stop_strings. Streaming (on_token) is for greedy and sampling.
GenerateOutput generate(PreTrainedModel& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                        const GenerationConfig& config, const TokenCallback& on_token = {},
                        const Tokenizer* tokenizer = nullptr);

// One sequence's next-token choice, for callers that run the model step by step themselves (the
// serving engine): `config`'s logits processors and warpers in transformers' order, then argmax or a
// draw from the sequence's own generator (seeded by config.seed), as generate() does for one prompt,
// so the same settings and seed give the same tokens.
class TokenChooser {
 public:
  TokenChooser(const GenerationConfig& config, int64_t prompt_len);
  ~TokenChooser();
  TokenChooser(TokenChooser&&) noexcept;
  TokenChooser& operator=(TokenChooser&&) noexcept;
  // scores: [1, vocab] fp32 next-token logits, processed in place; tokens: the prompt, then what
  // was generated so far.
  int64_t choose(at::Tensor& scores, const std::vector<int64_t>& tokens);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace plugformer
