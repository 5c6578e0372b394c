// Runs the hfref model fixtures (tests/fixtures/models/<name>/expected.json): every forward
// case through the C++ API, compared with expected.safetensors, and every greedy generation.
#pragma once

#include <set>
#include <string>

#include <plugformer/auto.h>
#include <plugformer/runtime.h>

namespace plugformer::testing {

// tests/fixtures/models/<name>, a model loaded from it as `architecture`, a tensor of its
// expected.safetensors, and the largest absolute difference of two tensors (shapes must agree).
std::string fixture(const std::string& name);
ModelPtr load(const std::string& name, const std::string& architecture, LoadingInfo* info = nullptr);
at::Tensor expected(const std::string& name, const std::string& tensor);
double max_diff(const at::Tensor& a, const at::Tensor& b);

// Sets the bf16 route (runtime.h) for a scope. Both routes run on any CPU: tests run each, so an
// AVX2 machine also runs what a native-bf16 CPU runs.
class Bf16RouteGuard {
 public:
  explicit Bf16RouteGuard(Bf16Route route) : previous_(bf16_route()) { set_bf16_route(route); }
  ~Bf16RouteGuard() { set_bf16_route(previous_); }
  Bf16RouteGuard(const Bf16RouteGuard&) = delete;
  Bf16RouteGuard& operator=(const Bf16RouteGuard&) = delete;

 private:
  Bf16Route previous_;
};
inline constexpr Bf16Route kBf16Routes[] = {Bf16Route::fp32, Bf16Route::native};

// Checks every case and generation of one fixture with GoogleTest assertions, within the
// fixture's atol (see fixture_atol in the .cpp for the one fixture checked more loosely, and why).
void check_model_fixture(const std::string& name);

// Every forward case with the model loaded in bf16 and in fp16, under each bf16 route: finite outputs; for the dtypes in
// argmax_dtypes, each *logits output's argmax equal to the fp32 expected one wherever that one's
// top-2 margin exceeds 0.1 (at least one such position when the fixture has logits).
void check_reduced_precision_agreement(const std::string& name, const std::set<std::string>& argmax_dtypes);

// The forward cases of a BERT-style fixture with only the first position computed in the last
// layer: heads with ModelInputs::pooled_outputs_only, a base model through
// BertStyleModel::forward_first_position. Every output but last_hidden_state matches the fixture;
// last_hidden_state holds one position (so the shortcut was taken), and all of them again when
// hidden states are asked for.
void check_first_position_only(const std::string& name);

// The forward cases again, through `plugformer forward` (inputs written to a safetensors file,
// the class passed with --class, every output read back).
void check_model_fixture_through_cli(const std::string& name);

}  // namespace plugformer::testing
