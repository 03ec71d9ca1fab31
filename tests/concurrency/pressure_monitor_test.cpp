// SPDX-License-Identifier: MIT
// Concurrency tests of the pressure monitor (run under TSan): the sampler thread against
// readers of level()/snapshot(), ledger writers calling update_estimate(), poll() from other
// threads, and subscribers coming and going while levels change; and the poll thread that
// samples and steps the evictor while a heap trim runs on the heap trimmer's thread.

#include <memgov/evictor.hpp>
#include <memgov/pressure_monitor.hpp>

#include "fake_cgroup.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <random>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using memgov::level_change;
using memgov::pressure_level;
using memgov::pressure_monitor;
using memgov::pressure_monitor_config;
using memgov_test::fake_cgroup_tree;

namespace {

constexpr std::uint64_t MiB = 1024 * 1024;
constexpr std::uint64_t GiB = 1024 * MiB;

pressure_monitor_config fast_config(const fake_cgroup_tree& t) {
    pressure_monitor_config c;
    c.cgroup = t.config();
    c.use_systemd_pressure_env = false;
    c.sample_period = 1ms;
    c.estimate_period = 1ms;
    for (auto& th : c.thresholds) th.dwell = 0s; // let levels move freely
    return c;
}

std::uint32_t seed() {
    const std::uint32_t s = std::random_device{}();
    WARN("seed " << s);
    return s;
}

} // namespace

TEST_CASE("pressure_monitor: sampler thread, ledger writers and readers race cleanly", "[pressure_monitor]") {
    auto tree = fake_cgroup_tree::v2("/app");
    tree.set_limit("/app", GiB);
    tree.set_usage("/app", 100 * MiB);
    memgov::ledger ledger;
    pressure_monitor<> m{fast_config(tree), &ledger};
    // Catch2 v2 assertions are not thread-safe: threads count failures, the test checks them.
    std::atomic<int> bad{0};
    std::atomic<std::uint64_t> changes{0};
    auto sub = m.subscribe([&](const level_change& c) {
        if (c.from == c.to) bad.fetch_add(1);
        changes.fetch_add(1, std::memory_order_relaxed);
    });
    m.start();

    constexpr int writers = 3;
    constexpr int rounds = 2000;
    const std::uint32_t s = seed();
    std::latch go{writers + 2};
    std::atomic<bool> done{false};
    std::vector<std::thread> threads;
    for (int w = 0; w < writers; ++w) {
        threads.emplace_back([&, w] {
            std::mt19937 rng{s + static_cast<std::uint32_t>(w)};
            // Each writer owns a category, so its final balance is exactly checkable.
            const auto cat = static_cast<memgov::category>(w);
            go.arrive_and_wait();
            for (int i = 0; i < rounds; ++i) {
                const auto bytes = static_cast<std::int64_t>(rng() % (64 * MiB));
                ledger.charge(cat, bytes);
                const pressure_level l = m.update_estimate();
                if (memgov::to_index(l) >= memgov::pressure_level_count) bad.fetch_add(1);
                ledger.release(cat, bytes);
            }
        });
    }
    threads.emplace_back([&] { // reader
        go.arrive_and_wait();
        while (!done.load(std::memory_order_acquire)) {
            if (memgov::to_index(m.level()) >= memgov::pressure_level_count) bad.fetch_add(1);
            const auto snap = m.snapshot();
            if (snap.limit_bytes != GiB) bad.fetch_add(1);
        }
    });
    threads.emplace_back([&] { // an event loop polling alongside the sampler thread
        go.arrive_and_wait();
        while (!done.load(std::memory_order_acquire)) m.poll();
    });
    for (int w = 0; w < writers; ++w) threads[static_cast<std::size_t>(w)].join();
    done.store(true, std::memory_order_release);
    for (std::size_t i = writers; i < threads.size(); ++i) threads[i].join();
    m.stop();

    CHECK(bad.load() == 0);
    CHECK(ledger.total() == 0);
    for (int w = 0; w < writers; ++w) CHECK(ledger.bytes(static_cast<memgov::category>(w)) == 0);
    // Quiescent now: one sample gives the exact answer.
    m.sample(memgov::steady_clock{}.now());
    CHECK(m.estimate_bytes() == 100 * MiB);
    CHECK(m.level() == pressure_level::normal);
    CHECK(m.snapshot().sample_count >= 1);
}

