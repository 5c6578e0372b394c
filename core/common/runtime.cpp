#include "plugformer/runtime.h"

#include <dlfcn.h>
#include <link.h>

#include <ATen/Parallel.h>

#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "plugformer/log.h"

namespace plugformer {

namespace {
int find_blas(struct dl_phdr_info* info, size_t, void* data) {
  const std::string name = info->dlpi_name ? info->dlpi_name : "";
  if (name.find("libblas.so") != std::string::npos) *static_cast<std::string*>(data) = name;
  return 0;
}
}  // namespace

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
  static std::once_flag once;
  std::call_once(once, [] {
    const unsigned cores = std::thread::hardware_concurrency();
    if (cores > 0 && at::get_num_threads() < int(cores)) at::set_num_threads(int(cores));
    if (reference_blas_active())
      logger().warn(
          "the reference BLAS is active: matrix products run ~15x slower than with OpenBLAS "
          "(install libopenblas0-openmp)");
  });
}

}  // namespace plugformer
