// SPDX-License-Identifier: MIT
// Tests of the pressure monitor on fake cgroup trees with a manual clock: sampling and
// in-place rewrites, thresholds that scale with the limit, levels with hysteresis and dwell,
// the ledger estimate between samples, the forecast, PSI triggers and their polling fallback,
// subscribers, snapshots and configuration errors. Nothing sleeps to make time pass.

#include <memgov/pressure_monitor.hpp>

#include "fake_cgroup.hpp"
#include "real_cgroup.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

using namespace std::chrono_literals;
using memgov::level_change;
using memgov::manual_clock;
using memgov::pressure_cause;
using memgov::pressure_level;
using memgov::pressure_monitor;
using memgov::pressure_monitor_config;
using memgov_test::fake_cgroup_tree;

namespace {

constexpr std::uint64_t MiB = 1024 * 1024;
constexpr std::uint64_t GiB = 1024 * MiB;

// A v2 tree with a 1 GiB limit on /app: red line 85%; enter 70/78/85/89%, exit 65/74/81/85%.
struct rig {
    fake_cgroup_tree tree = fake_cgroup_tree::v2("/app");
    manual_clock clock;
    memgov::ledger ledger;

    rig() {
        tree.set_limit("/app", GiB);
        tree.set_usage("/app", 100 * MiB);
    }
    pressure_monitor_config config(bool forecast = false) const {
        pressure_monitor_config c;
        c.cgroup = tree.config();
        c.use_systemd_pressure_env = false;
        if (!forecast) c.forecast_horizon = 0s;
        return c;
    }
    void usage(std::uint64_t bytes) { tree.set_usage("/app", bytes); }
    // Usage at `percent` of 1 GiB.
    void percent(double p) { usage(static_cast<std::uint64_t>(p / 100.0 * static_cast<double>(GiB))); }
};

struct recorder {
    std::vector<level_change> changes;
    memgov::pressure_subscription sub;
    template <class Monitor>
    explicit recorder(Monitor& m) : sub{m.subscribe([this](const level_change& c) { changes.push_back(c); })} {}
};

} // namespace

TEST_CASE("pressure_monitor: the red line and thresholds scale with the limit", "[pressure_monitor]") {
    const pressure_monitor_config c;
    CHECK(c.red_line.ratio_for(4 * GiB) == 0.85);
    CHECK(c.red_line.ratio_for(4 * GiB + 1) == 0.92);
    CHECK(c.sample_period == 100ms);
    CHECK(c.forecast_horizon == 10s);
    const auto small = c.thresholds_for(GiB);
    CHECK(small[0].enter == Approx(0.70));
    CHECK(small[0].exit == Approx(0.65));
    CHECK(small[1].enter == Approx(0.78));
    CHECK(small[1].exit == Approx(0.74));
    CHECK(small[2].enter == Approx(0.85)); // critical enter = the red line
    CHECK(small[2].exit == Approx(0.81));
    CHECK(small[3].enter == Approx(0.89)); // emergency above it
    CHECK(small[3].exit == Approx(0.85));
    const auto large = c.thresholds_for(8 * GiB);
    CHECK(large[0].enter == Approx(0.77));
    CHECK(large[2].enter == Approx(0.92));
    CHECK(large[3].enter == Approx(0.96));
    pressure_monitor_config abs;
    abs.thresholds_relative = false;
    abs.thresholds = {{{0.5, 0.4, 0s}, {0.6, 0.5, 0s}, {0.7, 0.6, 0s}, {0.8, 0.7, 0s}}};
    CHECK(abs.thresholds_for(GiB)[2].enter == 0.7);
    CHECK(abs.thresholds_for(64 * GiB)[2].enter == 0.7);
}

TEST_CASE("pressure_monitor: configuration errors name the field", "[pressure_monitor]") {
    rig r;
    auto bad = [&](auto&& edit) {
        pressure_monitor_config c = r.config();
        edit(c);
        return c;
    };
    using M = pressure_monitor<manual_clock>;
    CHECK_THROWS_WITH(M(bad([](auto& c) { c.sample_period = 0s; }), nullptr, r.clock),
                      "memgov::pressure_monitor_config::sample_period: must be in (0, longest_period]");
    CHECK_THROWS_WITH(M(bad([](auto& c) { c.growth_half_life = 0s; }), nullptr, r.clock),
                      "memgov::pressure_monitor_config::growth_half_life: must be in (0, longest_period]");
    CHECK_THROWS_WITH(M(bad([](auto& c) { c.red_line.small_limit_ratio = 1.5; }), nullptr, r.clock),
                      "memgov::pressure_monitor_config::red_line.small_limit_ratio: must be in (0, 1]");
    CHECK_THROWS_WITH(M(bad([](auto& c) { c.thresholds[1].exit = c.thresholds[1].enter; }), nullptr, r.clock),
                      "memgov::pressure_monitor_config::thresholds[1].exit: must be below enter");
    CHECK_THROWS_WITH(M(bad([](auto& c) {
                            c.thresholds[2].enter = -0.5;
                            c.thresholds[2].exit = -0.6;
                        }),
                        nullptr, r.clock),
                      "memgov::pressure_monitor_config::thresholds[2].enter: must be above the previous level's enter");
    CHECK_THROWS_WITH(M(bad([](auto& c) { c.thresholds[0].dwell = -1s; }), nullptr, r.clock),
                      "memgov::pressure_monitor_config::thresholds[0].dwell: must be in [0, longest_period]");
    CHECK_THROWS_WITH(M(bad([](auto& c) { c.psi_trigger = "sometimes"; }), nullptr, r.clock),
                      Catch::StartsWith("memgov::pressure_monitor_config::psi_trigger:"));
    CHECK_THROWS_WITH(M(bad([](auto& c) { c.cgroup.root = "x"; }), nullptr, r.clock),
                      "memgov::cgroup_config::root: must be an absolute path");
    CHECK_THROWS_AS(M(bad([](auto& c) { c.estimate_period = -1ms; }), nullptr, r.clock), std::invalid_argument);
    CHECK_THROWS_WITH(M(bad([](auto& c) { c.calibration_window = -1ms; }), nullptr, r.clock),
                      "memgov::pressure_monitor_config::calibration_window: must be in [0, longest_period]");
}

