// Runs the hfref model fixtures (tests/fixtures/models/<name>/expected.json): every forward
// case through the C++ API, compared with expected.safetensors, and every greedy generation.
#pragma once

#include <string>

namespace plugformer::testing {

// Checks every case and generation of one fixture with GoogleTest assertions, within the
// fixture's atol (see fixture_atol in the .cpp for the one fixture checked more loosely, and why).
void check_model_fixture(const std::string& name);

// The forward cases again, through `plugformer forward` (inputs written to a safetensors file,
// the class passed with --class, every output read back).
void check_model_fixture_through_cli(const std::string& name);

}  // namespace plugformer::testing
