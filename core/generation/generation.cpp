#include "plugformer/generation.h"
#include "plugformer/distributed.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <optional>
#include <set>

#include "plugformer/error.h"
#include "plugformer/log.h"
#include "modeling/torch_errors.h"

namespace plugformer {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The logits processors and (when sampling) warpers of transformers, in its order.
class LogitsPipeline {
 public:
  LogitsPipeline(const GenerationConfig& c, int64_t prompt_len, int64_t max_length)
      : c_(c), prompt_len_(prompt_len), max_length_(max_length), min_keep_(c.num_beams > 1 ? 2 : 1) {}

  // scores [rows, vocab] (modified in place); sequences [rows, len] so far.
  void apply(at::Tensor& scores, const at::Tensor& sequences) const {
    const int64_t len = sequences.size(1);
    const at::Tensor eos = at::tensor(c_.eos_token_id, at::kLong);
    if (c_.repetition_penalty != 1.0) {
      at::Tensor picked = scores.gather(1, sequences);
      picked = at::where(picked < 0, picked * c_.repetition_penalty, picked / c_.repetition_penalty);
      scores.scatter_(1, sequences, picked);
    }
    if (c_.no_repeat_ngram_size > 0) ban_repeated_ngrams(scores, sequences);
    if (!c_.bad_words_ids.empty()) ban_bad_words(scores, sequences);
    if (eos.numel() && len < c_.min_length) scores.index_fill_(1, eos, kNegInf);
    if (eos.numel() && c_.min_new_tokens && len - prompt_len_ < *c_.min_new_tokens) scores.index_fill_(1, eos, kNegInf);
    if (c_.forced_bos_token_id && len == 1) force(scores, *c_.forced_bos_token_id);
    if (c_.forced_eos_token_id && len == max_length_ - 1) force(scores, *c_.forced_eos_token_id);
    if (!c_.do_sample) return;
    if (c_.temperature != 1.0) scores.div_(c_.temperature);
    if (c_.top_k > 0) top_k(scores);
    if (c_.top_p < 1.0) top_p(scores);
    if (c_.min_p) min_p(scores);
    if (c_.typical_p < 1.0) typical(scores);
  }

 private:
  static void force(at::Tensor& scores, int64_t token) {
    scores.fill_(kNegInf);
    scores.select(1, token).fill_(0);
  }
  void ban_repeated_ngrams(at::Tensor& scores, const at::Tensor& sequences) const {
    const int64_t n = c_.no_repeat_ngram_size, len = sequences.size(1);
    if (len + 1 < n) return;
    at::Tensor seq = sequences.contiguous();
    for (int64_t r = 0; r < seq.size(0); ++r) {
      const int64_t* ids = seq[r].data_ptr<int64_t>();
      // Tokens that completed an earlier n-gram starting with the current (n-1)-token suffix.
      for (int64_t start = 0; start + n <= len; ++start)
        if (std::equal(ids + start, ids + start + n - 1, ids + len - (n - 1))) scores[r][ids[start + n - 1]] = kNegInf;
    }
  }
  void ban_bad_words(at::Tensor& scores, const at::Tensor& sequences) const {
    at::Tensor seq = sequences.contiguous();
    const int64_t len = seq.size(1);
    for (int64_t r = 0; r < seq.size(0); ++r) {
      const int64_t* ids = seq[r].data_ptr<int64_t>();
      for (const auto& word : c_.bad_words_ids) {
        const int64_t prefix = int64_t(word.size()) - 1;
        if (prefix > len) continue;
        if (std::equal(word.begin(), word.end() - 1, ids + len - prefix)) scores[r][word.back()] = kNegInf;
      }
    }
  }
  void top_k(at::Tensor& scores) const {
    const int64_t k = std::min(std::max(c_.top_k, min_keep_), scores.size(-1));
    at::Tensor kth = std::get<0>(scores.topk(k, -1)).narrow(-1, k - 1, 1);
    scores.masked_fill_(scores < kth, kNegInf);
  }
  void top_p(at::Tensor& scores) const {
    auto [sorted, indices] = scores.sort(-1, false);
    at::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
    at::Tensor remove = cumulative <= (1 - c_.top_p);
    remove.narrow(-1, remove.size(-1) - min_keep_, min_keep_).fill_(false);
    scores.masked_fill_(remove.scatter(1, indices, remove), kNegInf);
  }
  void min_p(at::Tensor& scores) const {
    at::Tensor probs = scores.softmax(-1);
    at::Tensor remove = probs < (*c_.min_p * probs.amax(-1, true));
    at::Tensor order = scores.argsort(-1, true);
    at::Tensor sorted_remove = remove.gather(-1, order);
    sorted_remove.narrow(-1, 0, min_keep_).fill_(false);
    scores.masked_fill_(sorted_remove.scatter(1, order, sorted_remove), kNegInf);
  }
  void typical(at::Tensor& scores) const {
    at::Tensor normalized = scores.log_softmax(-1);
    at::Tensor p = normalized.exp();
    at::Tensor entropy = -(normalized * p).nansum(-1, true);
    auto [sorted_shift, indices] = ((-normalized) - entropy).abs().sort(-1, false);
    at::Tensor cumulative = scores.gather(-1, indices).softmax(-1).cumsum(-1);
    at::Tensor last = (cumulative < c_.typical_p).sum(1).clamp_max(scores.size(-1) - 1);
    at::Tensor remove = sorted_shift > sorted_shift.gather(1, last.view({-1, 1}));
    remove.narrow(-1, 0, min_keep_).fill_(false);
    scores.masked_fill_(remove.scatter(1, indices, remove), kNegInf);
  }