TEST_CASE("pressure_monitor: subscribers come and go while levels change", "[pressure_monitor]") {
    auto tree = fake_cgroup_tree::v2("/app");
    tree.set_limit("/app", GiB);
    tree.set_usage("/app", 100 * MiB);
    memgov::ledger ledger;
    pressure_monitor<> m{fast_config(tree), &ledger};
    // Subscribed for the whole run, so at least the first rise is always heard; whether the
    // short-lived subscribers below catch a change depends on scheduling.
    std::atomic<std::uint64_t> steady_calls{0};
    auto steady = m.subscribe([&](const level_change&) { steady_calls.fetch_add(1); });
    m.start();

    constexpr int subscribers = 3;
    const std::uint32_t s = seed();
    std::latch go{subscribers + 1};
    std::atomic<bool> done{false};
    std::atomic<int> violations{0};
    std::atomic<std::uint64_t> total_calls{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < subscribers; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937 rng{s + static_cast<std::uint32_t>(t)};
            go.arrive_and_wait();
            while (!done.load(std::memory_order_acquire)) {
                std::atomic<int> calls{0};
                std::atomic<bool> unsubscribed{false};
                {
                    auto sub = m.subscribe([&](const level_change&) {
                        if (unsubscribed.load(std::memory_order_acquire)) violations.fetch_add(1);
                        calls.fetch_add(1, std::memory_order_relaxed);
                        total_calls.fetch_add(1, std::memory_order_relaxed);
                    });
                    for (auto i = rng() % 50; i > 0; --i) std::this_thread::yield();
                    sub.reset();
                    unsubscribed.store(true, std::memory_order_release);
                }
                // `calls` and `unsubscribed` die here: reset() must have waited for calls in
                // flight, or TSan/ASan report the use after scope.
            }
        });
    }
    threads.emplace_back([&] { // flips the level by charging and releasing a large amount
        go.arrive_and_wait();
        for (int i = 0; i < 3000; ++i) {
            ledger.charge(memgov::category::pool_in_use, static_cast<std::int64_t>(900 * MiB));
            m.update_estimate();
            ledger.release(memgov::category::pool_in_use, static_cast<std::int64_t>(900 * MiB));
            m.poll();
        }
        done.store(true, std::memory_order_release);
    });
    for (auto& t : threads) t.join();
    m.stop();
    CHECK(violations.load() == 0);
    CHECK(steady_calls.load() > 0); // levels really did change while subscribed
    INFO("calls heard by the short-lived subscribers: " << total_calls.load());
    CHECK(ledger.total() == 0);
}

// A subscriber on the sampler thread stops the monitor; other threads call start, stop and
// running at the same time. Nothing hangs, every thread is joined, and TSan sees no race.
TEST_CASE("pressure_monitor: start and stop race, also from a subscriber on the sampler thread", "[pressure_monitor]") {
    fake_cgroup_tree tree = fake_cgroup_tree::v2("/app");
    tree.set_limit("/app", GiB);
    tree.set_usage("/app", 100 * MiB);
    pressure_monitor<> m{fast_config(tree)};
    std::atomic<int> self_stops{0};
    auto sub = m.subscribe([&](const level_change&) {
        m.stop(); // on the sampler thread: only asks
        self_stops.fetch_add(1);
    });
    std::atomic<bool> done{false};
    std::thread flipper{[&] {
        bool high = false;
        while (!done.load()) {
            tree.set_usage("/app", high ? 100 * MiB : 900 * MiB);
            high = !high;
            std::this_thread::sleep_for(2ms);
        }
    }};
    std::vector<std::thread> controllers;
    for (int t = 0; t < 2; ++t) {
        controllers.emplace_back([&m, t] {
            for (int i = 0; i < 50; ++i) {
                if ((i + t) % 3 == 0) {
                    m.stop();
                } else {
                    m.start();
                }
                (void)m.running();
                std::this_thread::sleep_for(1ms);
            }
        });
    }
    for (auto& c : controllers) c.join();
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    m.start();
    while (self_stops.load() == 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
        if (!m.running()) m.start();
    }
    done.store(true);
    flipper.join();
    CHECK(self_stops.load() >= 1);
    m.stop();
    CHECK_FALSE(m.running());
}

