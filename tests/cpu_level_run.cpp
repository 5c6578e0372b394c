// Linked into the test programs that ctest also runs once per kernel level below this CPU's own
// (tests/CMakeLists.txt, AT_EVERY_CPU_LEVEL). Such a run has PLUGFORMER_CPU_ISA set to its level
// and PLUGFORMER_TEST_SKIP_UNCAPPED=1: when that level does not lower this CPU's, the run would
// repeat the uncapped one, so every test is skipped, saying why. ctest knows such a run as skipped
// by the message's first words (SKIP_REGULAR_EXPRESSION there); otherwise it would count as passed.
#include <gtest/gtest.h>

#include <cstdlib>

#include <plugformer/runtime.h>

namespace {

class CpuLevelRun : public ::testing::Environment {
 public:
  void SetUp() override {
    if (!std::getenv("PLUGFORMER_TEST_SKIP_UNCAPPED")) return;
    using plugformer::cpu_isa, plugformer::detected_cpu_isa, plugformer::to_string;
    if (cpu_isa() < detected_cpu_isa()) return;
    GTEST_SKIP() << "level not below this CPU's: PLUGFORMER_CPU_ISA caps the kernels at " << to_string(cpu_isa())
                 << " and this CPU's level is " << to_string(detected_cpu_isa()) << " ("
                 << plugformer::cpu_features() << "); the uncapped runs cover it";
  }
};

[[maybe_unused]] const ::testing::Environment* const registered =
    ::testing::AddGlobalTestEnvironment(new CpuLevelRun);

}  // namespace
