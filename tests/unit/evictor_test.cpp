#include <memgov/buffer_pool.hpp>
#include <memgov/evictor.hpp>
#include <memgov/prometheus.hpp>
#include <memgov/reclaimers.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using memgov::pressure_level;
using memgov::reclaim_action;

namespace {

constexpr std::size_t mib = std::size_t{1} << 20;

// Records every request and frees what its script says.
struct scripted {
    std::vector<memgov::reclaim_request> seen;
    std::size_t frees = 0;
    std::size_t items = 0;
};

std::shared_ptr<memgov::function_reclaimer> make(std::string name, std::vector<reclaim_action> actions,
                                                 std::shared_ptr<scripted> s) {
    return std::make_shared<memgov::function_reclaimer>(
        std::move(name), std::move(actions),
        [s](const memgov::reclaim_request& r) {
            s->seen.push_back(r);
            return memgov::reclaim_result{s->frees, s->items};
        },
        [s](reclaim_action) { return std::size_t{7} * mib; });
}

memgov::evictor quiet_evictor(memgov::evictor_config cfg = {}) {
    // No real malloc_trim and a fixed RSS in unit tests.
    return memgov::evictor{std::move(cfg), [] {}, [] { return std::size_t{0}; }};
}

memgov::pressure_view view(pressure_level l, double usage, double exit_ratio) {
    memgov::pressure_view v;
    v.level = l;
    v.limit_bytes = 100 * mib;
    v.estimate_bytes = static_cast<std::size_t>(usage * 100.0 * static_cast<double>(mib));
    v.red_line = 0.85;
    v.exit_ratio = exit_ratio;
    return v;
}

const memgov::time_point t0 = memgov::manual_clock{}.now();

} // namespace

TEST_CASE("evictor: a step at normal runs only the expiry sweep and wants nothing", "[evictor]") {
    int heap_trims = 0;
    memgov::evictor ev{{}, [&] { ++heap_trims; }, [] { return std::size_t{0}; }};
    auto pools = std::make_shared<scripted>();
    auto sessions = std::make_shared<scripted>();
    ev.add(make("pools", {reclaim_action::trim_pools}, pools));
    ev.add(make("sessions",
                {reclaim_action::sweep_expired, reclaim_action::evict_by_age, reclaim_action::evict_over_cost,
                 reclaim_action::evict_lru},
                sessions));
    const auto rep = ev.step(view(pressure_level::normal, 0.99, 0.0), t0);
    CHECK(rep.wanted == 0);
    CHECK(rep.actions_run == 1);
    CHECK(pools->seen.empty());
    REQUIRE(sessions->seen.size() == 1);
    CHECK(sessions->seen[0].action == reclaim_action::sweep_expired);
    CHECK(sessions->seen[0].budget == 256);
    CHECK(sessions->seen[0].now == t0);
    CHECK(heap_trims == 0);
    const auto st = ev.stats();
    CHECK(st.steps[0] == 1);
    CHECK(st.total(reclaim_action::sweep_expired).runs == 1);
    CHECK(st.heap_trims == 0);

    // The normal row may hold nothing but sweeps: no trims or evictions without pressure.
    for (auto a : {reclaim_action::trim_pools, reclaim_action::trim_heap, reclaim_action::evict_lru,
                   reclaim_action::evict_by_age, reclaim_action::evict_over_cost}) {
        memgov::evictor_config cfg;
        cfg.ladder[0].push_back({a, 1, false});
        CHECK_THROWS_WITH(memgov::evictor{cfg},
                          Catch::Contains("evictor_config::ladder") && Catch::Contains("normal row"));
    }
}

namespace {

// A reclaimer that handles nothing and records every level it is told.
struct listening final : memgov::reclaimer {
    std::vector<pressure_level> levels;
    std::string_view name() const noexcept override { return "listening"; }
    bool handles(reclaim_action) const noexcept override { return false; }
    std::size_t estimate(reclaim_action) const noexcept override { return 0; }
    memgov::reclaim_result reclaim(const memgov::reclaim_request&) noexcept override { return {}; }
    void on_level(pressure_level l) noexcept override { levels.push_back(l); }
};

} // namespace

TEST_CASE("evictor: set_level tells every reclaimer each change once, down as well as up", "[evictor]") {
    auto ev = quiet_evictor();
    auto a = std::make_shared<listening>();
    auto b = std::make_shared<listening>();
    ev.add(a);
    ev.add(b);
    CHECK(ev.level() == pressure_level::normal);
    ev.set_level(pressure_level::critical);
    ev.set_level(pressure_level::critical);
    (void)ev.step(view(pressure_level::critical, 0.9, 0.8), t0); // same level: not told again
    ev.set_level(pressure_level::high);
    ev.set_level(pressure_level::normal); // a fall with no step
    // Told normal when added, then each change once.
    const std::vector expected{pressure_level::normal, pressure_level::critical, pressure_level::high,
                               pressure_level::normal};
    CHECK(a->levels == expected);
    CHECK(b->levels == expected);
    CHECK(ev.level() == pressure_level::normal);
    // A late one hears the current level, not the last stepped one (critical).
    auto late = std::make_shared<listening>();
    ev.add(late);
    CHECK(late->levels == std::vector{pressure_level::normal});
    ev.set_level(pressure_level::elevated);
    auto later = std::make_shared<listening>();
    ev.add(later);
    CHECK(later->levels == std::vector{pressure_level::elevated});
    STATIC_REQUIRE(noexcept(ev.set_level(pressure_level::normal)));
    STATIC_REQUIRE(noexcept(ev.stats()));
    STATIC_REQUIRE(noexcept(ev.wait_for_heap_trim()));
    STATIC_REQUIRE(noexcept(ev.heap_trimmer_started()));
    STATIC_REQUIRE(std::is_nothrow_destructible_v<memgov::heap_trimmer>);
    STATIC_REQUIRE(noexcept(std::declval<memgov::heap_trimmer&>().request(t0, 0)));
    STATIC_REQUIRE(noexcept(std::declval<memgov::heap_trimmer&>().maybe_trim(t0)));
    STATIC_REQUIRE(noexcept(std::declval<memgov::heap_trimmer&>().wait()));
}

