// SPDX-License-Identifier: MIT
// session_map under threads. Catch2 assertions are not thread-safe, so threads count what they
// see and the test checks after join. Every test prints its seed.
#include <memgov/session_map.hpp>

#include "session_map_support.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <latch>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>
#include <vector>

using namespace std::chrono_literals;
using memgov::evict_reason;

namespace {

std::uint64_t seed_for(const char* test) {
    const auto seed = static_cast<std::uint64_t>(std::random_device{}());
    std::printf("%s: seed %llu\n", test, static_cast<unsigned long long>(seed));
    return seed;
}

// A value that records how many callbacks are inside it, so on_evict can check it runs only
// after the last one left, and carries a unique id so each removal is seen exactly once.
struct session {
    static inline std::atomic<std::uint64_t> next_id{1};
    std::uint64_t id = next_id.fetch_add(1);
    std::int64_t value = 0;
    mutable std::atomic<int> inside{0};

    explicit session(std::int64_t v = 0) : value{v} {}
    session(session&& o) noexcept : id{o.id}, value{o.value} {}
    session& operator=(session&&) = delete;
    session(const session&) = delete;
    session& operator=(const session&) = delete;
    ~session() = default;
};

using smap = memgov::session_map<std::uint64_t, session, memgov::manual_clock>;

struct removal_log {
    std::mutex mutex;
    std::set<std::uint64_t> ids;
    std::atomic<std::uint64_t> calls{0};
    std::atomic<std::uint64_t> duplicates{0};
    std::atomic<std::uint64_t> while_inside{0};
    std::array<std::atomic<std::uint64_t>, memgov::evict_reason_count> by_reason{};

    void add(const session& s, evict_reason r) {
        calls.fetch_add(1);
        by_reason[static_cast<std::size_t>(r)].fetch_add(1);
        if (s.inside.load() != 0) while_inside.fetch_add(1);
        std::lock_guard lock{mutex};
        if (!ids.insert(s.id).second) duplicates.fetch_add(1);
    }
};

} // namespace