TEST_CASE("pressure_monitor: poll samples on the period and sees files rewritten in place", "[pressure_monitor]") {
    rig r;
    pressure_monitor<manual_clock> m{r.config(), nullptr, r.clock};
    CHECK(m.snapshot().sample_count == 1); // the constructor samples
    CHECK(m.snapshot().working_set_bytes == 100 * MiB);
    r.usage(200 * MiB);
    r.clock.advance(50ms);
    m.poll(r.clock.now());
    CHECK(m.snapshot().working_set_bytes == 100 * MiB); // not due yet
    CHECK(m.snapshot().sample_count == 1);
    r.clock.advance(50ms);
    m.poll(r.clock.now());
    CHECK(m.snapshot().working_set_bytes == 200 * MiB);
    CHECK(m.snapshot().sample_count == 2);
    r.usage(300 * MiB);
    m.sample(r.clock.now()); // forced, whatever the period
    CHECK(m.snapshot().working_set_bytes == 300 * MiB);
    r.tree.set_limit("/app", 2 * GiB); // limits change at run time
    m.sample(r.clock.now());
    CHECK(m.snapshot().limit_bytes == 2 * GiB);
}

TEST_CASE("pressure_monitor: levels rise at once and fall below exit only after the dwell", "[pressure_monitor]") {
    rig r;
    pressure_monitor<manual_clock> m{r.config(), nullptr, r.clock};
    recorder rec{m};
    CHECK(m.level() == pressure_level::normal);
    r.percent(80); // above high's 78%
    m.sample(r.clock.now());
    CHECK(m.level() == pressure_level::high);
    REQUIRE(rec.changes.size() == 1);
    CHECK(rec.changes[0].from == pressure_level::normal);
    CHECK(rec.changes[0].to == pressure_level::high);
    CHECK(rec.changes[0].cause == pressure_cause::ratio);
    CHECK(rec.changes[0].limit_bytes == GiB);

    r.percent(68); // below high's exit (74%), above elevated's exit (65%)
    r.clock.advance(1s);
    m.sample(r.clock.now());
    CHECK(m.level() == pressure_level::high); // the 2 s dwell has not passed
    r.clock.advance(1s);
    m.sample(r.clock.now());
    CHECK(m.level() == pressure_level::elevated);
    CHECK(rec.changes.back().cause == pressure_cause::recovery);
    r.percent(50);
    r.clock.advance(1s);
    m.sample(r.clock.now());
    CHECK(m.level() == pressure_level::elevated); // elevated's own dwell restarted
    r.clock.advance(1s);
    m.sample(r.clock.now());
    CHECK(m.level() == pressure_level::normal);
    CHECK(rec.changes.size() == 3);

    r.percent(95);
    r.clock.advance(100ms);
    m.sample(r.clock.now());
    CHECK(m.level() == pressure_level::emergency); // straight up, no dwell on the way up
}

TEST_CASE("pressure_monitor: a ratio oscillating around an enter threshold does not flap", "[pressure_monitor]") {
    rig r;
    pressure_monitor<manual_clock> m{r.config(), nullptr, r.clock};
    recorder rec{m};
    for (int i = 0; i < 100; ++i) {
        r.percent(i % 2 == 0 ? 86 : 83.5); // around critical's 85%, above its 81% exit
        r.clock.advance(100ms);
        m.poll(r.clock.now());
    }
    CHECK(m.level() == pressure_level::critical);
    CHECK(rec.changes.size() == 1);
}

// The forecast's time to the limit alternates between 27 s and 33 s, around half of a 60 s
// horizon (two steps up below it, one above): a forecast-raised level has an exit band, so the
// level rises once and stays.
TEST_CASE("pressure_monitor: a time to limit hovering around the forecast trigger does not flap",
          "[pressure_monitor]") {
    rig r;
    pressure_monitor_config c = r.config(true);
    c.forecast_horizon = 60s;
    c.growth_half_life = 1ms; // the growth rate follows each sample
    pressure_monitor<manual_clock> m{c, nullptr, r.clock};
    recorder rec{m};
    const auto limit = static_cast<double>(GiB);
    double u = 100.0 * static_cast<double>(MiB);
    for (int i = 0; i < 200; ++i) { // 20 s, the time to limit switching every 0.5 s
        const double ttl = (i / 5) % 2 == 0 ? 27.0 : 33.0;
        u += (limit - u) / (ttl + 0.1) * 0.1; // growth that gives `ttl` at the next sample
        r.usage(static_cast<std::uint64_t>(u));
        r.clock.advance(100ms);
        m.poll(r.clock.now());
        const auto s = m.snapshot();
        REQUIRE(s.time_to_limit);
        const double got = std::chrono::duration<double>(*s.time_to_limit).count();
        REQUIRE(got == Approx(ttl).epsilon(0.02));
    }
    CHECK(m.snapshot().ratio < 0.65); // the ratio alone says normal
    CHECK(m.level() == pressure_level::high);
    INFO("changes: " << rec.changes.size());
    CHECK(rec.changes.size() == 1);
    REQUIRE_FALSE(rec.changes.empty());
    CHECK(rec.changes[0].cause == pressure_cause::forecast);

    // Growth stops: the forecast goes away and the level falls after the dwell.
    for (int i = 0; i < 30; ++i) {
        r.clock.advance(100ms);
        m.poll(r.clock.now());
    }
    CHECK(m.level() == pressure_level::normal);
}