TEST_CASE("evictor: elevated trims pools first and stops once enough is freed", "[evictor]") {
    auto ev = quiet_evictor();
    auto pools = std::make_shared<scripted>();
    auto sessions = std::make_shared<scripted>();
    pools->frees = 20 * mib; // more than the 10 MiB wanted (usage 0.75, exit 0.65)
    ev.add(make("pools", {reclaim_action::trim_pools}, pools));
    ev.add(make("sessions", {reclaim_action::sweep_expired}, sessions));
    const auto rep = ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    CHECK(rep.wanted == 10 * mib);
    CHECK(rep.freed == 20 * mib);
    REQUIRE(pools->seen.size() == 1);
    CHECK(pools->seen[0].bytes_wanted == 10 * mib);
    CHECK(pools->seen[0].budget == 256);
    CHECK(pools->seen[0].level == pressure_level::elevated);
    CHECK(sessions->seen.empty()); // enough was freed: the ladder stopped
    const auto st = ev.stats();
    CHECK(st.total(reclaim_action::trim_pools).runs == 1);
    CHECK(st.total(reclaim_action::trim_pools).bytes == 20 * mib);
    CHECK(st.total(reclaim_action::sweep_expired).runs == 0);
}

TEST_CASE("evictor: an action that frees nothing lets the next run in the same step", "[evictor]") {
    auto ev = quiet_evictor();
    auto pools = std::make_shared<scripted>();    // frees nothing
    auto sessions = std::make_shared<scripted>(); // frees 3 MiB of the 10 wanted
    sessions->frees = 3 * mib;
    sessions->items = 5;
    ev.add(make("pools", {reclaim_action::trim_pools}, pools));
    ev.add(make("sessions", {reclaim_action::sweep_expired}, sessions));
    const auto rep = ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    CHECK(pools->seen.size() == 1);
    REQUIRE(sessions->seen.size() == 1);
    CHECK(sessions->seen[0].bytes_wanted == 10 * mib);
    CHECK(rep.freed == 3 * mib);
    CHECK(rep.items == 5);
    CHECK(rep.actions_run == 3); // trim_pools, sweep_expired, trim_heap
    const auto st = ev.stats();
    CHECK(st.total(reclaim_action::trim_pools).empty == 1);
    CHECK(st.total(reclaim_action::sweep_expired).items == 5);
    CHECK(st.total(reclaim_action::trim_heap).runs == 1);
}

TEST_CASE("evictor: critical always evicts over-cost sessions and uses the age ladder", "[evictor]") {
    auto ev = quiet_evictor();
    auto sessions = std::make_shared<scripted>();
    ev.add(make("sessions",
                {reclaim_action::evict_over_cost, reclaim_action::evict_by_age, reclaim_action::sweep_expired},
                sessions));
    SECTION("below 94% there is no age eviction") {
        (void)ev.step(view(pressure_level::critical, 0.90, 0.80), t0);
        REQUIRE(sessions->seen.size() == 2);
        CHECK(sessions->seen[0].action == reclaim_action::evict_over_cost);
        CHECK(sessions->seen[0].cost_cap == 30 * mib);
        CHECK(sessions->seen[1].action == reclaim_action::sweep_expired);
    }
    SECTION("the age shortens as usage climbs") {
        CHECK(ev.age_limit(0.93) == 0s);
        CHECK(ev.age_limit(0.94) == 400s);
        CHECK(ev.age_limit(0.97) == 200s);
        CHECK(ev.age_limit(0.985) == 100s);
        (void)ev.step(view(pressure_level::critical, 0.97, 0.80), t0);
        REQUIRE(sessions->seen.size() == 3);
        CHECK(sessions->seen[2].action == reclaim_action::evict_by_age);
        CHECK(sessions->seen[2].max_age == 200s);
        CHECK(sessions->seen[2].budget == 64);
    }
}

TEST_CASE("evictor: emergency evicts LRU toward the red line minus the margin", "[evictor]") {
    auto ev = quiet_evictor();
    auto sessions = std::make_shared<scripted>();
    ev.add(make("sessions", {reclaim_action::evict_lru}, sessions));
    const auto rep = ev.step(view(pressure_level::emergency, 0.99, 0.90), t0);
    // Target: (0.85 - 0.02) * 100 MiB = 83 MiB; wanted = 99 - 83 = 16 MiB.
    CHECK(rep.wanted == 16 * mib);
    REQUIRE(sessions->seen.size() == 1);
    CHECK(sessions->seen[0].action == reclaim_action::evict_lru);
    CHECK(sessions->seen[0].bytes_wanted == 16 * mib);
}

TEST_CASE("evictor: dry run counts what would be done and does nothing", "[evictor]") {
    memgov::evictor_config cfg;
    cfg.dry_run = true;
    auto ev = quiet_evictor(cfg);
    auto pools = std::make_shared<scripted>();
    ev.add(make("pools", {reclaim_action::trim_pools}, pools));
    CHECK(ev.dry_run());
    const auto rep = ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    CHECK(pools->seen.empty());
    CHECK(rep.dry_run);
    CHECK(rep.freed == 0);
    const auto st = ev.stats();
    CHECK(st.total(reclaim_action::trim_pools).dry_runs == 1);
    CHECK(st.total(reclaim_action::trim_pools).dry_bytes == 7 * mib);
    CHECK(st.total(reclaim_action::trim_pools).runs == 0);
    CHECK(st.heap_trims == 0);
    ev.set_dry_run(false);
    (void)ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    CHECK(pools->seen.size() == 1);
}

TEST_CASE("evictor: level changes reach reclaimers", "[evictor]") {
    auto ev = quiet_evictor();
    auto r = std::make_shared<listening>();
    ev.add(r);
    (void)ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    (void)ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    (void)ev.step(view(pressure_level::normal, 0.5, 0.0), t0);
    CHECK(r->levels == std::vector{pressure_level::normal, pressure_level::elevated, pressure_level::normal});

    // Added under pressure: told the level at once. Removed under pressure: told normal.
    (void)ev.step(view(pressure_level::critical, 0.9, 0.8), t0);
    auto late = std::make_shared<listening>();
    ev.add(late);
    CHECK(late->levels == std::vector{pressure_level::critical});
    CHECK(ev.remove(*late));
    CHECK(late->levels == std::vector{pressure_level::critical, pressure_level::normal});
    // At normal, adding says normal (whatever the part held before); removing says nothing.
    (void)ev.step(view(pressure_level::normal, 0.5, 0.0), t0);
    auto calm = std::make_shared<listening>();
    ev.add(calm);
    CHECK(ev.remove(*calm));
    CHECK(calm->levels == std::vector{pressure_level::normal});
}

