#include <memgov/governor.hpp>
#include <memgov/reclaimers.hpp>

#include "fake_cgroup.hpp"
#include "promtool.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

using namespace std::chrono_literals;
using memgov::admit_kind;
using memgov::admit_reason;
using memgov::pressure_level;
using memgov::reclaim_action;
using memgov_test::fake_cgroup_tree;

namespace {

constexpr std::uint64_t MiB = 1024 * 1024;
constexpr std::uint64_t GiB = 1024 * MiB;

// Records every request; frees `frees` bytes and `items` items per call.
struct recording_reclaimer final : memgov::reclaimer {
    std::string label;
    std::vector<reclaim_action> actions;
    std::vector<memgov::reclaim_request> seen;
    std::size_t frees = 0;
    std::size_t items = 0;

    recording_reclaimer(std::string n, std::vector<reclaim_action> a) : label{std::move(n)}, actions{std::move(a)} {}
    std::string_view name() const noexcept override { return label; }
    bool handles(reclaim_action a) const noexcept override {
        for (auto x : actions) {
            if (x == a) return true;
        }
        return false;
    }
    std::size_t estimate(reclaim_action) const noexcept override { return 5 * MiB; }
    memgov::reclaim_result reclaim(const memgov::reclaim_request& r) noexcept override {
        seen.push_back(r);
        return {frees, items};
    }
    double reuse_rate() const noexcept override { return label == "pools" ? 0.9 : -1.0; }
    std::size_t count(reclaim_action a) const {
        std::size_t n = 0;
        for (const auto& r : seen) n += r.action == a ? 1 : 0;
        return n;
    }
};

// A 1 GiB v2 tree at `usage`, and a governor configuration that reads it (no forecast unless
// asked: the replays test the ratio ladder).
memgov::governor_config on_fake_tree(fake_cgroup_tree& tree, std::uint64_t usage, bool forecast = false) {
    tree.set_limit("/app", GiB);
    tree.set_usage("/app", usage);
    memgov::governor_config cfg;
    cfg.monitor.cgroup = tree.config();
    cfg.monitor.use_systemd_pressure_env = false;
    if (!forecast) cfg.monitor.forecast_horizon = 0s;
    return cfg;
}

// A v2 tree with a 1 GiB limit on /app. Red line 85%; levels enter at 70/78/85/89% and leave
// below 65/74/81/85% after dwelling 2/2/5/1 s (the monitor's documented defaults).
struct rig {
    fake_cgroup_tree tree = fake_cgroup_tree::v2("/app");
    memgov::manual_clock clock;
    std::unique_ptr<memgov::governor<memgov::manual_clock>> gov;
    std::shared_ptr<recording_reclaimer> pools =
        std::make_shared<recording_reclaimer>("pools", std::vector{reclaim_action::trim_pools});
    std::shared_ptr<recording_reclaimer> sessions = std::make_shared<recording_reclaimer>(
        "sessions", std::vector{reclaim_action::sweep_expired, reclaim_action::evict_by_age,
                                reclaim_action::evict_over_cost, reclaim_action::evict_lru});
    std::vector<memgov::level_change> changes;
    memgov::pressure_subscription sub;
    int trims = 0;

    explicit rig(bool dry_run = false) {
        memgov::governor_config cfg = on_fake_tree(tree, GiB / 2);
        cfg.dry_run = dry_run;
        gov = std::make_unique<memgov::governor<memgov::manual_clock>>(
            cfg, clock, [this] { ++trims; }, [] { return std::size_t{0}; });
        gov->register_reclaimer(pools);
        gov->register_reclaimer(sessions);
        sub = gov->monitor().subscribe([this](const memgov::level_change& c) { changes.push_back(c); });
    }
    void percent(double p) { tree.set_usage("/app", static_cast<std::uint64_t>(p / 100.0 * static_cast<double>(GiB))); }
    // One second passes, usage is now `p` percent, the governor polls.
    pressure_level at(double p) {
        clock.advance(1s);
        percent(p);
        return gov->poll(clock.now());
    }
    std::vector<pressure_level> levels() const {
        std::vector<pressure_level> out;
        for (const auto& c : changes) out.push_back(c.to);
        return out;
    }
};

} // namespace

