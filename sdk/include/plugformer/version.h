// Versions a plugin is checked against when it is loaded.
#pragma once

#include <torch/version.h>

// The SDK major changes when a header changes incompatibly; a plugin built against another
// major is refused. Minor additions keep old plugins loadable.
#define PLUGFORMER_SDK_VERSION_MAJOR 3
#define PLUGFORMER_SDK_VERSION_MINOR 0

#define PLUGFORMER_STRINGIFY_(x) #x
#define PLUGFORMER_STRINGIFY(x) PLUGFORMER_STRINGIFY_(x)

// What decides whether C++ objects can cross the plugin boundary: the standard library and its ABI.
#if defined(__GLIBCXX__)
#define PLUGFORMER_ABI_TAG "libstdc++ cxx11abi=" PLUGFORMER_STRINGIFY(_GLIBCXX_USE_CXX11_ABI)
#elif defined(_LIBCPP_VERSION)
#define PLUGFORMER_ABI_TAG "libc++ abi=" PLUGFORMER_STRINGIFY(_LIBCPP_ABI_VERSION)
#else
#define PLUGFORMER_ABI_TAG "unknown"
#endif

#if defined(__clang__)
#define PLUGFORMER_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define PLUGFORMER_COMPILER "gcc " __VERSION__
#else
#define PLUGFORMER_COMPILER "unknown"
#endif

// libtorch major.minor the plugin was compiled against (tensors and modules cross the boundary).
#define PLUGFORMER_TORCH_VERSION PLUGFORMER_STRINGIFY(TORCH_VERSION_MAJOR) "." PLUGFORMER_STRINGIFY(TORCH_VERSION_MINOR)