// A level no enum value names (7, 9) reaches the evictor at run time only through a cast; it
// used to index the per-level tables (steps, ladder, cells) and the pools' factor tables past
// their end (an abort under _GLIBCXX_ASSERTIONS, a silent overrun without).
TEST_CASE("evictor: a level past emergency given at run time is taken as emergency and counted", "[evictor]") {
    const auto seven = static_cast<pressure_level>(7);
    auto ev = quiet_evictor();
    memgov::buffer_pool pool;
    {
        auto b = pool.acquire(4096); // one idle buffer for the trim
    }
    auto pool_r = std::make_shared<memgov::buffer_pool_reclaimer>(pool);
    auto heard = std::make_shared<listening>();
    ev.add(pool_r);
    ev.add(heard);

    const memgov::step_report rep = ev.step(view(seven, 0.99, 0.90), t0);
    CHECK(rep.level == pressure_level::emergency);
    CHECK(rep.wanted == 16 * mib); // emergency's target: the red line minus the margin
    CHECK(heard->levels == std::vector{pressure_level::normal, pressure_level::emergency});
    CHECK(pool.pressure() == pressure_level::emergency);
    CHECK(pool.depot_cap_bytes(0) == 0);
    memgov::evictor_stats st = ev.stats();
    CHECK(st.steps[memgov::to_index(pressure_level::emergency)] == 1);
    CHECK(st.total(reclaim_action::trim_pools).runs == 1);
    CHECK(st.out_of_range_levels == 1);

    ev.set_level(static_cast<pressure_level>(9));
    CHECK(ev.level() == pressure_level::emergency);
    CHECK(ev.stats().out_of_range_levels == 2);
    ev.set_level(pressure_level::normal);
    CHECK(heard->levels.back() == pressure_level::normal);
    CHECK(pool.pressure() == pressure_level::normal);

    // The parts on their own clamp too.
    pool.set_pressure(seven);
    CHECK(pool.pressure() == pressure_level::emergency);
    CHECK(pool.depot_cap_bytes(0) == 0);
    CHECK(memgov::clamp_level(seven) == pressure_level::emergency);
    CHECK(memgov::clamp_level(pressure_level::high) == pressure_level::high);

    memgov::prometheus_writer w;
    memgov::collect(w, ev.stats());
    CHECK_THAT(w.str(), Catch::Contains("memgov_evictor_out_of_range_levels_total 2"));
}

TEST_CASE("evictor: heap trimmer backs off while trims free little", "[evictor]") {
    int calls = 0;
    std::size_t rss = 100 * mib;
    memgov::heap_trimmer h{memgov::heap_trim_config{}, [&] { ++calls; }, [&] { return rss; }};
    auto now = t0;
    CHECK(h.maybe_trim(now) == 0); // first trim runs, frees nothing
    CHECK(calls == 1);
    CHECK(h.interval() == 200ms);
    CHECK(h.maybe_trim(now + 100ms) == 0); // too soon: deferred
    CHECK(calls == 1);
    CHECK(h.deferred() == 1);
    now += 200ms;
    (void)h.maybe_trim(now); // frees nothing: interval doubles
    CHECK(calls == 2);
    CHECK(h.interval() == 400ms);
    now += 400ms;
    (void)h.maybe_trim(now);
    CHECK(h.interval() == 800ms);
    for (int i = 0; i < 10; ++i) {
        now += h.interval();
        (void)h.maybe_trim(now);
    }
    CHECK(h.interval() == 10s); // capped
}

TEST_CASE("evictor: a useful trim resets the interval", "[evictor]") {
    std::size_t rss = 100 * mib;
    std::size_t gives_back = 0; // what the next trim returns to the OS
    int calls = 0;
    memgov::heap_trimmer h{memgov::heap_trim_config{},
                           [&] {
                               ++calls;
                               rss -= gives_back;
                           },
                           [&] { return rss; }};
    auto now = t0;
    (void)h.maybe_trim(now);
    for (int i = 0; i < 3; ++i) { // trims that free nothing: the interval grows
        now += h.interval();
        CHECK(h.maybe_trim(now) == 0);
    }
    REQUIRE(h.interval() == 1600ms);
    gives_back = 5 * mib; // at least useful_bytes (1 MiB)
    now += h.interval();
    CHECK(h.maybe_trim(now) == 5 * mib);
    CHECK(calls == 5);
    CHECK(h.interval() == 200ms);
    CHECK(h.maybe_trim(now + 100ms) == 0); // the reset interval is the one in force
    CHECK(h.deferred() == 1);
    gives_back = mib / 2; // below useful_bytes: grows again
    now += 200ms;
    CHECK(h.maybe_trim(now) == mib / 2);
    CHECK(h.interval() == 400ms);
}

TEST_CASE("evictor: bad configuration throws std::invalid_argument naming the field", "[evictor]") {
    auto bad = [](auto mutate) {
        memgov::evictor_config cfg;
        mutate(cfg);
        return memgov::evictor{cfg};
    };
    CHECK_THROWS_WITH(bad([](auto& c) { c.session_cost_cap = 0; }), Catch::Contains("session_cost_cap"));
    CHECK_THROWS_WITH(bad([](auto& c) { c.emergency_margin = 1.5; }), Catch::Contains("emergency_margin"));
    CHECK_THROWS_WITH(bad([](auto& c) { c.age_ladder = {{0.96, 200s}, {0.94, 400s}}; }), Catch::Contains("age_ladder"));
    CHECK_THROWS_WITH(bad([](auto& c) { c.age_ladder = {{0.96, 0s}}; }), Catch::Contains("age_ladder"));
    CHECK_THROWS_WITH(bad([](auto& c) {
                          c.ladder[1] = {{reclaim_action::trim_pools, 0, false}};
                      }),
                      Catch::Contains("ladder"));
    CHECK_THROWS_WITH(bad([](auto& c) { c.heap.min_interval = 0s; }),
                      Catch::Contains("heap_trim_config::min_interval"));
    CHECK_THROWS_WITH(bad([](auto& c) { c.heap.backoff_factor = 0.5; }), Catch::Contains("backoff_factor"));
    memgov::evictor ev;
    CHECK_THROWS_AS(ev.add(nullptr), std::invalid_argument);
    CHECK_THROWS_WITH(memgov::function_reclaimer("", {}, [](const auto&) { return memgov::reclaim_result{}; }),
                      Catch::Contains("name is empty"));
}