TEST_CASE("governor: replay from 50% to 99% and back follows the documented ladder", "[governor]") {
    rig r;
    auto& g = *r.gov;
    CHECK(g.level() == pressure_level::normal);
    CHECK(g.admit(64 * 1024, admit_kind::session));

    // 50 → 60%: nothing happens.
    CHECK(r.at(60) == pressure_level::normal);
    CHECK(r.pools->seen.empty());

    // 72%: elevated. Pools are trimmed first; they free nothing, so the sweep runs in the same
    // step (feedback), then the heap trim.
    CHECK(r.at(72) == pressure_level::elevated);
    REQUIRE(r.pools->seen.size() == 1);
    CHECK(r.pools->seen[0].level == pressure_level::elevated);
    CHECK(r.sessions->count(reclaim_action::sweep_expired) == 2); // one at normal, one here
    CHECK(r.sessions->seen.back().level == pressure_level::elevated);
    g.evictor().wait_for_heap_trim(); // the trim runs on the heap trimmer's thread
    CHECK(r.trims == 1);
    CHECK(g.admit(64 * 1024, admit_kind::session));

    // 80%: high.
    CHECK(r.at(80) == pressure_level::high);
    CHECK(r.pools->seen.back().level == pressure_level::high);

    // 86%: critical, the red line. New sessions are refused; work is still admitted.
    CHECK(r.at(86) == pressure_level::critical);
    CHECK(g.admit(64 * 1024, admit_kind::session).reason == admit_reason::sessions_closed);
    CHECK(g.admit(4096, admit_kind::work));
    CHECK(r.sessions->count(reclaim_action::evict_over_cost) == 1);
    CHECK(r.sessions->count(reclaim_action::evict_by_age) == 0); // below 94%: no age eviction
    // The cost cap is the smaller of the configured 30 MiB and the per-session quota at
    // critical (30 MiB × 0.5).
    CHECK(r.sessions->seen.back().cost_cap == 15 * MiB);

    // 95%: emergency. Everything new is refused; LRU eviction aims at the red line − 2%, and
    // the age ladder gives 400 s.
    CHECK(r.at(95) == pressure_level::emergency);
    CHECK(g.admit(1, admit_kind::work).reason == admit_reason::all_closed);
    CHECK(g.admit(1, admit_kind::session).reason == admit_reason::all_closed);
    {
        const auto& s = r.sessions->seen;
        std::vector<reclaim_action> order;
        for (auto it = s.end() - 4; it != s.end(); ++it) order.push_back(it->action);
        CHECK(order == std::vector{reclaim_action::evict_over_cost, reclaim_action::sweep_expired,
                                   reclaim_action::evict_by_age, reclaim_action::evict_lru});
        CHECK(s[s.size() - 2].max_age == 400s);
        const auto want = static_cast<std::size_t>(0.95 * GiB) - static_cast<std::size_t>((0.85 - 0.02) * GiB);
        CHECK(static_cast<double>(s.back().bytes_wanted) == Approx(static_cast<double>(want)).epsilon(0.001));
    }
    // 97% and 99%: the age shortens to 200 s, then 100 s.
    (void)r.at(97);
    CHECK(r.sessions->seen[r.sessions->seen.size() - 2].max_age == 200s);
    (void)r.at(99);
    CHECK(r.sessions->seen[r.sessions->seen.size() - 2].max_age == 100s);

    // Down again: 84% leaves emergency (exit 85%) after its 1 s dwell. The estimate follows
    // the kernel down within one sample (the ledger did not rise), so at the first poll.
    CHECK(r.at(84) == pressure_level::critical);
    CHECK(g.admit(1, admit_kind::work));
    CHECK_FALSE(g.admit(1, admit_kind::session));
    // Critical is left below 81% after 5 s at the level.
    CHECK(r.at(79) == pressure_level::critical); // dwell not over
    for (int i = 0; i < 5; ++i) (void)r.at(60);
    CHECK(g.level() < pressure_level::critical);
    CHECK(g.admit(64 * 1024, admit_kind::session)); // sessions reopen
    for (int i = 0; i < 10; ++i) (void)r.at(50);
    CHECK(g.level() == pressure_level::normal);

    const std::vector<pressure_level> up{pressure_level::elevated, pressure_level::high, pressure_level::critical,
                                         pressure_level::emergency, pressure_level::critical};
    const auto lv = r.levels();
    REQUIRE(lv.size() >= up.size() + 1);
    CHECK(std::vector(lv.begin(), lv.begin() + static_cast<std::ptrdiff_t>(up.size())) == up);
    CHECK(lv.back() == pressure_level::normal);

    const auto st = g.stats();
    CHECK(st.admission.session_gate_closes == 1);
    CHECK(st.admission.session_gate_opens == 1);
    CHECK(st.admission.refused[0][static_cast<int>(admit_reason::sessions_closed)] == 2);
    CHECK(st.admission.refused[0][static_cast<int>(admit_reason::all_closed)] == 1);
    CHECK(st.admission.refused[1][static_cast<int>(admit_reason::all_closed)] == 1);
    CHECK(st.admission.admitted[0] == 3);
    CHECK(st.admission.admitted[1] == 2);
    CHECK(st.evictor.total(reclaim_action::evict_lru).runs == 3);
    CHECK(st.evictor.steps[memgov::to_index(pressure_level::emergency)] == 3);
    CHECK(st.evictor.total(reclaim_action::evict_lru).empty == 3); // the script frees nothing
}

TEST_CASE("governor: usage oscillating ±1% around the red line makes at most 2 transitions", "[governor]") {
    rig r;
    for (int i = 0; i < 40; ++i) (void)r.at(i % 2 == 0 ? 84.0 : 86.0);
    INFO("transitions: " << r.changes.size());
    CHECK(r.changes.size() <= 2);
    CHECK(r.gov->level() == pressure_level::critical);
}

