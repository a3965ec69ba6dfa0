# include(path/to/graftlm/ffi/cmake/graftlm.cmake) then target_link_libraries(app PRIVATE graftlm)
# Set GRAFTLM_ROOT to the source checkout and GRAFTLM_LIB_DIR to the cargo output directory.
set(GRAFTLM_ROOT "${CMAKE_CURRENT_LIST_DIR}/../.." CACHE PATH "graftlm source checkout")
set(GRAFTLM_LIB_DIR "${GRAFTLM_ROOT}/target/release" CACHE PATH "directory holding libgraftlm.so / .a")
add_library(graftlm SHARED IMPORTED GLOBAL)
set_target_properties(graftlm PROPERTIES
  IMPORTED_LOCATION "${GRAFTLM_LIB_DIR}/${CMAKE_SHARED_LIBRARY_PREFIX}graftlm${CMAKE_SHARED_LIBRARY_SUFFIX}"
  INTERFACE_INCLUDE_DIRECTORIES "${GRAFTLM_ROOT}/include;${GRAFTLM_ROOT}/ffi/cpp")
