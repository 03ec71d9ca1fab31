# The memgov_dev target: warnings (and -Werror when MEMGOV_WERROR is on) for memgov's own
# tests, benchmarks and examples. Consumers of memgov::memgov never see these flags.
add_library(memgov_dev INTERFACE)
target_link_libraries(memgov_dev INTERFACE memgov::memgov)
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(memgov_dev INTERFACE
    -Wall -Wextra -Wpedantic -Wconversion -Wshadow
    $<$<BOOL:${MEMGOV_WERROR}>:-Werror>)
endif()
# Boost 1.74's asio uses std::exchange without including <utility> (fails with g++ 12, C++20).
target_compile_options(memgov_dev INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-include utility>)
