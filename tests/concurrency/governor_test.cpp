#include <memgov/governor.hpp>

#include "fake_cgroup.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <initializer_list>
#include <latch>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using memgov::admit_kind;
using memgov::admit_reason;
using memgov::pressure_level;
using memgov::reclaim_action;

namespace {
constexpr std::uint64_t MiB = 1024 * 1024;
constexpr std::uint64_t GiB = 1024 * MiB;

// A 1 GiB v2 tree at `usage`, and a governor configuration that reads it.
memgov::governor_config on_fake_tree(memgov_test::fake_cgroup_tree& tree, std::uint64_t usage) {
    tree.set_limit("/app", GiB);
    tree.set_usage("/app", usage);
    memgov::governor_config cfg;
    cfg.monitor.cgroup = tree.config();
    cfg.monitor.use_systemd_pressure_env = false;
    return cfg;
}
} // namespace

// Admitting threads race the governor's own polling thread and a thread that moves usage up
// and down. Every admit gets an answer, the counters add up exactly, and TSan sees no race.
TEST_CASE("governor: admission races polling and level changes", "[governor][concurrency]") {
    auto tree = memgov_test::fake_cgroup_tree::v2("/app");
    memgov::governor_config cfg = on_fake_tree(tree, 500 * MiB);
    cfg.monitor.sample_period = 1ms;
    cfg.poll_period = 1ms;
    cfg.step_period = 1ms;
    std::atomic<std::uint64_t> reclaims{0};
    memgov::governor<> g{cfg, memgov::steady_clock{}, [] {}, [] { return std::size_t{0}; }};
    g.register_reclaimer(std::make_shared<memgov::function_reclaimer>(
        "counting", std::vector{reclaim_action::trim_pools, reclaim_action::evict_lru},
        [&](const memgov::reclaim_request&) {
            reclaims.fetch_add(1);
            return memgov::reclaim_result{};
        }));
    g.start();

    constexpr int admitters = 2;
    constexpr int per_thread = 20000;
    std::latch start{admitters + 1};
    std::atomic<bool> done{false};
    std::array<std::array<std::uint64_t, memgov::admit_reason_count>, admitters> seen{};
    std::vector<std::thread> ts;
    for (int t = 0; t < admitters; ++t) {
        ts.emplace_back([&, t] {
            start.arrive_and_wait();
            for (int i = 0; i < per_thread; ++i) {
                const auto kind = (i % 4 == 0) ? admit_kind::session : admit_kind::work;
                const auto a = g.admit(1024, kind);
                ++seen[static_cast<std::size_t>(t)][static_cast<std::size_t>(a.reason)];
                // The ledger is charged and released from this thread too.
                g.ledger().charge(memgov::category::sessions, 64);
                g.ledger().release(memgov::category::sessions, 64);
            }
        });
    }
    std::thread mover{[&] {
        start.arrive_and_wait();
        int i = 0;
        while (!done.load()) {
            tree.set_usage("/app", (i++ % 2 == 0) ? 980 * MiB : 500 * MiB);
            std::this_thread::sleep_for(2ms);
        }
    }};
    for (auto& t : ts) t.join();
    // However the threads were scheduled, let the polling thread run at least once before
    // stopping it (bounded, so a broken poller fails the check below instead of hanging).
    for (int i = 0; i < 10'000 && g.stats().polls == 0; ++i) std::this_thread::sleep_for(1ms);
    done = true;
    mover.join();
    g.stop();
    CHECK_FALSE(g.running());

    std::uint64_t admitted = 0;
    std::uint64_t refused = 0;
    for (const auto& row : seen) {
        admitted += row[0];
        for (std::size_t r = 1; r < row.size(); ++r) refused += row[r];
    }
    CHECK(admitted + refused == std::uint64_t{admitters} * per_thread);
    const auto st = g.stats();
    CHECK(st.admission.admitted[0] + st.admission.admitted[1] == admitted);
    CHECK(st.admission.total_refused() == refused);
    CHECK(g.ledger().bytes(memgov::category::sessions) == 0);
    CHECK(st.polls > 0);
}

TEST_CASE("governor: start and stop are idempotent and stop joins", "[governor][concurrency]") {
    auto tree = memgov_test::fake_cgroup_tree::v2("/app");
    memgov::governor_config cfg = on_fake_tree(tree, 100 * MiB);
    cfg.poll_period = 1ms;
    memgov::governor<> g{cfg};
    g.start();
    g.start();
    CHECK(g.running());
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (g.stats().polls < 3 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
    }
    CHECK(g.stats().polls >= 3);
    g.stop();
    g.stop();
    CHECK_FALSE(g.running());
}

// A level subscriber on the governor's own thread stops it: the thread ends after that poll,
// `running()` (also from the callback, while a stop() elsewhere waits) does not hang, and a
// later stop() or start() joins it.
TEST_CASE("governor: stop from inside a callback on the polling thread", "[governor][concurrency]") {
    auto tree = memgov_test::fake_cgroup_tree::v2("/app");
    memgov::governor_config cfg = on_fake_tree(tree, 100 * MiB);
    cfg.poll_period = 1ms;
    cfg.monitor.sample_period = 1ms;
    memgov::governor<> g{cfg};
    std::atomic<int> stops{0};
    std::atomic<bool> saw_running{false};
    auto sub = g.monitor().subscribe([&](const memgov::level_change&) {
        saw_running.store(g.running());
        g.stop(); // on the polling thread: only asks
        stops.fetch_add(1);
        CHECK_FALSE(g.running());
    });
    g.start();
    tree.set_usage("/app", 800 * MiB); // 78%: high, a level change
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (stops.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    REQUIRE(stops.load() >= 1);
    CHECK(saw_running.load());
    CHECK_FALSE(g.running());
    // The thread has ended or is ending; start() waits for it and starts a new one.
    tree.set_usage("/app", 100 * MiB);
    g.start();
    CHECK(g.running());
    g.stop();
    CHECK_FALSE(g.running());
}

namespace {
// A part a reclaimer works on, and the reclaimer. Every call the governor makes checks that
// the part is still registered; the test marks it retired right after unregistering it.
struct part {
    std::atomic<bool> retired{false};
    std::atomic<std::uint64_t> calls{0};
};

struct part_reclaimer final : memgov::reclaimer {
    part& p;
    std::atomic<std::uint64_t>& violations;
    part_reclaimer(part& x, std::atomic<std::uint64_t>& v) : p{x}, violations{v} {}
    void use() const noexcept {
        if (p.retired.load()) violations.fetch_add(1);
        p.calls.fetch_add(1);
    }
    std::string_view name() const noexcept override {
        use();
        return "part";
    }
    bool handles(reclaim_action a) const noexcept override { return a == reclaim_action::trim_pools; }
    std::size_t estimate(reclaim_action) const noexcept override { return 0; }
    memgov::reclaim_result reclaim(const memgov::reclaim_request&) noexcept override {
        use();
        return {};
    }
    void collect(memgov::metric_sink& sink) const override {
        use();
        sink.sample("part_calls", "Calls", memgov::metric_type::counter, {}, 1.0);
    }
    double reuse_rate() const noexcept override {
        use();
        return 0.5;
    }
};

struct null_sink final : memgov::metric_sink {
    void sample(std::string_view, std::string_view, memgov::metric_type, std::initializer_list<memgov::metric_label>,
                double) override {}
};
} // namespace

// Parts come and go while the polling thread steps at high pressure and another thread reads
// stats, health and metrics: once unregister_reclaimer returns, nothing calls the part again.
TEST_CASE("governor: unregistering races steps and reports", "[governor][concurrency]") {
    auto tree = memgov_test::fake_cgroup_tree::v2("/app");
    memgov::governor_config cfg = on_fake_tree(tree, 900 * MiB); // high: a step every poll
    cfg.monitor.sample_period = 1ms;
    cfg.poll_period = 1ms;
    cfg.step_period = 1ms;
    memgov::governor<> g{cfg, memgov::steady_clock{}, [] {}, [] { return std::size_t{0}; }};
    g.start();

    std::atomic<std::uint64_t> violations{0};
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> reports{0};
    std::thread reporter{[&] {
        null_sink sink;
        while (!done.load()) {
            (void)g.stats();
            (void)g.health();
            g.collect(sink);
            reports.fetch_add(1);
        }
    }};

    constexpr int rounds = 200;
    std::vector<std::unique_ptr<part>> parts; // freed only at the end: a late call is counted
    std::uint64_t used_while_registered = 0;
    for (int i = 0; i < rounds; ++i) {
        parts.push_back(std::make_unique<part>());
        part& p = *parts.back();
        auto r = std::make_shared<part_reclaimer>(p, violations);
        g.register_reclaimer(r);
        // Wait (bounded) until something used it, so removal races real calls.
        for (int w = 0; w < 200 && p.calls.load() == 0; ++w) std::this_thread::sleep_for(50us);
        REQUIRE(g.unregister_reclaimer(*r));
        p.retired.store(true);
        used_while_registered += p.calls.load() > 0 ? 1 : 0;
    }
    // Give the poller and the reporter time to make a late call, if they were going to.
    std::this_thread::sleep_for(20ms);
    done = true;
    reporter.join();
    g.stop();

    CHECK(violations.load() == 0);
    CHECK(used_while_registered > rounds / 2);
    CHECK(reports.load() > 0);
    CHECK(g.stats().reclaimers.empty());
}

// Callbacks inside the polling thread's steps read the governor and toggle a reclaimer's
// registration, while a reporter thread reads it and re-registers from inside its visits and a
// third thread registers and unregisters from outside: nothing throws, hangs or races, and
// every read sees the registered reader.
TEST_CASE("governor: callbacks read and re-register while other threads report and register",
          "[governor][concurrency]") {
    auto tree = memgov_test::fake_cgroup_tree::v2("/app");
    memgov::governor_config cfg = on_fake_tree(tree, 900 * MiB); // critical: a step every poll
    cfg.monitor.sample_period = 1ms;
    cfg.poll_period = 1ms;
    cfg.step_period = 1ms;
    memgov::governor<> g{cfg, memgov::steady_clock{}, [] {}, [] { return std::size_t{0}; }};
    const auto noop = [](const memgov::reclaim_request&) { return memgov::reclaim_result{}; };
    const auto churn =
        std::make_shared<memgov::function_reclaimer>("churn", std::vector{reclaim_action::trim_pools}, noop);
    const auto visited =
        std::make_shared<memgov::function_reclaimer>("visited", std::vector{reclaim_action::trim_pools}, noop);
    std::atomic<std::uint64_t> inner_reads{0};
    std::atomic<std::uint64_t> f_level{0}, f_seen{0}, f_throw{0}, f_unreg{0}, f_count{0};
    const auto reader = std::make_shared<memgov::function_reclaimer>(
        "reader", std::vector{reclaim_action::evict_over_cost}, [&](const memgov::reclaim_request&) {
            null_sink sink;
            if (g.health().level < pressure_level::high) f_level.fetch_add(1);
            bool seen = false;
            for (const auto& r : g.stats().reclaimers) seen = seen || r.name == "reader";
            if (!seen) f_seen.fetch_add(1);
            g.collect(sink);
            if (!g.unregister_reclaimer(*churn)) g.register_reclaimer(churn); // deferred
            inner_reads.fetch_add(1);
            return memgov::reclaim_result{};
        });
    g.register_reclaimer(reader);
    g.start();

    std::latch go{3};
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> visits{0};
    std::thread reporter{[&] {
        go.arrive_and_wait();
        null_sink sink;
        while (!done.load()) {
            (void)g.health();
            g.collect(sink);
            g.evictor().for_each_reclaimer([&](const memgov::reclaimer& r) {
                if (r.name() != "reader") return;
                (void)g.stats(); // nested visit
                try {
                    if (!g.unregister_reclaimer(*visited)) g.register_reclaimer(visited); // deferred
                } catch (const std::invalid_argument&) {
                    f_throw.fetch_add(1);
                }
            });
            visits.fetch_add(1);
        }
    }};
    std::thread registrar{[&] {
        go.arrive_and_wait();
        while (!done.load()) {
            auto own = std::make_shared<memgov::function_reclaimer>(
                "own", std::vector{reclaim_action::trim_pools},
                [](const memgov::reclaim_request&) { return memgov::reclaim_result{}; });
            g.register_reclaimer(own);
            if (!g.unregister_reclaimer(*own)) f_unreg.fetch_add(1);
            if (own.use_count() != 1) f_count.fetch_add(1); // removed at once from outside
        }
    }};
    go.arrive_and_wait();
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while ((inner_reads.load() < 50 || visits.load() < 50) && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
    }
    done = true;
    reporter.join();
    registrar.join();
    g.stop();

    CHECK(f_level.load() == 0);
    CHECK(f_seen.load() == 0);
    CHECK(f_throw.load() == 0);
    CHECK(f_unreg.load() == 0);
    CHECK(f_count.load() == 0);
    CHECK(inner_reads.load() >= 50);
    CHECK(visits.load() >= 50);
    std::vector<std::string> names;
    for (const auto& r : g.stats().reclaimers) names.push_back(r.name);
    REQUIRE_FALSE(names.empty());
    CHECK(names[0] == "reader");
    CHECK(std::count(names.begin(), names.end(), "own") == 0);
    CHECK(g.stats().evictor.deferred_changes > 0);
}