TEST_CASE("evictor: a throwing user reclaimer frees nothing and the ladder goes on", "[evictor]") {
    auto ev = quiet_evictor();
    auto sessions = std::make_shared<scripted>();
    sessions->frees = 1;
    ev.add(std::make_shared<memgov::function_reclaimer>(
        "throws", std::vector{reclaim_action::trim_pools},
        [](const memgov::reclaim_request&) -> memgov::reclaim_result { throw std::runtime_error{"boom"}; }));
    ev.add(make("sessions", {reclaim_action::sweep_expired}, sessions));
    (void)ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    CHECK(sessions->seen.size() == 1);
    const auto v = view(pressure_level::elevated, 0.75, 0.65);
    STATIC_REQUIRE(noexcept(ev.step(v, t0)));
}

TEST_CASE("evictor: a removed reclaimer is not called again; removing an unknown one is false", "[evictor]") {
    auto ev = quiet_evictor();
    auto pools = std::make_shared<scripted>();
    auto sessions = std::make_shared<scripted>();
    const auto rp = make("pools", {reclaim_action::trim_pools}, pools);
    const auto rs = make("sessions", {reclaim_action::sweep_expired}, sessions);
    ev.add(rp);
    ev.add(rs);
    CHECK(rp.use_count() == 2); // the test's and the evictor's

    CHECK_THROWS_WITH(ev.add(rp), Catch::Contains("'pools' is already registered"));
    CHECK(ev.reclaimers().size() == 2);
    CHECK(ev.remove(*rp));
    CHECK(rp.use_count() == 1); // the evictor dropped its share
    CHECK_FALSE(ev.remove(*rp));
    const auto stranger = make("stranger", {reclaim_action::trim_pools}, pools);
    CHECK_FALSE(ev.remove(*stranger));

    (void)ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    CHECK(pools->seen.empty());
    CHECK(sessions->seen.size() == 1);
    std::vector<std::string> names;
    ev.for_each_reclaimer([&](const memgov::reclaimer& r) { names.emplace_back(r.name()); });
    CHECK(names == std::vector<std::string>{"sessions"});
    REQUIRE(ev.reclaimers().size() == 1);
    CHECK(ev.reclaimers()[0] == rs);

    ev.add(rp); // may come back, after the others
    names.clear();
    ev.for_each_reclaimer([&](const memgov::reclaimer& r) { names.emplace_back(r.name()); });
    CHECK(names == std::vector<std::string>{"sessions", "pools"});
}

TEST_CASE("evictor: inside a step reads work and registration changes wait for its end", "[evictor]") {
    auto ev = quiet_evictor();
    auto victim_seen = std::make_shared<scripted>();
    const auto victim = make("victim", {reclaim_action::trim_pools, reclaim_action::sweep_expired}, victim_seen);
    const auto late = make("late", {reclaim_action::trim_pools}, std::make_shared<scripted>());
    std::vector<std::string> log;
    std::shared_ptr<memgov::function_reclaimer> self;
    self = std::make_shared<memgov::function_reclaimer>(
        "reentrant", std::vector{reclaim_action::trim_pools}, [&](const memgov::reclaim_request&) {
            if (!log.empty()) return memgov::reclaim_result{};
            log.push_back("steps " + std::to_string(ev.stats().steps[1]));
            std::string names;
            ev.for_each_reclaimer([&](const memgov::reclaimer& r) {
                names += std::string{r.name()} + ",";
                ev.for_each_reclaimer([&](const memgov::reclaimer& n) { names += n.name(); }); // nested
                names += ";";
            });
            log.push_back(names);
            log.push_back("copy " + std::to_string(ev.reclaimers().size()));
            log.push_back(ev.remove(*victim) ? "removed" : "absent");
            log.push_back(ev.remove(*victim) ? "removed" : "absent");
            ev.add(late);
            try {
                ev.add(late);
                log.emplace_back("added twice");
            } catch (const std::invalid_argument&) {
                log.emplace_back("invalid_argument");
            }
            log.push_back("copy " + std::to_string(ev.reclaimers().size())); // victim hidden
            log.push_back("inner actions " +
                          std::to_string(ev.step(view(pressure_level::elevated, 0.75, 0.65), t0).actions_run));
            return memgov::reclaim_result{1, 1};
        });
    ev.add(self);
    ev.add(victim);
    const auto rep = ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    CHECK(rep.freed == 1);
    CHECK(log == std::vector<std::string>{"steps 1", "reentrant,reentrantvictim;victim,reentrantvictim;", "copy 2",
                                          "removed", "absent", "invalid_argument", "copy 1", "inner actions 0"});
    CHECK(victim_seen->seen.empty()); // not called by the step that removed it
    CHECK(victim.use_count() == 1);   // gone when the step ended
    const auto copy = ev.reclaimers();
    REQUIRE(copy.size() == 2);
    CHECK(copy[0] == self);
    CHECK(copy[1] == late);
    const auto st = ev.stats();
    CHECK(st.steps[1] == 1); // the inner step did nothing
    CHECK(st.ignored_steps == 1);
    CHECK(st.deferred_changes == 2);
}