  const GenerationConfig& c_;
  int64_t prompt_len_, max_length_, min_keep_;
};

// The encoder side of an encoder-decoder model (undefined for decoder-only models).
struct EncoderInputs {
  at::Tensor input_ids, attention_mask;

  bool defined() const { return input_ids.defined(); }
  EncoderInputs repeat_interleave(int64_t times) const {
    if (!defined() || times == 1) return *this;
    return {input_ids.repeat_interleave(times, 0), attention_mask.repeat_interleave(times, 0)};
  }
};

// Runs the model on what the cache has not seen yet and returns the last position's logits.
// Encoder-decoder models run their encoder on the first step only; its output is fed back after.
class Stepper {
 public:
  // max_length: the longest the sequences get, reserved in the cache up front.
  Stepper(PreTrainedModel& model, bool use_cache, EncoderInputs encoder, int64_t max_length)
      : model_(model), max_length_(max_length), encoder_(std::move(encoder)) {
    if (use_cache) cache_ = fresh_cache();
  }

  at::Tensor next_logits(const at::Tensor& sequences, const at::Tensor& mask) {
    if (cache_ && seen_ > 0 && !model_.reuses_cache(sequences.size(1), seen_)) {
      cache_ = fresh_cache();
      seen_ = 0;
    }
    const int64_t fed = cache_ && seen_ > 0 ? sequences.size(1) - seen_ : sequences.size(1);
    ModelInputs inputs;
    if (encoder_.defined()) {
      if (encoded_.defined()) inputs.tensors["encoder_outputs"] = encoded_;
      else inputs.tensors["input_ids"] = encoder_.input_ids;
      inputs.tensors["attention_mask"] = encoder_.attention_mask;
      inputs.tensors["decoder_input_ids"] = sequences.narrow(1, sequences.size(1) - fed, fed);
    } else {
      inputs.tensors["input_ids"] = sequences.narrow(1, sequences.size(1) - fed, fed);
      // Without padding (checked once: the mask only grows by ones) the model's defaults are the
      // same mask and positions, and a decode step then builds no mask at all.
      if (!padded_) padded_ = (mask == 0).any().item<bool>();
      if (*padded_) {
        // Positions count only real tokens, so left padding does not shift them.
        at::Tensor positions = (mask.cumsum(-1) - 1).masked_fill_(mask == 0, 1);
        inputs.tensors["attention_mask"] = mask;
        inputs.tensors["position_ids"] = positions.narrow(1, positions.size(1) - fed, fed);
      }
    }
    inputs.past_key_values = cache_;
    inputs.use_cache = bool(cache_);
    inputs.logits_to_keep = 1;
    ModelOutput out;
    try {
      out = model_.forward(inputs);
    } catch (const c10::Error& e) {
      throw_computation_error(e, model_.class_name(), model_.dtype());
    }
    if (encoder_.defined() && !encoded_.defined()) encoded_ = out["encoder_last_hidden_state"];
    at::Tensor logits = out["logits"];
    seen_ = sequences.size(1);
    const at::Tensor last = logits.select(1, logits.size(1) - 1);
    return last.scalar_type() == at::kFloat ? last.clone() : last.to(at::kFloat);
  }
  void reorder(const at::Tensor& rows) {
    if (cache_) cache_->reorder(rows);
    if (encoder_.defined()) {
      encoder_.attention_mask = encoder_.attention_mask.index_select(0, rows);
      encoded_ = encoded_.index_select(0, rows);
    }
  }

