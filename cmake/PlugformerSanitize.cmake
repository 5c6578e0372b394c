# Sanitizers (PLUGFORMER_SANITIZE, e.g. "address;undefined"): every target links the runtime;
# the code instrumented is all of it, or with PLUGFORMER_SANITIZE_ONLY only the sources under
# those folders (relative to the top). CI instruments just the parsers and their tests, which
# builds in a fraction of the time an instrumented build of every libtorch-heavy file takes.
set(PLUGFORMER_SANITIZE "" CACHE STRING "Sanitizers to build with, e.g. address;undefined")
set(PLUGFORMER_SANITIZE_ONLY "" CACHE STRING
    "Instrument only the sources under these folders, e.g. core/config;tests/core (default: all)")

if(PLUGFORMER_SANITIZE)
  list(JOIN PLUGFORMER_SANITIZE "," _sanitizers)
  set(PLUGFORMER_SANITIZE_FLAGS -fsanitize=${_sanitizers} -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${_sanitizers})
  if(NOT PLUGFORMER_SANITIZE_ONLY)
    add_compile_options(${PLUGFORMER_SANITIZE_FLAGS})
  endif()
endif()

# plugformer_is_instrumented(<absolute path> <out var>): whether PLUGFORMER_SANITIZE_ONLY selects it.
function(plugformer_is_instrumented path out)
  set(${out} FALSE PARENT_SCOPE)
  file(RELATIVE_PATH _relative ${PROJECT_SOURCE_DIR} ${path})
  foreach(_folder ${PLUGFORMER_SANITIZE_ONLY})
    if(_relative MATCHES "^${_folder}/")
      set(${out} TRUE PARENT_SCOPE)
    endif()
  endforeach()
endfunction()

# Called once every target exists: adds the sanitizer flags to the selected sources of the
# targets defined in `dir` and below.
function(plugformer_sanitize_selected_sources dir)
  get_property(_targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(_target ${_targets})
    get_target_property(_type ${_target} TYPE)
    if(_type STREQUAL "INTERFACE_LIBRARY" OR _type STREQUAL "UTILITY")
      continue()
    endif()
    get_target_property(_sources ${_target} SOURCES)
    get_target_property(_source_dir ${_target} SOURCE_DIR)
    foreach(_source ${_sources})
      if(_source MATCHES "^\\$<")  # $<TARGET_OBJECTS:...>: instrumented in their own target
        continue()
      endif()
      get_filename_component(_path ${_source} ABSOLUTE BASE_DIR ${_source_dir})
      plugformer_is_instrumented(${_path} _instrumented)
      if(_instrumented)
        set_property(SOURCE ${_path} TARGET_DIRECTORY ${_target} APPEND PROPERTY COMPILE_OPTIONS
                     ${PLUGFORMER_SANITIZE_FLAGS})
        # The shared torch PCH is built uninstrumented, which GCC refuses for these.
        set_property(SOURCE ${_path} TARGET_DIRECTORY ${_target} PROPERTY SKIP_PRECOMPILE_HEADERS ON)
      endif()
    endforeach()
  endforeach()
  get_property(_subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(_subdir ${_subdirs})
    plugformer_sanitize_selected_sources(${_subdir})
  endforeach()
endfunction()
