// Process-wide runtime setup.
#pragma once

#include <string>

namespace plugformer {

// Sets libtorch's intra-op threads to the core count (it starts with one here), warns once
// when the reference BLAS is active (matmul ~15x slower than OpenBLAS). Called by the Auto
// classes and the plugin loader; idempotent.
void init_runtime();

// True when the process resolved BLAS to the unoptimised reference implementation.
bool reference_blas_active();

// How bf16 matrix products are computed. fp16 products are always computed in fp32 arithmetic
// (libtorch 1.13 has no fp16 product on the CPU), whatever the route.
// - automatic: `native` on CPUs that multiply bf16 natively (AVX512-BF16, AMX), else `fp32`.
// - native: what a native-bf16 CPU runs: bf16 products of more than 32 rows by libtorch / oneDNN
//   in bf16; products of up to 32 rows and attention as `fp32` does, where that is faster. On
//   other CPUs libtorch's bf16 products are a slow scalar loop: this is for tests.
// - fp32: every bf16 product in fp32 arithmetic (plugformer's AVX2 kernels, or sgemm on widened
//   weights), rounded once to bf16: what an AVX2-only CPU runs.
// The initial route comes from PLUGFORMER_BF16_ROUTE=auto|native|fp32 (default auto).
enum class Bf16Route { automatic, native, fp32 };
void set_bf16_route(Bf16Route route);
Bf16Route bf16_route();
// The route bf16 products take on this CPU under the current setting: native or fp32.
Bf16Route effective_bf16_route();
std::string to_string(Bf16Route route);

}  // namespace plugformer
