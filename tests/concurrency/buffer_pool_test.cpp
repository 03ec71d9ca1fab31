#include <memgov/buffer_pool.hpp>
#include <memgov/sliding_window.hpp>

#include "buffer_pool_rss.hpp"
#include "watched_resource.hpp"

#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <latch>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

using memgov::buffer;
using memgov::buffer_pool;
using memgov::category;
using memgov::pressure_level;

namespace {

// A plain locked queue: the test checks the pool, not the queue.
template <class T>
class locked_queue {
public:
    void push(T v) {
        std::lock_guard lock{m_mutex};
        m_items.push_back(std::move(v));
    }
    bool pop(T& out) {
        std::lock_guard lock{m_mutex};
        if (m_items.empty()) return false;
        out = std::move(m_items.front());
        m_items.pop_front();
        return true;
    }

private:
    std::mutex m_mutex;
    std::deque<T> m_items;
};

struct tagged {
    buffer buf;
    std::uint32_t producer = 0;
    std::uint32_t seq = 0;
};

void stamp(buffer& b, std::uint32_t producer, std::uint32_t seq) {
    const std::uint64_t tag = (std::uint64_t{producer} << 32) | seq;
    std::memcpy(b.data(), &tag, sizeof tag);
    std::memcpy(b.data() + b.size() - sizeof tag, &tag, sizeof tag);
}

bool stamped(const buffer& b, std::uint32_t producer, std::uint32_t seq) {
    const std::uint64_t tag = (std::uint64_t{producer} << 32) | seq;
    std::uint64_t head = 0;
    std::uint64_t tail = 0;
    std::memcpy(&head, b.data(), sizeof head);
    std::memcpy(&tail, b.data() + b.size() - sizeof tail, sizeof tail);
    return head == tag && tail == tag;
}

using memgov_test::watched_resource;

// Stops one thread inside the pool's thread-exit flush: the pool stamps the buffers it moves
// into a depot with the clock, so a clock that parks its caller there parks the exiting thread
// in the middle of handing its cache back, after it has pinned the pool's state.
struct exit_probe {
    std::atomic<bool> armed{false};
    std::thread::id thread; // written by the probed thread before it sets `armed`
    std::latch in_flush{1}; // the probed thread is inside its exit flush
    std::mutex mutex;
    std::condition_variable cv;
    bool destroyed = false;     // the pool, its ledger and its upstream are gone
    bool saw_destroyed = false; // ... and the probed thread saw that while still flushing
};

struct probe_clock {
    std::shared_ptr<exit_probe> probe;
    [[nodiscard]] memgov::time_point now() const noexcept {
        exit_probe& p = *probe;
        if (p.armed.load(std::memory_order_acquire) && std::this_thread::get_id() == p.thread &&
            p.armed.exchange(false)) {
            p.in_flush.count_down();
            std::unique_lock lock{p.mutex};
            // The pool's destructor must wait for this flush: if it did not, the destruction
            // would be seen here. A bounded wait for something that must not happen.
            p.saw_destroyed = p.cv.wait_for(lock, std::chrono::milliseconds{250}, [&] { return p.destroyed; });
        }
        return memgov::time_point{std::chrono::seconds{1}};
    }
};
static_assert(memgov::clock_type<probe_clock>);

} // namespace