// libcuckoo's stress_checked: each worker owns its keys (inserted as no_evict, so pressure
// eviction spares them) and checks every result against a private model, while another thread
// inserts expendable sessions and a third sweeps and runs every kind of pressure eviction.
namespace {

void run_stress(int ops) {
    const std::uint64_t seed = seed_for("session_map stress");
    CAPTURE(seed);
    memgov::manual_clock clock;
    memgov::ledger accounting;
    removal_log log;
    std::atomic<std::uint64_t> worker_evicted_by_pressure{0};
    memgov::session_map_config c;
    c.shards = 8;
    c.idle_ttl = memgov::session_map_config::never;
    c.absolute_ttl = memgov::session_map_config::never;
    c.suspicious_age = memgov::session_map_config::never;
    c.ended_grace = 0s;
    c.lru_samples = 8;
    smap::hooks_type hooks;
    constexpr std::uint64_t victim_base = 1ULL << 40;
    hooks.on_evict = [&](const std::uint64_t& k, session& s, evict_reason r) {
        log.add(s, r);
        if (k < victim_base && r != evict_reason::erased && r != evict_reason::replaced && r != evict_reason::cleared) {
            worker_evicted_by_pressure.fetch_add(1);
        }
    };
    constexpr int workers = 3;
    constexpr std::uint64_t keys_per_worker = 128;
    struct tally {
        std::uint64_t mismatches = 0;
        std::uint64_t operations = 0;
        std::unordered_map<std::uint64_t, std::int64_t> model;
    };
    std::vector<tally> tallies(workers);
    std::atomic<int> running{workers};
    std::atomic<std::uint64_t> sweeper_rounds{0};
    {
        smap m{c, hooks, clock, &accounting};
        std::latch start{workers + 2};
        std::vector<std::thread> threads;
        for (int t = 0; t < workers; ++t) {
            threads.emplace_back([&, t] {
                std::mt19937_64 rng{seed + static_cast<std::uint64_t>(t)};
                tally& my = tallies[static_cast<std::size_t>(t)];
                auto& model = my.model;
                const memgov::session_options keep{.no_evict = true, .cost = 0};
                start.arrive_and_wait();
                for (int i = 0; i < ops; ++i) {
                    // Halfway, wait for a sweeper round, so sweeps, evictions and the checked
                    // operations overlap however the threads are scheduled.
                    if (t == 0 && i == ops / 2) {
                        while (sweeper_rounds.load() == 0) std::this_thread::yield();
                    }
                    const std::uint64_t key = static_cast<std::uint64_t>(t) * 1'000'000 + rng() % keys_per_worker;
                    const auto v = static_cast<std::int64_t>(rng() % 1000);
                    const bool present = model.count(key) != 0;
                    bool ok = true;
                    switch (rng() % 9) {
                    case 0: {
                        const bool inserted = m.insert(
                            key, [v] { return session{v}; }, keep);
                        ok = inserted == !present;
                        if (inserted) model[key] = v;
                        break;
                    }
                    case 1:
                        ok = m.upsert(
                                 key, [v] { return session{v}; }, keep) == !present;
                        model[key] = v;
                        break;
                    case 2: {
                        const bool inserted = m.upsert(
                            key, [v] { return session{v}; }, [v](session& s) { s.value += v; }, keep);
                        ok = inserted == !present;
                        if (inserted) {
                            model[key] = v;
                        } else {
                            model[key] += v;
                        }
                        break;
                    }
                    case 3:
                    case 4: {
                        const bool found = m.with(key, [v](session& s, smap::entry& e) {
                            s.value += v;
                            e.set_cost(v * 100);
                        });
                        ok = found == present;
                        if (found) model[key] += v;
                        break;
                    }
                    case 5: {
                        std::int64_t seen = -1;
                        const bool found = m.with_shared(key, [&](const session& s) { seen = s.value; });
                        ok = found == present && (!found || seen == model[key]);
                        break;
                    }
                    case 6:
                        ok = m.erase(key) == present;
                        model.erase(key);
                        break;
                    case 7: {
                        const auto info = m.info(key);
                        ok = info.has_value() == present && (!info || info->no_evict);
                        break;
                    }
                    default:
                        ok = m.contains(key) == present;
                        break;
                    }
                    my.mismatches += ok ? 0 : 1;
                    ++my.operations;
                }
                running.fetch_sub(1);
            });
        }
        // Expendable sessions: some ended (the sweep takes them), some large (cost eviction).
        threads.emplace_back([&] {
            std::mt19937_64 rng{seed ^ 0x5eedULL};
            start.arrive_and_wait();
            std::uint64_t next = victim_base;
            while (running.load() > 0) {
                const std::uint64_t key = next++;
                m.insert(key, [] { return session{}; },
                         {.no_evict = false, .cost = static_cast<std::int64_t>(rng() % (1 << 20))});
                if (rng() % 3 == 0) m.mark_ended(key);
                if (rng() % 7 == 0) m.with(key, [](session& s) { s.value = 1; });
                if (next % 512 == 0) std::this_thread::yield();
            }
        });
        threads.emplace_back([&] {
            start.arrive_and_wait();
            while (running.load() > 0) {
                clock.advance(1ms);
                (void)m.sweep(clock.now(), 64);
                (void)m.evict_over_cost(512 * 1024, 64);
                (void)m.evict_lru_until(m.total_cost() / 2, 64);
                (void)m.evict_older_than(5ms, 64);
                (void)m.evict_largest(4, 64);
                (void)m.stats();
                sweeper_rounds.fetch_add(1);
            }
        });
        for (auto& th : threads) th.join();

        for (int t = 0; t < workers; ++t) {
            const tally& my = tallies[static_cast<std::size_t>(t)];
            CHECK(my.operations == static_cast<std::uint64_t>(ops));
            CHECK(my.mismatches == 0);
            for (std::uint64_t i = 0; i < keys_per_worker; ++i) {
                const std::uint64_t key = static_cast<std::uint64_t>(t) * 1'000'000 + i;
                const auto it = my.model.find(key);
                std::int64_t seen = -1;
                const bool found = m.inspect(key, [&](const session& s) { seen = s.value; });
                CHECK(found == (it != my.model.end()));
                if (found && it != my.model.end()) CHECK(seen == it->second);
            }
        }
        CHECK(worker_evicted_by_pressure.load() == 0);
        CHECK(sweeper_rounds.load() > 0);
        const auto st = m.stats();
        CHECK(st.evictions_total() == log.calls.load()); // everything removed so far has called back
        // The map still works after the storm: an ended session goes at the next sweep.
        const std::uint64_t ended_before = log.by_reason[static_cast<std::size_t>(evict_reason::ended)].load();
        m.insert(victim_base - 1, [] { return session{}; });
        m.mark_ended(victim_base - 1);
        clock.advance(1ms);
        while (!m.sweep(clock.now(), 1024).complete) {
        }
        CHECK(log.by_reason[static_cast<std::size_t>(evict_reason::ended)].load() > ended_before);
        m.clear();
        const auto end = m.stats();
        CHECK(end.size == 0);
        CHECK(end.total_cost == 0);
        // Every inserted session left exactly once, and its callback saw it unheld.
        CHECK(log.calls.load() == end.inserts);
        CHECK(end.evictions_total() == end.inserts);
        CHECK(log.duplicates.load() == 0);
        CHECK(log.while_inside.load() == 0);
        CHECK(accounting.bytes(memgov::category::sessions) == 0); // every cost given back
        CHECK(accounting.bytes(memgov::category::session_storage) == static_cast<std::int64_t>(end.structure_bytes));
    }
    CHECK(accounting.bytes(memgov::category::sessions) == 0);
    CHECK(accounting.bytes(memgov::category::session_storage) == 0);
}

} // namespace