// PSI fires once every 2.5 s, just over the 2 s hold: a PSI-raised level is left only after
// the hold has passed with no new event and the level's dwell after that, so it stays.
TEST_CASE("pressure_monitor: PSI events spaced just over the hold do not flap the level", "[pressure_monitor]") {
    rig r;
    const std::string watch = r.tree.path("/proc/pressure/memory").string();
    ::setenv("MEMORY_PRESSURE_WATCH", watch.c_str(), 1);
    ::setenv("MEMORY_PRESSURE_WRITE", "***", 1); // not base64: the file is polled
    pressure_monitor_config c = r.config();
    c.use_systemd_pressure_env = true;
    c.psi_hold = 2s;
    pressure_monitor<manual_clock> m{c, nullptr, r.clock};
    ::unsetenv("MEMORY_PRESSURE_WATCH");
    ::unsetenv("MEMORY_PRESSURE_WRITE");
    REQUIRE(m.snapshot().psi_watch == memgov::psi_watch_state::polling);
    recorder rec{m};
    for (int i = 0; i < 300; ++i) { // 30 s
        r.tree.set_psi(i % 25 == 0 ? 15.0 : 0.0, 0.0);
        r.clock.advance(100ms);
        m.poll(r.clock.now());
    }
    CHECK(m.level() == pressure_level::elevated);
    INFO("changes: " << rec.changes.size());
    CHECK(rec.changes.size() == 1);
    // Quiet since the last event (at 27.6 s; now 30 s): left once the hold and elevated's 2 s
    // dwell after it have passed (31.6 s), not before.
    r.tree.set_psi(0.0, 0.0);
    for (int i = 0; i < 15; ++i) {
        r.clock.advance(100ms);
        m.poll(r.clock.now());
    }
    CHECK(m.level() == pressure_level::elevated);
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.level() == pressure_level::normal);
}

TEST_CASE("pressure_monitor: forecast_exit_margin is validated", "[pressure_monitor]") {
    rig r;
    using M = pressure_monitor<manual_clock>;
    pressure_monitor_config c = r.config(true);
    CHECK(c.forecast_exit_margin == 0.5);
    c.forecast_exit_margin = -0.1;
    CHECK_THROWS_WITH(M(c, nullptr, r.clock),
                      "memgov::pressure_monitor_config::forecast_exit_margin: must be in [0, 100]");
    c.forecast_exit_margin = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(M(c, nullptr, r.clock), std::invalid_argument);
}

TEST_CASE("pressure_monitor: a zero limit is an emergency", "[pressure_monitor]") {
    rig r;
    r.tree.set_limit("/app", 0);
    pressure_monitor<manual_clock> m{r.config(), nullptr, r.clock};
    CHECK(m.level() == pressure_level::emergency);
    CHECK(m.snapshot().ratio == std::numeric_limits<double>::infinity());
}

TEST_CASE("pressure_monitor: the ledger moves the estimate between samples", "[pressure_monitor]") {
    rig r;
    pressure_monitor<manual_clock> m{r.config(), &r.ledger, r.clock};
    recorder rec{m};
    CHECK(m.estimate_bytes() == 100 * MiB);
    r.ledger.charge(memgov::category::pool_in_use, 700 * MiB); // 800 MiB = 78.1%: high
    CHECK(m.estimate_bytes() == 800 * MiB);
    CHECK(m.level() == pressure_level::normal);                      // level() is only a load
    CHECK(m.update_estimate(r.clock.now()) == pressure_level::high); // seen at once, no sample
    CHECK(m.snapshot().sample_count == 1);
    CHECK(m.snapshot().ledger_delta_bytes == static_cast<std::int64_t>(700 * MiB));
    REQUIRE(rec.changes.size() == 1);
    CHECK(rec.changes[0].estimate_bytes == 800 * MiB);

    // The next sample recalibrates: the cgroup now shows the memory; the delta restarts.
    r.usage(810 * MiB);
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 810 * MiB);
    CHECK(m.snapshot().ledger_delta_bytes == 0);
    // A release lowers the estimate at once too (falls wait for poll and the dwell).
    r.ledger.release(memgov::category::pool_in_use, 300 * MiB);
    CHECK(m.estimate_bytes() == 510 * MiB);
    r.clock.advance(2s);
    m.poll(r.clock.now()); // due: a sample, with the usage file still at 810 MiB
    CHECK(m.level() == pressure_level::high);
}

TEST_CASE("pressure_monitor: a sample that catches an allocation half touched keeps the estimate",
          "[pressure_monitor]") {
    rig r;
    pressure_monitor<manual_clock> m{r.config(), &r.ledger, r.clock};
    r.ledger.charge(memgov::category::pool_in_use, 200 * MiB); // charged, then touched
    CHECK(m.estimate_bytes() == 300 * MiB);
    r.usage(200 * MiB); // the sample sees only half of it resident so far
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 300 * MiB); // not 200: the previous calibration still holds
    r.usage(300 * MiB);                     // fully touched
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 300 * MiB);
    r.ledger.release(memgov::category::pool_in_use, 200 * MiB);
    r.usage(100 * MiB);
    CHECK(m.estimate_bytes() == 100 * MiB);
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 100 * MiB);
}