 private:
  std::shared_ptr<KVCache> fresh_cache() const {
    auto cache = std::make_shared<KVCache>();
    cache->reserve(max_length_);
    return cache;
  }

  PreTrainedModel& model_;
  int64_t max_length_;
  std::shared_ptr<KVCache> cache_;
  EncoderInputs encoder_;
  at::Tensor encoded_;
  int64_t seen_ = 0;
  std::optional<bool> padded_;
};

// Stop strings: a row is done when its decoded continuation ends with one of them.
bool ends_with_stop_string(const GenerationConfig& c, const Tokenizer* tokenizer, const at::Tensor& row, int64_t prompt_len) {
  if (c.stop_strings.empty()) return false;
  at::Tensor fresh = row.narrow(0, prompt_len, row.size(0) - prompt_len).contiguous();
  const std::string text =
      tokenizer->decode(std::vector<int64_t>(fresh.data_ptr<int64_t>(), fresh.data_ptr<int64_t>() + fresh.numel()), false);
  for (const auto& stop : c.stop_strings)
    if (text.size() >= stop.size() && text.compare(text.size() - stop.size(), stop.size(), stop) == 0) return true;
  return false;
}

// transformers' BeamHypotheses: the best finished sequences of one prompt.
struct BeamHypotheses {
  int64_t num_beams;
  double length_penalty;
  std::string early_stopping;
  int64_t max_length;
  std::vector<std::pair<double, at::Tensor>> beams;
  double worst = 1e9;

