// Process-wide runtime setup.
#pragma once

#include <string>

namespace plugformer {

// Sets libtorch's intra-op threads to the core count (it starts with one here), warns once
// when the reference BLAS is active (matmul ~15x slower than OpenBLAS), and has glibc serve
// blocks of up to 32 MB from its heap and keep 32 MB of freed memory per arena (its mmap / trim
// thresholds, unless MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ is set): activations then
// reuse pages instead of faulting in new ones on every forward pass. Called by the Auto classes and the plugin loader; idempotent.
void init_runtime();

// Returns the freed memory glibc keeps for reuse (init_runtime) to the OS, the calling thread's
// arena included: for a server going idle, from the thread that runs the forward passes.
void release_freed_memory();

// True when the process resolved BLAS to the unoptimised reference implementation.
bool reference_blas_active();

// How bf16 matrix products are computed. fp16 products are always computed in fp32 arithmetic
// (libtorch 1.13 has no fp16 product on the CPU), whatever the route.
// - automatic: `native` on CPUs that multiply bf16 natively (AVX512-BF16, AMX), else `fp32`.
// - native: what a native-bf16 CPU runs: bf16 products of more than 32 rows and attention over
//   many queries by libtorch / oneDNN in bf16; products of up to 32 rows and the decode step's
//   attention as `fp32` does, where that is faster. On other CPUs libtorch's bf16 products are a
//   slow scalar loop: this is for tests.
// - fp32: every bf16 product in fp32 arithmetic (plugformer's AVX2 kernels, or sgemm on widened
//   weights), rounded once to bf16: what an AVX2-only CPU runs.
// The initial route comes from PLUGFORMER_BF16_ROUTE=auto|native|fp32 (default auto).
enum class Bf16Route { automatic, native, fp32 };
void set_bf16_route(Bf16Route route);
Bf16Route bf16_route();
// The route bf16 products take on this CPU under the current setting: native or fp32.
Bf16Route effective_bf16_route();
std::string to_string(Bf16Route route);

// The instruction sets plugformer's CPU kernels are written for, lowest first. Kernels are
// chosen when they run, from what this CPU and its OS allow (cpuid, XSAVE state, AMX tile
// permission), never from the build machine.
// - baseline: no kernels of plugformer's own; every product and attention step is libtorch's.
// - avx2: AVX2 + FMA + F16C kernels (fp32 arithmetic on fp32 / bf16 / fp16 / int8 weights); with
//   AVX-VNNI, int8-weight products of many rows in integers.
// - avx512: the same kernels on 512-bit registers (AVX512 F, BW, VL, DQ); fp32 products of many
//   rows by oneDNN's sgemm (AVX-512) instead of OpenBLAS; with AVX512-VNNI, int8-weight products
//   of many rows in integers.
// - avx512_bf16: bf16 decode products multiply bf16 pairs natively (vdpbf16ps); bf16 products
//   of many rows go to oneDNN in bf16 (Bf16Route::native under `automatic`).
// - amx: as avx512_bf16, with oneDNN's many-row bf16 products on AMX tiles, and int8-weight
//   products of many rows on AMX int8 tiles where the CPU has them.
enum class CpuIsa { baseline, avx2, avx512, avx512_bf16, amx };
// The highest level this CPU and OS support.
CpuIsa detected_cpu_isa();
// The level the kernels use: the detected one, capped by set_cpu_isa_cap / PLUGFORMER_CPU_ISA
// (baseline|avx2|avx512|avx512_bf16|amx; unset: no cap), e.g. to compare or test lower paths.
// PLUGFORMER_CPU_ISA caps oneDNN's kernels too (from init_runtime, before oneDNN first runs);
// set_cpu_isa_cap only plugformer's own.
CpuIsa cpu_isa();
void set_cpu_isa_cap(CpuIsa cap);
CpuIsa cpu_isa_cap();
std::string to_string(CpuIsa isa);
// Whether this CPU has AVX512-VNNI: from level avx512 up, int8-weight products of long inputs
// (more than 32 rows) then multiply in integers (matmul.h's linear_product).
bool cpu_has_avx512_vnni();
// Whether this CPU has AVX-VNNI (vpdpbusd on 256-bit registers, in CPUs with or without
// AVX-512): where AVX512-VNNI does not run (level avx2, or a CPU without it), int8-weight
// products of long inputs multiply in integers with it.
bool cpu_has_avx_vnni();
// Whether this CPU has AMX tiles for int8 (and Linux grants them): at level amx, int8-weight
// products of long inputs multiply on the tiles (tdpbsud) instead of AVX512-VNNI.
bool cpu_has_amx_int8();
// The CPU features plugformer checks, as /proc/cpuinfo names them ("avx2 fma f16c avx512f ..."),
// and one line on the kernels chosen and why.
std::string cpu_features();
std::string describe_cpu_kernels();

}  // namespace plugformer
