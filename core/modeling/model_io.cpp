#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>

#include "plugformer/error.h"
#include "plugformer/modeling.h"

#include "inference_views.h"

namespace plugformer {

namespace {

// storage[:, :, at : at + fresh.size(2)] = fresh. A decode step writes one position per layer and
// sequence, and a continuous-batching step of 8 sequences did it through 2 x 96 narrow + copy_
// op pairs (dispatch and TensorIterator setup for 64 values each): a few positions of the same
// type are copied directly when nothing records autograd. A prompt's many keep copy_, which
// spreads them over the threads.
void write_positions(const at::Tensor& storage, int64_t at, const at::Tensor& fresh) {
  constexpr int64_t kDirectPositions = 8;
  const bool direct = fresh.scalar_type() == storage.scalar_type() && storage.is_contiguous() && fresh.is_cpu() &&
                      fresh.dim() == 4 && fresh.size(2) <= kDirectPositions && fresh.size(0) == storage.size(0) &&
                      fresh.size(1) == storage.size(1) &&
                      fresh.size(3) == storage.size(3) && fresh.stride(3) == 1 && !fresh.requires_grad() &&
                      !storage.requires_grad() && at + fresh.size(2) <= storage.size(2);
  if (!direct) {  // copy_ converts, records autograd, or says what does not match
    storage.narrow(2, at, fresh.size(2)).copy_(fresh);
    return;
  }
  const int64_t element = int64_t(fresh.element_size()), width = fresh.size(3) * element;
  char* dst = static_cast<char*>(storage.data_ptr());
  const char* src = static_cast<const char*>(fresh.data_ptr());
  for (int64_t b = 0; b < fresh.size(0); ++b)
    for (int64_t h = 0; h < fresh.size(1); ++h)
      for (int64_t p = 0; p < fresh.size(2); ++p)
        std::memcpy(dst + (((b * storage.size(1) + h) * storage.size(2)) + at + p) * width,
                    src + (b * fresh.stride(0) + h * fresh.stride(1) + p * fresh.stride(2)) * element, size_t(width));
}

}  // namespace

std::pair<at::Tensor, at::Tensor> KVCache::update(size_t layer, const at::Tensor& k, const at::Tensor& v) {
  if (is_batch()) throw InvalidInputError("a KVCache::batch_of cache is extended row by row (attention_over_cache_rows)");
  if (layer >= layers_.size()) layers_.resize(layer + 1);
  Layer& l = layers_[layer];
  const int64_t add = k.size(2);
  // Positions no later query can see (window - 1 back from the next one) are dropped after each
  // update; the returned views stay valid, as storage moves only during a later update.
  auto drop_beyond_window = [&] {
    if (!window_ || l.length <= *window_ - 1) return;
    const int64_t drop = l.length - (*window_ - 1);
    l.begin += drop, l.length -= drop, l.dropped += drop;
  };
  // A first update with more positions reserved than it brings.
  const int64_t capacity = std::min(reserved_, window_ ? *window_ - 1 + add : reserved_);
  if (!l.keys.defined() && capacity > add) {
    auto with_room = [&](const at::Tensor& t) {
      auto sizes = t.sizes().vec();
      sizes[2] = capacity;
      return at::empty(sizes, t.options());
    };
    l.keys = with_room(k);
    l.values = with_room(v);
  }
  if (!l.keys.defined()) {
    l.keys = k.contiguous();
    l.values = v.contiguous();
    l.length = add;
    drop_beyond_window();
    return {l.keys, l.values};
  }
  if (l.begin + l.length + add > l.keys.size(2)) {
    // Windowed: move the kept positions to the front first, which bounds the storage.
    if (l.begin > 0) {
      for (at::Tensor* t : {&l.keys, &l.values}) t->narrow(2, 0, l.length).copy_(t->narrow(2, l.begin, l.length).clone());
      l.begin = 0;
    }
    const int64_t needed = l.length + add;
    if (needed > l.keys.size(2)) {
      // Room to grow: decode steps then write in place instead of concatenating everything.
      const int64_t capacity = std::max<int64_t>(needed, l.keys.size(2) * 2);
      auto grow = [&](const at::Tensor& old) {
        auto sizes = old.sizes().vec();
        sizes[2] = capacity;
        at::Tensor fresh = at::empty(sizes, old.options());
        fresh.narrow(2, 0, l.length).copy_(old.narrow(2, 0, l.length));
        return fresh;
      };
      l.keys = grow(l.keys);
      l.values = grow(l.values);
    }
  }
  write_positions(l.keys, l.begin + l.length, k);
  write_positions(l.values, l.begin + l.length, v);
  l.length += add;
  std::pair<at::Tensor, at::Tensor> all = {narrow_view(l.keys, 2, l.begin, l.length), narrow_view(l.values, 2, l.begin, l.length)};
  drop_beyond_window();
  return all;
}

int64_t KVCache::seq_length(size_t layer) const {
  return layer < layers_.size() ? layers_[layer].dropped + layers_[layer].length : 0;
}

int64_t KVCache::stored_length(size_t layer) const { return layer < layers_.size() ? layers_[layer].length : 0; }

int64_t KVCache::bytes() const {
  int64_t total = 0;
  for (const auto& l : layers_)
    if (l.keys.defined()) total += int64_t(l.keys.nbytes() + l.values.nbytes());
  for (const auto& [k, v] : cross_)
    if (k.defined()) total += int64_t(k.nbytes() + v.nbytes());
  for (const auto& row : batch_rows_) total += row->bytes();
  return total;
}

void KVCache::reorder(const at::Tensor& beam_idx) {
  for (auto& l : layers_) {
    if (!l.keys.defined()) continue;
    l.keys = l.keys.index_select(0, beam_idx);
    l.values = l.values.index_select(0, beam_idx);
  }
  for (auto& c : cross_) {
    if (!c.first.defined()) continue;
    c.first = c.first.index_select(0, beam_idx);
    c.second = c.second.index_select(0, beam_idx);
  }
}

void KVCache::set_cross(size_t layer, at::Tensor k, at::Tensor v) {
  if (layer >= cross_.size()) cross_.resize(layer + 1);
  cross_[layer] = {std::move(k), std::move(v)};
}

std::shared_ptr<KVCache> KVCache::batch_of(std::vector<std::shared_ptr<KVCache>> rows, std::vector<int64_t> new_tokens) {
  if (rows.empty()) throw InvalidInputError("KVCache::batch_of needs at least one row");
  for (const auto& row : rows)
    if (!row || row->is_batch()) throw InvalidInputError("KVCache::batch_of takes the rows' own caches");
  if (new_tokens.empty()) new_tokens.assign(rows.size(), 1);
  if (new_tokens.size() != rows.size())
    throw InvalidInputError("KVCache::batch_of: " + std::to_string(new_tokens.size()) + " new-token counts for " +
                            std::to_string(rows.size()) + " rows");
  for (int64_t count : new_tokens)
    if (count < 1) throw InvalidInputError("KVCache::batch_of: every row takes at least one new token, got " + std::to_string(count));
  auto batch = std::make_shared<KVCache>();
  batch->batch_rows_ = std::move(rows);
  batch->batch_new_tokens_ = std::move(new_tokens);
  return batch;
}

bool KVCache::is_packed_batch() const {
  return std::any_of(batch_new_tokens_.begin(), batch_new_tokens_.end(), [](int64_t n) { return n != 1; });
}

bool ModelInputs::has(const std::string& name) const {
  auto it = tensors.find(name);
  return it != tensors.end() && it->second.defined();
}

at::Tensor ModelInputs::get(const std::string& name) const {
  auto it = tensors.find(name);
  return it == tensors.end() ? at::Tensor() : it->second;
}

at::Tensor ModelInputs::require(const std::string& name) const {
  if (!has(name)) throw InvalidInputError("missing model input '" + name + "'");
  return tensors.at(name);
}

void ModelOutput::set(const std::string& name, at::Tensor value) {
  for (auto& [n, t] : tensors)
    if (n == name) {
      t = std::move(value);
      return;
    }
  tensors.emplace_back(name, std::move(value));
}

bool ModelOutput::has(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return true;
  return false;
}

at::Tensor ModelOutput::operator[](const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  std::string names;
  for (const auto& [n, t] : tensors) names += (names.empty() ? "" : ", ") + n;
  throw InvalidInputError("model output has no field '" + name + "' (it has: " + names + ")");
}

}  // namespace plugformer