TEST_CASE("pressure_monitor: after a reclaim of tracked bytes the next sample's estimate is the working set",
          "[pressure_monitor]") {
    rig r;
    r.usage(600 * MiB);
    r.ledger.charge(memgov::category::pool_in_use, 400 * MiB); // all of it resident already
    pressure_monitor<manual_clock> m{r.config(), &r.ledger, r.clock};
    CHECK(m.estimate_bytes() == 600 * MiB);
    r.clock.advance(100ms);
    m.poll(r.clock.now()); // a second calibration at the high mark
    // A reclaim gives 300 MiB of pooled buffers back; with them go 100 MiB the ledger never
    // counted (their owners' untracked state, heap the allocator returned on the way).
    r.ledger.release(memgov::category::pool_in_use, 300 * MiB);
    CHECK(m.estimate_bytes() == 300 * MiB); // the ledger's fall is seen at once
    r.usage(200 * MiB);
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 200 * MiB); // the kernel's figure, within one sample
    // And the ledger's moves since that sample, both ways.
    r.ledger.charge(memgov::category::pool_in_use, 5 * MiB);
    CHECK(m.estimate_bytes() == 205 * MiB);
    r.ledger.release(memgov::category::pool_in_use, 10 * MiB);
    CHECK(m.estimate_bytes() == 195 * MiB);
}

TEST_CASE("pressure_monitor: untracked memory given back shows at the next sample", "[pressure_monitor]") {
    rig r;
    r.usage(500 * MiB);
    r.ledger.charge(memgov::category::pool_idle, 50 * MiB);
    pressure_monitor<manual_clock> m{r.config(), &r.ledger, r.clock};
    r.usage(100 * MiB); // a heap trim: the kernel's usage falls, the ledger does not move
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 100 * MiB); // not 500 for the calibration window
    r.usage(600 * MiB);                     // untracked growth is seen at once too
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 600 * MiB);
    r.usage(100 * MiB);
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 100 * MiB);

    // The level follows it down after the dwell, not after the calibration window too.
    r.percent(80); // high
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    REQUIRE(m.level() == pressure_level::high);
    r.percent(50);
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == static_cast<std::uint64_t>(0.5 * static_cast<double>(GiB)));
    r.clock.advance(2s); // the high level's dwell, from when it was entered
    m.poll(r.clock.now());
    CHECK(m.level() == pressure_level::normal);

    pressure_monitor_config c = r.config();
    c.calibration_window = 0s; // only the last sample
    pressure_monitor<manual_clock> last{c, &r.ledger, r.clock};
    r.usage(700 * MiB);
    r.clock.advance(100ms);
    last.poll(r.clock.now());
    r.usage(100 * MiB);
    r.clock.advance(100ms);
    last.poll(r.clock.now());
    CHECK(last.estimate_bytes() == 100 * MiB);
}

TEST_CASE("pressure_monitor: a tracked burst after a reclaim raises the estimate and the level at once",
          "[pressure_monitor]") {
    rig r;
    r.usage(600 * MiB);
    pressure_monitor<manual_clock> m{r.config(), &r.ledger, r.clock};
    r.usage(200 * MiB); // reclaimed (untracked)
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    REQUIRE(m.estimate_bytes() == 200 * MiB);
    // 650 MiB charged between samples: 850 MiB = 83%, high, before any sample.
    r.ledger.charge(memgov::category::pool_in_use, 650 * MiB);
    CHECK(m.estimate_bytes() == 850 * MiB);
    CHECK(m.update_estimate(r.clock.now()) == pressure_level::high);
    CHECK(m.snapshot().sample_count == 2);
}

TEST_CASE("pressure_monitor: a sample mid-touch does not pull the estimate under what the ledger implies",
          "[pressure_monitor]") {
    rig r;
    r.usage(300 * MiB);
    pressure_monitor<manual_clock> m{r.config(), &r.ledger, r.clock};
    r.ledger.charge(memgov::category::pool_in_use, 400 * MiB); // charged before it is touched
    CHECK(m.estimate_bytes() == 700 * MiB);
    r.usage(350 * MiB); // the sample sees 50 of the 400 MiB resident so far
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 700 * MiB); // not 350
    // Mid-touch again, while 10 MiB of untracked memory went back (page-cache noise). A fall
    // smaller than what the ledger rose since an earlier sample cannot be told from the
    // untouched part: it is held for the window, the safe side.
    r.usage(540 * MiB); // 250 of 400 touched, 10 MiB untracked freed
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 700 * MiB);
    r.usage(690 * MiB); // fully touched
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 700 * MiB);
    // Past the window the calibration from before the charge carries no weight.
    r.clock.advance(1100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 690 * MiB);
    // Untouched memory charged before that sample is not protected by a window that has
    // moved on: only what the ledger rose since a kept calibration is.
    r.ledger.charge(memgov::category::pool_in_use, 100 * MiB);
    r.clock.advance(100ms);
    m.poll(r.clock.now()); // none of it touched yet
    CHECK(m.estimate_bytes() == 790 * MiB);
    // Half of it touched, and 40 MiB released (touched bytes given back): the ledger is still
    // 60 MiB above that calibration, so up to 60 MiB may still be in flight and are kept.
    r.ledger.release(memgov::category::pool_in_use, 40 * MiB);
    r.usage(700 * MiB); // 690 + 50 touched − 40 given back
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 750 * MiB); // 700 resident + 50 still untouched
    // A release larger than everything charged since: the ledger is below every kept
    // calibration, so none of them is trusted over the kernel's figure (what was released may
    // have been the untouched part); the rest of the charge shows as it is touched.
    r.ledger.release(memgov::category::pool_in_use, 200 * MiB);
    r.usage(500 * MiB);
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.estimate_bytes() == 500 * MiB);
}

