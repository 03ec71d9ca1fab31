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
        // A tiny exit is as good as 0: usage never falls below it, emergency would stay.
        c.thresholds[3].exit = 1e-300;
        rejects([&] { rig.make(c); }, "thresholds[3].exit");
        c.thresholds[3].exit = 0.0099;
        rejects([&] { rig.make(c); }, "min_exit_ratio");
        c.thresholds[3].exit = memgov::pressure_monitor_config::min_exit_ratio; // the boundary: 1%
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
        for (const double f :
             {std::numeric_limits<double>::infinity(), 1e300, std::numeric_limits<double>::quiet_NaN(), 0.5}) {
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

// ---------------------------------------------------------------------------------------------
// Every constrained field: one rejected value (the message names the field) and one accepted
// boundary value, through the public constructors.

namespace {

constexpr memgov::duration year = memgov::longest_period;
constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();

template <class Config>
struct field_probe {
    const char* field;
    void (*bad)(Config&);
    void (*boundary)(Config&);
};

template <class Config, class Make>
void probe_all(Make make, std::initializer_list<field_probe<Config>> probes) {
    for (const auto& p : probes) {
        CAPTURE(p.field);
        Config bad{};
        p.bad(bad);
        rejects([&] { make(bad); }, p.field);
        Config ok{};
        p.boundary(ok);
        CHECK_NOTHROW(make(ok));
    }
}

} // namespace

TEST_CASE("config validation: every constrained field of every part", "[config]") {
    using memgov::duration;

    SECTION("pressure_monitor_config") {
        monitor_rig rig;
        using C = memgov::pressure_monitor_config;
        const auto make = [&](C c) {
            c.cgroup = rig.tree.config();
            c.use_systemd_pressure_env = false;
            rig.make(c);
        };
        using P = field_probe<C>;
        probe_all<C>(
            make,
            {
                P{"sample_period", [](C& c) { c.sample_period = duration::zero(); },
                  [](C& c) { c.sample_period = 1ns; }},
                P{"estimate_period", [](C& c) { c.estimate_period = -1ns; }, [](C& c) { c.estimate_period = year; }},
                P{"calibration_window", [](C& c) { c.calibration_window = year + 1ns; },
                  [](C& c) { c.calibration_window = 0s; }},
                P{"growth_half_life", [](C& c) { c.growth_half_life = 0s; }, [](C& c) { c.growth_half_life = year; }},
                P{"forecast_horizon", [](C& c) { c.forecast_horizon = -1s; }, [](C& c) { c.forecast_horizon = year; }},
                P{"forecast_exit_margin", [](C& c) { c.forecast_exit_margin = not_a_number; },
                  [](C& c) { c.forecast_exit_margin = 100.0; }},
                P{"forecast_ceiling", [](C& c) { c.forecast_ceiling = pressure_level::emergency; },
                  [](C& c) { c.forecast_ceiling = pressure_level::critical; }},
                P{"psi_hold", [](C& c) { c.psi_hold = -1ns; }, [](C& c) { c.psi_hold = 0s; }},
                P{"psi_level", [](C& c) { c.psi_level = static_cast<pressure_level>(5); },
                  [](C& c) { c.psi_level = pressure_level::normal; }},
                P{"psi_trigger", [](C& c) { c.psi_trigger = "some 3000000 2000000"; },
                  [](C& c) { c.psi_trigger = "full 2000000 2000000"; }},
                P{"red_line.small_limit_ratio", [](C& c) { c.red_line.small_limit_ratio = 1.01; },
                  [](C& c) { c.red_line.small_limit_ratio = 1.0; }},
                P{"red_line.large_limit_ratio", [](C& c) { c.red_line.large_limit_ratio = 0.0; },
                  [](C& c) { c.red_line.large_limit_ratio = 1.0; }},
                P{"red_line.small_limit_bytes", [](C& c) { c.red_line.small_limit_bytes = 0; },
                  [](C& c) { c.red_line.small_limit_bytes = 1; }},
                P{"thresholds[0].enter", [](C& c) { c.thresholds[0].enter = -0.85; },
                  [](C& c) {
                      c.thresholds[0].enter = -0.835;
                      c.thresholds[0].exit = -0.84;
                  }},
                P{"thresholds[1]", [](C& c) { c.thresholds[1].enter = not_a_number; },
                  [](C& c) { c.thresholds[1].enter = -0.06; }},
                P{"thresholds[2].exit", [](C& c) { c.thresholds[2].exit = 0.0; },
                  [](C& c) { c.thresholds[2].exit = -0.0001; }},
                P{"thresholds[3].dwell", [](C& c) { c.thresholds[3].dwell = year + 1ns; },
                  [](C& c) { c.thresholds[3].dwell = year; }},
            });
        using G = memgov::cgroup_config;
        rejects(
            [&] {
                C c;
                c.cgroup.root = "relative/root";
                rig.make(c);
            },
            "root");
        rejects(
            [&] {
                C c;
                c.cgroup = rig.tree.config();
                c.cgroup.explicit_limit = 0;
                rig.make(c);
            },
            "explicit_limit");
        C ok;
        ok.cgroup = rig.tree.config();
        ok.use_systemd_pressure_env = false;
        ok.cgroup.explicit_limit = 1;
        CHECK_NOTHROW(rig.make(ok));
        (void)sizeof(G);
    }

    SECTION("governor_config and admission_config") {
        monitor_rig rig;
        using C = memgov::governor_config;
        const auto make = [&](C c) {
            c.monitor.cgroup = rig.tree.config();
            c.monitor.use_systemd_pressure_env = false;
            rig.make(c);
        };
        using P = field_probe<C>;
        probe_all<C>(
            make,
            {
                P{"poll_period", [](C& c) { c.poll_period = 0s; }, [](C& c) { c.poll_period = 1ns; }},
                P{"step_period", [](C& c) { c.step_period = -1ns; }, [](C& c) { c.step_period = 0s; }},
                P{"ceiling_ratio", [](C& c) { c.admission.ceiling_ratio = 1.0001; },
                  [](C& c) { c.admission.ceiling_ratio = 1.0; }},
                P{"close_sessions_at", [](C& c) { c.admission.close_sessions_at = static_cast<pressure_level>(5); },
                  [](C& c) { c.admission.close_sessions_at = pressure_level::emergency; }},
                P{"refuse_all_at", [](C& c) { c.admission.refuse_all_at = pressure_level::high; },
                  [](C& c) { c.admission.refuse_all_at = pressure_level::critical; }},
                P{"session_quota_bytes", [](C& c) { c.admission.session_quota_bytes = 0; },
                  [](C& c) { c.admission.session_quota_bytes = 1; }},
                P{"session_quota_bytes", [](C& c) { c.admission.session_quota_bytes = (std::size_t{1} << 60) + 1; },
                  [](C& c) { c.admission.session_quota_bytes = std::size_t{1} << 60; }},
                P{"session_quota_limit_share", [](C& c) { c.admission.session_quota_limit_share = 0.0; },
                  [](C& c) { c.admission.session_quota_limit_share = 1.0; }},
                P{"session_quota_limit_share", [](C& c) { c.admission.session_quota_limit_share = 1.0001; },
                  [](C& c) { c.admission.session_quota_limit_share = 1e-9; }},
                P{"quota_factor",
                  [](C& c) {
                      c.admission.quota_factor = {1.0, 1.0, 0.75, 0.5, 0.0};
                  },
                  [](C& c) {
                      c.admission.quota_factor = {1.0, 1.0, 1.0, 1.0, 1.0};
                  }},
                P{"quota_factor",
                  [](C& c) {
                      c.admission.quota_factor = {1.0, 0.5, 0.75, 0.5, 0.25};
                  },
                  [](C& c) {
                      c.admission.quota_factor = {1.0, 0.5, 0.5, 0.5, 1e-9};
                  }},
                P{"heavy_share", [](C& c) { c.admission.heavy_share = 0.0; },
                  [](C& c) { c.admission.heavy_share = 1.0; }},
                P{"heavy_refusal",
                  [](C& c) {
                      c.admission.heavy_refusal = {0.0, 0.0, 0.25, 1.0, 1.0001};
                  },
                  [](C& c) {
                      c.admission.heavy_refusal = {1.0, 1.0, 1.0, 1.0, 1.0};
                  }},
                P{"heavy_refusal",
                  [](C& c) {
                      c.admission.heavy_refusal = {0.0, 0.0, 0.25, 1.0, 0.75};
                  },
                  [](C& c) {
                      c.admission.heavy_refusal = {0.0, 0.0, 0.5, 0.5, 0.5};
                  }},
                P{"pace_refusal",
                  [](C& c) {
                      c.admission.pace_refusal = {-0.1, 0.0, 0.0, 0.0, 0.5};
                  },
                  [](C& c) {
                      c.admission.pace_refusal = {0.0, 0.0, 0.0, 0.0, 1.0};
                  }},
                P{"pace_refusal",
                  [](C& c) {
                      c.admission.pace_refusal = {0.0, 0.0, 0.5, 0.5, 0.5};
                  },
                  [](C& c) {
                      c.admission.pace_refusal = {0.0, 0.0, 0.25, 1.0, 1.0};
                  }},
                P{"fair_share",
                  [](C& c) {
                      c.admission.fair_share = {0.0, 0.0, 1.0001, 0.75, 0.5};
                  },
                  [](C& c) {
                      c.admission.fair_share = {1.0, 1.0, 1.0, 1.0, 1.0};
                  }},
                P{"fair_share",
                  [](C& c) {
                      c.admission.fair_share = {0.0, 0.5, 1.0, 0.75, 0.5};
                  },
                  [](C& c) {
                      c.admission.fair_share = {0.0, 0.0, 0.0, 0.0, 0.0};
                  }},
            });
    }

    SECTION("evictor_config and heap_trim_config") {
        using C = memgov::evictor_config;
        const auto make = [](const C& c) { memgov::evictor e{c, [] {}, [] { return std::size_t{0}; }}; };
        using P = field_probe<C>;
        probe_all<C>(
            make,
            {
                P{"session_cost_cap", [](C& c) { c.session_cost_cap = 0; }, [](C& c) { c.session_cost_cap = 1; }},
                P{"largest_min_share", [](C& c) { c.largest_min_share = 1.5; },
                  [](C& c) { c.largest_min_share = 1.0; }},
                P{"emergency_margin", [](C& c) { c.emergency_margin = 1.0; }, [](C& c) { c.emergency_margin = 0.0; }},
                P{"age_ladder",
                  [](C& c) {
                      c.age_ladder = {{0.9, 10s}, {0.9, 5s}};
                  },
                  [](C& c) {
                      c.age_ladder = {{1.5, 1ns}};
                  }},
                P{"ladder",
                  [](C& c) {
                      c.ladder[2] = {{memgov::reclaim_action::trim_pools, 0, false}};
                  },
                  [](C& c) {
                      c.ladder[2] = {{memgov::reclaim_action::trim_heap, 0, false}};
                  }},
                P{"ladder",
                  [](C& c) {
                      c.ladder[1] = {{static_cast<memgov::reclaim_action>(memgov::reclaim_action_count), 1, false}};
                  },
                  [](C& c) {
                      c.ladder[1] = {{memgov::reclaim_action::evict_lru, 1, false}};
                  }},
                P{"ladder",
                  [](C& c) {
                      c.ladder[0] = {{memgov::reclaim_action::trim_pools, 1, false}};
                  },
                  [](C& c) {
                      c.ladder[0] = {{memgov::reclaim_action::sweep_expired, 1, true}};
                  }},
                P{"min_interval", [](C& c) { c.heap.min_interval = 0s; }, [](C& c) { c.heap.min_interval = 1ns; }},
                P{"max_interval", [](C& c) { c.heap.max_interval = year + 1ns; },
                  [](C& c) { c.heap.max_interval = year; }},
                P{"backoff_factor", [](C& c) { c.heap.backoff_factor = 0.999; },
                  [](C& c) { c.heap.backoff_factor = 1.0; }},
                P{"custom_actions", [](C& c) { c.custom_actions = {std::string(65, 'a')}; },
                  [](C& c) { c.custom_actions = {std::string(64, 'a')}; }},
                P{"custom_actions", [](C& c) { c.custom_actions = {"evict_lru"}; },
                  [](C& c) {
                      c.custom_actions = {"shed_queued_work", "a"};
                  }},
                P{"custom_actions",
                  [](C& c) {
                      c.custom_actions = {"shed", "shed"};
                  },
                  [](C& c) {
                      c.custom_actions = {"shed_0", "shed_1"};
                  }},
            });
    }

    SECTION("buffer_pool_config") {
        using C = memgov::buffer_pool_config;
        const auto make = [](const C& c) { memgov::buffer_pool p{c}; };
        using P = field_probe<C>;
        probe_all<C>(make,
                     {
                         P{"size_classes", [](C& c) { c.size_classes.clear(); }, [](C& c) { c.size_classes = {4}; }},
                         P{"size_classes",
                           [](C& c) {
                               c.size_classes = {4096, 4096};
                           },
                           [](C& c) {
                               c.size_classes = {4096, 4097};
                           }},
                         P{"size_classes", [](C& c) { c.size_classes = std::vector<std::size_t>(33, 0); },
                           [](C& c) {
                               c.size_classes.clear();
                               for (std::size_t i = 0; i < 32; ++i) c.size_classes.push_back(4096 * (i + 1));
                           }},
                         P{"thread_cache_buffers", [](C& c) { c.thread_cache_buffers = 1025; },
                           [](C& c) { c.thread_cache_buffers = 1024; }},
                         P{"depot_bytes", [](C& c) { c.depot_bytes = 0; }, [](C& c) { c.depot_bytes = 1; }},
                         P{"depot_bytes", [](C& c) { c.depot_bytes = 4096 * (C::max_depot_buffers + 1); },
                           [](C& c) { c.depot_bytes = 4096 * C::max_depot_buffers; }},
                         P{"pressure_factors",
                           [](C& c) {
                               c.pressure_factors = {1.0, 0.5, 0.75, 0.0, 0.0};
                           },
                           [](C& c) {
                               c.pressure_factors = {1.0, 1.0, 1.0, 1.0, 1.0};
                           }},
                         P{"pressure_factors", [](C& c) { c.pressure_factors[1] = not_a_number; },
                           [](C& c) {
                               c.pressure_factors = {0.0, 0.0, 0.0, 0.0, 0.0};
                           }},
                         P{"alignment", [](C& c) { c.alignment = 48; }, [](C& c) { c.alignment = 1; }},
                     });
    }

    SECTION("sliding_window_config and window_quota_config") {
        memgov::buffer_pool pool;
        using C = memgov::sliding_window_config;
        const auto make = [&](const C& c) { memgov::sliding_window w{pool, c}; };
        using P = field_probe<C>;
        probe_all<C>(
            make,
            {
                P{"chunk_size", [](C& c) { c.chunk_size = 0; }, [](C& c) { c.chunk_size = 1; }},
                P{"chunk_size", [](C& c) { c.chunk_size = 1048577; }, [](C& c) { c.chunk_size = 1048576; }},
                P{"cap_bytes", [](C& c) { c.cap_bytes = 0; },
                  [](C& c) { c.cap_bytes = std::numeric_limits<std::size_t>::max(); }},
                P{"drop_fraction", [](C& c) { c.drop_fraction = 0.0; }, [](C& c) { c.drop_fraction = 1.0; }},
                P{"drop_fraction", [](C& c) { c.drop_fraction = not_a_number; }, [](C& c) { c.drop_fraction = 1e-9; }},
            });
        using Q = memgov::window_quota_config;
        const auto make_q = [](const Q& c) { memgov::window_quota q{c}; };
        using PQ = field_probe<Q>;
        probe_all<Q>(make_q, {
                                 PQ{"total_bytes", [](Q& c) { c.total_bytes = 0; },
                                    [](Q& c) { c.total_bytes = c.max_grant_bytes; }},
                                 PQ{"max_grant_bytes", [](Q& c) { c.max_grant_bytes = c.total_bytes + 1; },
                                    [](Q& c) { c.max_grant_bytes = 1; }},
                             });
    }

    SECTION("object_pool_config") {
        struct obj {
            void reset() noexcept {}
        };
        using C = memgov::object_pool_config;
        const auto make = [](const C& c) { memgov::object_pool<obj> p{c}; };
        using P = field_probe<C>;
        probe_all<C>(
            make,
            {
                P{"block_objects", [](C& c) { c.block_objects = 3; },
                  [](C& c) { c.block_objects = std::size_t{1} << 20; }},
                P{"max_objects", [](C& c) { c.max_objects = 0; }, [](C& c) { c.max_objects = 1; }},
                P{"thread_cache_objects", [](C& c) { c.thread_cache_objects = 65537; },
                  [](C& c) { c.thread_cache_objects = 65536; }},
                P{"young_lifetime", [](C& c) { c.young_lifetime = 0s; }, [](C& c) { c.young_lifetime = 1ns; }},
                P{"mid_lifetime", [](C& c) { c.mid_lifetime = c.young_lifetime - 1ns; },
                  [](C& c) { c.mid_lifetime = c.young_lifetime; }},
                P{"old_lifetime", [](C& c) { c.old_lifetime = year + 1ns; }, [](C& c) { c.old_lifetime = year; }},
                P{"reuses_to_promote", [](C& c) { c.reuses_to_promote = 0; }, [](C& c) { c.reuses_to_promote = 1; }},
                P{"lifetime_divisor",
                  [](C& c) {
                      c.lifetime_divisor = {1, 2, 1, 32, 32};
                  },
                  [](C& c) {
                      c.lifetime_divisor = {1, 1, 1, 1, 1};
                  }},
                P{"generation_limit", [](C& c) { c.generation_limit = 0xFFFF'FFFFu; },
                  [](C& c) { c.generation_limit = 1; }},
                P{"on_stale_handle", [](C& c) { c.on_stale_handle = static_cast<memgov::stale_handle_policy>(9); },
                  [](C& c) { c.on_stale_handle = memgov::stale_handle_policy::abort; }},
                P{"ledger_category", [](C& c) { c.ledger_category = static_cast<memgov::category>(16); },
                  [](C& c) { c.ledger_category = static_cast<memgov::category>(15); }},
            });
    }

    SECTION("session_map_config") {
        using C = memgov::session_map_config;
        const auto make = [](const C& c) { memgov::session_map<int, int> m{c}; };
        using P = field_probe<C>;
        probe_all<C>(
            make,
            {
                P{"shards", [](C& c) { c.shards = 3; }, [](C& c) { c.shards = 65536; }},
                P{"idle_ttl", [](C& c) { c.idle_ttl = -1ns; }, [](C& c) { c.idle_ttl = C::never; }},
                P{"absolute_ttl", [](C& c) { c.absolute_ttl = -1ns; }, [](C& c) { c.absolute_ttl = 0s; }},
                P{"ended_grace", [](C& c) { c.ended_grace = -1ns; }, [](C& c) { c.ended_grace = 0s; }},
                P{"suspicious_age", [](C& c) { c.suspicious_age = -1ns; }, [](C& c) { c.suspicious_age = C::never; }},
                P{"suspicious_idle", [](C& c) { c.suspicious_idle = -1ns; }, [](C& c) { c.suspicious_idle = 0s; }},
                P{"check_interval", [](C& c) { c.check_interval = C::never; }, [](C& c) { c.check_interval = year; }},
                P{"sweep_resolution", [](C& c) { c.sweep_resolution = 1h + 1ns; },
                  [](C& c) { c.sweep_resolution = 1ns; }},
                P{"lru_samples", [](C& c) { c.lru_samples = 1025; }, [](C& c) { c.lru_samples = 1; }},
                P{"touch", [](C& c) { c.touch = static_cast<memgov::touch_time>(2); },
                  [](C& c) { c.touch = memgov::touch_time::coarse; }},
                P{"ledger_category", [](C& c) { c.ledger_category = static_cast<memgov::category>(16); },
                  [](C& c) { c.ledger_category = static_cast<memgov::category>(15); }},
                P{"storage_category", [](C& c) { c.storage_category = static_cast<memgov::category>(200); },
                  [](C& c) { c.storage_category = memgov::category::pool_idle; }},
            });
    }
}
