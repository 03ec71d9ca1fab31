#include <memgov/object_pool.hpp>

#include "object_pool_message.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <latch>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using memgov::category;
using memgov::manual_clock;
using memgov::object_handle;
using memgov::pressure_level;
using object_pool_test::counts;
using object_pool_test::message;

namespace {

using pool_t = memgov::object_pool<message, manual_clock>;

memgov::object_pool_config stress_config() {
    memgov::object_pool_config cfg;
    cfg.thread_cache_objects = 8; // small, so spills and refills through the depot happen often
    cfg.reuses_to_promote = 4;
    cfg.max_retained_bytes = 3000; // some releases are oversize and destroyed
    cfg.emergency_reserve = 2;
    cfg.on_stale_handle = memgov::stale_handle_policy::count;
    return cfg;
}

std::uint32_t seed_from_catch() {
    const std::uint32_t seed = Catch::rngSeed() != 0 ? Catch::rngSeed() : std::random_device{}();
    std::printf("object_pool concurrency seed: %u\n", seed);
    return seed;
}

// Runs the trimmer/pressure thread until `stop`: trims with a moving manual clock, cycles
// pressure through every level (emergency included) and reads the observers.
void trimmer(pool_t& pool, manual_clock clk, std::latch& start, const std::atomic<bool>& stop,
             std::atomic<std::uint64_t>& trims) {
    start.arrive_and_wait();
    std::size_t level = 0;
    while (!stop.load(std::memory_order_acquire)) {
        pool.set_pressure(static_cast<pressure_level>(level++ % memgov::pressure_level_count));
        clk.advance(700ms);
        (void)pool.trim();
        (void)pool.idle_bytes();
        (void)pool.stats();
        trims.fetch_add(1, std::memory_order_relaxed);
        std::this_thread::yield();
    }
}

// Every thread acquires and releases its own objects, writes its id and a sequence number
// into them, and checks every handle: live handles resolve to its own object with its own
// contents, released handles are stale, even though other threads reuse the slots at once.
void run_stress(int rounds) {
    object_pool_test::reset_counts();
    const std::uint32_t seed = seed_from_catch();
    CAPTURE(seed);
    manual_clock clk;
    memgov::ledger l;
    auto pool = std::make_unique<pool_t>(stress_config(), &l, clk);

    constexpr int threads = 4;
    std::latch start{threads + 1};
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> trims{0};
    std::atomic<std::uint64_t> bad_live{0}, bad_content{0}, bad_stale{0};
    std::vector<std::uint64_t> acquired(threads, 0), stale_checks(threads, 0);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            std::mt19937 rng{seed + static_cast<std::uint32_t>(t)};
            const auto owner = static_cast<std::uint64_t>(t + 1);
            std::uint64_t seq = 0;
            std::vector<pool_t::lease> held;
            std::vector<object_handle> handles;
            std::vector<std::uint64_t> seqs;
            std::vector<object_handle> released;
            start.arrive_and_wait();
            for (int r = 0; r < rounds; ++r) {
                // Halfway, wait for a trim, so trimming and churn overlap however the threads
                // are scheduled.
                if (t == 0 && r == rounds / 2) {
                    while (trims.load() == 0) std::this_thread::yield();
                }
                const int n = 1 + static_cast<int>(rng() % 8);
                for (int i = 0; i < n; ++i) {
                    auto lease = pool->acquire();
                    ++acquired[static_cast<std::size_t>(t)];
                    if (lease->owner != 0 || !lease->payload.empty()) bad_content.fetch_add(1);
                    lease->owner = owner;
                    lease->seq = ++seq;
                    lease->payload.assign(500 + rng() % 3000, static_cast<std::uint8_t>(owner));
                    handles.push_back(lease.handle());
                    seqs.push_back(seq);
                    held.push_back(std::move(lease));
                }
                // Every live handle resolves to this thread's object with this thread's data.
                for (std::size_t i = 0; i < held.size(); ++i) {
                    message* m = pool->get(handles[i]);
                    if (m != held[i].get())
                        bad_live.fetch_add(1);
                    else if (m->owner != owner || m->seq != seqs[i])
                        bad_content.fetch_add(1);
                }
                // Release a random part, oldest first.
                const std::size_t k = rng() % (held.size() + 1);
                for (std::size_t i = 0; i < k; ++i) {
                    held[i].reset();
                    released.push_back(handles[i]);
                }
                held.erase(held.begin(), held.begin() + static_cast<std::ptrdiff_t>(k));
                handles.erase(handles.begin(), handles.begin() + static_cast<std::ptrdiff_t>(k));
                seqs.erase(seqs.begin(), seqs.begin() + static_cast<std::ptrdiff_t>(k));
                // Released handles stay stale while the slots are reused everywhere.
                for (const auto& h : released) {
                    ++stale_checks[static_cast<std::size_t>(t)];
                    if (pool->get(h) != nullptr) bad_stale.fetch_add(1);
                }
                if (released.size() > 64) released.erase(released.begin(), released.begin() + 32);
            }
        });
    }
    std::thread trim_thread{[&] { trimmer(*pool, clk, start, stop, trims); }};
    for (auto& w : workers) w.join();
    stop.store(true, std::memory_order_release);
    trim_thread.join();

    std::uint64_t total_acquired = 0, total_stale = 0;
    for (int t = 0; t < threads; ++t) {
        total_acquired += acquired[static_cast<std::size_t>(t)];
        total_stale += stale_checks[static_cast<std::size_t>(t)];
    }
    CHECK(bad_live == 0);
    CHECK(bad_content == 0);
    CHECK(bad_stale == 0);
    CHECK(trims > 0);

    const auto st = pool->stats();
    CHECK(st.acquisitions == total_acquired);
    CHECK(st.reuses + st.constructions == st.acquisitions);
    CHECK(st.stale_handles == total_stale);
    CHECK(st.leased_objects == 0);
    CHECK(st.oversize_drops > 0);
    CHECK(st.constructions - st.destructions == st.idle_objects);
    CHECK(static_cast<std::uint64_t>(counts().alive()) == st.idle_objects);
    // The ledger holds the pool's storage (blocks, every thread's cache, shared state) plus
    // the heap the idle objects retain beyond their slots.
    CHECK(static_cast<std::int64_t>(st.charged_bytes) == l.bytes(category::objects));
    CHECK(st.charged_bytes == st.storage_bytes + st.retained_bytes - st.idle_objects * sizeof(message));
    CHECK(st.storage_bytes > st.slot_bytes);
    CHECK(st.idle_bytes == st.retained_bytes); // nothing leased
    CHECK(pool->idle_bytes() == st.idle_bytes);
    pool.reset();
    CHECK(l.bytes(category::objects) == 0);
    CHECK(counts().alive() == 0);
}

} // namespace

