#include <memgov/ledger.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <latch>
#include <thread>
#include <vector>

using memgov::category;

// Many threads charge and release; totals must be exact after join, and reads during the run
// must never crash or tear (TSan checks the memory model).
TEST_CASE("ledger: concurrent charges are exact after join", "[ledger][concurrency]") {
    memgov::ledger l;
    const category user = l.define("user");
    constexpr int threads = 4;
    constexpr int iterations = 20000;
    std::latch start{threads + 1};
    std::atomic<bool> done{false};
    std::atomic<std::int64_t> reads{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            start.arrive_and_wait();
            const auto c = (t % 2 == 0) ? category::pool_in_use : user;
            for (int i = 0; i < iterations; ++i) {
                l.charge(c, 3);
                if (i % 3 == 0) l.release(c, 2);
                // Halfway, wait for the reader to have read at least once, so reads and
                // charges overlap however the threads are scheduled.
                if (t == 0 && i == iterations / 2) {
                    while (reads.load() == 0) std::this_thread::yield();
                }
            }
        });
    }
    std::atomic<bool> negative{false};
    std::thread reader{[&] {
        start.arrive_and_wait();
        while (!done.load()) {
            if (l.total() < 0) negative = true; // every partial sum is non-negative here
            (void)l.snapshot();
            ++reads;
        }
    }};
    for (auto& w : workers) w.join();
    done = true;
    reader.join();
    CHECK(reads.load() > 0);
    CHECK_FALSE(negative.load());
    const std::int64_t per_thread = 3LL * iterations - 2LL * ((iterations + 2) / 3);
    CHECK(l.bytes(category::pool_in_use) == 2 * per_thread);
    CHECK(l.bytes(user) == 2 * per_thread);
    CHECK(l.total() == 4 * per_thread);
}

TEST_CASE("ledger: thread churn reuses slots and keeps sums", "[ledger][concurrency]") {
    memgov::ledger l;
    constexpr int waves = 20;
    constexpr int per_wave = 4;
    for (int w = 0; w < waves; ++w) {
        std::latch start{per_wave};
        std::vector<std::thread> ts;
        for (int t = 0; t < per_wave; ++t) {
            ts.emplace_back([&] {
                start.arrive_and_wait();
                for (int i = 0; i < 100; ++i) l.charge(category::windows, 1);
            });
        }
        for (auto& t : ts) t.join();
    }
    CHECK(l.bytes(category::windows) == waves * per_wave * 100);
    CHECK(l.slot_count() <= static_cast<std::size_t>(per_wave));
}
