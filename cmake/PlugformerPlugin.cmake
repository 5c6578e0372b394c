# plugformer_add_plugin(<name> SOURCES <files...>)
# Builds one model-family plugin as a shared library named plugformer_<name>.so. The same
# function serves in-tree families and out-of-tree plugins (via find_package(plugformer)).
function(plugformer_add_plugin name)
  cmake_parse_arguments(ARG "" "" "SOURCES" ${ARGN})
  set(target plugformer_plugin_${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  set_target_properties(${target} PROPERTIES
    OUTPUT_NAME plugformer_${name}
    PREFIX "lib"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(TARGET plugformer::plugformer)
    target_link_libraries(${target} PRIVATE plugformer::plugformer)
  else()
    target_link_libraries(${target} PRIVATE plugformer)
  endif()
  if(COMMAND plugformer_use_torch_pch)
    plugformer_use_torch_pch(${target})
  endif()
  if(DEFINED PLUGFORMER_BUILD_PLUGIN_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${PLUGFORMER_BUILD_PLUGIN_DIR}")
  endif()
  if(DEFINED PLUGFORMER_PLUGIN_INSTALL_DIR)
    install(TARGETS ${target} LIBRARY DESTINATION "${PLUGFORMER_PLUGIN_INSTALL_DIR}")
  endif()
endfunction()
