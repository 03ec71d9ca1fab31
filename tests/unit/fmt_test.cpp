#include <memgov/fmt.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <string>

using namespace std::chrono_literals;

TEST_CASE("fmt: enumerations format as their names and take a string's spec", "[fmt]") {
    CHECK(fmt::format("{}", memgov::pressure_level::high) == "high");
    CHECK(fmt::format("{:>9}|", memgov::pressure_level::emergency) == "emergency|");
    CHECK(fmt::format("{:>6}|", memgov::pressure_level::high) == "  high|");
    CHECK(fmt::format("{:<8}|", memgov::admit_reason::admitted) == "admitted|");
    CHECK(fmt::format("{}", memgov::evict_reason::lru_under_pressure) ==
          memgov::to_string(memgov::evict_reason::lru_under_pressure));
    CHECK(fmt::format("{}", memgov::reclaim_action::trim_pools) == "trim_pools");
    CHECK(fmt::format("{}", memgov::admit_kind::session) == "session");
    CHECK(fmt::format("{}", memgov::cgroup_mode::v2) == memgov::to_string(memgov::cgroup_mode::v2));
    CHECK(fmt::format("{}", memgov::grant_result::granted) == memgov::to_string(memgov::grant_result::granted));
    // Every evict reason has a name of its own.
    for (std::size_t i = 0; i < memgov::evict_reason_count; ++i) {
        const auto r = static_cast<memgov::evict_reason>(i);
        CHECK(fmt::format("{}", r) == memgov::to_string(r));
        CHECK_FALSE(fmt::format("{}", r).empty());
    }
}

TEST_CASE("fmt: a health summary is one logfmt line", "[fmt]") {
    memgov::health_summary h;
    h.level = memgov::pressure_level::high;
    h.limit_bytes = 1024;
    h.estimate_bytes = 812;
    h.headroom_bytes = -3;
    h.ratio = 0.8125;
    h.growth_bytes_per_second = 1048576.4;
    h.time_to_limit = std::chrono::duration_cast<memgov::duration>(12500ms);
    h.rejections_last_minute = 3;
    h.evictions_last_minute = 40;
    h.reuse_rates.push_back({"pools", 0.9});
    CHECK(fmt::format("{}", h) == "level=high ratio=0.812 estimate_bytes=812 limit_bytes=1024 headroom_bytes=-3 "
                                  "growth_bytes_per_second=1048576 time_to_limit_s=12.500 rejections_last_minute=3 "
                                  "evictions_last_minute=40 reuse.pools=0.900");

    h.time_to_limit.reset();
    h.reuse_rates.clear();
    CHECK_THAT(fmt::format("{}", h), Catch::EndsWith("time_to_limit_s=none rejections_last_minute=3 "
                                                     "evictions_last_minute=40"));
    CHECK_THROWS_AS(fmt::format(fmt::runtime("{:x}"), h), fmt::format_error);
}