TEST_CASE("pressure_monitor: growth toward the limit raises the level early", "[pressure_monitor]") {
    rig r;
    pressure_monitor<manual_clock> m{r.config(true), nullptr, r.clock};
    recorder rec{m};
    std::uint64_t u = 100 * MiB;
    // 40 MiB per 100 ms = 400 MiB/s: from 10% the limit is ~2 s away.
    for (int i = 0; i < 6 && m.level() == pressure_level::normal; ++i) {
        u += 40 * MiB;
        r.usage(u);
        r.clock.advance(100ms);
        m.poll(r.clock.now());
    }
    const auto s = m.snapshot();
    INFO("ratio " << s.ratio << " growth " << s.growth_bytes_per_second);
    CHECK(s.ratio < 0.5);                         // far below any ratio threshold...
    CHECK(m.level() >= pressure_level::elevated); // ...yet raised
    REQUIRE_FALSE(rec.changes.empty());
    CHECK(rec.changes[0].cause == pressure_cause::forecast);
    CHECK(s.growth_bytes_per_second > 0);
    REQUIRE(s.time_to_limit);
    CHECK(*s.time_to_limit < 10s);

    // The forecast alone never goes past its ceiling (high by default): far from the limit a
    // fast rise trims and paces but does not close the door to new sessions.
    for (int i = 0; i < 5; ++i) {
        u += 10 * MiB;
        r.usage(u);
        r.clock.advance(100ms);
        m.poll(r.clock.now());
    }
    CHECK(m.snapshot().ratio < 0.6);
    CHECK(m.level() <= pressure_level::high);
}

TEST_CASE("pressure_monitor: a level held again for a moment starts its dwell over", "[pressure_monitor]") {
    rig r;
    pressure_monitor<manual_clock> m{r.config(), nullptr, r.clock};
    const auto start = r.clock.now();
    const auto at = [&](double percent, std::chrono::milliseconds t) {
        r.percent(percent);
        m.sample(start + t);
        return m.level();
    };
    CHECK(at(80, 0ms) == pressure_level::high);    // entered
    CHECK(at(68, 1500ms) == pressure_level::high); // below high's exit (74%): calm
    CHECK(at(76, 1900ms) == pressure_level::high); // back in high's band: held again
    // 2.5 s after entering, but only 0.6 s after it was last held: high's 2 s dwell has not
    // passed since.
    CHECK(at(68, 2500ms) == pressure_level::high);
    CHECK(at(68, 3800ms) == pressure_level::high);
    CHECK(at(68, 4000ms) == pressure_level::elevated); // 2.1 s since last held
}

TEST_CASE("pressure_monitor: by default the forecast alone stops at high, below critical's ratio",
          "[pressure_monitor]") {
    using level_opt = std::optional<pressure_level>;
    for (const auto ceiling : {level_opt{}, level_opt{pressure_level::critical}}) {
        rig r;
        auto cfg = r.config(true);
        if (ceiling) cfg.forecast_ceiling = *ceiling;
        pressure_monitor<manual_clock> m{cfg, nullptr, r.clock};
        std::uint64_t u = 737 * MiB; // 72%: elevated by the ratio
        r.usage(u);
        m.sample(r.clock.now());
        REQUIRE(m.level() == pressure_level::elevated);
        auto worst = m.level();
        for (int i = 0; i < 3; ++i) { // 400 MiB/s: the limit is about a second away
            u += 40 * MiB;
            r.usage(u);
            r.clock.advance(100ms);
            m.sample(r.clock.now());
            worst = std::max(worst, m.level());
        }
        INFO("ratio " << m.snapshot().ratio);
        REQUIRE(m.snapshot().ratio < 0.85); // below critical's enter
        CHECK(worst == ceiling.value_or(pressure_level::high));
    }
}

TEST_CASE("pressure_monitor: forecast_ceiling bounds what the forecast alone raises", "[pressure_monitor]") {
    for (const auto ceiling :
         {pressure_level::normal, pressure_level::elevated, pressure_level::high, pressure_level::critical}) {
        rig r;
        auto cfg = r.config(true);
        cfg.forecast_ceiling = ceiling;
        pressure_monitor<manual_clock> m{cfg, nullptr, r.clock};
        std::uint64_t u = 100 * MiB;
        auto worst = pressure_level::normal;
        for (int i = 0; i < 10; ++i) { // 400 MiB/s from 10%: the limit is about 2 s away
            u += 40 * MiB;
            r.usage(u);
            r.clock.advance(100ms);
            m.poll(r.clock.now());
            worst = std::max(worst, m.level());
        }
        INFO("ceiling " << memgov::to_string(ceiling) << " ratio " << m.snapshot().ratio);
        REQUIRE(m.snapshot().ratio < 0.6); // below every ratio threshold
        // From normal the forecast raises two steps at most (to high), and never past the
        // ceiling.
        CHECK(worst == std::min(ceiling, pressure_level::high));
    }
}

TEST_CASE("pressure_monitor: slow growth does not raise the level", "[pressure_monitor]") {
    rig r;
    pressure_monitor<manual_clock> m{r.config(true), nullptr, r.clock};
    std::uint64_t u = 100 * MiB;
    for (int i = 0; i < 50; ++i) {
        u += MiB / 10; // 1 MiB/s: the limit is ~15 minutes away
        r.usage(u);
        r.clock.advance(100ms);
        m.poll(r.clock.now());
    }
    CHECK(m.level() == pressure_level::normal);
    const auto s = m.snapshot();
    REQUIRE(s.time_to_limit);
    CHECK(*s.time_to_limit > 60s);
}

