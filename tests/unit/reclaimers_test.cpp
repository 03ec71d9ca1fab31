#include <memgov/reclaimers/buffer_pool.hpp>
#include <memgov/reclaimers/object_pool.hpp>
#include <memgov/reclaimers/session_map.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using memgov::pressure_level;
using memgov::reclaim_action;

namespace {
constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;

memgov::reclaim_request request(reclaim_action a, pressure_level l, std::size_t wanted, std::size_t budget,
                                memgov::time_point now) {
    memgov::reclaim_request r;
    r.action = a;
    r.level = l;
    r.bytes_wanted = wanted;
    r.budget = budget;
    r.now = now;
    return r;
}

struct message {
    std::string text;
    void reset() noexcept { text.clear(); }
    [[nodiscard]] std::size_t retained_bytes() const noexcept { return text.capacity(); }
};
} // namespace

TEST_CASE("reclaimers: buffer pool trims by what the step wants, all of it at emergency", "[reclaimers]") {
    memgov::buffer_pool pool;
    {
        std::vector<memgov::buffer> held;
        for (int i = 0; i < 8; ++i) held.push_back(pool.acquire(64 * KiB));
    }
    pool.flush_thread_cache();
    REQUIRE(pool.idle_bytes() == 8 * 64 * KiB);
    memgov::buffer_pool_reclaimer r{pool};
    CHECK(r.name() == "buffer_pool");
    CHECK(r.handles(reclaim_action::trim_pools));
    CHECK_FALSE(r.handles(reclaim_action::evict_lru));
    CHECK(r.estimate(reclaim_action::trim_pools) == 8 * 64 * KiB);

    const auto now = memgov::manual_clock{}.now();
    auto got = r.reclaim(request(reclaim_action::trim_pools, pressure_level::elevated, 128 * KiB, 64, now));
    CHECK(got.bytes == 128 * KiB);
    CHECK(got.items == 2);
    CHECK(pool.idle_bytes() == 6 * 64 * KiB);
    got = r.reclaim(request(reclaim_action::trim_pools, pressure_level::emergency, 1, 64, now));
    CHECK(got.bytes == 6 * 64 * KiB);
    CHECK(got.items == 6);
    CHECK(pool.idle_bytes() == 0);

    r.on_level(pressure_level::high);
    CHECK(pool.pressure() == pressure_level::high);
    CHECK(r.reuse_rate() == Approx(0.0)); // 8 acquisitions, all misses
    CHECK_THROWS_WITH(memgov::buffer_pool_reclaimer(pool, ""), Catch::Contains("name is empty"));
}

TEST_CASE("reclaimers: object pool frees what outlived its tier", "[reclaimers]") {
    memgov::manual_clock clock;
    using pool_type = memgov::object_pool<message, memgov::manual_clock>;
    pool_type pool{{}, nullptr, clock};
    {
        std::vector<pool_type::lease> leases;
        for (int i = 0; i < 4; ++i) {
            leases.push_back(pool.acquire());
            leases.back()->text.assign(1000, 'x'); // capacity the object keeps after reset()
        }
    }
    memgov::object_pool_reclaimer<pool_type> r{pool};
    // The estimate is what a trim of every idle object gives back: the heap they retain beyond
    // their slots, not the slots themselves.
    const auto idle = pool.stats();
    REQUIRE(idle.idle_objects == 4);
    const std::size_t retained_beyond_slots = idle.idle_bytes - 4 * sizeof(message);
    CHECK(retained_beyond_slots >= 4 * 1000);
    CHECK(r.estimate(reclaim_action::trim_pools) == retained_beyond_slots);
    CHECK(r.estimate(reclaim_action::evict_lru) == 0);
    // The idle clock starts at the first trim that sees an object idle.
    auto got = r.reclaim(request(reclaim_action::trim_pools, pressure_level::elevated, MiB, 64, clock.now()));
    CHECK(got.items == 0);
    clock.advance(6s); // past the young tier's 5 s
    const std::size_t held = pool.stats().retained_bytes;
    got = r.reclaim(request(reclaim_action::trim_pools, pressure_level::elevated, MiB, 64, clock.now()));
    CHECK(got.items == 4);
    // What the objects retained beyond their slots went back to the allocator; the slots stay
    // in their blocks for reuse, so they are not reported as freed.
    CHECK(got.bytes == held - pool.stats().retained_bytes - 4 * sizeof(message));
    CHECK(got.bytes == retained_beyond_slots); // the estimate was exact
    CHECK(r.estimate(reclaim_action::trim_pools) == 0);
    CHECK(r.reuse_rate() == Approx(0.0));
}

