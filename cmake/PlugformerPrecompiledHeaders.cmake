# The headers nearly every translation unit parses (ATen, the nn::Module base of the SDK's layers,
# nlohmann/json of the configs) are precompiled once for shared libraries (-fPIC) and once for
# executables, and every torch-using target reuses one of them. Not <torch/torch.h>: every file
# would instantiate and compile the inline code of the whole C++ frontend (nn modules, optimizers,
# data loaders): a clean build took 1056 s of CPU time with it, 925 s without.
set(_pch_source "${CMAKE_CURRENT_LIST_DIR}/pch.cpp")
add_library(plugformer_pch_pic OBJECT ${_pch_source})
set_target_properties(plugformer_pch_pic PROPERTIES POSITION_INDEPENDENT_CODE ON)
add_library(plugformer_pch_exe OBJECT ${_pch_source})
foreach(_t plugformer_pch_pic plugformer_pch_exe)
  target_link_libraries(${_t} PRIVATE torch)
  target_precompile_headers(${_t} PRIVATE <ATen/ATen.h> <torch/nn/module.h> <nlohmann/json.hpp>)
endforeach()

# plugformer_use_torch_pch(<target>): reuse the precompiled torch header matching the target kind.
function(plugformer_use_torch_pch target)
  get_target_property(_type ${target} TYPE)
  if(_type STREQUAL "EXECUTABLE")
    target_precompile_headers(${target} REUSE_FROM plugformer_pch_exe)
  else()
    target_precompile_headers(${target} REUSE_FROM plugformer_pch_pic)
  endif()
endfunction()