TEST_CASE("pressure_monitor: subscribers run outside the locks and stop when reset", "[pressure_monitor]") {
    rig r;
    pressure_monitor<manual_clock> m{r.config(), nullptr, r.clock};
    int calls = 0;
    int nested_calls = 0;
    memgov::pressure_subscription nested;
    auto sub = m.subscribe([&](const level_change& c) {
        ++calls;
        // Re-entering the monitor from a callback must not deadlock.
        CHECK(m.level() == c.to);
        CHECK(m.snapshot().level == c.to);
        m.poll(r.clock.now());
        if (!nested) nested = m.subscribe([&](const level_change&) { ++nested_calls; });
    });
    auto thrower = m.subscribe([](const level_change&) { throw std::runtime_error{"ignored"}; });
    r.percent(80);
    m.sample(r.clock.now());
    CHECK(calls == 1);
    r.percent(95);
    m.sample(r.clock.now());
    CHECK(calls == 2);
    CHECK(nested_calls == 1);
    sub.reset();
    CHECK_FALSE(sub);
    r.percent(10);
    r.clock.advance(10s);
    m.sample(r.clock.now());
    CHECK(calls == 2);
    CHECK(nested_calls == 2);
}

TEST_CASE("pressure_monitor: snapshot reports every figure", "[pressure_monitor]") {
    rig r;
    r.tree.set_inactive_file("/app", 20 * MiB);
    r.tree.set_oom_kills("/app", 4);
    r.tree.set_peak("/app", 900 * MiB);
    r.tree.set_psi(3.5, 1.25, 100, 50);
    r.tree.set_rss(70 * MiB);
    pressure_monitor<manual_clock> m{r.config(), &r.ledger, r.clock};
    r.ledger.charge(memgov::category::pool_in_use, 10 * MiB);
    r.tree.set_oom_kills("/app", 6);
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    // The charge never showed in the cgroup: for the calibration window the estimate keeps the
    // earlier calibration (working set + charge), then the working set alone.
    CHECK(m.estimate_bytes() == 90 * MiB);
    r.clock.advance(1s);
    m.poll(r.clock.now());
    r.clock.advance(30ms);
    const auto s = m.snapshot();
    CHECK(s.limit_bytes == GiB);
    CHECK(s.limit_from == memgov::limit_source::cgroup_v2_max);
    CHECK(s.binding_cgroup == "/app");
    CHECK(s.limit_origin.find("/sys/fs/cgroup/app/memory.max") != std::string::npos);
    CHECK(s.usage_bytes == 100 * MiB);
    CHECK(s.usage_from == memgov::usage_source::cgroup_v2);
    CHECK(s.working_set_bytes == 80 * MiB);
    CHECK(s.rss_bytes == 70 * MiB);
    CHECK(s.estimate_bytes == 80 * MiB); // recalibrated twice: the working set says 80 MiB
    CHECK(s.ratio == Approx(80.0 / 1024.0));
    CHECK(s.red_line == 0.85);
    CHECK(s.thresholds[2].enter == Approx(0.85));
    CHECK(s.level == pressure_level::normal);
    REQUIRE(s.psi);
    CHECK(s.psi->some.avg10 == Approx(3.5));
    CHECK(s.psi->full.total_us == 50U);
    CHECK(s.oom_kills == 6U);
    CHECK(s.oom_kills_since_start == 2U);
    CHECK(s.peak_bytes == 900 * MiB);
    CHECK(s.sample_count == 3);
    CHECK(s.sample_failures == 0);
    CHECK(s.sample_age == 30ms);
    CHECK(s.psi_watch == memgov::psi_watch_state::disabled);
}

TEST_CASE("pressure_monitor: an explicit limit works without any cgroup", "[pressure_monitor]") {
    rig r;
    pressure_monitor_config c = r.config();
    c.cgroup.root = std::string{MEMGOV_TEST_DATA_DIR} + "/cgroup/v2_max"; // no cgroup limit
    c.cgroup.explicit_limit = 8 * MiB;                                    // statm RSS is ~4 MB
    pressure_monitor<manual_clock> m{c, nullptr, r.clock};
    const auto s = m.snapshot();
    CHECK(s.limit_from == memgov::limit_source::configuration);
    CHECK(s.usage_from == memgov::usage_source::proc_statm);
    CHECK(s.ratio == Approx(static_cast<double>(1000 * fake_cgroup_tree::page_size()) / (8.0 * MiB)));
}

TEST_CASE("pressure_monitor: failed samples are counted and keep the level", "[pressure_monitor]") {
    rig r;
    pressure_monitor_config c = r.config();
    c.cgroup.root = std::string{MEMGOV_TEST_DATA_DIR} + "/cgroup/empty";
    pressure_monitor<manual_clock> m{c, nullptr, r.clock};
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    const auto s = m.snapshot();
    CHECK(s.sample_count == 0);
    CHECK(s.sample_failures == 2);
    CHECK(m.level() == pressure_level::normal);
    CHECK_FALSE(s.fallbacks.empty());
}

// `now + psi_hold` near the end of the clock's range used to overflow (undefined; in practice
// the hold wrapped into the past and the event was ignored): it saturates.
TEST_CASE("pressure_monitor: a PSI event near the end of the clock's range still holds the level",
          "[pressure_monitor]") {
    rig r;
    r.clock.set(memgov::time_point::max() - 1s);
    const std::string watch = r.tree.path("/proc/pressure/memory").string();
    ::setenv("MEMORY_PRESSURE_WATCH", watch.c_str(), 1);
    ::setenv("MEMORY_PRESSURE_WRITE", "***", 1); // not base64: the file is polled
    pressure_monitor_config c = r.config();
    c.use_systemd_pressure_env = true;
    c.psi_hold = 2s; // past the clock's end from here
    pressure_monitor<manual_clock> m{c, nullptr, r.clock};
    ::unsetenv("MEMORY_PRESSURE_WATCH");
    ::unsetenv("MEMORY_PRESSURE_WRITE");
    REQUIRE(m.snapshot().psi_watch == memgov::psi_watch_state::polling);
    r.tree.set_psi(15.0, 2.0);
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.snapshot().psi_events == 1);
    CHECK(m.level() == pressure_level::elevated);
    r.tree.set_psi(0.0, 0.0);
    r.clock.advance(500ms); // within the hold
    m.poll(r.clock.now());
    CHECK(m.level() == pressure_level::elevated);
}

