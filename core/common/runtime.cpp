#include "plugformer/runtime.h"

#include <cpuid.h>
#include <dlfcn.h>
#include <link.h>

#include <ATen/Parallel.h>

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

bool cpu_has_native_bf16() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool amx_bf16 = edx & (1u << 22);
  unsigned eax1 = 0, ebx1 = 0, ecx1 = 0, edx1 = 0;
  const bool avx512_bf16 = __get_cpuid_count(7, 1, &eax1, &ebx1, &ecx1, &edx1) && (eax1 & (1u << 5));
  return amx_bf16 || avx512_bf16;
}

constexpr int kRouteUnset = -1;
std::atomic<int> bf16_route_setting{kRouteUnset};

Bf16Route route_from_environment() {
  const char* value = std::getenv("PLUGFORMER_BF16_ROUTE");
  const std::string text = value ? value : "";
  if (text.empty() || text == "auto") return Bf16Route::automatic;
  if (text == "native") return Bf16Route::native;
  if (text == "fp32") return Bf16Route::fp32;
  throw ConfigError("PLUGFORMER_BF16_ROUTE is \"" + text + "\": expected auto, native or fp32");
}
}  // namespace

void set_bf16_route(Bf16Route route) { bf16_route_setting.store(int(route)); }

Bf16Route bf16_route() {
  int route = bf16_route_setting.load(std::memory_order_relaxed);
  if (route == kRouteUnset) {
    route = int(route_from_environment());
    int expected = kRouteUnset;
    bf16_route_setting.compare_exchange_strong(expected, route);  // a concurrent set_bf16_route wins
    route = bf16_route_setting.load();
  }
  return Bf16Route(route);
}

Bf16Route effective_bf16_route() {
  static const bool native_cpu = cpu_has_native_bf16();
  const Bf16Route route = bf16_route();
  if (route != Bf16Route::automatic) return route;
  return native_cpu ? Bf16Route::native : Bf16Route::fp32;
}

std::string to_string(Bf16Route route) {
  switch (route) {
    case Bf16Route::native: return "native";
    case Bf16Route::fp32: return "fp32";
    default: return "auto";
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
  bf16_route();  // a bad PLUGFORMER_BF16_ROUTE is reported when the runtime starts, not at some product
  static std::once_flag once;
  std::call_once(once, [] {
    // Every hardware thread, unless OMP_NUM_THREADS chose (tensor-parallel ranks share a host's cores).
    const unsigned cores = std::thread::hardware_concurrency();
    const char* chosen = std::getenv("OMP_NUM_THREADS");
    if (!(chosen && *chosen) && cores > 0 && at::get_num_threads() < int(cores)) at::set_num_threads(int(cores));
    if (reference_blas_active())
      logger().warn(
          "the reference BLAS is active: matrix products run ~15x slower than with OpenBLAS "
          "(install libopenblas0-openmp)");
  });
}

}  // namespace plugformer