  void add(const at::Tensor& hyp, double sum_logprobs, int64_t generated_len) {
    const double score = sum_logprobs / std::pow(double(generated_len), length_penalty);
    if (int64_t(beams.size()) < num_beams || score > worst) {
      beams.emplace_back(score, hyp);
      if (int64_t(beams.size()) > num_beams) {
        std::vector<std::pair<double, size_t>> order;
        for (size_t i = 0; i < beams.size(); ++i) order.emplace_back(beams[i].first, i);
        std::sort(order.begin(), order.end());
        beams.erase(beams.begin() + long(order[0].second));
        worst = order[1].first;
      } else {
        worst = std::min(score, worst);
      }
    }
  }
  bool is_done(double best_sum_logprobs, int64_t cur_len, int64_t prompt_len) const {
    if (int64_t(beams.size()) < num_beams) return false;
    if (early_stopping == "true") return true;
    const int64_t denominator = early_stopping == "never" && length_penalty > 0 ? max_length - prompt_len : cur_len - prompt_len;
    return worst >= best_sum_logprobs / std::pow(double(denominator), length_penalty);
  }
};

GenerateOutput beam_search(PreTrainedModel& model, at::Tensor sequences, at::Tensor mask, const EncoderInputs& encoder,
                           const GenerationConfig& c, int64_t max_length, const Tokenizer* tokenizer) {
  const int64_t batch = sequences.size(0), beams = c.num_beams, prompt_len = sequences.size(1);
  sequences = sequences.repeat_interleave(beams, 0);
  mask = mask.repeat_interleave(beams, 0);
  at::Tensor beam_scores = at::zeros({batch, beams}, at::kFloat);
  beam_scores.narrow(1, 1, beams - 1).fill_(-1e9);
  beam_scores = beam_scores.view({-1});
  std::vector<BeamHypotheses> hyps(size_t(batch), BeamHypotheses{beams, c.length_penalty, c.early_stopping, max_length, {}, 1e9});
  std::vector<bool> done(size_t(batch), false);
  const int64_t pad = c.pad_token_id.value_or(c.eos_token_id.empty() ? 0 : c.eos_token_id.front());
  const std::set<int64_t> eos(c.eos_token_id.begin(), c.eos_token_id.end());
  const auto start = std::chrono::steady_clock::now();
  LogitsPipeline pipeline(c, prompt_len, max_length);
  Stepper stepper(model, c.use_cache, encoder.repeat_interleave(beams), max_length);
  GenerateOutput out;

  while (sequences.size(1) < max_length) {
    at::Tensor logits = stepper.next_logits(sequences, mask);
    at::Tensor scores = logits.log_softmax(-1);
    pipeline.apply(scores, sequences);
    out.scores.push_back(scores.clone());
    const int64_t vocab = scores.size(-1);
    at::Tensor totals = (scores + beam_scores.unsqueeze(1)).view({batch, beams * vocab});
    const int64_t keep = std::max<int64_t>(2, 1 + int64_t(eos.size())) * beams;
    auto [top_scores, top_tokens] = totals.topk(keep, 1, true, true);
    at::Tensor top_beam = top_tokens.div(vocab, "floor"), top_token = top_tokens.remainder(vocab);
    const int64_t cur_len = sequences.size(1) + 1;

    at::Tensor next_scores = at::zeros({batch, beams}, at::kFloat);
    at::Tensor next_tokens = at::full({batch, beams}, pad, at::kLong);
    at::Tensor next_rows = at::zeros({batch, beams}, at::kLong);
    auto ts = top_scores.accessor<float, 2>();
    auto tb = top_beam.accessor<int64_t, 2>();
    auto tt = top_token.accessor<int64_t, 2>();
    for (int64_t b = 0; b < batch; ++b) {
      if (done[size_t(b)]) continue;
      int64_t slot = 0;
      for (int64_t rank = 0; rank < keep && slot < beams; ++rank) {
        const int64_t row = b * beams + tb[b][rank], token = tt[b][rank];
        if (eos.count(token)) {
          if (rank >= beams) continue;
          hyps[size_t(b)].add(sequences[row].clone(), ts[b][rank], cur_len - prompt_len);
        } else {
          next_scores[b][slot] = ts[b][rank];
          next_tokens[b][slot] = token;
          next_rows[b][slot] = row;
          ++slot;
        }
      }
      done[size_t(b)] = done[size_t(b)] || hyps[size_t(b)].is_done(top_scores[b].max().item<double>(), cur_len, prompt_len);
    }
    beam_scores = next_scores.view({-1});
    at::Tensor rows = next_rows.view({-1});
    sequences = at::cat({sequences.index_select(0, rows), next_tokens.view({-1, 1})}, 1);
    mask = at::cat({mask.index_select(0, rows), at::ones({batch * beams, 1}, at::kLong)}, 1);
    stepper.reorder(rows);
    const bool timed_out = c.max_time && std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > *c.max_time;
    bool stopped = !c.stop_strings.empty();
    for (int64_t r = 0; stopped && r < sequences.size(0); ++r) stopped = ends_with_stop_string(c, tokenizer, sequences[r], prompt_len);
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; }) || timed_out || stopped) break;
  }

  // Finalize: open beams compete with the finished ones; keep the best num_return_sequences.
  for (int64_t b = 0; b < batch; ++b) {
    if (done[size_t(b)]) continue;
    for (int64_t k = 0; k < beams; ++k)
      hyps[size_t(b)].add(sequences[b * beams + k].clone(), beam_scores[b * beams + k].item<double>(), sequences.size(1) - prompt_len);
  }
  std::vector<at::Tensor> best;
  std::vector<double> best_scores;
  int64_t longest = 0;
  for (auto& h : hyps) {
    std::sort(h.beams.begin(), h.beams.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (int64_t j = 0; j < c.num_return_sequences; ++j) {
      best.push_back(h.beams.back().second);
      best_scores.push_back(h.beams.back().first);
      longest = std::max(longest, h.beams.back().second.size(0));
      h.beams.pop_back();
    }
  }
  const int64_t width = std::min(longest + 1, max_length);
  at::Tensor decoded = at::full({int64_t(best.size()), width}, pad, at::kLong);
  for (size_t i = 0; i < best.size(); ++i) {
    const int64_t n = best[i].size(0);
    decoded[int64_t(i)].narrow(0, 0, n).copy_(best[i]);
    if (n < width && !c.eos_token_id.empty()) decoded[int64_t(i)][n] = c.eos_token_id.front();
  }
  out.sequences = decoded;
  out.sequences_scores = at::tensor(best_scores, at::kFloat);
  return out;
}

}  // namespace