TEST_CASE("pressure_monitor: a PSI watch that cannot register falls back to polling the file", "[pressure_monitor]") {
    rig r;
    // systemd's variables, with a WRITE that is not base64: the trigger cannot be registered,
    // so the file is polled against the configured trigger (10%: 200 ms in 2 s).
    const std::string watch = r.tree.path("/proc/pressure/memory").string();
    ::setenv("MEMORY_PRESSURE_WATCH", watch.c_str(), 1);
    ::setenv("MEMORY_PRESSURE_WRITE", "***", 1);
    pressure_monitor_config c = r.config();
    c.use_systemd_pressure_env = true;
    c.psi_hold = 2s;
    pressure_monitor<manual_clock> m{c, nullptr, r.clock};
    ::unsetenv("MEMORY_PRESSURE_WATCH");
    ::unsetenv("MEMORY_PRESSURE_WRITE");
    recorder rec{m};
    auto s = m.snapshot();
    CHECK(s.psi_watch == memgov::psi_watch_state::polling);
    CHECK(s.psi_watch_path == watch);
    CHECK(s.psi_watch_reason.find("not valid base64") != std::string::npos);
    CHECK(m.level() == pressure_level::normal);

    r.tree.set_psi(15.0, 2.0); // some avg10 15% >= 10%
    r.clock.advance(100ms);
    m.poll(r.clock.now());
    CHECK(m.level() == pressure_level::elevated);
    REQUIRE(rec.changes.size() == 1);
    CHECK(rec.changes[0].cause == pressure_cause::psi);
    CHECK(m.snapshot().psi_events == 1);

    r.tree.set_psi(0.0, 0.0);
    r.clock.advance(2s); // past the hold, but not elevated's dwell after it
    m.poll(r.clock.now());
    CHECK(m.level() == pressure_level::elevated);
    r.clock.advance(2s); // past the dwell after the hold as well
    m.poll(r.clock.now());
    CHECK(m.level() == pressure_level::normal);
}

TEST_CASE("pressure_monitor: /dev/null disables the watch; the real PSI file registers or polls",
          "[pressure_monitor]") {
    rig r;
    pressure_monitor_config c = r.config();
    c.psi_watch = "/dev/null";
    {
        pressure_monitor<manual_clock> m{c, nullptr, r.clock};
        CHECK(m.snapshot().psi_watch == memgov::psi_watch_state::disabled);
        CHECK(m.psi_fd() == -1);
    }
    if (::access("/proc/pressure/memory", R_OK) != 0) {
        return memgov_test::skip_test("no /proc/pressure/memory on this machine");
    }
    c.psi_watch = "/proc/pressure/memory";
    c.psi_trigger = "some 150000 1000000"; // a 1 s window: refused without CAP_SYS_RESOURCE
    {
        pressure_monitor<manual_clock> m{c, nullptr, r.clock};
        const auto s = m.snapshot();
        INFO(s.psi_watch_reason);
        if (s.psi_watch == memgov::psi_watch_state::polling) {
            CHECK(s.psi_watch_reason.find("refused") != std::string::npos);
            CHECK(m.psi_fd() == -1);
        } else {
            CHECK(s.psi_watch == memgov::psi_watch_state::registered);
        }
    }
    c.psi_trigger = "some 200000 2000000";
    {
        pressure_monitor<manual_clock> m{c, nullptr, r.clock};
        const auto s = m.snapshot();
        INFO(s.psi_watch_reason);
        CHECK(s.psi_watch != memgov::psi_watch_state::disabled);
        if (s.psi_watch == memgov::psi_watch_state::registered) CHECK(m.psi_fd() >= 0);
    }
}

TEST_CASE("pressure_monitor: start and stop the sampler thread", "[pressure_monitor]") {
    rig r;
    pressure_monitor_config c = r.config();
    c.sample_period = 1ms;
    c.estimate_period = 1ms;
    pressure_monitor<> m{c, &r.ledger};
    m.start();
    m.start(); // no-op
    CHECK(m.running());
    r.percent(80);
    // Wait (bounded) for the thread to sample the new usage.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (m.level() != pressure_level::high && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::yield();
    }
    CHECK(m.level() == pressure_level::high);
    m.stop();
    CHECK_FALSE(m.running());
    m.stop(); // no-op
    CHECK(m.snapshot().sample_count >= 2);
}

TEST_CASE("pressure_monitor: observers, stop and subscriptions are noexcept", "[pressure_monitor]") {
    using M = pressure_monitor<manual_clock>;
    STATIC_REQUIRE(noexcept(std::declval<const M&>().level()));
    STATIC_REQUIRE(noexcept(std::declval<const M&>().estimate_bytes()));
    STATIC_REQUIRE(noexcept(std::declval<M&>().update_estimate(std::declval<memgov::time_point>())));
    STATIC_REQUIRE(noexcept(std::declval<M&>().stop()));
    STATIC_REQUIRE(noexcept(std::declval<const M&>().psi_fd()));
    STATIC_REQUIRE(std::is_nothrow_destructible_v<M>);
    STATIC_REQUIRE(std::is_nothrow_move_constructible_v<memgov::pressure_subscription>);
    STATIC_REQUIRE(std::is_nothrow_move_assignable_v<memgov::pressure_subscription>);
    STATIC_REQUIRE(noexcept(std::declval<memgov::pressure_subscription&>().reset()));
    STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<memgov::pressure_subscription>);
    STATIC_REQUIRE(noexcept(memgov::to_string(pressure_cause::forecast)));
}

