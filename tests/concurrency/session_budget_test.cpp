#include <memgov/governor.hpp>
#include <memgov/session_budget.hpp>

#include "fake_cgroup.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <memory>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using memgov::admit_kind;
using memgov::admit_reason;
using memgov::session_budget;

namespace {

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;
constexpr auto sess = static_cast<std::size_t>(admit_kind::session);
constexpr auto work = static_cast<std::size_t>(admit_kind::work);

memgov::governor_config on_fake_tree(memgov_test::fake_cgroup_tree& tree, std::uint64_t usage) {
    tree.set_limit("/app", GiB);
    tree.set_usage("/app", usage);
    memgov::governor_config cfg;
    cfg.monitor.cgroup = tree.config();
    cfg.monitor.use_systemd_pressure_env = false;
    cfg.monitor.forecast_horizon = 0s;
    return cfg;
}

} // namespace

TEST_CASE("session_budget: concurrent session admissions never pass the headroom", "[session_budget][concurrency]") {
    auto tree = memgov_test::fake_cgroup_tree::v2("/app");
    memgov::manual_clock clock;
    memgov::governor<memgov::manual_clock> g{on_fake_tree(tree, GiB / 2), clock, [] {}, [] { return std::size_t{0}; }};
    const std::int64_t headroom = g.admission_headroom();
    constexpr std::size_t x = 3 * MiB;
    constexpr int threads = 4;
    constexpr int per_thread = 100; // 400 sessions, far more than fit
    const auto fit = static_cast<std::uint64_t>(headroom / static_cast<std::int64_t>(x));
    INFO("headroom " << headroom << ", fit " << fit);
    REQUIRE(fit < threads * per_thread);

    std::latch start{threads};
    std::array<std::vector<session_budget>, threads> held;
    std::array<std::uint64_t, threads> refused{};
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            auto& mine = held[static_cast<std::size_t>(t)];
            mine.reserve(per_thread);
            start.arrive_and_wait();
            for (int i = 0; i < per_thread; ++i) {
                auto b = g.admit_session(x);
                if (b)
                    mine.push_back(std::move(b));
                else if (b.refusal() == admit_reason::no_headroom)
                    ++refused[static_cast<std::size_t>(t)];
            }
        });
    }
    for (auto& t : ts) t.join();

    std::uint64_t admitted = 0;
    std::uint64_t no_headroom = 0;
    for (int t = 0; t < threads; ++t) {
        admitted += held[static_cast<std::size_t>(t)].size();
        no_headroom += refused[static_cast<std::size_t>(t)];
    }
    CHECK(admitted == fit); // at most floor(headroom / x), and exactly that many
    CHECK(no_headroom == threads * per_thread - fit);
    const auto s = g.stats().admission;
    CHECK(s.admitted[sess] == fit);
    CHECK(s.refused[sess][static_cast<std::size_t>(admit_reason::no_headroom)] == no_headroom);
    CHECK(s.reserved_bytes == fit * x);
    CHECK(s.headroom_bytes == headroom - static_cast<std::int64_t>(fit * x));
    CHECK(s.sessions == fit);
    for (auto& v : held) v.clear();
    CHECK(g.admission_headroom() == headroom);
    CHECK(g.stats().admission.reserved_bytes == 0);
}

TEST_CASE("session_budget: sessions charge on their threads and release on others while the governor polls",
          "[session_budget][concurrency]") {
    auto tree = memgov_test::fake_cgroup_tree::v2("/app");
    memgov::governor_config cfg = on_fake_tree(tree, GiB / 2);
    cfg.monitor.sample_period = 1ms;
    cfg.poll_period = 1ms;
    memgov::governor<> g{cfg, memgov::steady_clock{}, [] {}, [] { return std::size_t{0}; }};
    g.start();

    constexpr int pairs = 2;
    constexpr int sessions_per_pair = 8;
    constexpr int frames = 2000;
    constexpr std::size_t frame = 4 * KiB;
    constexpr std::size_t declared = 64 * KiB;
    std::latch start{2 * pairs};
    std::array<std::uint64_t, pairs> admitted_frames{};
    std::array<std::uint64_t, pairs> peak{};
    std::vector<std::thread> ts;
    for (int p = 0; p < pairs; ++p) {
        // Shared by the pair: the sessions, and per session how many frames are charged.
        auto budgets = std::make_shared<std::array<session_budget, sessions_per_pair>>();
        auto published = std::make_shared<std::array<std::atomic<int>, sessions_per_pair>>();
        for (auto& b : *budgets) {
            b = g.admit_session(declared);
            REQUIRE(b);
        }
        ts.emplace_back([&, p, budgets, published] { // the reader: admits and charges frames
            start.arrive_and_wait();
            for (int i = 0; i < frames; ++i) {
                for (int s = 0; s < sessions_per_pair; ++s) {
                    auto& b = (*budgets)[static_cast<std::size_t>(s)];
                    if (b.try_charge(frame))
                        ++admitted_frames[static_cast<std::size_t>(p)];
                    else
                        b.charge(frame); // counted as refused, charged anyway so the releaser can pair it
                    peak[static_cast<std::size_t>(p)] =
                        std::max<std::uint64_t>(peak[static_cast<std::size_t>(p)], b.held_bytes());
                    (*published)[static_cast<std::size_t>(s)].fetch_add(1, std::memory_order_release);
                }
            }
        });
        ts.emplace_back([&, budgets, published] { // the delivery report: releases frames
            start.arrive_and_wait();
            std::array<int, sessions_per_pair> released{};
            int left = frames * sessions_per_pair;
            while (left > 0) {
                for (int s = 0; s < sessions_per_pair; ++s) {
                    const auto si = static_cast<std::size_t>(s);
                    const int ready = (*published)[si].load(std::memory_order_acquire);
                    for (; released[si] < ready; ++released[si], --left) (*budgets)[si].release(frame);
                }
                std::this_thread::yield();
            }
        });
        // The pair's threads own the budgets now; they die with the last lambda copy.
    }
    for (auto& t : ts) t.join();
    g.stop();
    ts.clear(); // the last copies of the budgets go here

    std::uint64_t admitted = 0;
    for (auto n : admitted_frames) admitted += n;
    const auto s = g.stats().admission;
    // Usage stays at 50% (normal): nothing is refused, every frame admitted exactly once.
    CHECK(admitted == std::uint64_t{pairs} * sessions_per_pair * frames);
    CHECK(s.admitted[work] == admitted);
    CHECK(s.admitted_bytes[work] == admitted * frame);
    CHECK(s.total_refused() == 0);
    CHECK(s.sessions == 0);
    CHECK(s.reserved_bytes == 0); // every reservation was consumed, then the budgets died
    for (auto m : peak) CHECK(m <= 30 * MiB);
}