TEST_CASE("evictor: inside a visit registration changes apply when the visit ends", "[evictor]") {
    auto ev = quiet_evictor();
    auto seen = std::make_shared<scripted>();
    const auto a = make("a", {reclaim_action::trim_pools}, seen);
    const auto b = make("b", {reclaim_action::trim_pools}, seen);
    ev.add(a);
    bool removed = false;
    memgov::step_report inner;
    inner.actions_run = 99;
    ev.for_each_reclaimer([&](const memgov::reclaimer& r) {
        removed = ev.remove(r);
        ev.add(b);
        CHECK(ev.reclaimers().size() == 0); // a hidden, b not yet in
        CHECK(ev.stats().deferred_changes == 2);
        inner = ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    });
    CHECK(removed);
    CHECK(inner.actions_run == 0);
    REQUIRE(ev.reclaimers().size() == 1);
    CHECK(ev.reclaimers()[0] == b);
    CHECK(a.use_count() == 1);
    CHECK(ev.stats().steps[1] == 0);
    CHECK(ev.stats().ignored_steps == 1);

    // Outside any callback, all of it works as usual.
    (void)ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    CHECK(seen->seen.size() == 1);
    CHECK(ev.remove(*b));
    CHECK(ev.reclaimers().empty());
}

TEST_CASE("evictor: a heap trim runs off the stepping thread and is counted when it completes", "[evictor]") {
    const auto stepper = std::this_thread::get_id();
    std::atomic<int> on_stepper{0};
    std::atomic<int> calls{0};
    std::latch entered{1};
    std::latch release{1};
    std::atomic<std::size_t> rss{100 * mib};
    memgov::evictor ev{{},
                       [&] {
                           if (std::this_thread::get_id() == stepper) {
                               ++on_stepper; // the old, synchronous path: do not block
                               return;
                           }
                           ++calls;
                           entered.count_down();
                           release.wait(); // a slow malloc_trim, until the test lets it go
                           rss -= 5 * mib;
                       },
                       [&] { return rss.load(); }};
    const auto rep = ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    REQUIRE(on_stepper == 0); // the step only asked for the trim
    CHECK(rep.freed == 0);
    entered.wait(); // the trim runs on the trimmer's thread, blocked
    auto st = ev.stats();
    CHECK(st.total(reclaim_action::trim_heap).runs == 1);
    CHECK(st.total(reclaim_action::trim_heap).bytes == 0);
    CHECK(st.heap_trims == 0);
    CHECK(st.heap_trim_running);

    // The back-off allows another trim, but one still runs: coalesced, counted, not queued.
    const auto again = ev.step(view(pressure_level::elevated, 0.75, 0.65), t0 + 300ms);
    CHECK(again.freed == 0);
    st = ev.stats();
    CHECK(st.heap_trims_coalesced == 1);
    CHECK(st.heap_trims_deferred == 0);
    CHECK(st.total(reclaim_action::trim_heap).runs == 2);

    release.count_down();
    ev.wait_for_heap_trim();
    st = ev.stats();
    CHECK(calls == 1);
    CHECK(on_stepper == 0);
    CHECK(st.heap_trims == 1);
    CHECK(!st.heap_trim_running);
    CHECK(st.heap_trimmed_bytes == 5 * mib);
    CHECK(st.cells[memgov::to_index(pressure_level::elevated)][static_cast<std::size_t>(reclaim_action::trim_heap)]
              .bytes == 5 * mib);
    CHECK(st.total(reclaim_action::trim_heap).bytes == 5 * mib);
    CHECK(st.heap_interval == 200ms);
}

TEST_CASE("evictor: the heap trim back-off uses the completed trim's result", "[evictor]") {
    std::atomic<std::size_t> rss{100 * mib};
    std::atomic<std::size_t> gives_back{0};
    std::atomic<int> calls{0};
    memgov::evictor ev{{},
                       [&] {
                           ++calls;
                           rss -= gives_back.load();
                       },
                       [&] { return rss.load(); }};
    const auto at = [&](memgov::duration d) {
        (void)ev.step(view(pressure_level::elevated, 0.75, 0.65), t0 + d);
        ev.wait_for_heap_trim();
        return ev.stats();
    };
    auto st = at(0ms); // the first trim frees nothing: the interval stays at 200 ms
    CHECK(st.heap_trims == 1);
    CHECK(st.heap_interval == 200ms);
    st = at(100ms); // too soon
    CHECK(st.heap_trims_deferred == 1);
    st = at(200ms); // frees nothing again: 400 ms from this request
    CHECK(st.heap_trims == 2);
    CHECK(st.heap_interval == 400ms);
    st = at(500ms);
    CHECK(st.heap_trims_deferred == 2);
    gives_back = 5 * mib; // a useful trim resets the interval
    st = at(600ms);
    CHECK(st.heap_trims == 3);
    CHECK(st.heap_trimmed_bytes == 5 * mib);
    CHECK(st.heap_interval == 200ms);
    st = at(700ms);
    CHECK(st.heap_trims_deferred == 3);
    st = at(800ms);
    CHECK(st.heap_trims == 4);
    CHECK(calls == 4);
    CHECK(st.heap_trims_coalesced == 0);
    CHECK(st.total(reclaim_action::trim_heap).runs == 7);
    CHECK(st.heap_trimmed_bytes == 10 * mib);
    // Runs that freed nothing: 3 deferred and the 2 trims that gave nothing back.
    CHECK(st.total(reclaim_action::trim_heap).empty == 5);
}

TEST_CASE("evictor: no trimmer thread when heap trims are disabled or in dry run", "[evictor]") {
    for (const bool dry : {false, true}) {
        memgov::evictor_config c;
        c.heap.enabled = dry; // disabled, or enabled but dry
        c.dry_run = dry;
        int calls = 0;
        memgov::evictor ev{c, [&] { ++calls; }, [] { return std::size_t{0}; }};
        (void)ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
        ev.wait_for_heap_trim();
        CHECK(calls == 0);
        CHECK(!ev.heap_trimmer_started());
        CHECK(ev.stats().heap_trims == 0);
    }
    auto ev = quiet_evictor();
    CHECK(!ev.heap_trimmer_started()); // lazily: not before the first trim
    (void)ev.step(view(pressure_level::elevated, 0.75, 0.65), t0);
    CHECK(ev.heap_trimmer_started());
}

