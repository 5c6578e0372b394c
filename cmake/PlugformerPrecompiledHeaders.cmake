# <torch/torch.h> costs ~20 s per translation unit. It is precompiled once for shared
# libraries (-fPIC) and once for executables, and every torch-using target reuses one of them.
set(_pch_source "${CMAKE_CURRENT_LIST_DIR}/pch.cpp")
add_library(plugformer_pch_pic OBJECT ${_pch_source})
set_target_properties(plugformer_pch_pic PROPERTIES POSITION_INDEPENDENT_CODE ON)
add_library(plugformer_pch_exe OBJECT ${_pch_source})
foreach(_t plugformer_pch_pic plugformer_pch_exe)
  target_link_libraries(${_t} PRIVATE torch)
  target_precompile_headers(${_t} PRIVATE <torch/torch.h>)
endforeach()

# plugformer_use_torch_pch(<target>): reuse the precompiled torch header matching the target kind.
# A target defined in a folder PLUGFORMER_SANITIZE_ONLY instruments has no use for it (its sources
# skip the uninstrumented PCH), and does not wait for it to be built.
function(plugformer_use_torch_pch target)
  plugformer_is_instrumented(${CMAKE_CURRENT_SOURCE_DIR}/CMakeLists.txt _instrumented)
  if(_instrumented)
    return()
  endif()
  get_target_property(_type ${target} TYPE)
  if(_type STREQUAL "EXECUTABLE")
    target_precompile_headers(${target} REUSE_FROM plugformer_pch_exe)
  else()
    target_precompile_headers(${target} REUSE_FROM plugformer_pch_pic)
  endif()
endfunction()
