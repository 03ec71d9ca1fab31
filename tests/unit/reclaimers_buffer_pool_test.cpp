// A service that governs only a buffer pool includes the governor and the buffer-pool adapter,
// and nothing else: this translation unit includes those two memgov headers (and the fake
// cgroup tree, which needs only memgov/cgroup.hpp), so it compiles only if none of them pulls in
// the session map or the object pool.
#include <memgov/governor.hpp>
#include <memgov/reclaimers/buffer_pool.hpp>

#include "fake_cgroup.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

// Stand-ins found by qualified lookup of `memgov::X` only when memgov (with its inline version
// namespace) declares no X itself. Had the includes above brought in memgov/session_map.hpp,
// memgov/object_pool.hpp or their adapters, `memgov::session_map` and the others would name
// those class templates, and the static_asserts below would not compile.
namespace memgov_test_absent {
struct session_map {
    static constexpr bool absent = true;
};
struct session_map_reclaimer {
    static constexpr bool absent = true;
};
struct object_pool {
    static constexpr bool absent = true;
};
struct object_pool_reclaimer {
    static constexpr bool absent = true;
};
} // namespace memgov_test_absent
namespace memgov {
using namespace ::memgov_test_absent;
} // namespace memgov
static_assert(memgov::session_map::absent, "memgov/session_map.hpp must not be included");
static_assert(memgov::session_map_reclaimer::absent, "the session map adapter must not be included");
static_assert(memgov::object_pool::absent, "memgov/object_pool.hpp must not be included");
static_assert(memgov::object_pool_reclaimer::absent, "the object pool adapter must not be included");

using namespace std::chrono_literals;
using memgov::pressure_level;

TEST_CASE("reclaimers: the buffer pool adapter alone lets a governor trim a pool", "[reclaimers]") {
    constexpr std::uint64_t GiB = std::uint64_t{1024} * 1024 * 1024;
    constexpr std::size_t KiB = 1024;
    auto tree = memgov_test::fake_cgroup_tree::v2("/app");
    tree.set_limit("/app", GiB);
    tree.set_usage("/app", GiB / 2);
    memgov::governor_config cfg;
    cfg.monitor.cgroup = tree.config();
    cfg.monitor.use_systemd_pressure_env = false;
    cfg.monitor.forecast_horizon = 0s;
    memgov::manual_clock clock;
    memgov::governor<memgov::manual_clock> g{cfg, clock, [] {}, [] { return std::size_t{0}; }};

    memgov::buffer_pool pool{{}, &g.ledger()};
    {
        std::vector<memgov::buffer> held;
        for (int i = 0; i < 8; ++i) held.push_back(pool.acquire(64 * KiB));
    }
    pool.flush_thread_cache();
    REQUIRE(pool.idle_bytes() == 8 * 64 * KiB);
    const auto r = std::make_shared<memgov::buffer_pool_reclaimer>(pool);
    g.register_reclaimer(r);
    const auto stats = g.stats();
    REQUIRE(stats.reclaimers.size() == 1);
    CHECK(stats.reclaimers.front().name == "buffer_pool");

    // 72% of the limit: elevated. The step wants far more than the pool holds idle, so the
    // pool is trimmed and follows the level.
    clock.advance(1s);
    tree.set_usage("/app", GiB / 100 * 72);
    CHECK(g.poll(clock.now()) == pressure_level::elevated);
    CHECK(pool.pressure() == pressure_level::elevated);
    CHECK(pool.idle_bytes() < 8 * 64 * KiB);
    CHECK(g.stats().evictor.total(memgov::reclaim_action::trim_pools).bytes > 0);

    CHECK(g.unregister_reclaimer(*r));
    CHECK(pool.pressure() == pressure_level::normal); // told normal on its way out
}