TEST_CASE("heap_trimmer: request is non-blocking; maybe_trim still trims on the caller's thread", "[evictor]") {
    std::latch release{1};
    std::atomic<int> calls{0};
    std::vector<std::pair<std::size_t, std::size_t>> done; // (bytes, tag), on the worker
    std::mutex done_mutex;
    memgov::heap_trimmer h{memgov::heap_trim_config{},
                           [&] {
                               ++calls;
                               release.wait();
                           },
                           [] { return std::size_t{0}; },
                           [&](const memgov::heap_trim_done& d) {
                               std::lock_guard lock{done_mutex};
                               done.emplace_back(d.bytes, d.tag);
                           }};
    CHECK(h.request(t0, 3) == memgov::heap_trim_request::started);
    CHECK(h.request(t0 + 1s, 4) == memgov::heap_trim_request::coalesced);
    CHECK(h.maybe_trim(t0 + 2s) == 0); // one runs: the synchronous path does not wait either
    CHECK(h.coalesced() == 2);
    release.count_down();
    h.wait();
    CHECK(calls == 1);
    CHECK(h.trims() == 1);
    {
        std::lock_guard lock{done_mutex};
        REQUIRE(done.size() == 1);
        CHECK(done[0] == std::pair<std::size_t, std::size_t>{0, 3});
    }
    CHECK(h.request(t0 + 100ms, 5) == memgov::heap_trim_request::deferred);
    (void)h.maybe_trim(t0 + 200ms); // synchronous: done when it returns
    CHECK(calls == 2);
    CHECK(h.trims() == 2);
    CHECK(h.interval() == 400ms);
}

// ---- Eviction order that targets the cause (evict_largest, quota-following cap, custom
// actions, counters per reclaimer).

namespace {
std::vector<reclaim_action> actions_of(const scripted& s) {
    std::vector<reclaim_action> out;
    for (const auto& r : s.seen) out.push_back(r.action);
    return out;
}
const std::vector<reclaim_action> all_session_actions{reclaim_action::sweep_expired, reclaim_action::evict_by_age,
                                                      reclaim_action::evict_over_cost, reclaim_action::evict_largest,
                                                      reclaim_action::evict_lru};
} // namespace

TEST_CASE("evictor: evict_largest is action 6 and the others keep their values", "[evictor]") {
    STATIC_REQUIRE(static_cast<int>(reclaim_action::trim_pools) == 0);
    STATIC_REQUIRE(static_cast<int>(reclaim_action::evict_lru) == 5);
    STATIC_REQUIRE(static_cast<int>(reclaim_action::evict_largest) == 6);
    STATIC_REQUIRE(static_cast<int>(reclaim_action::custom) == 7);
    STATIC_REQUIRE(memgov::reclaim_action_count == 8);
    CHECK(memgov::to_string(reclaim_action::evict_largest) == "evict_largest");
    CHECK(memgov::to_string(reclaim_action::custom) == "custom");
}

TEST_CASE("evictor: the default ladder reaches the largest sessions before age and LRU", "[evictor]") {
    auto ev = quiet_evictor();
    auto sessions = std::make_shared<scripted>(); // frees nothing: every entry runs
    ev.add(make("sessions", all_session_actions, sessions));
    SECTION("critical: over-cost (always), sweep, largest, then age") {
        (void)ev.step(view(pressure_level::critical, 0.97, 0.80), t0);
        CHECK(actions_of(*sessions) == std::vector{reclaim_action::evict_over_cost, reclaim_action::sweep_expired,
                                                   reclaim_action::evict_largest, reclaim_action::evict_by_age});
        REQUIRE(sessions->seen.size() == 4);
        CHECK(sessions->seen[2].budget == 16);
        CHECK(sessions->seen[2].bytes_wanted == 17 * mib);
    }
    SECTION("emergency: over-cost, sweep, largest, age, then LRU") {
        (void)ev.step(view(pressure_level::emergency, 0.99, 0.90), t0);
        CHECK(actions_of(*sessions) == std::vector{reclaim_action::evict_over_cost, reclaim_action::sweep_expired,
                                                   reclaim_action::evict_largest, reclaim_action::evict_by_age,
                                                   reclaim_action::evict_lru});
        REQUIRE(sessions->seen.size() == 5);
        CHECK(sessions->seen[2].budget == 16);
    }
    SECTION("largest freeing enough stops the row before age and LRU") {
        auto big = std::make_shared<scripted>();
        big->frees = 20 * mib;
        big->items = 1;
        ev.add(make("big", {reclaim_action::evict_largest}, big));
        (void)ev.step(view(pressure_level::emergency, 0.99, 0.90), t0); // wants 16 MiB
        CHECK(actions_of(*sessions) == std::vector{reclaim_action::evict_over_cost, reclaim_action::sweep_expired,
                                                   reclaim_action::evict_largest});
        CHECK(ev.stats().total(reclaim_action::evict_largest).bytes == 20 * mib);
    }
    // Trims keep their places: pools before the sweep, the heap last.
    const auto t = memgov::evictor_config::default_ladder();
    for (auto l : {pressure_level::critical, pressure_level::emergency}) {
        const auto& row = t[memgov::to_index(l)];
        REQUIRE(row.size() >= 3);
        CHECK(row[0].action == reclaim_action::evict_over_cost);
        CHECK(row[0].always);
        CHECK(row[1].action == reclaim_action::trim_pools);
        CHECK(row[2].action == reclaim_action::sweep_expired);
        CHECK(row.back().action == reclaim_action::trim_heap);
    }
}

TEST_CASE("evictor: the cost cap follows the session quota when one applies", "[evictor]") {
    auto ev = quiet_evictor();
    auto sessions = std::make_shared<scripted>();
    ev.add(make("sessions", {reclaim_action::evict_over_cost}, sessions));
    auto v = view(pressure_level::critical, 0.90, 0.80);
    CHECK(v.session_quota_bytes == 0);
    (void)ev.step(v, t0); // no quota: the configured cap
    v.session_quota_bytes = 10 * mib;
    (void)ev.step(v, t0); // a smaller quota wins
    v.session_quota_bytes = 40 * mib;
    (void)ev.step(v, t0); // a larger quota does not raise the cap
    REQUIRE(sessions->seen.size() == 3);
    CHECK(sessions->seen[0].cost_cap == 30 * mib);
    CHECK(sessions->seen[1].cost_cap == 10 * mib);
    CHECK(sessions->seen[2].cost_cap == 30 * mib);
}

