// Hostile configuration: every field that arithmetic later depends on has a rejected value
// (std::invalid_argument naming the field, at construction) and an accepted boundary value;
// values that the API takes at run time saturate instead of overflowing. Run under UBSan, a
// value that passes validation and overflows later fails here.

#include <memgov/detail/saturate.hpp>
#include <memgov/memgov.hpp>

#include "fake_cgroup.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>

using namespace std::chrono_literals;
using memgov::pressure_level;
using memgov_test::fake_cgroup_tree;

namespace {

constexpr std::uint64_t GiB = std::uint64_t{1} << 30;

// Runs `make` and checks that it throws std::invalid_argument whose message names `field`.
void rejects(const std::function<void()>& make, const std::string& field) {
    CAPTURE(field);
    try {
        make();
        FAIL("accepted: " << field);
    } catch (const std::invalid_argument& e) {
        CAPTURE(e.what());
        CHECK(std::string{e.what()}.find(field) != std::string::npos);
    }
}

struct monitor_rig {
    fake_cgroup_tree tree = fake_cgroup_tree::v2("/app");
    memgov::manual_clock clock;

    monitor_rig() {
        tree.set_limit("/app", GiB);
        tree.set_usage("/app", GiB / 2);
    }
    memgov::pressure_monitor_config config() const {
        memgov::pressure_monitor_config c;
        c.cgroup = tree.config();
        c.use_systemd_pressure_env = false;
        return c;
    }
    void make(const memgov::pressure_monitor_config& c) {
        memgov::pressure_monitor<memgov::manual_clock> m{c, nullptr, clock};
        (void)m.level();
    }
    memgov::governor_config governor_config() const {
        memgov::governor_config g;
        g.monitor = config();
        return g;
    }
    void make(const memgov::governor_config& g) {
        memgov::governor<memgov::manual_clock> gov{g, clock, [] {}, [] { return std::size_t{0}; }};
        (void)gov.level();
    }
};

const auto out_of_range_level = static_cast<pressure_level>(7);
const auto far_level = static_cast<pressure_level>(9);

} // namespace