// Producers acquire and stamp buffers, consumers on other threads check the stamp and release
// them, while a control thread trims, changes pressure and reads statistics. A buffer handed to
// two owners at once would break a stamp; after join every counter must balance exactly.
TEST_CASE("buffer_pool: cross-thread release under trim and pressure changes", "[buffer_pool][concurrency]") {
    const auto seed = std::random_device{}();
    INFO("seed " << seed);
    std::printf("buffer_pool concurrency seed %u\n", seed);
    memgov::ledger l;
    // Counts every block the pool takes from and gives back to upstream, beside its statistics.
    memgov_test::counting_resource upstream;
    memgov::buffer_pool_config cfg;
    cfg.depot_bytes = 2 << 20;
    cfg.upstream = &upstream;
    buffer_pool pool{cfg, &l};
    constexpr int producers = 2;
    constexpr int consumers = 2;
    constexpr std::uint32_t per_producer = 3000;
    constexpr std::size_t classes = 5;
    // Buffers each thread obtained, per class, counted by the test itself.
    std::vector<std::array<std::uint64_t, classes>> obtained(producers + consumers);
    std::vector<locked_queue<tagged>> queues(consumers);
    std::latch start{producers + consumers + 1};
    std::atomic<int> producing{producers};
    std::atomic<std::uint64_t> consumed{0};
    std::atomic<std::uint64_t> bad{0};

    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            std::mt19937 rng{seed + static_cast<unsigned>(p)};
            auto& mine = obtained[static_cast<std::size_t>(p)];
            { buffer warm = pool.acquire(1); } // claims this thread's cache before the race
            ++mine[0];
            start.arrive_and_wait();
            std::vector<buffer> local; // some stay on this thread for a while: local releases
            for (std::uint32_t i = 0; i < per_producer; ++i) {
                const std::size_t n = 16 + rng() % (300 * 1024);
                buffer b = (i % 5 == 4) ? pool.try_acquire(n) : pool.acquire(n);
                if (!b) b = pool.acquire(n);
                ++mine[pool.size_class_for(n)];
                stamp(b, static_cast<std::uint32_t>(p), i);
                if (i % 3 == 0) {
                    if (!stamped(b, static_cast<std::uint32_t>(p), i)) bad.fetch_add(1);
                    local.push_back(std::move(b));
                    if (local.size() > 4) local.erase(local.begin());
                } else {
                    queues[i % consumers].push(tagged{std::move(b), static_cast<std::uint32_t>(p), i});
                }
            }
            producing.fetch_sub(1);
        });
    }
    for (int c = 0; c < consumers; ++c) {
        threads.emplace_back([&, c] {
            { buffer warm = pool.acquire(1); }
            ++obtained[static_cast<std::size_t>(producers + c)][0];
            start.arrive_and_wait();
            tagged t;
            for (;;) {
                if (queues[c].pop(t)) {
                    if (!stamped(t.buf, t.producer, t.seq)) bad.fetch_add(1);
                    t.buf.reset();
                    consumed.fetch_add(1);
                } else if (producing.load() == 0) {
                    if (!queues[c].pop(t)) break;
                    if (!stamped(t.buf, t.producer, t.seq)) bad.fetch_add(1);
                    t.buf.reset();
                    consumed.fetch_add(1);
                } else {
                    std::this_thread::yield();
                }
            }
        });
    }
    std::thread control{[&] {
        start.arrive_and_wait();
        int round = 0;
        while (producing.load() > 0) {
            pool.set_pressure(static_cast<pressure_level>(round % 5));
            (void)pool.trim(round % 2 == 0 ? 0 : 1 << 20);
            const auto s = pool.stats();
            if (s.classes.size() != 5) bad.fetch_add(1);
            (void)pool.idle_bytes();
            (void)l.total();
            ++round;
            std::this_thread::yield();
        }
    }};
    for (auto& t : threads) t.join();
    control.join();

    CHECK(bad.load() == 0);
    const std::uint64_t sent = consumed.load();
    pool.set_pressure(pressure_level::normal);
    const auto s = pool.stats();
    CHECK(s.in_use_bytes == 0);
    CHECK(s.harmful_bytes == 0);
    std::uint64_t acquisitions = 0;
    std::uint64_t remote = 0;
    REQUIRE(s.classes.size() == classes);
    // Each counter is checked against a count kept outside the pool: the buffers the threads
    // obtained (counted by the test) and the blocks the upstream resource saw.
    for (std::size_t k = 0; k < classes; ++k) {
        const auto& c = s.classes[k];
        INFO("class " << c.size);
        std::uint64_t got = 0;
        for (const auto& t : obtained) got += t[k];
        const memgov_test::size_counts up = upstream.counts(c.size);
        CHECK(c.acquisitions == got);
        CHECK(c.thread_cache_hits + c.depot_hits + c.misses == got);
        CHECK(c.local_releases + c.remote_releases == got); // all were given back
        CHECK(c.misses == up.allocations);
        CHECK(c.trimmed_buffers + c.overflow_frees == up.deallocations);
        CHECK(c.idle_bytes == up.outstanding_bytes(c.size));
        acquisitions += c.acquisitions;
        remote += c.remote_releases;
    }
    CHECK(acquisitions == std::uint64_t{producers} * per_producer + producers + consumers);
    CHECK(remote == sent); // every queued buffer was released on a consumer thread
    CHECK(s.idle_bytes == upstream.outstanding_bytes());
    // All worker threads exited: their caches went back, so all idle memory is in the depots.
    CHECK(s.thread_cache_bytes == 0);
    CHECK(s.thread_caches == 0); // the control thread never acquired; this thread neither
    CHECK(l.bytes(category::pool_in_use) == 0);
    CHECK(l.bytes(category::pool_idle) == static_cast<std::int64_t>(s.idle_bytes));
    (void)pool.trim(0);
    CHECK(pool.stats().idle_bytes == 0);
    CHECK(upstream.outstanding_bytes() == 0);
    CHECK(l.total() == 0);
}