TEST_CASE("session_map: random operations on disjoint keys are exact under sweeps and evictions",
          "[session_map][concurrency]") {
    run_stress(6000);
}

TEST_CASE("session_map: long stress on disjoint keys under sweeps and evictions",
          "[session_map][concurrency][.][stress]") {
    run_stress(200000);
}

// Threads fight over the same few keys: erase, replace, insert, evict, and erase from inside
// their own callbacks. Whatever the interleaving, each session is reported exactly once, never
// while a callback is inside it, and the number of callbacks equals the number of removals.
TEST_CASE("session_map: the callback count equals removals when threads race on the same keys",
          "[session_map][concurrency]") {
    const std::uint64_t seed = seed_for("session_map races");
    CAPTURE(seed);
    memgov::manual_clock clock;
    removal_log log;
    memgov::session_map_config c;
    c.shards = 2;
    c.idle_ttl = 2ms;
    c.absolute_ttl = memgov::session_map_config::never;
    c.suspicious_age = memgov::session_map_config::never;
    c.ended_grace = 0s;
    c.lru_samples = 4;
    smap::hooks_type hooks;
    hooks.on_evict = [&](const std::uint64_t&, session& s, evict_reason r) { log.add(s, r); };
    constexpr int threads_n = 4;
    constexpr int ops = 5000;
    constexpr std::uint64_t keys = 24;
    std::uint64_t inserts = 0;
    {
        smap m{c, hooks, clock};
        std::latch start{threads_n};
        std::vector<std::thread> threads;
        for (int t = 0; t < threads_n; ++t) {
            threads.emplace_back([&, t] {
                std::mt19937_64 rng{seed + static_cast<std::uint64_t>(t) * 7919};
                start.arrive_and_wait();
                for (int i = 0; i < ops; ++i) {
                    const std::uint64_t key = rng() % keys;
                    switch (rng() % 10) {
                    case 0:
                        m.erase(key);
                        break;
                    case 1:
                        m.upsert(key, [] { return session{}; });
                        break;
                    case 2:
                        m.insert(key, [] { return session{}; }, {.no_evict = false, .cost = 1000});
                        break;
                    case 3:
                        m.with(key, [&](session& s, smap::entry& e) {
                            s.inside.fetch_add(1);
                            if (rng() % 4 == 0) m.erase(key); // removes the entry we hold
                            if (rng() % 4 == 0) m.upsert(key, [] { return session{}; });
                            e.set_cost(static_cast<std::int64_t>(rng() % 5000));
                            std::this_thread::yield();
                            s.inside.fetch_sub(1);
                        });
                        break;
                    case 4:
                        m.with_shared(key, [](const session& s) {
                            s.inside.fetch_add(1);
                            std::this_thread::yield();
                            s.inside.fetch_sub(1);
                        });
                        break;
                    case 5:
                        m.mark_ended(key);
                        break;
                    case 6:
                        (void)m.evict_lru_until(0, 8);
                        break;
                    case 7:
                        (void)m.evict_largest(2);
                        break;
                    case 8:
                        clock.advance(1ms);
                        (void)m.sweep(clock.now(), 16);
                        break;
                    default:
                        (void)m.evict_older_than(0ms, 4);
                        break;
                    }
                }
            });
        }
        for (auto& th : threads) th.join();
        const auto st = m.stats();
        CHECK(st.evictions_total() == log.calls.load());
        CHECK(st.size + st.evictions_total() == st.inserts);
        CHECK(st.pinned_at_eviction > 0);
        inserts = st.inserts;
    }
    CHECK(log.calls.load() == inserts); // the destructor reported the rest
    CHECK(log.duplicates.load() == 0);
    CHECK(log.while_inside.load() == 0);
}

