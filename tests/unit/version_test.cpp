#include <memgov/memgov.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <type_traits>

TEST_CASE("version: string matches the numbers", "[version]") {
    const std::string expected = std::to_string(MEMGOV_VERSION_MAJOR) + "." + std::to_string(MEMGOV_VERSION_MINOR) +
                                 "." + std::to_string(MEMGOV_VERSION_PATCH);
    CHECK(expected == memgov::version_string);
    CHECK(memgov::version.major == MEMGOV_VERSION_MAJOR);
    CHECK(memgov::version.minor == MEMGOV_VERSION_MINOR);
    CHECK(memgov::version.patch == MEMGOV_VERSION_PATCH);
}

// The inline namespace carries major and minor: pin it, so that bumping the version without
// meaning to change the ABI namespace (or the reverse) fails here.
TEST_CASE("version: public types live in the versioned inline namespace", "[version]") {
    STATIC_REQUIRE(MEMGOV_VERSION_MAJOR == 0 && MEMGOV_VERSION_MINOR == 1);
    STATIC_REQUIRE(std::is_same_v<memgov::ledger, memgov::v0_1::ledger>);
    STATIC_REQUIRE(std::is_same_v<memgov::manual_clock, memgov::v0_1::manual_clock>);
    STATIC_REQUIRE(std::is_same_v<memgov::ledger, memgov::MEMGOV_ABI_NAMESPACE::ledger>);
}
