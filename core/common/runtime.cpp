#include "plugformer/runtime.h"

#include <cpuid.h>
#include <dlfcn.h>
#include <link.h>
#include <malloc.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ATen/Parallel.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "plugformer/error.h"
#include "plugformer/log.h"

namespace plugformer {

namespace {
int find_blas(struct dl_phdr_info* info, size_t, void* data) {
  const std::string name = info->dlpi_name ? info->dlpi_name : "";
  if (name.find("libblas.so") != std::string::npos) *static_cast<std::string*>(data) = name;
  return 0;
}

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false, avx512f = false, avx512bw = false, avx512vl = false,
       avx512dq = false, avx512_vnni = false, avx512_bf16 = false, avx_vnni = false, amx_tile = false,
       amx_bf16 = false, amx_int8 = false;
  bool ymm_state = false, zmm_state = false, tile_state = false;  // enabled by the OS (XCR0)
  bool tile_permission = false;                                   // granted by Linux (arch_prctl)
};

CpuFeatures read_cpu_features() {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  const bool osxsave = c & (1u << 27);
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    f.ymm_state = (lo & 0x6) == 0x6;                 // SSE + AVX state
    f.zmm_state = f.ymm_state && (lo & 0xe0) == 0xe0;  // opmask, ZMM0-15 upper halves, ZMM16-31
    f.tile_state = (lo & 0x60000) == 0x60000;        // TILECFG + TILEDATA
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = b & (1u << 5);
    f.avx512f = b & (1u << 16);
    f.avx512dq = b & (1u << 17);
    f.avx512bw = b & (1u << 30);
    f.avx512vl = b & (1u << 31);
    f.avx512_vnni = c & (1u << 11);
    f.amx_bf16 = d & (1u << 22);
    f.amx_tile = d & (1u << 24);
    f.amx_int8 = d & (1u << 25);
  }
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
    f.avx_vnni = a & (1u << 4);
    f.avx512_bf16 = a & (1u << 5);
  }
  // Linux hands out the AMX tile data state only on request (ARCH_REQ_XCOMP_PERM, XTILEDATA);
  // oneDNN asks for it too, the request is per process and idempotent.
  if (f.amx_tile && f.tile_state) f.tile_permission = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return f;
}

const CpuFeatures& cpu() {
  static const CpuFeatures features = read_cpu_features();
  return features;
}

CpuIsa isa_of(const CpuFeatures& f) {
  if (!(f.avx2 && f.fma && f.f16c && f.ymm_state)) return CpuIsa::baseline;
  if (!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.zmm_state)) return CpuIsa::avx2;
  if (!f.avx512_bf16) return CpuIsa::avx512;
  if (!(f.amx_tile && f.amx_bf16 && f.tile_permission)) return CpuIsa::avx512_bf16;
  return CpuIsa::amx;
}

constexpr CpuIsa kIsas[] = {CpuIsa::baseline, CpuIsa::avx2, CpuIsa::avx512, CpuIsa::avx512_bf16, CpuIsa::amx};

CpuIsa cap_from_environment() {
  const char* value = std::getenv("PLUGFORMER_CPU_ISA");
  const std::string text = value ? value : "";
  if (text.empty()) return CpuIsa::amx;
  for (CpuIsa isa : kIsas)
    if (text == to_string(isa)) return isa;
  throw ConfigError("PLUGFORMER_CPU_ISA is \"" + text + "\": expected baseline, avx2, avx512, avx512_bf16 or amx");
}

constexpr int kUnset = -1;
std::atomic<int> isa_cap_setting{kUnset};

std::atomic<int> bf16_route_setting{kUnset};

Bf16Route route_from_environment() {
  const char* value = std::getenv("PLUGFORMER_BF16_ROUTE");
  const std::string text = value ? value : "";
  if (text.empty() || text == "auto") return Bf16Route::automatic;
  if (text == "native") return Bf16Route::native;
  if (text == "fp32") return Bf16Route::fp32;
  throw ConfigError("PLUGFORMER_BF16_ROUTE is \"" + text + "\": expected auto, native or fp32");
}
// glibc maps every block above its mmap threshold (128 KB at first, raised only as such blocks
// are freed) afresh and trims freed memory at the top of the heap: the activations of a forward
// pass come back as new pages on each call, and every page's first touch is a fault (under
// virtualization, expensive: a bf16 Llama prefill of 512 tokens on a Zen 4 VM spent ~25% of its
// time there, ~1000 -> ~1600 tokens/s without). Blocks up to 32 MB (glibc's own ceiling for the
// threshold) now come from the heap, and each arena keeps up to 32 MB of freed memory for reuse:
// bert-base's 8 x 128 activations cycle through ~13 MB blocks, and with 8 MB kept a bf16 forward
// pass took 820-920 ms instead of 342-344 (Zen 4). The server hands it all back when it goes
// idle (malloc_trim). glibc's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ win.
std::atomic<long> kept_freed_bytes{-1};  // the trim threshold set here; -1: glibc's own
void keep_freed_memory() {
  if (!std::getenv("MALLOC_MMAP_THRESHOLD_")) mallopt(M_MMAP_THRESHOLD, 32 << 20);
  if (!std::getenv("MALLOC_TRIM_THRESHOLD_")) {
    kept_freed_bytes = 32 << 20;
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
  }
}

