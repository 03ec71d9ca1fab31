#include <memgov/governor.hpp>

#include "fake_cgroup.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <latch>
#include <memory>
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
