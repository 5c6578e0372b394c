// libtorch's exceptions (c10::Error) carry a C++ backtrace in what(): inside model calls they
// become one-line ComputationErrors naming the module, the dtype and the operation (core-internal).
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <string>

namespace plugformer {

// Throws ComputationError("<module> in <dtype>: <libtorch's message>"), the message's first line
// without the backtrace.
[[noreturn]] void throw_computation_error(const c10::Error& error, const std::string& module, c10::ScalarType dtype);

}  // namespace plugformer