// Short-lived threads claim caches and give them back when they exit; caches are reused and
// nothing leaks or is counted twice.
TEST_CASE("buffer_pool: thread churn gives every cache back", "[buffer_pool][concurrency]") {
    memgov::ledger l;
    buffer_pool pool{{}, &l};
    constexpr int waves = 10;
    constexpr int per_wave = 4;
    for (int w = 0; w < waves; ++w) {
        std::latch start{per_wave};
        std::vector<std::thread> ts;
        for (int t = 0; t < per_wave; ++t) {
            ts.emplace_back([&, t] {
                start.arrive_and_wait();
                std::vector<buffer> keep;
                for (int i = 0; i < 50; ++i) {
                    keep.push_back(pool.acquire(static_cast<std::size_t>(1000 + (i + t) * 997)));
                    if (keep.size() > 6) keep.erase(keep.begin());
                }
            });
        }
        for (auto& t : ts) t.join();
        CHECK(pool.thread_cache_bytes() == 0);
    }
    const auto s = pool.stats();
    CHECK(s.in_use_bytes == 0);
    CHECK(s.thread_caches == 0);
    std::uint64_t acquisitions = 0;
    for (const auto& c : s.classes) acquisitions += c.acquisitions;
    CHECK(acquisitions == std::uint64_t{waves} * per_wave * 50);
    CHECK(l.bytes(category::pool_idle) == static_cast<std::int64_t>(s.idle_bytes));
    (void)pool.trim(0);
    CHECK(l.total() == 0);
}

// A pool may be destroyed while a thread that used it still runs; that thread's exit must not
// touch the dead pool.
TEST_CASE("buffer_pool: a pool dies before a thread that used it", "[buffer_pool][concurrency]") {
    std::latch used{1};
    std::latch destroyed{1};
    auto pool = std::make_unique<buffer_pool>();
    std::thread t{[&] {
        { buffer b = pool->acquire(4096); }
        used.count_down();
        destroyed.wait();
        // A new pool on this thread works: the old entry is simply gone.
        buffer_pool other;
        buffer c = other.acquire(100);
        CHECK(c.capacity() == 4096);
    }};
    used.wait();
    pool.reset();
    destroyed.count_down();
    t.join();
    SUCCEED("no use after free (checked by the sanitizers)");
}

// The race the pool's destructor closes: a thread that exits pins the pool's state and starts
// flushing its cache just as the pool is destroyed. The flush must either finish before the
// pool's destructor drains everything or do nothing; the ledger and the upstream (which the
// user destroys right after the pool) must never be touched again. The exiting thread is
// parked inside its flush (see exit_probe), so the interleaving is the same on every run.
TEST_CASE("buffer_pool: a thread exit racing destruction leaves ledger and upstream alone",
          "[buffer_pool][concurrency]") {
    watched_resource upstream;
    auto probe = std::make_shared<exit_probe>();
    auto l = std::make_unique<memgov::ledger>(); // on the heap: ASan sees any late use
    memgov::buffer_pool_config cfg;
    cfg.upstream = &upstream;
    auto pool = std::make_unique<buffer_pool>(cfg, l.get(), probe_clock{probe});

    std::thread t{[&] {
        {
            std::vector<buffer> bs;
            for (int i = 0; i < 3; ++i) bs.push_back(pool->acquire(4096));
            bs.push_back(pool->acquire(64 * 1024));
        } // all four are now in this thread's cache
        probe->thread = std::this_thread::get_id();
        probe->armed.store(true, std::memory_order_release);
        // The thread exits here: its cache goes back through the pool's state.
    }};
    probe->in_flush.wait();
    pool.reset(); // waits for the flush under way, then frees everything
    const std::int64_t ledger_after = l->total();
    const std::int64_t out_after = upstream.outstanding();
    l.reset();
    upstream.close();
    {
        std::lock_guard lock{probe->mutex};
        probe->destroyed = true;
    }
    probe->cv.notify_all();
    t.join();

    CHECK_FALSE(probe->saw_destroyed); // the destructor waited for the exiting thread
    CHECK(ledger_after == 0);          // every charge was given back by ~buffer_pool
    CHECK(out_after == 0);             // every buffer was freed by ~buffer_pool
    CHECK(upstream.late_calls() == 0); // nothing reached the upstream afterwards
    CHECK(upstream.outstanding() == 0);
}