namespace {

at::Generator sampling_generator(const GenerationConfig& config) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(config.seed.value_or(at::default_rng_seed_val));
  if (!config.seed) generator.set_current_seed(c10::detail::getNonDeterministicRandom());
  return generator;
}

// Rank 0's next tokens and whether it goes on, on every rank of a tensor-parallel group (one
// broadcast per step; rank 0 sends, the others receive into `next`).
bool share_step(TensorParallelGroup& group, at::Tensor& next, bool keep_going) {
  at::Tensor packed = at::cat({next, at::full({1}, int64_t(keep_going), at::kLong)});
  group.broadcast(packed);
  next = packed.narrow(0, 0, next.size(0)).clone();
  return packed[-1].item<int64_t>() != 0;
}

at::Tensor next_tokens(const GenerationConfig& config, const at::Tensor& scores, at::Generator& generator) {
  return config.do_sample ? at::multinomial(scores.softmax(-1), 1, false, generator).squeeze(1) : scores.argmax(-1);
}

}  // namespace

struct TokenChooser::State {
  GenerationConfig config;
  LogitsPipeline pipeline;
  at::Generator generator;
  State(const GenerationConfig& c, int64_t prompt_len)
      : config(c),
        pipeline(config, prompt_len, config.max_new_tokens ? prompt_len + *config.max_new_tokens : config.max_length),
        generator(sampling_generator(config)) {}
};

TokenChooser::TokenChooser(const GenerationConfig& config, int64_t prompt_len) {
  config.validate();
  state_ = std::make_unique<State>(config, prompt_len);
}
TokenChooser::~TokenChooser() = default;
TokenChooser::TokenChooser(TokenChooser&&) noexcept = default;
TokenChooser& TokenChooser::operator=(TokenChooser&&) noexcept = default;

int64_t TokenChooser::choose(at::Tensor& scores, const std::vector<int64_t>& tokens) {
  if (scores.dim() != 2 || scores.size(0) != 1) throw InvalidInputError("TokenChooser::choose takes scores [1, vocab]");
  state_->pipeline.apply(scores, at::tensor(tokens, at::kLong).unsqueeze(0));
  return next_tokens(state_->config, scores, state_->generator).item<int64_t>();
}