TEST_CASE("governor: evictions by reason are counted as the reclaimers report them", "[governor]") {
    rig r;
    r.sessions->frees = 1 * MiB;
    r.sessions->items = 2;
    (void)r.at(95); // straight to emergency
    const auto st = r.gov->stats();
    // evict_over_cost always runs; then pools free nothing, the sweep frees 1 MiB of the
    // wanted ~123 MiB, age and LRU follow.
    CHECK(st.evictor.total(reclaim_action::evict_over_cost).items == 2);
    CHECK(st.evictor.total(reclaim_action::sweep_expired).items == 2);
    CHECK(st.evictor.total(reclaim_action::evict_by_age).items == 2);
    CHECK(st.evictor.total(reclaim_action::evict_lru).items == 2);
    CHECK(r.gov->health().evictions_last_minute == 8);
}

TEST_CASE("governor: dry run admits and acts on nothing but counts", "[governor]") {
    rig r{true};
    (void)r.at(95);
    CHECK(r.gov->level() == pressure_level::emergency);
    CHECK(r.gov->admit(1, admit_kind::session));
    CHECK(r.gov->admit(1, admit_kind::work));
    CHECK(r.pools->seen.empty());
    CHECK(r.sessions->seen.empty());
    CHECK(r.trims == 0);
    const auto st = r.gov->stats();
    CHECK(st.admission.dry_refused[0][static_cast<int>(admit_reason::all_closed)] == 1);
    CHECK(st.admission.dry_refused[1][static_cast<int>(admit_reason::all_closed)] == 1);
    CHECK(st.admission.total_refused() == 0);
    CHECK(st.evictor.total(reclaim_action::evict_lru).dry_runs == 1);
    CHECK(st.evictor.total(reclaim_action::evict_lru).dry_bytes == 5 * MiB);
}

TEST_CASE("governor: a cost past the ceiling is refused for lack of headroom", "[governor]") {
    rig r;
    (void)r.at(60);
    // Ceiling 95% of 1 GiB; usage 60%: about 358 MiB left.
    CHECK(r.gov->admit(300 * MiB, admit_kind::session));
    CHECK(r.gov->admit(400 * MiB, admit_kind::session).reason == admit_reason::no_headroom);
    CHECK(r.gov->stats().admission.refused[0][static_cast<int>(admit_reason::no_headroom)] == 1);
}

TEST_CASE("governor: admit counts bytes as well as calls, by kind and reason", "[governor]") {
    rig r;
    (void)r.at(60);
    CHECK(r.gov->admit(300 * MiB, admit_kind::session));
    CHECK(r.gov->admit(4096, admit_kind::work));
    CHECK(r.gov->admit(400 * MiB, admit_kind::work).reason == admit_reason::no_headroom);
    const auto a = r.gov->stats().admission;
    CHECK(a.admitted[0] == 1);
    CHECK(a.admitted_bytes[0] == 300 * MiB);
    CHECK(a.admitted[1] == 1);
    CHECK(a.admitted_bytes[1] == 4096);
    CHECK(a.refused[1][static_cast<int>(admit_reason::no_headroom)] == 1);
    CHECK(a.refused_bytes[1][static_cast<int>(admit_reason::no_headroom)] == 400 * MiB);
    CHECK(a.total_refused_bytes() == 400 * MiB);
    // Budgets and `admit` share the counters and the headroom: a session's reservation lowers
    // what `admit` may take from the next poll on.
    const std::int64_t before = r.gov->admission_headroom();
    auto b = r.gov->admit_session(20 * MiB);
    REQUIRE(b);
    CHECK(r.gov->admission_headroom() == before - std::int64_t{20 * MiB});
    (void)r.at(60);
    CHECK(r.gov->admit(static_cast<std::size_t>(before) - 10 * MiB, admit_kind::work).reason ==
          admit_reason::no_headroom);
    CHECK(r.gov->stats().admission.admitted[0] == 2);
}

TEST_CASE("governor: health summary and Prometheus output", "[governor]") {
    rig r;
    (void)r.at(80);
    CHECK_FALSE(r.gov->admit(GiB, admit_kind::work));
    const auto h = r.gov->health();
    CHECK(h.level == pressure_level::high);
    CHECK(h.limit_bytes == GiB);
    CHECK(h.headroom_bytes == static_cast<std::int64_t>(0.85 * GiB) - static_cast<std::int64_t>(h.estimate_bytes));
    CHECK(h.rejections_last_minute == 1);
    REQUIRE(h.reuse_rates.size() == 1);
    CHECK(h.reuse_rates[0].name == "pools");
    CHECK(h.reuse_rates[0].reuse_rate == Approx(0.9));
    // More than a minute later the rejection has aged out of the window.
    for (int i = 0; i < 70; ++i) (void)r.at(50);
    CHECK(r.gov->health().rejections_last_minute == 0);

    memgov::prometheus_writer w;
    r.gov->collect(w);
    const std::string text = w.str();
    CHECK_THAT(text, Catch::Contains("memgov_limit_bytes 1073741824"));
    CHECK_THAT(text, Catch::Contains("memgov_pressure_level{level=\"normal\"} 1"));
    CHECK_THAT(text, Catch::Contains("memgov_rejections_total{kind=\"work\",reason=\"no_headroom\"} 1"));
    CHECK_THAT(text, Catch::Contains("memgov_reuse_ratio{reclaimer=\"pools\"} 0.9"));
    const auto res = memgov_test::check_metrics_text(text);
    INFO(res.output);
    CHECK(res.exit_code == 0);
}