TEST_CASE("reclaimers: session map answers sweep, age, cost and LRU", "[reclaimers]") {
    memgov::manual_clock clock;
    memgov::session_map_config cfg;
    cfg.idle_ttl = 30s;
    using map_type = memgov::session_map<int, std::string, memgov::manual_clock>;
    map_type map{cfg, {}, clock};
    for (int k = 0; k < 10; ++k) {
        REQUIRE(map.insert(k, [] { return std::string{"s"}; }));
        REQUIRE(map.set_cost(k, k == 9 ? 40 * static_cast<std::int64_t>(MiB) : static_cast<std::int64_t>(MiB)));
        clock.advance(1s);
    }
    memgov::session_map_reclaimer<map_type> r{map};
    CHECK(r.estimate(reclaim_action::evict_lru) == 49 * MiB);
    CHECK(r.estimate(reclaim_action::sweep_expired) == 0);

    auto req = request(reclaim_action::evict_over_cost, pressure_level::critical, 0, 64, clock.now());
    req.cost_cap = 30 * MiB;
    auto got = r.reclaim(req);
    CHECK(got.items == 1);
    CHECK(got.bytes == 40 * MiB);
    CHECK_FALSE(map.contains(9));

    req = request(reclaim_action::evict_by_age, pressure_level::critical, 0, 64, clock.now());
    req.max_age = 9s; // "at least 9 s old": keys 0 and 1 (created 10 s and 9 s ago)
    got = r.reclaim(req);
    CHECK(got.items == 2);
    CHECK_FALSE(map.contains(0));
    CHECK_FALSE(map.contains(1));

    got = r.reclaim(request(reclaim_action::evict_lru, pressure_level::emergency, 3 * MiB, 1024, clock.now()));
    CHECK(got.items == 3);
    CHECK(map.size() == 4);

    clock.advance(31s); // the rest are idle past 30 s
    got = r.reclaim(request(reclaim_action::sweep_expired, pressure_level::elevated, 0, 1024, clock.now()));
    CHECK(got.items == 4);
    CHECK(map.empty());
    CHECK(map.stats().evicted(memgov::evict_reason::over_cost) == 1);
    CHECK(map.stats().evicted(memgov::evict_reason::age_under_pressure) == 2);
    CHECK(map.stats().evicted(memgov::evict_reason::lru_under_pressure) == 3);
    CHECK(map.stats().evicted(memgov::evict_reason::expired_idle) == 4);
}

TEST_CASE("reclaimers: session map evicts the largest sessions until the step has enough", "[reclaimers]") {
    memgov::manual_clock clock;
    using map_type = memgov::session_map<int, std::string, memgov::manual_clock>;
    map_type map{{}, {}, clock};
    // Costs in distinct power-of-two buckets, so "largest first" is exact; the largest is exempt.
    for (int k = 0; k < 6; ++k) {
        REQUIRE(map.insert(k, [] { return std::string{"s"}; },
                           {.cost = static_cast<std::int64_t>(MiB << k)})); // 1, 2, 4 ... 32 MiB
    }
    REQUIRE(map.insert(99, [] { return std::string{"s"}; },
                       {.no_evict = true, .cost = static_cast<std::int64_t>(64 * MiB)}));
    memgov::session_map_reclaimer<map_type> r{map};
    CHECK(r.handles(reclaim_action::evict_largest));
    CHECK_FALSE(r.handles(reclaim_action::custom));
    CHECK(r.estimate(reclaim_action::evict_largest) == 127 * MiB);

    // Nothing wanted: nothing evicted (largest is relative; it needs a reason).
    auto got = r.reclaim(request(reclaim_action::evict_largest, pressure_level::critical, 0, 16, clock.now()));
    CHECK(got.items == 0);
    CHECK(map.size() == 7);

    // 40 MiB wanted: 32 then 16, and no more.
    got = r.reclaim(request(reclaim_action::evict_largest, pressure_level::critical, 40 * MiB, 16, clock.now()));
    CHECK(got.items == 2);
    CHECK(got.bytes == 48 * MiB);
    CHECK_FALSE(map.contains(5));
    CHECK_FALSE(map.contains(4));
    CHECK(map.contains(99)); // no_evict is spared

    // The budget counts sessions evicted.
    got = r.reclaim(request(reclaim_action::evict_largest, pressure_level::emergency, 100 * MiB, 2, clock.now()));
    CHECK(got.items == 2);
    CHECK(got.bytes == 12 * MiB);
    CHECK(map.size() == 3); // 1 and 2 MiB, and the exempt one
    CHECK(map.stats().evicted(memgov::evict_reason::largest_under_pressure) == 4);
}
