// What every fuzz target shares: bad input may only end in a plugformer::Error (the typed errors
// users get); any other exception escaping is a bug, reported as a crash with its message.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
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

// Limits small enough that one input renders in milliseconds.
#define PLUGFORMER_FUZZ_TEMPLATE_LIMITS \
  plugformer::TemplateLimits { size_t{1} << 20, 200'000, 64, 128 }