TEST_CASE("governor: bad configuration throws std::invalid_argument naming the field", "[governor]") {
    auto tree = fake_cgroup_tree::v2("/app");
    auto make = [&](auto mutate) {
        memgov::governor_config c = on_fake_tree(tree, 100 * MiB, true);
        mutate(c);
        return memgov::governor<memgov::manual_clock>{c, memgov::manual_clock{}};
    };
    CHECK_THROWS_WITH(make([](auto& c) { c.admission.ceiling_ratio = 0; }),
                      Catch::Contains("admission_config::ceiling_ratio"));
    CHECK_THROWS_WITH(make([](auto& c) { c.admission.ceiling_ratio = 1.5; }),
                      Catch::Contains("admission_config::ceiling_ratio"));
    CHECK_THROWS_WITH(make([](auto& c) {
                          c.admission.refuse_all_at = pressure_level::high;
                          c.admission.close_sessions_at = pressure_level::critical;
                      }),
                      Catch::Contains("refuse_all_at"));
    CHECK_THROWS_WITH(make([](auto& c) { c.poll_period = 0s; }), Catch::Contains("poll_period"));
    CHECK_THROWS_WITH(make([](auto& c) { c.evictor.session_cost_cap = 0; }), Catch::Contains("session_cost_cap"));
}

TEST_CASE("governor: admission is noexcept and disabled admission admits everything", "[governor]") {
    auto tree = fake_cgroup_tree::v2("/app");
    memgov::governor_config c = on_fake_tree(tree, static_cast<std::uint64_t>(0.99 * GiB), true);
    c.admission.enabled = false;
    memgov::manual_clock clock;
    memgov::governor<memgov::manual_clock> g{c, clock, [] {}, [] { return std::size_t{0}; }};
    clock.advance(1s);
    (void)g.poll(clock.now());
    CHECK(g.level() == pressure_level::emergency);
    CHECK(g.admit(GiB, admit_kind::session));
    STATIC_REQUIRE(noexcept(g.admit(1, admit_kind::work)));
    STATIC_REQUIRE(noexcept(g.level()));
}

// The same ladder acting on a real session map through its adapter: evictions happen for the
// documented reasons, in the documented order, and `no_evict` sessions are spared.
TEST_CASE("governor: replay on a real session map evicts by cost, then age, then LRU", "[governor]") {
    auto tree = fake_cgroup_tree::v2("/app");
    memgov::manual_clock clock;
    memgov::governor_config cfg = on_fake_tree(tree, GiB / 2);
    memgov::governor<memgov::manual_clock> g{cfg, clock, [] {}, [] { return std::size_t{0}; }};

    using map_type = memgov::session_map<int, int, memgov::manual_clock>;
    std::vector<std::pair<int, memgov::evict_reason>> evicted;
    memgov::session_map_hooks<int, int> hooks;
    hooks.on_evict = [&](const int& k, int&, memgov::evict_reason r) { evicted.emplace_back(k, r); };
    map_type sessions{{}, std::move(hooks), clock};
    // Five old sessions (created 500 s ago), one over the 30 MiB cap, one exempt, 200 young.
    for (int k = 0; k < 5; ++k) REQUIRE(sessions.insert(k, [] { return 0; }, {.cost = static_cast<std::int64_t>(MiB)}));
    REQUIRE(sessions.insert(5, [] { return 0; }, {.no_evict = true, .cost = static_cast<std::int64_t>(MiB)}));
    clock.advance(500s);
    REQUIRE(sessions.insert(99, [] { return 0; }, {.cost = static_cast<std::int64_t>(40 * MiB)}));
    for (int k = 100; k < 300; ++k)
        REQUIRE(sessions.insert(k, [] { return 0; }, {.cost = static_cast<std::int64_t>(MiB)}));
    g.register_reclaimer(std::make_shared<memgov::session_map_reclaimer<map_type>>(sessions));

    const auto at = [&](double percent) {
        clock.advance(1s);
        tree.set_usage("/app", static_cast<std::uint64_t>(percent / 100.0 * static_cast<double>(GiB)));
        return g.poll(clock.now());
    };
    CHECK(at(72) == pressure_level::elevated); // sweep: nothing has expired
    CHECK(evicted.empty());

    CHECK(at(86) == pressure_level::critical); // the over-cost session goes, nothing else
    REQUIRE(evicted.size() == 1);
    CHECK(evicted[0] == std::pair{99, memgov::evict_reason::over_cost});

    CHECK(at(95) == pressure_level::emergency); // old sessions by age, then LRU
    REQUIRE(evicted.size() > 6);
    for (std::size_t i = 1; i <= 5; ++i) {
        CHECK(evicted[i].second == memgov::evict_reason::age_under_pressure);
        CHECK(evicted[i].first < 5);
    }
    for (std::size_t i = 6; i < evicted.size(); ++i) {
        CHECK(evicted[i].second == memgov::evict_reason::lru_under_pressure);
    }
    CHECK(sessions.contains(5)); // no_evict is spared by every pressure eviction
    const auto st = sessions.stats();
    CHECK(st.evicted(memgov::evict_reason::over_cost) == 1);
    CHECK(st.evicted(memgov::evict_reason::age_under_pressure) == 5);
    CHECK(st.evicted(memgov::evict_reason::lru_under_pressure) == evicted.size() - 6);
    // The evictor's counters agree with the map's.
    const auto ev = g.stats().evictor;
    CHECK(ev.total(reclaim_action::evict_over_cost).items == 1);
    CHECK(ev.total(reclaim_action::evict_by_age).items == 5);
    CHECK(ev.total(reclaim_action::evict_lru).items == evicted.size() - 6);
}