GenerateOutput generate(PreTrainedModel& model, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                        const GenerationConfig& config, const TokenCallback& on_token, const Tokenizer* tokenizer) {
  config.validate();
  if (!model.can_generate()) throw InvalidInputError(model.class_name() + " cannot generate (it has no language-modeling head)");
  if (input_ids.dim() != 2) throw InvalidInputError("input_ids must be [batch, length]");
  if (input_ids.size(1) == 0) throw InvalidInputError("the prompt is empty: generation needs at least one token");
  if (attention_mask.defined() && attention_mask.sizes() != input_ids.sizes())
    throw InvalidInputError("attention_mask shape differs from input_ids shape");
  if (!config.stop_strings.empty() && !tokenizer) throw InvalidInputError("stop_strings need the tokenizer passed to generate()");
  if (config.num_beams > 1 && on_token) throw InvalidInputError("streaming is not available with beam search");
  c10::InferenceMode inference;

  // Encoder-decoder models: the prompt goes to the encoder and the decoder starts from
  // decoder_start_token_id; sequences are the decoder's, as in transformers.
  EncoderInputs encoder;
  at::Tensor sequences = input_ids.to(at::kLong);
  at::Tensor mask = attention_mask.defined() ? attention_mask.to(at::kLong) : at::ones_like(sequences);
  if (model.config().is_encoder_decoder) {
    const auto start = config.decoder_start_token_id ? config.decoder_start_token_id : config.bos_token_id;
    if (!start)
      throw InvalidInputError("encoder-decoder generation needs decoder_start_token_id (or bos_token_id) in the "
                              "generation config or config.json");
    // Without a mask, padding is recognised by pad_token_id (when it is not also eos), as transformers does.
    if (!attention_mask.defined() && config.pad_token_id &&
        std::find(config.eos_token_id.begin(), config.eos_token_id.end(), *config.pad_token_id) == config.eos_token_id.end())
      mask = (sequences != *config.pad_token_id).to(at::kLong);
    encoder = {sequences, mask};
    sequences = at::full({input_ids.size(0), 1}, *start, at::kLong);
    mask = at::ones_like(sequences);
  }

  const int64_t prompt_len = sequences.size(1);
  const int64_t max_length = config.max_new_tokens ? prompt_len + *config.max_new_tokens : config.max_length;
  if (max_length < prompt_len)
    throw InvalidInputError("the prompt has " + std::to_string(prompt_len) + " tokens, more than max_length " +
                            std::to_string(config.max_length) + "; set max_new_tokens");
  const int64_t context = model.config().has("max_position_embeddings")
                              ? model.config().get("max_position_embeddings").get<int64_t>()
                              : std::numeric_limits<int64_t>::max();
  if (prompt_len > context)
    throw InvalidInputError("the prompt has " + std::to_string(prompt_len) + " tokens but the model's context window " +
                            "(max_position_embeddings) is " + std::to_string(context));
  if (max_length > context)
    logger().warn("prompt + new tokens ({}) exceed the model's max_position_embeddings ({})", max_length, context);

  const std::shared_ptr<TensorParallelGroup>& group = model.tensor_parallel();
  if (config.num_beams > 1) {
    if (group) throw InvalidInputError("beam search is not available for a tensor-parallel model (greedy and sampling are)");
    return beam_search(model, sequences, mask, encoder, config, max_length, tokenizer);
  }

  if (config.num_return_sequences > 1) {
    sequences = sequences.repeat_interleave(config.num_return_sequences, 0);
    mask = mask.repeat_interleave(config.num_return_sequences, 0);
    encoder = encoder.repeat_interleave(config.num_return_sequences);
  }
  const int64_t rows = sequences.size(0);
  std::optional<int64_t> pad = config.pad_token_id;
  if (!pad && !config.eos_token_id.empty()) pad = config.eos_token_id.front();
  const at::Tensor eos = at::tensor(config.eos_token_id, at::kLong);
  at::Tensor unfinished = at::ones({rows}, at::kBool);
  at::Generator generator = sampling_generator(config);
  const auto start = std::chrono::steady_clock::now();
  LogitsPipeline pipeline(config, prompt_len, max_length);
  Stepper stepper(model, config.use_cache, encoder, max_length);
  GenerateOutput out;

  while (sequences.size(1) < max_length) {
    at::Tensor scores = stepper.next_logits(sequences, mask);
    pipeline.apply(scores, sequences);
    out.scores.push_back(scores);
    at::Tensor next = next_tokens(config, scores, generator);
    if (pad) next = at::where(unfinished, next, at::full_like(next, *pad));
    // Tensor parallelism: the other ranks take rank 0's tokens and its decision to stop.
    bool keep_going = true;
    const bool follower = group && group->rank() != 0;
    if (follower) keep_going = share_step(*group, next, keep_going);
    sequences = at::cat({sequences, next.unsqueeze(1)}, 1);
    mask = at::cat({mask, at::ones({rows, 1}, at::kLong)}, 1);

    if (on_token) {
      const auto ids = next.accessor<int64_t, 1>();
      const auto live = unfinished.accessor<bool, 1>();
      for (int64_t r = 0; r < rows; ++r)
        if (live[r] && !on_token(r, ids[r]) && !follower) keep_going = false;
    }
    if (eos.numel()) unfinished = unfinished.logical_and(at::isin(next, eos).logical_not());
    for (int64_t r = 0; r < rows && !config.stop_strings.empty(); ++r)
      if (ends_with_stop_string(config, tokenizer, sequences[r], prompt_len)) unfinished[r] = false;
    if (!follower && config.max_time &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > *config.max_time)
      keep_going = false;
    if (group && !follower) share_step(*group, next, keep_going);
    if (!keep_going || !unfinished.any().item<bool>()) break;
  }
  out.sequences = sequences;
  return out;
}

}  // namespace plugformer
