// What every fuzz target shares: bad input may only end in a plugformer::Error (the typed errors
// users get); any other exception escaping is a bug, reported as a crash with its message.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <typeinfo>

#include <plugformer/error.h>

template <class Body>
int run_fuzz_input(Body&& body) {
  try {
    body();
  } catch (const plugformer::Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "untyped exception %s: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
  return 0;
}

// A property the code promises that the input broke (a saved config that does not load again, ...):
// a crash, with what broke.
[[noreturn]] inline void fuzz_bug(const std::string& what) {
  std::fprintf(stderr, "broken promise: %s\n", what.c_str());
  std::abort();
}

// The input as a file named `name` in /dev/shm, for parsers that take a path; rewritten per input.
inline std::string fuzz_input_file(const uint8_t* data, size_t size, const std::string& name) {
  const std::string path = "/dev/shm/plugformer-fuzz-" + std::to_string(::getpid()) + "-" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  return path;
}

// Limits small enough that one input renders in milliseconds.
#define PLUGFORMER_FUZZ_TEMPLATE_LIMITS \
  plugformer::TemplateLimits { size_t{1} << 20, 200'000, 64, 128 }
