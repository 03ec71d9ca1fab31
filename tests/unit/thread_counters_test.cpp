// SPDX-License-Identifier: MIT
// The per-thread counter block behind the ledger's categories and the admission counters.
#include <memgov/detail/thread_counters.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <latch>
#include <thread>
#include <type_traits>
#include <vector>

using memgov::detail::thread_counters;

namespace {

// Adds from a thread-exit destructor that runs after the thread's claim list has given its
// slot back (it is constructed before the list, so destroyed after it).
struct late_adder {
    thread_counters* counters;
    ~late_adder() { counters->add(3, 100, 4, 1000); }
};

} // namespace

TEST_CASE("thread_counters: adds and sums per counter", "[thread_counters]") {
    thread_counters c;
    CHECK(c.slot_count() == 0);
    CHECK(c.sums() == std::array<std::int64_t, thread_counters::counter_count>{});
    c.add(0, 5);
    c.add(0, -2);
    c.add(15, 7);
    c.add(1, 10, 2, -4);
    CHECK(c.sum(0) == 3);
    CHECK(c.sum(1) == 10);
    CHECK(c.sum(2) == -4);
    CHECK(c.sum(15) == 7);
    CHECK(c.sum(3) == 0);
    CHECK(c.sum(thread_counters::counter_count) == 0); // out of range reads as 0
    const auto s = c.sums();
    CHECK(s[0] == 3);
    CHECK(s[1] == 10);
    CHECK(s[2] == -4);
    CHECK(s[15] == 7);
    CHECK(c.slot_count() == 1);
    // Another block in the same thread is separate.
    thread_counters d;
    d.add(0, 1);
    CHECK(d.sum(0) == 1);
    CHECK(c.sum(0) == 3);
}

TEST_CASE("thread_counters: adds and reads are noexcept", "[thread_counters]") {
    thread_counters c;
    STATIC_REQUIRE(noexcept(c.add(0, 1)));
    STATIC_REQUIRE(noexcept(c.add(0, 1, 1, 1)));
    STATIC_REQUIRE(noexcept(c.sum(0)));
    STATIC_REQUIRE(noexcept(c.sums()));
    STATIC_REQUIRE(noexcept(c.slot_count()));
    STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<thread_counters>);
    STATIC_REQUIRE_FALSE(std::is_move_constructible_v<thread_counters>);
}

TEST_CASE("thread_counters: a thread's sums survive its exit and its slot is reused", "[thread_counters]") {
    thread_counters c;
    c.add(0, 1); // the main thread's slot
    for (int round = 0; round < 5; ++round) {
        std::thread t{[&] { c.add(0, 10, 1, 2); }};
        t.join();
    }
    CHECK(c.sum(0) == 51);
    CHECK(c.sum(1) == 10);
    CHECK(c.slot_count() == 2); // one for main, one adopted by each thread in turn
}

TEST_CASE("thread_counters: threads past the slot limit share the overflow slot, nothing lost", "[thread_counters]") {
    constexpr std::size_t limit = 2;
    constexpr int threads = 5;
    constexpr int adds = 1000;
    thread_counters c{limit};
    // Every thread adds, then waits until all have added: so all hold their slot at once and
    // the threads past the limit must use the shared slot.
    std::latch added{threads};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            for (int i = 0; i < adds; ++i) c.add(static_cast<std::size_t>(t % 2), 1, 5, 3);
            added.arrive_and_wait();
            for (int i = 0; i < adds; ++i) c.add(7, -1);
        });
    }
    for (auto& t : ts) t.join();
    CHECK(c.slot_count() == limit);
    CHECK(c.sum(0) == 3 * adds); // threads 0, 2, 4
    CHECK(c.sum(1) == 2 * adds); // threads 1, 3
    CHECK(c.sum(5) == 3 * threads * adds);
    CHECK(c.sum(7) == -threads * adds);
}

TEST_CASE("thread_counters: no slot limit means every add is shared, nothing lost", "[thread_counters]") {
    thread_counters c{0};
    c.add(0, 4);
    std::thread t{[&] { c.add(0, 6, 1, 1); }};
    t.join();
    CHECK(c.sum(0) == 10);
    CHECK(c.sum(1) == 1);
    CHECK(c.slot_count() == 0);
}

TEST_CASE("thread_counters: adds from late thread-exit destructors are kept", "[thread_counters]") {
    thread_counters c;
    std::thread t{[&] {
        thread_local late_adder late{&c};
        (void)late;
        c.add(3, 1); // claims the slot (and the thread's claim list, after `late`)
    }};
    t.join();
    CHECK(c.sum(3) == 101);
    CHECK(c.sum(4) == 1000);
    CHECK(c.slot_count() == 1); // the late adds claimed no slot
    // The slot the thread gave back is adopted by the next thread and continues its sum.
    std::thread u{[&] { c.add(3, 1); }};
    u.join();
    CHECK(c.sum(3) == 102);
    CHECK(c.slot_count() == 1);
}