TEST_CASE("governor: an unregistered reclaimer is neither asked nor reported", "[governor]") {
    rig r;
    (void)r.at(80); // high: both are asked
    CHECK(r.pools->count(reclaim_action::trim_pools) == 1);
    CHECK(r.gov->unregister_reclaimer(*r.pools));
    CHECK_FALSE(r.gov->unregister_reclaimer(*r.pools));
    CHECK(r.pools.use_count() == 1); // the governor no longer shares it

    r.clock.advance(5s);
    (void)r.at(80);
    CHECK(r.pools->count(reclaim_action::trim_pools) == 1); // not asked again
    CHECK(r.sessions->seen.size() > 1);

    const auto st = r.gov->stats();
    REQUIRE(st.reclaimers.size() == 1);
    CHECK(st.reclaimers[0].name == "sessions");
    CHECK(r.gov->health().reuse_rates.empty());
    memgov::prometheus_writer w;
    r.gov->collect(w);
    CHECK_THAT(w.str(), !Catch::Contains("reclaimer=\"pools\""));
}

TEST_CASE("governor: a level subscriber may call back into the governor", "[governor]") {
    rig r;
    int calls = 0;
    std::vector<pressure_level> nested;
    auto sub = r.gov->monitor().subscribe([&](const memgov::level_change& c) {
        ++calls;
        // Runs inside the governor's poll: none of these may wait for it.
        nested.push_back(r.gov->poll(r.clock.now())); // does nothing, returns the level
        CHECK(r.gov->health().level == c.to);
        CHECK(r.gov->stats().polls >= 1);
        memgov::prometheus_writer w;
        r.gov->collect(w);
        CHECK_FALSE(w.str().empty());
    });
    const auto polls_before = r.gov->stats().polls;
    CHECK(r.at(72) == pressure_level::elevated);
    CHECK(calls == 1);
    REQUIRE(nested.size() == 1);
    CHECK(nested[0] == pressure_level::elevated);
    CHECK(r.gov->stats().polls == polls_before + 1); // the nested poll was not counted
}

TEST_CASE("governor: a poll from inside its own callbacks or a visit is counted, not run", "[governor]") {
    rig r;
    auto sub = r.gov->monitor().subscribe([&](const memgov::level_change&) {
        (void)r.gov->poll(r.clock.now()); // inside the poll's subscriber
    });
    auto inner = std::make_shared<memgov::function_reclaimer>(
        "inner", std::vector{reclaim_action::trim_pools}, [&](const memgov::reclaim_request&) {
            (void)r.gov->poll(r.clock.now()); // inside the poll's step
            return memgov::reclaim_result{};
        });
    r.gov->register_reclaimer(inner);
    CHECK(r.gov->stats().ignored_polls == 0);
    const auto polls_before = r.gov->stats().polls;
    REQUIRE(r.at(72) == pressure_level::elevated); // one subscriber call, one trim_pools step
    r.gov->evictor().for_each_reclaimer([&](const memgov::reclaimer&) {
        (void)r.gov->poll(r.clock.now()); // inside a visit: three reclaimers
    });
    const memgov::governor_stats s = r.gov->stats();
    CHECK(s.polls == polls_before + 1);
    CHECK(s.ignored_polls == 1 + 1 + 3);
    memgov::prometheus_writer w;
    r.gov->collect(w);
    CHECK_THAT(w.str(), Catch::Contains("memgov_ignored_polls_total 5"));
    CHECK(r.gov->unregister_reclaimer(*inner));
}

