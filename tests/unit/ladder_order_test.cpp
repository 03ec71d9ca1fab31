// The default ladder on a real session map: under pressure the sessions that cause it go
// first (over the cost cap or the quota, then the largest), before age and LRU reach the
// well-behaved ones.
#include <memgov/evictor.hpp>
#include <memgov/reclaimers.hpp>
#include <memgov/session_map.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using memgov::evict_reason;
using memgov::pressure_level;
using memgov::reclaim_action;

namespace {
constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr std::size_t GiB = std::size_t{1} << 30;
using map_type = memgov::session_map<int, int, memgov::manual_clock>;

// 301 well-behaved 1 MiB sessions (the oldest first) and 4 giants of 29 MiB, just under the
// 30 MiB cap, created last.
struct population {
    memgov::manual_clock clock;
    std::vector<std::pair<int, evict_reason>> evicted;
    std::unique_ptr<map_type> map;

    population() {
        memgov::session_map_hooks<int, int> hooks;
        hooks.on_evict = [this](const int& k, int&, evict_reason r) { evicted.emplace_back(k, r); };
        map = std::make_unique<map_type>(memgov::session_map_config{}, std::move(hooks), clock);
        for (int k = 0; k < 301; ++k) {
            REQUIRE(map->insert(k, [] { return 0; }, {.cost = static_cast<std::int64_t>(MiB)}));
            clock.advance(1s);
        }
        for (int k = 1000; k < 1004; ++k) {
            REQUIRE(map->insert(k, [] { return 0; }, {.cost = static_cast<std::int64_t>(29 * MiB)}));
        }
    }
    [[nodiscard]] std::size_t count(evict_reason r) const {
        std::size_t n = 0;
        for (const auto& e : evicted) n += e.second == r ? 1 : 0;
        return n;
    }
    [[nodiscard]] bool giants_gone() const {
        for (int k = 1000; k < 1004; ++k) {
            if (map->contains(k)) return false;
        }
        return true;
    }
};

memgov::pressure_view at(pressure_level l, double usage, double exit_ratio) {
    memgov::pressure_view v;
    v.level = l;
    v.limit_bytes = GiB;
    v.estimate_bytes = static_cast<std::size_t>(usage * static_cast<double>(GiB));
    v.red_line = 0.85;
    v.exit_ratio = exit_ratio;
    return v;
}
} // namespace

TEST_CASE("ladder order: at emergency the giants go first, then only what is still wanted", "[evictor][ladder]") {
    population p;
    memgov::evictor ev{{}, [] {}, [] { return std::size_t{0}; }};
    ev.add(std::make_shared<memgov::session_map_reclaimer<map_type>>(*p.map));
    // 95% of 1 GiB: wants down to 83%, about 123 MiB.
    const auto rep = ev.step(at(pressure_level::emergency, 0.95, 0.85), p.clock.now());
    REQUIRE(rep.wanted > 116 * MiB);
    CHECK(p.giants_gone());
    CHECK(p.count(evict_reason::largest_under_pressure) <= 16);
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK(p.evicted[i].first >= 1000); // the giants before anyone else
        CHECK(p.evicted[i].second == evict_reason::largest_under_pressure);
    }
    // What the giants did not cover came from the largest bucket left, then LRU; age found
    // nothing old enough (the oldest is 301 s, the age ladder gives 400 s at 95%).
    CHECK(p.count(evict_reason::age_under_pressure) == 0);
    const std::size_t small = p.evicted.size() - 4;
    CHECK(small * MiB <= rep.wanted - 116 * MiB + MiB); // no more than was still wanted
    CHECK(rep.freed >= rep.wanted);
    const auto st = ev.stats();
    CHECK(st.total(reclaim_action::evict_largest).items == p.count(evict_reason::largest_under_pressure));
    CHECK(st.total(reclaim_action::evict_lru).items == p.count(evict_reason::lru_under_pressure));
}

TEST_CASE("ladder order: at critical the largest go before age", "[evictor][ladder]") {
    population p;
    memgov::evictor ev{{}, [] {}, [] { return std::size_t{0}; }};
    ev.add(std::make_shared<memgov::session_map_reclaimer<map_type>>(*p.map));
    p.clock.advance(200s); // the oldest well-behaved sessions are now 501 s old
    // 97%: the age ladder gives 200 s; the step wants 97% − 81% = 16%, about 164 MiB.
    const auto rep = ev.step(at(pressure_level::critical, 0.97, 0.81), p.clock.now());
    REQUIRE(p.evicted.size() >= 4);
    CHECK(p.giants_gone());
    for (std::size_t i = 0; i < 4; ++i) CHECK(p.evicted[i].first >= 1000);
    // Only the large are "largest": above half the 30 MiB cap, the four giants; the 1 MiB
    // sessions are equals, left to age.
    CHECK(p.count(evict_reason::largest_under_pressure) == 4);
    CHECK(p.count(evict_reason::lru_under_pressure) == 0); // no LRU at critical
    // Age follows with its own budget, on what is left.
    CHECK(p.count(evict_reason::age_under_pressure) == 64);
    CHECK(rep.freed == (4 * 29 + 64) * MiB);
}

TEST_CASE("ladder order: with a session quota the cost cap follows it", "[evictor][ladder]") {
    population p;
    memgov::evictor ev{{}, [] {}, [] { return std::size_t{0}; }};
    ev.add(std::make_shared<memgov::session_map_reclaimer<map_type>>(*p.map));
    auto v = at(pressure_level::critical, 0.86, 0.81);
    v.session_quota_bytes = 15 * MiB; // the governor's quota at critical (30 MiB × 0.5)
    (void)ev.step(v, p.clock.now());
    CHECK(p.giants_gone());
    CHECK(p.count(evict_reason::over_cost) == 4);              // over the quota: evicted as over cost
    CHECK(p.count(evict_reason::largest_under_pressure) == 0); // 116 MiB covered the ~51 wanted
    CHECK(p.map->size() == 301);
}