// oneDNN (libtorch's, and the many-row products here) chooses its kernels from the CPU on its own.
// A cap set by PLUGFORMER_CPU_ISA holds for it too, so that e.g. avx512_bf16 on an AMX CPU
// compares without AMX tiles; oneDNN takes the cap only before its first primitive, so
// set_cpu_isa_cap() at run time caps plugformer's own kernels only.
void cap_onednn(CpuIsa cap) {
  if (cap >= detected_cpu_isa()) return;
  const dnnl_cpu_isa_t limit = cap == CpuIsa::avx512_bf16 ? dnnl_cpu_isa_avx512_core_bf16
                               : cap == CpuIsa::avx512    ? dnnl_cpu_isa_avx512_core_vnni
                               : cap == CpuIsa::avx2      ? dnnl_cpu_isa_avx2
                                                          : dnnl_cpu_isa_sse41;
  if (dnnl_set_max_cpu_isa(limit) != dnnl_success)
    logger().debug("oneDNN already ran: PLUGFORMER_CPU_ISA={} does not cap its kernels", to_string(cap));
}
}  // namespace

void release_freed_memory() {
  const long kept = kept_freed_bytes.load();
  if (kept >= 0) {
    // malloc_trim (below) returns the free pages inside every arena and the main heap's free top,
    // but glibc shrinks a thread arena's free top only when a free() there leaves more than the
    // trim threshold: so one block is freed into this thread's arena with the threshold at zero.
    mallopt(M_TRIM_THRESHOLD, 0);
    void* volatile block = std::malloc(256 << 10);
    std::free(block);
    mallopt(M_TRIM_THRESHOLD, int(kept));
  }
  malloc_trim(0);
}

void set_bf16_route(Bf16Route route) { bf16_route_setting.store(int(route)); }

Bf16Route bf16_route() {
  int route = bf16_route_setting.load(std::memory_order_relaxed);
  if (route == kUnset) {
    route = int(route_from_environment());
    int expected = kUnset;
    bf16_route_setting.compare_exchange_strong(expected, route);  // a concurrent set_bf16_route wins
    route = bf16_route_setting.load();
  }
  return Bf16Route(route);
}

Bf16Route effective_bf16_route() {
  const Bf16Route route = bf16_route();
  if (route != Bf16Route::automatic) return route;
  return cpu_isa() >= CpuIsa::avx512_bf16 ? Bf16Route::native : Bf16Route::fp32;
}

std::string to_string(Bf16Route route) {
  switch (route) {
    case Bf16Route::native: return "native";
    case Bf16Route::fp32: return "fp32";
    default: return "auto";
  }
}

CpuIsa detected_cpu_isa() {
  static const CpuIsa detected = isa_of(cpu());
  return detected;
}

void set_cpu_isa_cap(CpuIsa cap) { isa_cap_setting.store(int(cap)); }

CpuIsa cpu_isa_cap() {
  int cap = isa_cap_setting.load(std::memory_order_relaxed);
  if (cap == kUnset) {
    int expected = kUnset;
    isa_cap_setting.compare_exchange_strong(expected, int(cap_from_environment()));  // a concurrent set wins
    cap = isa_cap_setting.load();
  }
  return CpuIsa(cap);
}

CpuIsa cpu_isa() { return std::min(detected_cpu_isa(), cpu_isa_cap()); }

std::string to_string(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx2: return "avx2";
    case CpuIsa::avx512: return "avx512";
    case CpuIsa::avx512_bf16: return "avx512_bf16";
    case CpuIsa::amx: return "amx";
    default: return "baseline";
  }
}

bool cpu_has_avx512_vnni() { return detected_cpu_isa() >= CpuIsa::avx512 && cpu().avx512_vnni; }
bool cpu_has_avx_vnni() { return detected_cpu_isa() >= CpuIsa::avx2 && cpu().avx_vnni; }
bool cpu_has_amx_int8() { return detected_cpu_isa() >= CpuIsa::amx && cpu().amx_int8; }