TEST_CASE("governor: byte arithmetic saturates for limits near 2^64", "[governor]") {
    // The headroom's red line in bytes: ratio × limit, saturated.
    const double near_2_64 = static_cast<double>(std::numeric_limits<std::uint64_t>::max());
    CHECK(memgov::detail::saturating_cast<std::int64_t>(0.95 * near_2_64) == std::numeric_limits<std::int64_t>::max());
    CHECK(memgov::detail::saturating_cast<std::int64_t>(0.5 * 1000.0) == 500);
    CHECK(memgov::detail::saturating_cast<std::int64_t>(std::numeric_limits<std::uint64_t>::max()) ==
          std::numeric_limits<std::int64_t>::max());

    // An explicit limit of 2^64 - 1 ("unlimited"): everything is admitted, headroom is huge.
    fake_cgroup_tree tree = fake_cgroup_tree::v2("/app");
    memgov::governor_config cfg = on_fake_tree(tree, GiB / 2);
    cfg.monitor.cgroup.explicit_limit = std::numeric_limits<std::uint64_t>::max();
    memgov::manual_clock clock;
    memgov::governor<memgov::manual_clock> g{cfg, clock};
    (void)g.poll(clock.now());
    CHECK(g.admit(GiB, admit_kind::session));
    CHECK(g.health().headroom_bytes > 0);
}

namespace {
// Hears every level it is told and records what it is asked; frees nothing.
struct listening final : memgov::reclaimer {
    std::string label;
    std::vector<reclaim_action> actions;
    std::vector<pressure_level> levels;
    std::vector<memgov::reclaim_request> seen;
    std::function<void()> on_reclaim;
    std::function<void()> on_told;

    explicit listening(std::string n, std::vector<reclaim_action> a = {})
        : label{std::move(n)}, actions{std::move(a)} {}
    std::string_view name() const noexcept override { return label; }
    bool handles(reclaim_action a) const noexcept override {
        return std::find(actions.begin(), actions.end(), a) != actions.end();
    }
    std::size_t estimate(reclaim_action) const noexcept override { return 0; }
    memgov::reclaim_result reclaim(const memgov::reclaim_request& r) noexcept override {
        seen.push_back(r);
        if (on_reclaim) on_reclaim();
        return {};
    }
    void on_level(pressure_level l) noexcept override {
        levels.push_back(l);
        if (on_told) on_told();
    }
};
} // namespace

// 50% → 86% (critical) → 40% for two minutes: the governor reads normal again, and so must
// everything it governs, including a real buffer pool; a part registered afterwards is told
// nothing (it starts at normal), not the level of the last step.
TEST_CASE("governor: a fall back to normal reaches every reclaimer; a late one hears the current level", "[governor]") {
    rig r;
    auto heard = std::make_shared<listening>("heard");
    r.gov->register_reclaimer(heard);
    memgov::buffer_pool pool{{}, &r.gov->ledger()};
    const auto pool_r = std::make_shared<memgov::buffer_pool_reclaimer>(pool);
    r.gov->register_reclaimer(pool_r);

    CHECK(r.at(86) == pressure_level::critical);
    CHECK(pool.pressure() == pressure_level::critical);
    for (int i = 0; i < 120; ++i) (void)r.at(40);
    REQUIRE(r.gov->level() == pressure_level::normal);
    // Told normal when registered, then every change, down as well as up, once.
    REQUIRE_FALSE(heard->levels.empty());
    CHECK(heard->levels.front() == pressure_level::normal);
    CHECK(std::vector(heard->levels.begin() + 1, heard->levels.end()) == r.levels());
    CHECK(heard->levels == std::vector{pressure_level::normal, pressure_level::critical, pressure_level::normal});
    CHECK(pool.pressure() == pressure_level::normal);

    // Registered after the episode: told the current level, not the last crisis, even if the
    // part was set to something else before.
    auto late = std::make_shared<listening>("late");
    memgov::buffer_pool after_pool{{}, &r.gov->ledger()};
    after_pool.set_pressure(pressure_level::emergency);
    const auto after_r = std::make_shared<memgov::buffer_pool_reclaimer>(after_pool, "after");
    r.gov->register_reclaimer(late);
    r.gov->register_reclaimer(after_r);
    CHECK(late->levels == std::vector{pressure_level::normal});
    CHECK(after_pool.pressure() == pressure_level::normal);
    // Registered under pressure: told the level at once.
    CHECK(r.at(80) == pressure_level::high);
    auto under = std::make_shared<listening>("under");
    r.gov->register_reclaimer(under);
    CHECK(under->levels == std::vector{pressure_level::high});
    CHECK(r.gov->unregister_reclaimer(*pool_r));
    CHECK(pool.pressure() == pressure_level::normal); // leaves with its caps restored
    CHECK(after_pool.pressure() == pressure_level::high);
    CHECK(r.gov->unregister_reclaimer(*after_r));
}