TEST_CASE("evictor: a custom action runs where the ladder puts it", "[evictor]") {
    memgov::evictor_config cfg;
    cfg.custom_actions = {"shed_queued_work"};
    auto& row = cfg.ladder[memgov::to_index(pressure_level::emergency)];
    const auto lru =
        std::find_if(row.begin(), row.end(), [](const auto& e) { return e.action == reclaim_action::evict_lru; });
    REQUIRE(lru != row.end());
    row.insert(lru, memgov::policy_entry{reclaim_action::custom, 8, false, "shed_queued_work"});
    auto ev = quiet_evictor(cfg);

    auto sessions = std::make_shared<scripted>();
    ev.add(make("sessions", all_session_actions, sessions));
    std::vector<std::string> order; // what ran, across both reclaimers
    std::vector<memgov::reclaim_request> kafka_seen;
    auto kafka = std::make_shared<memgov::function_reclaimer>(
        "kafka_producer", std::vector<reclaim_action>{},
        [&](const memgov::reclaim_request& r) {
            kafka_seen.push_back(r);
            return memgov::reclaim_result{2 * mib, 3};
        },
        [](reclaim_action) { return std::size_t{5} * mib; }, std::vector<std::string>{"shed_queued_work"});
    CHECK(kafka->handles_custom("shed_queued_work"));
    CHECK_FALSE(kafka->handles_custom("other"));
    CHECK(kafka->handles(reclaim_action::custom));
    CHECK_FALSE(sessions == nullptr);
    ev.add(kafka);

    (void)ev.step(view(pressure_level::emergency, 0.99, 0.90), t0);
    REQUIRE(kafka_seen.size() == 1);
    CHECK(kafka_seen[0].action == reclaim_action::custom);
    CHECK(kafka_seen[0].name == "shed_queued_work");
    CHECK(kafka_seen[0].budget == 8);
    CHECK(kafka_seen[0].bytes_wanted == 16 * mib);
    // It ran after age and before LRU, which was asked for what was still wanted.
    CHECK(actions_of(*sessions).back() == reclaim_action::evict_lru);
    CHECK(sessions->seen.back().bytes_wanted == 14 * mib);
    const auto st = ev.stats();
    CHECK(st.total(reclaim_action::custom).runs == 1);
    CHECK(st.total(reclaim_action::custom).bytes == 2 * mib);
    // Not called at a level whose row does not name it.
    (void)ev.step(view(pressure_level::critical, 0.97, 0.80), t0);
    CHECK(kafka_seen.size() == 1);

    // A reclaimer that does not know the name is not asked.
    ev.set_dry_run(true);
    (void)ev.step(view(pressure_level::emergency, 0.99, 0.90), t0);
    CHECK(ev.stats().total(reclaim_action::custom).dry_bytes == 5 * mib);
}

TEST_CASE("evictor: custom actions are validated at construction, naming the field", "[evictor]") {
    auto bad = [](auto mutate) {
        memgov::evictor_config cfg;
        mutate(cfg);
        return memgov::evictor{cfg};
    };
    using e = memgov::policy_entry;
    // An unknown name in the ladder.
    CHECK_THROWS_WITH(bad([](auto& c) {
                          c.ladder[3].push_back(e{reclaim_action::custom, 1, false, "shed"});
                      }),
                      Catch::Contains("evictor_config::ladder") && Catch::Contains("'shed'") &&
                          Catch::Contains("custom_actions"));
    // A custom entry without a name; a built-in entry with one.
    CHECK_THROWS_WITH(bad([](auto& c) {
                          c.custom_actions = {"shed"};
                          c.ladder[3].push_back(e{reclaim_action::custom, 1, false, ""});
                      }),
                      Catch::Contains("evictor_config::ladder"));
    CHECK_THROWS_WITH(bad([](auto& c) {
                          c.custom_actions = {"shed"};
                          c.ladder[3].push_back(e{reclaim_action::evict_lru, 1, false, "shed"});
                      }),
                      Catch::Contains("evictor_config::ladder"));
    // Bad declarations.
    for (const char* name : {"", "Shed", "shed-work", "evict_lru", "custom"}) {
        INFO(name);
        CHECK_THROWS_WITH(bad([&](auto& c) { c.custom_actions = {name}; }),
                          Catch::Contains("evictor_config::custom_actions"));
    }
    CHECK_THROWS_WITH(bad([](auto& c) {
                          c.custom_actions = {"shed", "shed"};
                      }),
                      Catch::Contains("evictor_config::custom_actions"));
    // The normal row still holds only sweeps.
    CHECK_THROWS_WITH(bad([](auto& c) {
                          c.custom_actions = {"shed"};
                          c.ladder[0].push_back(e{reclaim_action::custom, 1, false, "shed"});
                      }),
                      Catch::Contains("normal row"));
    CHECK_THROWS_WITH(bad([](auto& c) {
                          c.ladder[2] = {{reclaim_action::evict_largest, 0, false}};
                      }),
                      Catch::Contains("budget"));
    CHECK_NOTHROW(bad([](auto& c) {
        c.custom_actions = {"shed_queued_work", "drop_cache2"};
        c.ladder[2].push_back(e{reclaim_action::custom, 1, false, "drop_cache2"});
    }));
}