namespace {
// A path for a FIFO or socket in a fresh directory of its own, removed at the end.
struct scratch_path {
    std::filesystem::path dir;
    std::string path;
    explicit scratch_path(const char* name) {
        std::string tmpl = (std::filesystem::temp_directory_path() / "memgov-watch-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        dir = tmpl;
        path = (dir / name).string();
    }
    ~scratch_path() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
};
} // namespace

TEST_CASE("psi_watch: a FIFO counts writes as events and is shut when its writer closes", "[pressure_monitor]") {
    scratch_path p{"pressure.fifo"};
    REQUIRE(::mkfifo(p.path.c_str(), 0600) == 0);
    memgov::detail::psi_watch w;
    w.open(p.path, "some 150000 2000000");
    REQUIRE(w.state() == memgov::psi_watch_state::registered);
    CHECK(w.spec().window_us == 2000000U);
    const int writer = ::open(p.path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(writer >= 0);
    std::string buf;
    CHECK_FALSE(w.check(buf));
    REQUIRE(::write(writer, "xy", 2) == 2);
    CHECK(w.check(buf));       // one event, however many bytes
    CHECK_FALSE(w.check(buf)); // drained
    ::close(writer);
    CHECK_FALSE(w.check(buf)); // end of file: shut, not an event
    CHECK(w.state() == memgov::psi_watch_state::disabled);
    CHECK(w.fd() == -1);
    CHECK(w.reason().find("closed") != std::string::npos);
    CHECK_FALSE(w.check(buf));
}

TEST_CASE("psi_watch: a socket gets the trigger, counts data as events and is shut on hang-up", "[pressure_monitor]") {
    scratch_path p{"pressure.sock"};
    const int server = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(server >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(p.path.size() < sizeof addr.sun_path);
    std::memcpy(addr.sun_path, p.path.c_str(), p.path.size() + 1);
    REQUIRE(::bind(server, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(server, 1) == 0);

    memgov::detail::psi_watch w;
    w.open(p.path, "some 150000 2000000");
    REQUIRE(w.state() == memgov::psi_watch_state::registered);
    const int peer = ::accept4(server, nullptr, nullptr, SOCK_CLOEXEC);
    REQUIRE(peer >= 0);
    char trigger[64] = {};
    const auto got = ::read(peer, trigger, sizeof trigger - 1);
    CHECK(std::string_view{trigger, static_cast<std::size_t>(got > 0 ? got : 0)} == "some 150000 2000000");

    std::string buf;
    CHECK_FALSE(w.check(buf));
    REQUIRE(::write(peer, "!", 1) == 1);
    CHECK(w.check(buf));
    CHECK_FALSE(w.check(buf));
    ::close(peer);
    CHECK_FALSE(w.check(buf)); // the peer hung up: shut, not an event
    CHECK(w.state() == memgov::psi_watch_state::disabled);
    CHECK(w.reason().find("closed") != std::string::npos);
    ::close(server);
}

TEST_CASE("pressure_monitor: a closed FIFO watch does not hold the level up", "[pressure_monitor]") {
    rig r;
    scratch_path p{"pressure.fifo"};
    REQUIRE(::mkfifo(p.path.c_str(), 0600) == 0);
    pressure_monitor_config c = r.config();
    c.psi_watch = p.path;
    pressure_monitor<manual_clock> m{c, nullptr, r.clock};
    REQUIRE(m.snapshot().psi_watch == memgov::psi_watch_state::registered);
    const int writer = ::open(p.path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    REQUIRE(writer >= 0);
    REQUIRE(::write(writer, "x", 1) == 1);
    ::close(writer); // one event, then the writer goes away
    r.clock.advance(c.sample_period);
    (void)m.poll(r.clock.now());
    const auto events = m.snapshot().psi_events;
    CHECK(events == 1);
    for (int i = 0; i < 5; ++i) {
        r.clock.advance(c.psi_hold + c.sample_period);
        (void)m.poll(r.clock.now());
    }
    const auto s = m.snapshot();
    CHECK(s.psi_events == events); // the end of file was not counted again and again
    CHECK(s.psi_watch == memgov::psi_watch_state::disabled);
    CHECK(m.level() == pressure_level::normal);
}

TEST_CASE("pressure_monitor: a switch of the binding cgroup is not growth", "[pressure_monitor]") {
    // The leaf binds first (1 GiB, 100 MiB used); then siblings fill the parent (2 GiB) until
    // it has less headroom and binds instead: the working set jumps from 100 MiB to 1200 MiB
    // between two samples 100 ms apart. That is not 11 GB/s of growth, and at 59% of the
    // parent's limit nothing should be raised.
    fake_cgroup_tree tree = fake_cgroup_tree::v2("/parent/app");
    tree.set_limit("/parent/app", GiB);
    tree.set_usage("/parent/app", 100 * MiB);
    tree.set_limit("/parent", 2 * GiB);
    tree.set_usage("/parent", 300 * MiB);
    manual_clock clock;
    pressure_monitor_config c;
    c.cgroup = tree.config();
    c.use_systemd_pressure_env = false;
    pressure_monitor<manual_clock> m{c, nullptr, clock};
    for (int i = 0; i < 3; ++i) {
        clock.advance(100ms);
        m.poll(clock.now());
    }
    REQUIRE(m.snapshot().binding_cgroup == "/parent/app");
    tree.set_usage("/parent", 1200 * MiB);
    for (int i = 0; i < 3; ++i) {
        clock.advance(100ms);
        m.poll(clock.now());
    }
    const auto s = m.snapshot();
    INFO("growth " << s.growth_bytes_per_second);
    CHECK(s.binding_cgroup == "/parent");
    CHECK(s.ratio < 0.6);
    CHECK(m.level() == pressure_level::normal);
    CHECK(s.growth_bytes_per_second < 1e9);
}