TEST_CASE("object_pool: concurrent acquire/release with handle checks and a trimmer", "[object_pool][concurrency]") {
    run_stress(3000);
}

TEST_CASE("object_pool: long concurrent stress", "[object_pool][concurrency][.][stress]") { run_stress(100000); }

// Producers acquire and fill objects, consumers on other threads check and release them:
// objects cross threads in both directions, through the depot.
TEST_CASE("object_pool: leases released on other threads than they were acquired on", "[object_pool][concurrency]") {
    object_pool_test::reset_counts();
    const std::uint32_t seed = seed_from_catch();
    CAPTURE(seed);
    manual_clock clk;
    memgov::ledger l;
    auto pool = std::make_unique<pool_t>(stress_config(), &l, clk);

    struct item {
        pool_t::lease lease;
        object_handle handle;
        std::uint64_t owner;
        std::uint64_t seq;
    };
    std::mutex m;
    std::deque<item> queue;
    constexpr int producers = 2;
    constexpr int consumers = 2;
    constexpr int per_producer = 4000;
    std::latch start{producers + consumers};
    std::atomic<int> produced_done{0};
    std::atomic<std::uint64_t> consumed{0}, bad{0};
    std::vector<std::thread> ts;
    for (int p = 0; p < producers; ++p) {
        ts.emplace_back([&, p] {
            std::mt19937 rng{seed + static_cast<std::uint32_t>(p)};
            start.arrive_and_wait();
            for (int i = 0; i < per_producer; ++i) {
                auto lease = pool->acquire();
                lease->owner = static_cast<std::uint64_t>(p + 1);
                lease->seq = static_cast<std::uint64_t>(i);
                lease->payload.assign(100 + rng() % 2000, 1);
                const object_handle h = lease.handle();
                std::lock_guard lock{m};
                queue.push_back(
                    {std::move(lease), h, static_cast<std::uint64_t>(p + 1), static_cast<std::uint64_t>(i)});
            }
            produced_done.fetch_add(1);
        });
    }
    for (int c = 0; c < consumers; ++c) {
        ts.emplace_back([&] {
            start.arrive_and_wait();
            for (;;) {
                item it{};
                {
                    std::lock_guard lock{m};
                    if (!queue.empty()) {
                        it = std::move(queue.front());
                        queue.pop_front();
                    }
                }
                if (!it.lease) {
                    if (produced_done.load() == producers) {
                        std::lock_guard lock{m};
                        if (queue.empty()) break;
                    }
                    std::this_thread::yield();
                    continue;
                }
                message* obj = pool->get(it.handle);
                if (obj != it.lease.get() || obj->owner != it.owner || obj->seq != it.seq) {
                    bad.fetch_add(1);
                }
                it.lease.reset();
                if (pool->get(it.handle) != nullptr) bad.fetch_add(1);
                consumed.fetch_add(1);
            }
        });
    }
    for (auto& t : ts) t.join();
    CHECK(bad == 0);
    CHECK(consumed == producers * per_producer);
    const auto st = pool->stats();
    CHECK(st.acquisitions == producers * per_producer);
    CHECK(st.leased_objects == 0);
    CHECK(st.stale_handles == producers * per_producer);
    // How much is reused depends on how far producers run ahead of consumers (scheduling);
    // what must hold exactly is that every acquisition was a reuse or a construction.
    CHECK(st.reuses + st.constructions == st.acquisitions);
    CHECK(static_cast<std::int64_t>(st.charged_bytes) == l.bytes(category::objects));
    pool.reset();
    CHECK(l.bytes(category::objects) == 0);
    CHECK(counts().alive() == 0);
}

