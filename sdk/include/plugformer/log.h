// The one logger of plugformer (spdlog), level from PLUGFORMER_LOG_LEVEL
// (trace, debug, info, warn, error, critical, off; default info).
#pragma once

#include <memory>

#include <spdlog/spdlog.h>

namespace plugformer {

spdlog::logger& logger();

}  // namespace plugformer