// Everything memgov calls back during a step (a session map's on_evict, a reclaimer's reclaim
// and on_level) and a level subscriber may read the governor: the reads return the current
// data instead of ending the process.
TEST_CASE("governor: callbacks inside a step may read stats, health and metrics", "[governor]") {
    auto tree = fake_cgroup_tree::v2("/app");
    memgov::manual_clock clock;
    memgov::governor<memgov::manual_clock> g{on_fake_tree(tree, GiB / 2), clock, [] {}, [] { return std::size_t{0}; }};
    struct read_back {
        pressure_level level = pressure_level::normal;
        std::vector<std::string> reclaimers;
        std::uint64_t polls = 0;
        std::string metrics;
    };
    const auto read = [&g] {
        read_back b;
        b.level = g.health().level;
        const auto s = g.stats();
        for (const auto& ri : s.reclaimers) b.reclaimers.push_back(ri.name);
        b.polls = s.polls;
        memgov::prometheus_writer w;
        g.collect(w);
        b.metrics = w.str();
        return b;
    };
    using map_type = memgov::session_map<int, int, memgov::manual_clock>;
    std::vector<read_back> in_evict;
    memgov::session_map_hooks<int, int> hooks;
    hooks.on_evict = [&](const int&, int&, memgov::evict_reason) { in_evict.push_back(read()); };
    map_type sessions{{}, std::move(hooks), clock};
    for (int k = 0; k < 3; ++k) {
        REQUIRE(sessions.insert(k, [] { return 0; }, {.cost = static_cast<std::int64_t>(40 * MiB)}));
    }
    const auto map_r = std::make_shared<memgov::session_map_reclaimer<map_type>>(sessions);
    g.register_reclaimer(map_r);
    std::vector<read_back> in_reclaim;
    std::vector<read_back> in_level;
    auto reader = std::make_shared<listening>("reader", std::vector{reclaim_action::evict_over_cost});
    reader->on_reclaim = [&] { in_reclaim.push_back(read()); };
    reader->on_told = [&] { in_level.push_back(read()); };
    g.register_reclaimer(reader);
    in_level.clear(); // what it heard on registration, at normal
    std::vector<read_back> in_subscriber;
    auto sub = g.monitor().subscribe([&](const memgov::level_change&) { in_subscriber.push_back(read()); });

    clock.advance(1s);
    tree.set_usage("/app", static_cast<std::uint64_t>(0.86 * static_cast<double>(GiB)));
    CHECK(g.poll(clock.now()) == pressure_level::critical);

    const std::vector<std::string> names{"sessions", "reader"};
    REQUIRE(in_evict.size() == 3); // the three over-cost sessions
    REQUIRE(in_reclaim.size() == 1);
    REQUIRE_FALSE(in_level.empty());
    REQUIRE(in_subscriber.size() == 1);
    for (const auto* seen : {&in_evict, &in_reclaim, &in_level, &in_subscriber}) {
        for (const auto& b : *seen) {
            CHECK(b.level == pressure_level::critical);
            CHECK(b.reclaimers == names);
            CHECK(b.polls >= 1);
            CHECK_THAT(b.metrics, Catch::Contains("memgov_pressure_level{level=\"critical\"} 1"));
            CHECK_THAT(b.metrics, Catch::Contains("memgov_sessions{map=\"sessions\"}"));
        }
    }
    CHECK(g.unregister_reclaimer(*map_r));
}

// Registration changes asked for from inside a step take effect when the step ends: the
// removed reclaimer is not called again by that step, the added one is not called by it, and
// neither call throws or waits.
TEST_CASE("governor: registering and unregistering from inside a step take effect when it ends", "[governor]") {
    rig r;
    auto victim =
        std::make_shared<listening>("victim", std::vector{reclaim_action::trim_pools, reclaim_action::sweep_expired});
    auto late = std::make_shared<listening>("late", std::vector{reclaim_action::trim_pools});
    auto changer = std::make_shared<listening>("changer", std::vector{reclaim_action::trim_pools});
    std::vector<std::string> outcomes;
    changer->on_reclaim = [&] {
        if (!outcomes.empty()) return;
        try {
            outcomes.push_back(r.gov->unregister_reclaimer(*victim) ? "removed" : "absent");
            outcomes.push_back(r.gov->unregister_reclaimer(*victim) ? "removed" : "absent");
            r.gov->register_reclaimer(late);
            outcomes.emplace_back("added");
            r.gov->register_reclaimer(late);
            outcomes.emplace_back("added twice");
        } catch (const std::invalid_argument& e) {
            outcomes.emplace_back(std::string{"invalid_argument: "} + e.what());
        } catch (const std::exception& e) {
            outcomes.emplace_back(std::string{"other: "} + e.what());
        }
    };
    CHECK(r.gov->unregister_reclaimer(*r.pools));
    r.gov->register_reclaimer(changer);
    r.gov->register_reclaimer(victim);

    CHECK(r.at(80) == pressure_level::high);
    REQUIRE(outcomes.size() == 4);
    CHECK(outcomes[0] == "removed");
    CHECK(outcomes[1] == "absent");
    CHECK(outcomes[2] == "added");
    CHECK_THAT(outcomes[3], Catch::StartsWith("invalid_argument") && Catch::Contains("already registered"));
    CHECK(victim->seen.empty()); // never asked by the step that removed it
    CHECK(late->seen.empty());   // nor is the new one by the step that added it
    CHECK(victim.use_count() == 1);
    CHECK(victim->levels == std::vector{pressure_level::normal, pressure_level::high, pressure_level::normal});
    CHECK(late->levels == std::vector{pressure_level::high});
    std::vector<std::string> names;
    for (const auto& ri : r.gov->stats().reclaimers) names.push_back(ri.name);
    CHECK(names == std::vector<std::string>{"sessions", "changer", "late"});

    r.clock.advance(1s);
    (void)r.at(80); // the next step asks the new one
    CHECK(late->seen.size() == 1);
    CHECK(victim->seen.empty());
}

