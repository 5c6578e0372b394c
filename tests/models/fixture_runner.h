// Runs the hfref model fixtures (tests/fixtures/models/<name>/expected.json): every forward
// case through the C++ API, compared with expected.safetensors, and every greedy generation.
#pragma once

#include <string>

namespace plugformer::testing {

// Checks every case and generation of one fixture with GoogleTest assertions.
void check_model_fixture(const std::string& name);

}  // namespace plugformer::testing