std::string cpu_features() {
  const CpuFeatures& f = cpu();
  const std::pair<bool, const char*> named[] = {
      {f.avx2, "avx2"},         {f.fma, "fma"},           {f.f16c, "f16c"},
      {f.avx512f, "avx512f"},   {f.avx512bw, "avx512bw"}, {f.avx512vl, "avx512vl"},
      {f.avx512dq, "avx512dq"}, {f.avx512_vnni, "avx512_vnni"}, {f.avx512_bf16, "avx512_bf16"},
      {f.avx_vnni, "avx_vnni"},     {f.amx_tile, "amx_tile"}, {f.amx_bf16, "amx_bf16"},
      {f.amx_int8, "amx_int8"}};
  std::string out;
  for (const auto& [present, name] : named)
    if (present) out += (out.empty() ? "" : " ") + std::string(name);
  if (f.avx512f && !f.zmm_state) out += " (AVX-512 state disabled by the OS)";
  if (f.amx_tile && !(f.tile_state && f.tile_permission)) out += " (AMX tiles not granted by the OS)";
  return out.empty() ? "none of avx2 / avx512 / amx" : out;
}

std::string describe_cpu_kernels() {
  const CpuIsa isa = cpu_isa(), detected = detected_cpu_isa();
  std::string why = to_string(isa);
  if (isa < detected) why += " (capped by PLUGFORMER_CPU_ISA / set_cpu_isa_cap; the CPU has " + to_string(detected) + ")";
  // The integer route int8_products.cpp takes at this level.
  const char* vnni = isa >= CpuIsa::amx && cpu_has_amx_int8()        ? "AMX tiles"
                     : isa >= CpuIsa::avx512 && cpu_has_avx512_vnni() ? "AVX512-VNNI"
                     : isa >= CpuIsa::avx2 && cpu_has_avx_vnni()      ? "AVX-VNNI"
                                                                      : nullptr;
  const std::string int8 = vnni ? ", many-row int8 products in integers (" + std::string(vnni) + ")" : "";
  switch (isa) {
    case CpuIsa::baseline: return why + ": libtorch's own kernels only";
    case CpuIsa::avx2: return why + ": AVX2 + FMA decode kernels, fp32 arithmetic for every weight type" + int8;
    case CpuIsa::avx512:
      return why + ": AVX-512 decode kernels, fp32 arithmetic for every weight type, many-row fp32 products by oneDNN" + int8;
    case CpuIsa::avx512_bf16:
      return why + ": AVX-512 decode kernels, bf16 weights multiplied by vdpbf16ps, many-row fp32 / bf16 products by oneDNN" + int8;
    default:
      return why + ": AVX-512 decode kernels, bf16 weights multiplied by vdpbf16ps (2-32 rows on AMX tiles), many-row fp32 / bf16 products by oneDNN (bf16 on AMX tiles)" + int8;
  }
}

bool reference_blas_active() {
  // Debian's libtorch links libblas.so.3, which the alternatives system points at OpenBLAS
  // (fast) or at the reference implementation under .../blas/ (slow).
  std::string blas;
  dl_iterate_phdr(find_blas, &blas);
  if (blas.empty()) return false;
  char resolved[4096];
  if (!realpath(blas.c_str(), resolved)) return false;
  const std::string path = resolved;
  return path.find("openblas") == std::string::npos && path.find("mkl") == std::string::npos &&
         path.find("blis") == std::string::npos && path.find("atlas") == std::string::npos;
}

void init_runtime() {
  // A bad PLUGFORMER_BF16_ROUTE / PLUGFORMER_CPU_ISA is reported when the runtime starts, not at some product.
  bf16_route();
  cpu_isa_cap();
  static std::once_flag once;
  std::call_once(once, [] {
    // Every hardware thread, unless OMP_NUM_THREADS chose (tensor-parallel ranks share a host's cores).
    const unsigned cores = std::thread::hardware_concurrency();
    const char* chosen = std::getenv("OMP_NUM_THREADS");
    if (!(chosen && *chosen) && cores > 0 && at::get_num_threads() < int(cores)) at::set_num_threads(int(cores));
    keep_freed_memory();
    cap_onednn(cpu_isa_cap());
    logger().debug("CPU features: {}; kernels: {}", cpu_features(), describe_cpu_kernels());
    if (reference_blas_active())
      logger().warn(
          "the reference BLAS is active: matrix products run ~15x slower than with OpenBLAS "
          "(install libopenblas0-openmp)");
  });
}

}  // namespace plugformer
