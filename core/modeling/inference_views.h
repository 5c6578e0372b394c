// Views made without the dispatcher, for the per-sequence bookkeeping of decode steps (core-internal).
#pragma once

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/TensorImpl.h>

namespace plugformer {

// t.narrow(dim, start, length). Inside InferenceMode an inference tensor's view tracks neither
// autograd nor versions: it is its sizes, strides and offset over the same storage, so it is built
// directly (a continuous-batching step of 8 sequences makes 4 such views per sequence and layer:
// ~1 us each through the dispatcher). Elsewhere, or out of bounds (to report it), at::narrow.
inline at::Tensor narrow_view(const at::Tensor& t, int64_t dim, int64_t start, int64_t length) {
  if (!c10::InferenceMode::is_enabled() || !t.is_inference() || !t.has_storage() || dim < 0 || dim >= t.dim() ||
      start < 0 || length < 0 || start + length > t.size(dim))
    return t.narrow(dim, start, length);
  auto impl = c10::make_intrusive<c10::TensorImpl>(c10::Storage(t.storage()), t.key_set(), t.dtype());
  std::vector<int64_t> sizes = t.sizes().vec();
  sizes[size_t(dim)] = length;
  impl->set_sizes_and_strides(sizes, t.strides(), t.storage_offset() + start * t.stride(dim));
  return at::Tensor(std::move(impl));
}

}  // namespace plugformer