// The governor's poll thread samples and steps; the heap trim it asks for blocks on a latch
// on the trimmer's thread for as long as the test wants. Sampling goes on meanwhile, readers
// and ledger writers race both, and the trim's bytes are counted once it completes.
TEST_CASE("pressure_monitor: sampling goes on while a requested heap trim runs", "[pressure_monitor][evictor]") {
    auto tree = fake_cgroup_tree::v2("/app");
    tree.set_limit("/app", GiB);
    tree.set_usage("/app", 750 * MiB);
    memgov::ledger ledger;
    pressure_monitor_config mc;
    mc.cgroup = tree.config();
    mc.use_systemd_pressure_env = false;
    mc.forecast_horizon = 0s;
    pressure_monitor<memgov::manual_clock> m{mc, &ledger, memgov::manual_clock{}};

    std::atomic<std::size_t> rss{400 * MiB};
    std::atomic<int> trims_begun{0};
    std::latch release{1};
    memgov::evictor ev{{},
                       [&] {
                           ++trims_begun;
                           release.wait();
                           rss -= 3 * MiB;
                       },
                       [&] { return rss.load(); }};

    constexpr int polls = 20; // one every 100 ms of the monitor's time
    const memgov::time_point t0 = memgov::manual_clock{}.now();
    std::latch go{4};
    std::latch polled{1};
    std::atomic<bool> done{false};
    std::uint64_t samples_while_trimming = 0;
    std::atomic<bool> step_freed{false};
    std::atomic<bool> went_back{false}; // a reader saw the completed-trim count fall
    std::thread poller{[&] {
        go.arrive_and_wait();
        for (int i = 0; i < polls; ++i) {
            const memgov::time_point t = t0 + i * 100ms;
            (void)m.sample(t);
            memgov::pressure_view v;
            v.level = pressure_level::elevated;
            v.limit_bytes = GiB;
            v.estimate_bytes = m.estimate_bytes();
            v.exit_ratio = 0.65;
            // The step only asks: the trim's bytes come later.
            if (ev.step(v, t).freed != 0) step_freed = true;
        }
        samples_while_trimming = m.snapshot().sample_count;
        polled.count_down();
    }};
    std::vector<std::thread> readers;
    for (int r = 0; r < 2; ++r) {
        readers.emplace_back([&] {
            go.arrive_and_wait();
            std::uint64_t last = 0;
            while (!done.load()) {
                const auto st = ev.stats();
                if (st.heap_trims < last) went_back = true;
                last = st.heap_trims;
                (void)m.estimate_bytes();
                (void)ev.heap_trimmer_started();
            }
        });
    }
    std::thread writer{[&] {
        go.arrive_and_wait();
        for (int i = 0; i < 1000; ++i) {
            ledger.charge(memgov::category::pool_in_use, MiB);
            (void)m.update_estimate(t0);
            ledger.release(memgov::category::pool_in_use, MiB);
        }
    }};

    polled.wait();
    // Every poll sampled although the trim it asked for first has not returned.
    CHECK(samples_while_trimming == polls + 1); // + the constructor's sample
    // The worker may not have been scheduled yet on a loaded machine: wait for it to begin
    // (bounded), then check it began exactly once.
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (trims_begun.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    CHECK(trims_begun == 1);
    auto st = ev.stats();
    CHECK(st.heap_trim_running);
    CHECK(st.heap_trims == 0);
    // Step 0 started it; step 1 (100 ms) was too soon; steps 2..19 were allowed by the
    // back-off but found it running.
    CHECK(st.heap_trims_deferred == 1);
    CHECK(st.heap_trims_coalesced == polls - 2);

    release.count_down();
    ev.wait_for_heap_trim();
    done = true;
    writer.join();
    for (auto& t : readers) t.join();
    poller.join();

    CHECK(!step_freed);
    CHECK(!went_back);
    st = ev.stats();
    CHECK(trims_begun == 1);
    CHECK(st.heap_trims == 1);
    CHECK(!st.heap_trim_running);
    CHECK(st.heap_trimmed_bytes == 3 * MiB);
    CHECK(st.total(memgov::reclaim_action::trim_heap).bytes == 3 * MiB);
    CHECK(st.total(memgov::reclaim_action::trim_heap).runs == polls);
    CHECK(ledger.total() == 0);
}
