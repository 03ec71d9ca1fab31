# Configures, builds and runs one consumer project against this checkout of memgov.
#   KIND=find_package      stage an install of MEMGOV_BINARY_DIR, then find_package(memgov)
#   KIND=add_subdirectory  add_subdirectory(MEMGOV_SOURCE_DIR)
#   KIND=fetchcontent      FetchContent from a source archive of this checkout
cmake_minimum_required(VERSION 3.21)
foreach(_v KIND MEMGOV_SOURCE_DIR MEMGOV_BINARY_DIR CONSUMER_DIR WORK_DIR GENERATOR)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "run_consumer.cmake: ${_v} is not set")
  endif()
endforeach()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "command failed (${_rc}): ${ARGN}\n${_out}\n${_err}")
  endif()
  set(LAST_OUTPUT "${_out}" PARENT_SCOPE)
endfunction()

set(_extra "")
if(KIND STREQUAL "find_package")
  # A staged install, exactly what a package manager or `cmake --install` would lay down.
  run("${CMAKE_COMMAND}" --install "${MEMGOV_BINARY_DIR}" --prefix "${WORK_DIR}/stage")
  list(APPEND _extra "-DCMAKE_PREFIX_PATH=${WORK_DIR}/stage")
elseif(KIND STREQUAL "add_subdirectory")
  list(APPEND _extra "-DMEMGOV_SOURCE_DIR=${MEMGOV_SOURCE_DIR}")
elseif(KIND STREQUAL "fetchcontent")
  # A source archive of the working tree (what a release tarball holds), so the test sees
  # uncommitted changes too. FetchContent then unpacks and adds it like any vendored dependency.
  run("${CMAKE_COMMAND}" -E chdir "${MEMGOV_SOURCE_DIR}"
      "${CMAKE_COMMAND}" -E tar czf "${WORK_DIR}/memgov-src.tar.gz"
      CMakeLists.txt LICENSE cmake include)
  file(SHA256 "${WORK_DIR}/memgov-src.tar.gz" _hash)
  list(APPEND _extra "-DMEMGOV_URL=file://${WORK_DIR}/memgov-src.tar.gz" "-DMEMGOV_URL_HASH=SHA256=${_hash}")
else()
  message(FATAL_ERROR "run_consumer.cmake: unknown KIND '${KIND}'")
endif()

if(DEFINED CXX_COMPILER)
  list(APPEND _extra "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
run("${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${WORK_DIR}/build" -G "${GENERATOR}"
    -DCMAKE_BUILD_TYPE=Release ${_extra})
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/build")
run("${WORK_DIR}/build/consumer")
if(NOT LAST_OUTPUT MATCHES "consumer \\(${KIND}\\): memgov [0-9]+\\.[0-9]+\\.[0-9]+ ok")
  message(FATAL_ERROR "unexpected consumer output: ${LAST_OUTPUT}")
endif()
message(STATUS "${LAST_OUTPUT}")