// Idle sessions expire at normal pressure, driven by the governor's polls alone: on time
// (within one step period of their idle_ttl), with no pool trim, heap trim or eviction.
TEST_CASE("governor: idle sessions expire at normal pressure with nothing but polls", "[governor]") {
    auto tree = fake_cgroup_tree::v2("/app");
    memgov::manual_clock clock;
    int heap_trims = 0;
    const memgov::governor_config cfg = on_fake_tree(tree, static_cast<std::uint64_t>(0.40 * static_cast<double>(GiB)));
    memgov::governor<memgov::manual_clock> g{cfg, clock, [&] { ++heap_trims; }, [] { return std::size_t{0}; }};
    using map_type = memgov::session_map<int, int, memgov::manual_clock>;
    std::vector<std::pair<int, memgov::evict_reason>> evicted;
    memgov::time_point expired_at{};
    memgov::session_map_hooks<int, int> hooks;
    hooks.on_evict = [&](const int& k, int&, memgov::evict_reason why) {
        evicted.emplace_back(k, why);
        expired_at = clock.now();
    };
    memgov::session_map_config mc;
    mc.idle_ttl = 5s;
    map_type sessions{mc, std::move(hooks), clock};
    const auto map_r = std::make_shared<memgov::session_map_reclaimer<map_type>>(sessions);
    g.register_reclaimer(map_r);
    auto pools = std::make_shared<listening>("pools", std::vector{reclaim_action::trim_pools});
    g.register_reclaimer(pools);

    const memgov::time_point t0 = clock.now();
    REQUIRE(sessions.insert(1, [] { return 0; }));
    for (int i = 0; i < 2000 && evicted.empty(); ++i) {
        clock.advance(cfg.poll_period);
        CHECK(g.poll(clock.now()) == pressure_level::normal);
    }
    REQUIRE(evicted.size() == 1);
    CHECK(evicted[0] == std::pair{1, memgov::evict_reason::expired_idle});
    CHECK(expired_at - t0 >= mc.idle_ttl);
    CHECK(expired_at - t0 <= mc.idle_ttl + cfg.step_period);
    CHECK(pools->seen.empty());
    CHECK(heap_trims == 0);
    const auto ev = g.stats().evictor;
    CHECK(ev.total(reclaim_action::sweep_expired).items == 1);
    for (auto a : {reclaim_action::trim_pools, reclaim_action::trim_heap, reclaim_action::evict_by_age,
                   reclaim_action::evict_over_cost, reclaim_action::evict_lru}) {
        CHECK(ev.total(a).runs == 0);
    }
    CHECK(g.unregister_reclaimer(*map_r));
}

TEST_CASE("governor: a blind monitor fails open and says so in health and metrics", "[governor]") {
    // A cgroup root that is missing, and one that is a file: nothing can be read.
    const std::filesystem::path base =
        std::filesystem::temp_directory_path() / ("memgov-blind-" + std::to_string(::getpid()));
    std::filesystem::create_directories(base);
    const std::string file_root = (base / "a-file").string();
    { std::ofstream{file_root} << "not a directory\n"; }
    for (const std::string& root : {(base / "missing").string(), file_root}) {
        CAPTURE(root);
        memgov::governor_config cfg;
        cfg.monitor.cgroup.root = root;
        cfg.monitor.cgroup.limit_env.clear();
        cfg.monitor.use_systemd_pressure_env = false;
        memgov::manual_clock clock;
        memgov::governor<memgov::manual_clock> g{cfg, clock, [] {}, [] { return std::size_t{0}; }};
        clock.advance(1s);
        CHECK(g.poll() == pressure_level::normal);

        const memgov::health_summary h = g.health();
        CHECK(h.blind);
        CHECK_FALSE(h.blind_reason.empty());
        CHECK(g.monitor().snapshot().blind);
        // Fails open: nothing to measure headroom against, so work is admitted.
        CHECK(g.admit(1 << 20, admit_kind::session));

        memgov::prometheus_writer w;
        g.collect(w);
        CHECK(w.str().find("memgov_monitor_blind 1") != std::string::npos);
    }
    std::filesystem::remove_all(base);

    // A monitor that sees says it is not blind.
    fake_cgroup_tree tree = fake_cgroup_tree::v2("/app");
    memgov::manual_clock clock;
    memgov::governor<memgov::manual_clock> g{on_fake_tree(tree, GiB / 2), clock, [] {}, [] { return std::size_t{0}; }};
    CHECK_FALSE(g.health().blind);
    CHECK(g.health().blind_reason.empty());
    memgov::prometheus_writer w;
    g.collect(w);
    CHECK(w.str().find("memgov_monitor_blind 0") != std::string::npos);
}
