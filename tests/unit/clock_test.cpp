#include <memgov/clock.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

TEST_CASE("clock: steady_clock is monotonic", "[clock]") {
    memgov::steady_clock c;
    const auto a = c.now();
    const auto b = c.now();
    CHECK(b >= a);
    STATIC_REQUIRE(noexcept(c.now()));
}

TEST_CASE("clock: manual_clock moves only when told", "[clock]") {
    memgov::manual_clock c;
    const auto t0 = c.now();
    CHECK(t0.time_since_epoch() == memgov::manual_clock::start_offset);
    CHECK(c.now() == t0);
    c.advance(5s);
    CHECK(c.now() - t0 == 5s);
    c.advance(-3s); // ignored: steady clocks never go back
    CHECK(c.now() - t0 == 5s);
    c.set(t0 + 7s);
    CHECK(c.now() - t0 == 7s);
    c.set(t0 + 1s); // earlier than now: ignored
    CHECK(c.now() - t0 == 7s);
}

TEST_CASE("clock: manual_clock copies share one timeline", "[clock]") {
    memgov::manual_clock test_side;
    const memgov::manual_clock component_side = test_side;
    test_side.advance(10min);
    CHECK(component_side.now() == test_side.now());
    memgov::manual_clock independent;
    CHECK(independent.now() != test_side.now());
}

TEST_CASE("clock: manual_clock advances from many threads add up", "[clock]") {
    memgov::manual_clock c;
    const auto t0 = c.now();
    std::vector<std::jthread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([c]() mutable {
            for (int i = 0; i < 1000; ++i) c.advance(1ms);
        });
    }
    threads.clear();
    CHECK(c.now() - t0 == 4000ms);
}