// The same race left to the scheduler, many times: threads that used the pool exit while it is
// destroyed. Whatever the interleaving, the ledger ends at zero before it is destroyed and the
// upstream is never called after the pool is gone.
TEST_CASE("buffer_pool: threads exit while the pool is destroyed, every interleaving", "[buffer_pool][concurrency]") {
    std::int64_t late = 0;
    std::int64_t bad_ledger = 0;
    for (int round = 0; round < 50; ++round) {
        watched_resource round_upstream;
        auto l = std::make_unique<memgov::ledger>();
        memgov::buffer_pool_config cfg;
        cfg.upstream = &round_upstream;
        auto pool = std::make_unique<buffer_pool>(cfg, l.get());
        constexpr int threads = 3;
        std::latch used{threads};
        std::latch go{threads + 1};
        std::vector<std::thread> ts;
        for (int k = 0; k < threads; ++k) {
            ts.emplace_back([&, k] {
                {
                    std::vector<buffer> bs;
                    for (int i = 0; i < 4 + k; ++i) {
                        bs.push_back(pool->acquire(static_cast<std::size_t>(1000 + 5000 * i)));
                    }
                }
                used.count_down();
                go.arrive_and_wait(); // then exit, racing the destruction below
            });
        }
        used.wait();
        go.arrive_and_wait();
        pool.reset();
        if (l->total() != 0) ++bad_ledger;
        l.reset();
        round_upstream.close();
        for (auto& t : ts) t.join();
        late += round_upstream.late_calls() + round_upstream.outstanding();
    }
    CHECK(bad_ledger == 0);
    CHECK(late == 0);
}

// Sessions on several threads append to their own windows over one shared pool while another
// thread trims it; every window's bytes stay exact.
TEST_CASE("sliding_window: windows on one pool from many threads", "[sliding_window][concurrency]") {
    memgov::ledger l;
    buffer_pool pool{{}, &l};
    memgov::window_quota quota{{.total_bytes = 1 << 20, .max_grant_bytes = 256 << 10}};
    constexpr int sessions = 3;
    std::latch start{sessions + 1};
    std::atomic<int> running{sessions};
    std::atomic<int> errors{0};
    std::vector<std::thread> ts;
    for (int s = 0; s < sessions; ++s) {
        ts.emplace_back([&, s] {
            memgov::sliding_window w{pool, {.chunk_size = 16 << 10, .cap_bytes = 256 << 10}, &l};
            (void)w.grant(quota, 128 << 10);
            start.arrive_and_wait();
            std::vector<std::byte> frame(1000);
            std::uint64_t written = 0;
            for (int i = 0; i < 2000; ++i) {
                for (auto& b : frame) b = static_cast<std::byte>((written++ + static_cast<std::uint64_t>(s)) % 251);
                w.append(frame);
                if (i % 100 == 99) {
                    std::vector<memgov::window_chunk> out(4);
                    (void)w.take_chunks(out);
                }
            }
            // The window holds the newest bytes in order: check every one.
            std::vector<std::byte> all(w.size());
            (void)w.peek(all);
            const std::uint64_t first = written - all.size();
            for (std::size_t k = 0; k < all.size(); ++k) {
                if (all[k] != static_cast<std::byte>((first + k + static_cast<std::uint64_t>(s)) % 251)) {
                    errors.fetch_add(1);
                    break;
                }
            }
            (void)w.return_grant();
            running.fetch_sub(1);
        });
    }
    start.arrive_and_wait();
    while (running.load() > 0) {
        (void)pool.trim(0);
        std::this_thread::yield();
    }
    for (auto& t : ts) t.join();
    CHECK(errors.load() == 0);
    CHECK(quota.granted_bytes() == 0);
    CHECK(l.bytes(category::windows) == 0);
    CHECK(pool.stats().in_use_bytes == 0);
}