// Holders keep an entry pinned in long callbacks while another thread keeps removing it: the
// callback of each removed session runs once, after every holder has left.
TEST_CASE("session_map: eviction while pinned defers the callback to the last unpin", "[session_map][concurrency]") {
    const std::uint64_t seed = seed_for("session_map pins");
    CAPTURE(seed);
    memgov::manual_clock clock;
    removal_log log;
    memgov::session_map_config c;
    c.shards = 1;
    smap::hooks_type hooks;
    hooks.on_evict = [&](const std::uint64_t&, session& s, evict_reason r) { log.add(s, r); };
    constexpr int holders = 3;
    constexpr int rounds = 1500;
    std::atomic<bool> stop{false};
    std::uint64_t inserts = 0;
    {
        smap m{c, hooks, clock};
        std::latch start{holders + 1};
        std::vector<std::thread> threads;
        for (int t = 0; t < holders; ++t) {
            threads.emplace_back([&, t] {
                start.arrive_and_wait();
                while (!stop.load()) {
                    m.with_shared(static_cast<std::uint64_t>(t % 2), [](const session& s) {
                        s.inside.fetch_add(1);
                        std::this_thread::yield();
                        s.inside.fetch_sub(1);
                    });
                }
            });
        }
        threads.emplace_back([&] {
            std::mt19937_64 rng{seed};
            start.arrive_and_wait();
            for (int i = 0; i < rounds; ++i) {
                const std::uint64_t key = rng() % 2;
                m.upsert(key, [] { return session{}; });
                if (rng() % 2 == 0) m.erase(key);
                if (rng() % 8 == 0) std::this_thread::yield();
            }
            stop.store(true);
        });
        for (auto& th : threads) th.join();
        inserts = m.stats().inserts;
        CHECK(inserts == static_cast<std::uint64_t>(rounds));
    }
    CHECK(log.calls.load() == inserts);
    CHECK(log.duplicates.load() == 0);
    CHECK(log.while_inside.load() == 0);
}

// Shared holders of one entry touch it at once: the touch is taken under the shard lock with
// plain stores (no locked read-modify-write on the entry), and must still count every access
// and move last-active to the latest tick given, never back. A writer and `mark_ended` race
// with them.
TEST_CASE("session_map: concurrent touches of one entry count every access exactly", "[session_map][concurrency]") {
    const std::uint64_t seed = seed_for("session_map touches");
    CAPTURE(seed);
    memgov::manual_clock clock;
    memgov::session_map_config c;
    c.shards = 1;
    c.touch = memgov::touch_time::coarse;
    constexpr int readers = 3;
    constexpr int per_thread = 4000;
    smap m{c, {}, clock};
    REQUIRE(m.insert(7, [] { return session{}; }));
    const memgov::time_point t0 = clock.now();
    std::latch start{readers + 2};
    std::vector<std::thread> threads;
    for (int t = 0; t < readers; ++t) {
        threads.emplace_back([&] {
            start.arrive_and_wait();
            for (int i = 0; i < per_thread; ++i) m.with_shared(7, [](const session&) noexcept {});
        });
    }
    threads.emplace_back([&] {
        start.arrive_and_wait();
        for (int i = 0; i < per_thread; ++i) m.with(7, [](session& s) noexcept { ++s.value; });
    });
    threads.emplace_back([&] {
        std::mt19937_64 rng{seed};
        start.arrive_and_wait();
        for (int i = 1; i <= 200; ++i) {
            m.tick(t0 + std::chrono::milliseconds{i});
            if (i == 100) m.mark_ended(7);
            if (rng() % 4 == 0) std::this_thread::yield();
        }
    });
    for (auto& th : threads) th.join();
    const std::optional<memgov::session_info> info = m.info(7);
    REQUIRE(info.has_value());
    CHECK(info->messages == static_cast<std::uint32_t>((readers + 1) * per_thread));
    CHECK(info->last_active <= t0 + 200ms);
    CHECK(info->ended());
    // One last touch after every tick: last-active is the latest tick.
    m.with_shared(7, [](const session&) noexcept {});
    CHECK(m.info(7)->last_active == t0 + 200ms);
    CHECK(m.stats().hits == static_cast<std::uint64_t>((readers + 1) * per_thread + 1));
}
