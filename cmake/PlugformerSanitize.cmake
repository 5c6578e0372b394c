# Sanitizers for a whole build (PLUGFORMER_SANITIZE, e.g. "address;undefined"): every source is
# instrumented and every target links the runtime. CI does not build this way: it runs the
# parsers' tests instrumented inside the normal build (tests/core: parser_test_sanitized).
set(PLUGFORMER_SANITIZE "" CACHE STRING "Sanitizers to build with, e.g. address;undefined")

if(PLUGFORMER_SANITIZE)
  list(JOIN PLUGFORMER_SANITIZE "," _sanitizers)
  add_compile_options(-fsanitize=${_sanitizers} -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${_sanitizers})
endif()