TEST_CASE("evictor: counts bytes, items and runs per reclaimer and action", "[evictor]") {
    memgov::evictor_config cfg;
    cfg.custom_actions = {"shed_queued_work"};
    cfg.ladder[memgov::to_index(pressure_level::high)].push_back(
        {reclaim_action::custom, 4, false, "shed_queued_work"});
    auto ev = quiet_evictor(cfg);
    auto pools = std::make_shared<scripted>();
    pools->frees = 1 * mib;
    pools->items = 2;
    auto sessions = std::make_shared<scripted>();
    sessions->frees = 3 * mib;
    sessions->items = 1;
    ev.add(make("pools", {reclaim_action::trim_pools}, pools));
    ev.add(make("sessions", all_session_actions, sessions));
    auto shed = std::make_shared<memgov::function_reclaimer>(
        "kafka", std::vector<reclaim_action>{},
        [](const memgov::reclaim_request&) {
            return memgov::reclaim_result{4 * mib, 5};
        },
        memgov::function_reclaimer::estimate_fn{}, std::vector<std::string>{"shed_queued_work"});
    ev.add(shed);

    (void)ev.step(view(pressure_level::high, 0.80, 0.50), t0);      // wants 30 MiB: all run
    (void)ev.step(view(pressure_level::emergency, 0.99, 0.90), t0); // wants 16 MiB

    const auto st = ev.stats();
    REQUIRE(st.reclaimers.size() == 3);
    CHECK(st.custom_actions == std::vector<std::string>{"shed_queued_work"});
    const auto& p = st.reclaimers[0];
    CHECK(p.name == "pools");
    CHECK(p.actions[static_cast<std::size_t>(reclaim_action::trim_pools)].handled);
    CHECK_FALSE(p.actions[static_cast<std::size_t>(reclaim_action::evict_lru)].handled);
    CHECK(p.actions[static_cast<std::size_t>(reclaim_action::trim_pools)].runs == 2);
    CHECK(p.actions[static_cast<std::size_t>(reclaim_action::trim_pools)].bytes == 2 * mib);
    CHECK(p.actions[static_cast<std::size_t>(reclaim_action::trim_pools)].items == 4);
    REQUIRE(p.custom.size() == 1);
    CHECK_FALSE(p.custom[0].handled);
    const auto& s = st.reclaimers[1];
    CHECK(s.name == "sessions");
    // high: sweep (3 of 30); emergency: over-cost (always) 3, sweep 3... until 16 MiB.
    CHECK(s.actions[static_cast<std::size_t>(reclaim_action::sweep_expired)].runs == 2);
    CHECK(s.actions[static_cast<std::size_t>(reclaim_action::evict_over_cost)].runs == 1);
    CHECK(s.actions[static_cast<std::size_t>(reclaim_action::evict_over_cost)].bytes == 3 * mib);
    const auto& k = st.reclaimers[2];
    CHECK(k.name == "kafka");
    REQUIRE(k.custom.size() == 1);
    CHECK(k.custom[0].handled);
    CHECK(k.custom[0].runs == 1);
    CHECK(k.custom[0].bytes == 4 * mib);
    CHECK(k.custom[0].items == 5);
    CHECK(k.actions[static_cast<std::size_t>(reclaim_action::custom)].runs == 1);

    // The per-reclaimer counters add up to the per-action ones.
    for (std::size_t a = 0; a < memgov::reclaim_action_count; ++a) {
        if (static_cast<reclaim_action>(a) == reclaim_action::trim_heap) continue;
        std::uint64_t bytes = 0;
        for (const auto& r : st.reclaimers) bytes += r.actions[a].bytes;
        CHECK(bytes == st.total(static_cast<reclaim_action>(a)).bytes);
    }

    // A removed reclaimer is not reported; coming back it goes on from its counters.
    CHECK(ev.remove(*shed));
    CHECK(ev.stats().reclaimers.size() == 2);
    memgov::prometheus_writer w;
    memgov::collect(w, ev.stats());
    CHECK_THAT(w.str(), !Catch::Contains("reclaimer=\"kafka\""));
    ev.add(shed);
    (void)ev.step(view(pressure_level::high, 0.80, 0.50), t0);
    CHECK(ev.stats().reclaimers.size() == 3);
    CHECK(ev.stats().reclaimers[2].custom[0].runs == 2);
}

TEST_CASE("evictor: counters per reclaimer are exported with a reclaimer label", "[evictor]") {
    memgov::evictor_config cfg;
    cfg.custom_actions = {"shed_queued_work"};
    cfg.ladder[memgov::to_index(pressure_level::high)].push_back(
        {reclaim_action::custom, 4, false, "shed_queued_work"});
    auto ev = quiet_evictor(cfg);
    auto sessions = std::make_shared<scripted>();
    sessions->frees = 3 * mib;
    sessions->items = 1;
    ev.add(make("sessions", all_session_actions, sessions));
    ev.add(std::make_shared<memgov::function_reclaimer>(
        "kafka", std::vector<reclaim_action>{},
        [](const memgov::reclaim_request&) {
            return memgov::reclaim_result{4 * mib, 5};
        },
        memgov::function_reclaimer::estimate_fn{}, std::vector<std::string>{"shed_queued_work"}));
    (void)ev.step(view(pressure_level::high, 0.80, 0.50), t0);
    memgov::prometheus_writer w;
    memgov::collect(w, ev.stats());
    const std::string text = w.str();
    CHECK_THAT(text, Catch::Contains("# TYPE memgov_evictor_reclaimer_freed_bytes_total counter"));
    CHECK_THAT(text, Catch::Contains(
                         "memgov_evictor_reclaimer_runs_total{reclaimer=\"sessions\",action=\"sweep_expired\"} 1"));
    CHECK_THAT(text, Catch::Contains("memgov_evictor_reclaimer_freed_bytes_total{reclaimer=\"sessions\","
                                     "action=\"sweep_expired\"} 3145728"));
    CHECK_THAT(text, Catch::Contains("memgov_evictor_reclaimer_freed_items_total{reclaimer=\"kafka\","
                                     "action=\"shed_queued_work\"} 5"));
    CHECK_THAT(text, Catch::Contains(
                         "memgov_evictor_reclaimer_runs_total{reclaimer=\"sessions\",action=\"evict_largest\"} 0"));
    // Only what a reclaimer answers; the custom actions by their own names, not summed again.
    CHECK_THAT(text, !Catch::Contains("reclaimer=\"sessions\",action=\"trim_pools\""));
    CHECK_THAT(text, !Catch::Contains("reclaimer=\"kafka\",action=\"custom\""));
    CHECK_THAT(text, Catch::Contains("memgov_evictor_actions_total{level=\"emergency\",action=\"evict_largest\"} 0"));
}
