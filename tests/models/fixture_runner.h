// Runs the hfref model fixtures (tests/fixtures/models/<name>/expected.json): every forward
// case through the C++ API, compared with expected.safetensors, and every greedy generation.
#pragma once

#include <string>

namespace plugformer::testing {

// Checks every case and generation of one fixture with GoogleTest assertions, within the
// fixture's atol unless `atol` is given (only for a fixture whose own numbers are shown to carry
// more fp32 rounding than its atol; the caller says why).
void check_model_fixture(const std::string& name, double atol = 0);

}  // namespace plugformer::testing
