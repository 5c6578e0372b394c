#include "plugformer/log.h"

#include <cstdlib>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace plugformer {

spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> instance = [] {
    // Log to stderr so that stdout stays clean for the CLI's output.
    auto log = spdlog::stderr_color_mt("plugformer");
    log->set_pattern("[plugformer] [%l] %v");
    const char* level = std::getenv("PLUGFORMER_LOG_LEVEL");
    log->set_level(level ? spdlog::level::from_str(level) : spdlog::level::info);
    return log;
  }();
  return *instance;
}

}  // namespace plugformer