// Threads come and go while a pool lives; their caches are parked and adopted, and the pool
// can be destroyed while threads that used it are still running.
TEST_CASE("object_pool: thread churn and pool destruction while user threads live", "[object_pool][concurrency]") {
    object_pool_test::reset_counts();
    for (int wave = 0; wave < 10; ++wave) {
        auto pool = std::make_unique<pool_t>(stress_config());
        std::latch start{4};
        std::latch used{4};
        std::latch pool_gone{1};
        std::vector<std::thread> ts;
        for (int t = 0; t < 4; ++t) {
            ts.emplace_back([&] {
                start.arrive_and_wait();
                for (int i = 0; i < 50; ++i) {
                    auto a = pool->acquire();
                    auto b = pool->acquire();
                }
                used.count_down();
                pool_gone.wait(); // exits after the pool is gone: must leave it alone
            });
        }
        used.wait();
        CHECK(pool->stats().leased_objects == 0);
        pool.reset();
        pool_gone.count_down();
        for (auto& t : ts) t.join();
        CHECK(counts().alive() == 0);
    }
}

// The owner of a thread cache churns it in a tight loop (no lock on its side) while another
// thread visits it over and over: emergency trims that empty it, stats that walk it. No
// object may be in two hands at once, and every count must add up afterwards.
TEST_CASE("object_pool: a thread cache visited by trim and stats while its owner churns it",
          "[object_pool][concurrency]") {
    object_pool_test::reset_counts();
    manual_clock clk;
    memgov::ledger l;
    auto cfg = stress_config();
    cfg.thread_cache_objects = 4;
    cfg.emergency_reserve = 0;
    cfg.max_retained_bytes = 1u << 20;
    pool_t pool{cfg, &l, clk};
    std::latch start{2};
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> visits{0};
    std::uint64_t bad = 0;
    std::uint64_t pairs = 0;
    std::thread owner{[&] {
        start.arrive_and_wait();
        for (int i = 0; i < 20000 || visits.load(std::memory_order_relaxed) < 50; ++i) {
            auto a = pool.acquire();
            auto b = pool.acquire();
            if (a.get() == b.get() || a->owner != 0 || b->owner != 0) ++bad;
            a->owner = 1;
            b->owner = 2;
            ++pairs;
        }
        stop.store(true, std::memory_order_release);
    }};
    std::thread visitor{[&] {
        start.arrive_and_wait();
        while (!stop.load(std::memory_order_acquire)) {
            pool.set_pressure(visits % 2 == 0 ? pressure_level::emergency : pressure_level::normal);
            (void)pool.trim();
            (void)pool.stats();
            visits.fetch_add(1, std::memory_order_relaxed);
        }
    }};
    owner.join();
    visitor.join();
    CHECK(bad == 0);
    CHECK(visits > 0);
    const auto st = pool.stats();
    CHECK(st.acquisitions == 2 * pairs);
    CHECK(st.reuses + st.constructions == st.acquisitions);
    CHECK(st.leased_objects == 0);
    CHECK(st.constructions - st.destructions == st.idle_objects);
    CHECK(static_cast<std::uint64_t>(counts().alive()) == st.idle_objects);
    CHECK(static_cast<std::int64_t>(st.charged_bytes) == l.bytes(category::objects));
    CHECK(pool.idle_bytes() == st.idle_bytes);
}
