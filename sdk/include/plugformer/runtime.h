// Process-wide runtime setup.
#pragma once

namespace plugformer {

// Sets libtorch's intra-op threads to the core count (it starts with one here), warns once
// when the reference BLAS is active (matmul ~15x slower than OpenBLAS). Called by the Auto
// classes and the plugin loader; idempotent.
void init_runtime();

// True when the process resolved BLAS to the unoptimised reference implementation.
bool reference_blas_active();

}  // namespace plugformer