TEST_CASE("config validation: saturating helpers", "[config]") {
    using memgov::detail::saturating_cast;
    CHECK(saturating_cast<std::int64_t>(1e300) == std::numeric_limits<std::int64_t>::max());
    CHECK(saturating_cast<std::int64_t>(-1e300) == std::numeric_limits<std::int64_t>::min());
    CHECK(saturating_cast<std::int64_t>(std::numeric_limits<double>::quiet_NaN()) == 0);
    CHECK(saturating_cast<std::int64_t>(std::numeric_limits<double>::infinity()) ==
          std::numeric_limits<std::int64_t>::max());
    CHECK(saturating_cast<std::int64_t>(9223372036854775808.0) == std::numeric_limits<std::int64_t>::max());
    CHECK(saturating_cast<std::int64_t>(-9223372036854775808.0) == std::numeric_limits<std::int64_t>::min());
    CHECK(saturating_cast<std::uint64_t>(-5.0) == 0);
    CHECK(saturating_cast<std::uint64_t>(18446744073709551616.0) == std::numeric_limits<std::uint64_t>::max());
    CHECK(saturating_cast<std::size_t>(12345.9) == 12345);
    CHECK(saturating_cast<std::int64_t>(std::numeric_limits<std::size_t>::max()) ==
          std::numeric_limits<std::int64_t>::max());
    CHECK(saturating_cast<std::int64_t>(std::size_t{42}) == 42);

    const memgov::time_point t{std::chrono::seconds{100}};
    CHECK(memgov::detail::saturating_add(t, memgov::duration::max()) == memgov::time_point::max());
    CHECK(memgov::detail::saturating_sub(t, memgov::duration::max()) ==
          memgov::time_point{memgov::duration{std::numeric_limits<std::int64_t>::min() + 100'000'000'001}});
    CHECK(memgov::detail::saturating_sub(t, memgov::duration::min()) == memgov::time_point::max());
    CHECK(memgov::detail::saturating_sub(memgov::time_point::min(), 1s) == memgov::time_point::min());
    CHECK(memgov::detail::saturating_mul(1s, 1e300) == memgov::duration::max());
    CHECK(memgov::detail::saturating_mul(1s, 2.0) == 2s);
}

TEST_CASE("config validation: pressure monitor", "[config]") {
    monitor_rig rig;
    SECTION("psi_level past emergency") {
        auto c = rig.config();
        c.psi_level = out_of_range_level;
        rejects([&] { rig.make(c); }, "psi_level");
        c.psi_level = pressure_level::emergency; // the boundary
        rig.make(c);
    }
    SECTION("durations that overflow the arithmetic that uses them") {
        for (const char* field : {"psi_hold", "sample_period", "estimate_period", "calibration_window",
                                  "growth_half_life", "forecast_horizon", "dwell"}) {
            auto c = rig.config();
            const std::string f = field;
            auto& d = f == "psi_hold"             ? c.psi_hold
                      : f == "sample_period"      ? c.sample_period
                      : f == "estimate_period"    ? c.estimate_period
                      : f == "calibration_window" ? c.calibration_window
                      : f == "growth_half_life"   ? c.growth_half_life
                      : f == "forecast_horizon"   ? c.forecast_horizon
                                                  : c.thresholds[2].dwell;
            d = memgov::duration::max();
            rejects([&] { rig.make(c); }, f);
            d = memgov::longest_period; // the boundary
            rig.make(c);
        }
    }
    SECTION("an exit threshold of 0 could never be left") {
        auto c = rig.config();
        c.thresholds_relative = false;
        c.thresholds = {{{0.70, 0.65, 2s}, {0.78, 0.74, 2s}, {0.85, 0.81, 5s}, {0.89, 0.0, 1s}}};
        rejects([&] { rig.make(c); }, "thresholds[3].exit");
        c.thresholds[3].exit = 0.001; // the boundary: any ratio above 0
        rig.make(c);

        auto r = rig.config(); // relative: an exit equal to minus the red line is 0 too
        r.thresholds[0].exit = -r.red_line.small_limit_ratio;
        rejects([&] { rig.make(r); }, "thresholds[0].exit");
    }
    SECTION("an exit threshold of 0 is never reached: the level falls") {
        // With the smallest accepted exit, emergency is left once usage falls below it.
        auto c = rig.config();
        c.thresholds_relative = false;
        c.forecast_horizon = 0s;
        c.thresholds = {{{0.70, 0.65, 2s}, {0.78, 0.74, 2s}, {0.85, 0.81, 5s}, {0.89, 0.02, 1s}}};
        memgov::pressure_monitor<memgov::manual_clock> m{c, nullptr, rig.clock};
        rig.tree.set_usage("/app", GiB * 99 / 100);
        rig.clock.advance(1s);
        REQUIRE(m.poll(rig.clock.now()) == pressure_level::emergency);
        rig.tree.set_usage("/app", GiB / 100);
        for (int i = 0; i < 100; ++i) {
            rig.clock.advance(1s);
            (void)m.poll(rig.clock.now());
        }
        CHECK(m.level() == pressure_level::normal);
    }
}

TEST_CASE("config validation: governor and admission", "[config]") {
    monitor_rig rig;
    SECTION("admission levels past emergency") {
        auto g = rig.governor_config();
        g.admission.close_sessions_at = far_level;
        g.admission.refuse_all_at = far_level;
        rejects([&] { rig.make(g); }, "close_sessions_at");
        g.admission.close_sessions_at = pressure_level::critical;
        rejects([&] { rig.make(g); }, "refuse_all_at");
        g.admission.refuse_all_at = pressure_level::emergency; // the boundary
        rig.make(g);
    }
    SECTION("periods") {
        auto g = rig.governor_config();
        g.poll_period = memgov::duration::max();
        rejects([&] { rig.make(g); }, "poll_period");
        g.poll_period = memgov::longest_period;
        rig.make(g);
        g.step_period = memgov::duration::max();
        rejects([&] { rig.make(g); }, "step_period");
        g.step_period = memgov::longest_period;
        rig.make(g);
    }
    SECTION("at 99% usage (emergency) nothing is admitted with the default gates") {
        auto g = rig.governor_config();
        g.monitor.forecast_horizon = 0s;
        rig.tree.set_usage("/app", GiB * 99 / 100);
        memgov::governor<memgov::manual_clock> gov{g, rig.clock, [] {}, [] { return std::size_t{0}; }};
        REQUIRE(gov.poll() == pressure_level::emergency);
        CHECK_FALSE(gov.admit(1, memgov::admit_kind::session));
        CHECK_FALSE(gov.admit(1, memgov::admit_kind::work));
    }
}

TEST_CASE("config validation: evictor", "[config]") {
    SECTION("heap back-off factor") {
        for (const double f : {std::numeric_limits<double>::infinity(), 1e300,
                               std::numeric_limits<double>::quiet_NaN(), 0.5}) {
            memgov::evictor_config c;
            c.heap.backoff_factor = f;
            rejects([&] { memgov::evictor e{c}; }, "backoff_factor");
        }
        memgov::evictor_config c;
        c.heap.backoff_factor = 1000.0; // the boundary
        memgov::evictor e{c};
    }
    SECTION("heap intervals") {
        memgov::evictor_config c;
        c.heap.min_interval = memgov::duration::max();
        c.heap.max_interval = memgov::duration::max();
        rejects([&] { memgov::evictor e{c}; }, "min_interval");
        c.heap.min_interval = 1s;
        rejects([&] { memgov::evictor e{c}; }, "max_interval");
        c.heap.min_interval = 0s;
        c.heap.max_interval = 1s;
        rejects([&] { memgov::evictor e{c}; }, "min_interval");
        c.heap.min_interval = memgov::longest_period; // the boundary
        c.heap.max_interval = memgov::longest_period;
        memgov::evictor e{c};
    }
    SECTION("a huge back-off never trims on every call") {
        memgov::evictor_config c;
        c.heap.min_interval = 1s;
        c.heap.max_interval = memgov::longest_period;
        c.heap.backoff_factor = 1000.0;
        int trims = 0;
        memgov::heap_trimmer t{c.heap, [&] { ++trims; }, [] { return std::size_t{0}; }};
        memgov::time_point now{std::chrono::hours{1}};
        for (int i = 0; i < 1000; ++i) {
            (void)t.maybe_trim(now);
            now += 1s;
        }
        CHECK(trims <= 3); // 1 s, then 1000 s: at most the first two within 1000 s
        CHECK(t.interval() <= memgov::longest_period);
        CHECK(t.interval() > 0s);
    }
    SECTION("age ladder") {
        memgov::evictor_config c;
        c.age_ladder = {{-0.5, 100s}};
        rejects([&] { memgov::evictor e{c}; }, "age_ladder");
        c.age_ladder = {{0.5, memgov::duration::max()}};
        rejects([&] { memgov::evictor e{c}; }, "age_ladder");
        c.age_ladder = {{std::numeric_limits<double>::quiet_NaN(), 100s}};
        rejects([&] { memgov::evictor e{c}; }, "age_ladder");
        c.age_ladder = {{0.0001, memgov::longest_period}}; // the boundary
        memgov::evictor e{c};
    }
    SECTION("a cost cap beyond any real cost evicts nothing") {
        for (const std::size_t cap : {std::numeric_limits<std::size_t>::max(), std::size_t{1} << 63}) {
            memgov::evictor_config c;
            c.session_cost_cap = cap;
            memgov::evictor ev{c, [] {}, [] { return std::size_t{0}; }};
            memgov::session_map<int, int> map;
            for (int i = 0; i < 10; ++i) map.insert(i, [] { return 0; }, {.cost = 1 << 20});
            ev.add(std::make_shared<memgov::session_map_reclaimer<decltype(map)>>(map));
            memgov::pressure_view v;
            v.level = pressure_level::critical;
            v.limit_bytes = GiB;
            v.estimate_bytes = GiB * 86 / 100;
            v.exit_ratio = 0.81;
            (void)ev.step(v, memgov::steady_clock{}.now()); // the map's own clock: nothing expires
            CHECK(map.size() == 10);
        }
    }
}

TEST_CASE("config validation: run-time arguments saturate", "[config]") {
    memgov::manual_clock clock;
    SECTION("session_map::evict_older_than(duration::min())") {
        memgov::session_map<int, int, memgov::manual_clock> map{{}, {}, clock};
        map.insert(1, [] { return 0; });
        clock.advance(1s);
        const auto r = map.evict_older_than(memgov::duration::min(), 10);
        CHECK(r.evicted == 1); // every session is older than a negative age
        map.insert(2, [] { return 0; });
        const auto r2 = map.evict_older_than(memgov::duration::max(), 10);
        CHECK(r2.evicted == 0);
    }
    SECTION("object_pool::trim(time_point::min()) and time_point::max()") {
        struct obj {
            void reset() noexcept {}
        };
        memgov::object_pool<obj, memgov::manual_clock> pool{{}, nullptr, clock};
        { auto a = pool.acquire(); }
        (void)pool.trim(clock.now()); // the first trim that sees an idle object stamps it
        (void)pool.trim(memgov::time_point::min());
        CHECK(pool.stats().idle_objects == 1); // nothing is idle for a negative time
        (void)pool.trim(memgov::time_point::max());
        CHECK(pool.stats().idle_objects == 0);
    }
}

TEST_CASE("config validation: pools", "[config]") {
    SECTION("size classes and alignment the allocator cannot serve") {
        memgov::buffer_pool_config c;
        c.size_classes = {4096, std::numeric_limits<std::size_t>::max() / 2 + 1};
        rejects([&] { memgov::buffer_pool p{c}; }, "size_classes");
        c.size_classes = {4096, std::size_t{1} << 42}; // the boundary
        memgov::buffer_pool ok{c};

        memgov::buffer_pool_config a;
        a.alignment = std::size_t{1} << 62;
        rejects([&] { memgov::buffer_pool p{a}; }, "alignment");
        a.alignment = std::size_t{1} << 21; // the boundary: a huge page
        memgov::buffer_pool ok2{a};
    }
}

TEST_CASE("config validation: ledger categories are defined before use", "[config]") {
    memgov::ledger ledger;
    const auto undefined = static_cast<memgov::category>(10);
    SECTION("session map") {
        memgov::session_map_config c;
        c.ledger_category = undefined;
        rejects([&] { memgov::session_map<int, int> m{c, {}, {}, &ledger}; }, "ledger_category");
        c.ledger_category = ledger.define("my_sessions"); // defined: accepted
        memgov::session_map<int, int> m{c, {}, {}, &ledger};
    }
    SECTION("object pool") {
        struct obj {
            void reset() noexcept {}
        };
        memgov::object_pool_config c;
        c.ledger_category = static_cast<memgov::category>(200);
        rejects([&] { memgov::object_pool<obj> p{c, &ledger}; }, "ledger_category");
        c.ledger_category = undefined;
        rejects([&] { memgov::object_pool<obj> p{c, &ledger}; }, "ledger_category");
        c.ledger_category = memgov::category::objects;
        memgov::object_pool<obj> p{c, &ledger};
        { auto a = p.acquire(); }
        CHECK(ledger.bytes(memgov::category::objects) > 0);
    }
    SECTION("charges to an undefined category are not lost") {
        // The ledger refuses nothing on its hot path; it counts such bytes under the category
        // index and reports them in total() like any counted category.
        ledger.charge(undefined, 400);
        CHECK(ledger.total() == 400);
        ledger.release(undefined, 400);
        CHECK(ledger.total() == 0);
    }
}
