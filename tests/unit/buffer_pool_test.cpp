#include <memgov/buffer_pool.hpp>
#include <memgov/reclaimers.hpp>

#include "buffer_pool_rss.hpp"
#include "watched_resource.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <latch>
#include <limits>
#include <memory>
#include <memory_resource>
#include <set>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

using memgov::buffer;
using memgov::buffer_pool;
using memgov::buffer_pool_config;
using memgov::category;
using memgov::pressure_level;

namespace {

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * 1024;

// A pool whose thread cache holds nothing, so every released buffer lands in the depot and
// depot behaviour can be checked exactly.
buffer_pool_config depot_only(std::size_t depot_bytes = 16 * MiB) {
    buffer_pool_config c;
    c.thread_cache_buffers = 0;
    c.depot_bytes = depot_bytes;
    return c;
}

using memgov_test::watched_resource;

} // namespace

TEST_CASE("buffer_pool: guarantees are noexcept where the style requires", "[buffer_pool]") {
    STATIC_REQUIRE(std::is_nothrow_move_constructible_v<buffer>);
    STATIC_REQUIRE(std::is_nothrow_move_assignable_v<buffer>);
    STATIC_REQUIRE(std::is_nothrow_destructible_v<buffer>);
    STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<buffer>);
    STATIC_REQUIRE_FALSE(std::is_copy_assignable_v<buffer>);
    STATIC_REQUIRE(noexcept(std::declval<buffer&>().reset()));
    STATIC_REQUIRE(noexcept(std::declval<buffer&>().try_resize(1)));
    STATIC_REQUIRE(noexcept(std::declval<const buffer&>().size()));
    STATIC_REQUIRE(noexcept(std::declval<buffer_pool&>().try_acquire(1)));
    STATIC_REQUIRE_FALSE(noexcept(std::declval<buffer_pool&>().acquire(1)));
    STATIC_REQUIRE(noexcept(std::declval<buffer_pool&>().trim(0)));
    STATIC_REQUIRE(noexcept(std::declval<buffer_pool&>().set_pressure(pressure_level::high)));
    STATIC_REQUIRE(noexcept(std::declval<const buffer_pool&>().idle_bytes()));
    STATIC_REQUIRE(noexcept(std::declval<const buffer_pool&>().pressure()));
    STATIC_REQUIRE(noexcept(std::declval<buffer_pool&>().flush_thread_cache()));
    STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<buffer_pool>);
    STATIC_REQUIRE_FALSE(std::is_move_constructible_v<buffer_pool>);
}

TEST_CASE("buffer_pool: size classes map at the edges", "[buffer_pool]") {
    buffer_pool pool;
    REQUIRE(pool.size_class_count() == 5);
    const std::size_t sizes[] = {4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB};
    CHECK(pool.size_class_for(0) == 0);
    CHECK(pool.size_class_for(1) == 0);
    for (std::size_t i = 0; i < 5; ++i) {
        CAPTURE(i);
        CHECK(pool.size_class(i) == sizes[i]);
        CHECK(pool.size_class_for(sizes[i] - 1) == i);
        CHECK(pool.size_class_for(sizes[i]) == i);
        CHECK(pool.size_class_for(sizes[i] + 1) == i + 1); // i + 1 == 5 means oversize
    }
    CHECK(pool.size_class_for(1 * MiB + 1) == pool.size_class_count());
    CHECK(pool.max_pooled_size() == 1 * MiB);

    SECTION("acquire hands out the class size as capacity") {
        for (std::size_t n : {std::size_t{0}, std::size_t{1}, 4 * KiB, 4 * KiB + 1, 1 * MiB}) {
            CAPTURE(n);
            buffer b = pool.acquire(n);
            REQUIRE(b);
            CHECK(b.size() == n);
            CHECK(b.requested() == n);
            CHECK(b.capacity() == pool.size_class(pool.size_class_for(n)));
            CHECK(b.pooled());
        }
    }
}

TEST_CASE("buffer_pool: size classes need not be powers of two", "[buffer_pool]") {
    buffer_pool_config c;
    c.size_classes = {100, 1000, 3000, 3001};
    buffer_pool pool{c};
    CHECK(pool.size_class_for(0) == 0);
    CHECK(pool.size_class_for(100) == 0);
    CHECK(pool.size_class_for(101) == 1);
    CHECK(pool.size_class_for(1000) == 1);
    CHECK(pool.size_class_for(1001) == 2);
    CHECK(pool.size_class_for(2048) == 2);
    CHECK(pool.size_class_for(3000) == 2);
    CHECK(pool.size_class_for(3001) == 3);
    CHECK(pool.size_class_for(3002) == 4);
    buffer b = pool.acquire(2500);
    CHECK(b.capacity() == 3000);
}

TEST_CASE("buffer_pool: a bad configuration names the field", "[buffer_pool]") {
    auto with = [](auto edit) {
        buffer_pool_config c;
        edit(c);
        return c;
    };
    using Catch::Contains;
    CHECK_THROWS_WITH(buffer_pool{with([](auto& c) { c.size_classes.clear(); })},
                      Contains("memgov::buffer_pool_config::size_classes"));
    CHECK_THROWS_WITH(buffer_pool{with([](auto& c) {
                          c.size_classes = {4096, 4096};
                      })},
                      Contains("size_classes: must be strictly increasing"));
    CHECK_THROWS_WITH(buffer_pool{with([](auto& c) {
                          c.size_classes = {0, 10};
                      })},
                      Contains("size_classes: sizes must be > 0"));
    CHECK_THROWS_WITH(buffer_pool{with([](auto& c) { c.size_classes.assign(33, 1); })},
                      Contains("size_classes: at most 32"));
    CHECK_THROWS_WITH(buffer_pool{with([](auto& c) { c.depot_bytes = 0; })},
                      Contains("memgov::buffer_pool_config::depot_bytes: must be > 0"));
    CHECK_THROWS_WITH(buffer_pool{with([](auto& c) { c.thread_cache_buffers = 5000; })},
                      Contains("thread_cache_buffers"));
    CHECK_THROWS_WITH(buffer_pool{with([](auto& c) { c.pressure_factors[1] = 1.5; })},
                      Contains("pressure_factors: each must be in [0, 1]"));
    CHECK_THROWS_WITH(buffer_pool{with([](auto& c) {
                          c.pressure_factors = {0.5, 1, 1, 1, 1};
                      })},
                      Contains("pressure_factors: must not increase"));
    CHECK_THROWS_WITH(buffer_pool{with([](auto& c) { c.alignment = 48; })},
                      Contains("alignment: must be a power of two"));
    CHECK_THROWS_AS(buffer_pool{with([](auto& c) { c.alignment = 0; })}, std::invalid_argument);
}

TEST_CASE("buffer_pool: a depot too large to reserve is refused, naming the field", "[buffer_pool]") {
    using Catch::Contains;
    constexpr std::size_t most = buffer_pool_config::max_depot_buffers;
    STATIC_REQUIRE(most == std::size_t{1} << 22);
    buffer_pool_config c;
    c.size_classes = {4 * KiB};
    // 1 TiB of 4 KiB buffers would reserve a 4 GiB ring up front.
    c.depot_bytes = std::size_t{1} << 40;
    CHECK_THROWS_WITH(buffer_pool{c}, Contains("memgov::buffer_pool_config::depot_bytes") &&
                                          Contains("268435456 buffers") && Contains("max_depot_buffers (4194304)"));
    c.depot_bytes = most * 4 * KiB + 4 * KiB; // one buffer past the limit
    CHECK_THROWS_AS(buffer_pool{c}, std::invalid_argument);
    c.depot_bytes = std::numeric_limits<std::size_t>::max();
    CHECK_THROWS_WITH(buffer_pool{c}, Contains("memgov::buffer_pool_config::depot_bytes"));
    // The limit counts buffers of the smallest class, the one with the largest ring.
    c.size_classes = {4 * KiB, 1 * MiB};
    c.depot_bytes = most * 1 * MiB;
    CHECK_THROWS_WITH(buffer_pool{c}, Contains("depot of the 4096-byte class"));
    c.depot_bytes = most * 4 * KiB + 4 * KiB - 1; // rounds down to exactly the limit
    buffer_pool at_limit{c};
    CHECK(at_limit.depot_cap_bytes(0) == most * 4 * KiB);
}

TEST_CASE("buffer_pool: a depot cap near SIZE_MAX saturates instead of overflowing", "[buffer_pool]") {
    // depot_bytes * factor as a double rounds up to 2^64 here; converting that to an integer
    // is undefined. The caps must come out as the exact saturated values instead.
    constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
    constexpr std::size_t size = std::size_t{1} << 42; // max / size < max_depot_buffers
    buffer_pool_config c;
    c.size_classes = {size};
    c.depot_bytes = max;
    c.thread_cache_buffers = 0;
    buffer_pool pool{c};
    CHECK(pool.depot_cap_bytes(0) == (max / size) * size);
    CHECK(pool.stats().classes[0].depot_cap_bytes == (max / size) * size);
    pool.set_pressure(pressure_level::elevated); // factor 0.5: 2^63 as a double
    CHECK(pool.depot_cap_bytes(0) == (std::size_t{1} << 63) / size * size);
    pool.set_pressure(pressure_level::critical);
    CHECK(pool.depot_cap_bytes(0) == 0);
    pool.set_pressure(pressure_level::normal);
    CHECK(pool.depot_cap_bytes(0) == (max / size) * size);
}

TEST_CASE("buffer_pool: buffers resize within capacity and expose spans", "[buffer_pool]") {
    buffer_pool pool;
    buffer b = pool.acquire(10);
    CHECK(b.span().size() == 10);
    CHECK(b.storage().size() == 4096);
    CHECK(reinterpret_cast<std::uintptr_t>(b.data()) % memgov::cache_line_size == 0);
    b.span()[9] = std::byte{7};
    b.resize(4096);
    CHECK(b.size() == 4096);
    CHECK(b.span()[9] == std::byte{7});
    CHECK_THROWS_AS(b.resize(4097), std::length_error);
    CHECK_FALSE(b.try_resize(4097));
    CHECK(b.size() == 4096);
    CHECK(b.try_resize(0));
    CHECK(b.span().empty());

    buffer moved = std::move(b);
    CHECK_FALSE(b); // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    CHECK(moved);
    CHECK(moved.capacity() == 4096);
    moved.reset();
    CHECK_FALSE(moved);
    CHECK(pool.stats().classes[0].local_releases == 1);
}

TEST_CASE("buffer_pool: oversize buffers are exact and never pooled", "[buffer_pool]") {
    memgov::ledger l;
    buffer_pool pool{{}, &l};
    const std::size_t n = 1 * MiB + 1;
    {
        buffer b = pool.acquire(n);
        REQUIRE(b);
        CHECK_FALSE(b.pooled());
        CHECK(b.capacity() == n);
        memgov_test::touch_pages(b.data(), b.size());
        CHECK(pool.stats().oversize_in_use_bytes == n);
        CHECK(l.bytes(category::pool_in_use) == static_cast<std::int64_t>(n));
    }
    auto s = pool.stats();
    CHECK(s.oversize_acquisitions == 1);
    CHECK(s.oversize_releases == 1);
    CHECK(s.oversize_in_use_bytes == 0);
    CHECK(s.idle_bytes == 0);
    CHECK(s.depot_bytes == 0);
    CHECK(s.thread_cache_bytes == 0);
    CHECK(l.total() == 0);
    // Never pooled: there is nothing to reuse, and try_acquire never allocates one.
    CHECK_FALSE(pool.try_acquire(n));
    CHECK(pool.stats().oversize_acquisitions == 1);
}

TEST_CASE("buffer_pool: statistics are exact on one thread", "[buffer_pool]") {
    memgov::ledger l;
    buffer_pool_config c;
    c.thread_cache_buffers = 2;              // 4 KiB class caches 2 per thread, batch 1
    c.ledger_batch_bytes = 0;                // charge every move, so the split is exact too
    memgov_test::counting_resource upstream; // counts what the pool really allocates and frees
    c.upstream = &upstream;
    buffer_pool pool{c, &l};

    buffer a = pool.acquire(1000);    // miss
    buffer b = pool.acquire(4096);    // miss
    buffer big = pool.acquire(10000); // miss, 16 KiB class
    auto s = pool.stats();
    CHECK(s.classes[0].misses == 2);
    CHECK(s.classes[0].acquisitions == 2);
    CHECK(s.classes[0].in_use_bytes == 8192);
    CHECK(s.classes[0].harmful_bytes == 4096 - 1000);
    CHECK(s.classes[1].misses == 1);
    CHECK(s.classes[1].harmful_bytes == 16384 - 10000);
    CHECK(s.harmful_bytes == (4096 - 1000) + (16384 - 10000));
    CHECK(l.bytes(category::pool_in_use) == 8192 + 16384);
    CHECK(l.bytes(category::pool_idle) == 0);

    a.reset(); // into the thread cache
    b.reset(); // into the thread cache (cap 2)
    s = pool.stats();
    CHECK(s.classes[0].local_releases == 2);
    CHECK(s.classes[0].remote_releases == 0);
    CHECK(s.classes[0].in_use_bytes == 0);
    CHECK(s.classes[0].thread_cache_bytes == 8192);
    CHECK(s.classes[0].depot_bytes == 0);
    CHECK(s.classes[0].idle_bytes == 8192);
    CHECK(s.classes[0].harmful_bytes == 0);
    CHECK(s.classes[0].harmful_bytes_total == 4096 - 1000);
    CHECK(l.bytes(category::pool_in_use) == 16384);
    CHECK(l.bytes(category::pool_idle) == 8192);

    buffer d = pool.acquire(4000); // thread-cache hit
    s = pool.stats();
    CHECK(s.classes[0].thread_cache_hits == 1);
    CHECK(s.classes[0].acquisitions == 3);
    CHECK(s.classes[0].harmful_bytes == 96);
    CHECK(s.classes[0].harmful_bytes_total == 4096 - 1000 + 96);

    buffer e = pool.acquire(1); // thread-cache hit
    buffer f = pool.acquire(1); // miss
    e.reset();
    f.reset();
    d.reset(); // cache full (2): the oldest goes to the depot
    s = pool.stats();
    CHECK(s.classes[0].thread_cache_hits == 2);
    CHECK(s.classes[0].misses == 3);
    CHECK(upstream.counts(4096).allocations == 3);
    CHECK(upstream.counts(16384).allocations == 1);
    CHECK(s.classes[0].local_releases == 5);
    CHECK(s.classes[0].thread_cache_bytes == 8192);
    CHECK(s.classes[0].depot_bytes == 4096);
    CHECK(pool.idle_bytes() == 4096);
    CHECK(pool.thread_cache_bytes() == 8192);

    pool.flush_thread_cache();
    CHECK(pool.idle_bytes() == 3 * 4096);
    buffer g = pool.acquire(10); // depot hit (refills the cache with one more)
    s = pool.stats();
    CHECK(s.classes[0].depot_hits == 1);
    CHECK(s.classes[0].acquisitions == 6);
    g.reset();
    big.reset();
    s = pool.stats();
    CHECK(s.in_use_bytes == 0);
    CHECK(s.harmful_bytes == 0);
    CHECK(l.bytes(category::pool_in_use) == 0);
    CHECK(l.bytes(category::pool_idle) == static_cast<std::int64_t>(s.idle_bytes));
    CHECK(s.idle_bytes == 3 * 4096 + 16384);
    CHECK(upstream.outstanding_bytes() == 3 * 4096 + 16384);
    CHECK(upstream.allocations() == 4); // every acquisition after the first misses was a reuse
    CHECK(s.trim_calls == 0);

    const std::size_t freed = pool.trim(0);
    s = pool.stats();
    CHECK(freed == 3 * 4096 + 16384);
    CHECK(s.idle_bytes == 0);
    CHECK(s.trim_calls == 1);
    CHECK(s.classes[0].trimmed_buffers == 3);
    CHECK(s.classes[0].trimmed_bytes == 3 * 4096);
    CHECK(s.classes[1].trimmed_buffers == 1);
    CHECK(s.trimmed_bytes == 3 * 4096 + 16384);
    CHECK(upstream.counts(4096).deallocations == 3);
    CHECK(upstream.counts(16384).deallocations == 1);
    CHECK(upstream.outstanding_bytes() == 0);
    CHECK(l.total() == 0);
}

// The largest accepted class (2^42) is accepted whatever the upstream can serve: classes are
// allocated on demand, so a class the upstream cannot serve throws std::bad_alloc from acquire,
// as documented, and charges nothing; the other classes keep working.
TEST_CASE("buffer_pool: a class the upstream cannot serve throws bad_alloc from acquire only", "[buffer_pool]") {
    // An upstream that serves at most 1 MiB at a time (a small container, say).
    class small_upstream final : public std::pmr::memory_resource {
        void* do_allocate(std::size_t n, std::size_t align) override {
            if (n > MiB) throw std::bad_alloc{};
            return std::pmr::new_delete_resource()->allocate(n, align);
        }
        void do_deallocate(void* p, std::size_t n, std::size_t align) override {
            std::pmr::new_delete_resource()->deallocate(p, n, align);
        }
        [[nodiscard]] bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override {
            return this == &o;
        }
    } upstream;
    memgov::ledger ledger;
    buffer_pool_config c;
    c.size_classes = {4096, buffer_pool_config::max_class_size}; // the accepted boundary
    c.upstream = &upstream;
    buffer_pool pool{c, &ledger};
    {
        buffer small = pool.acquire(4096);
        CHECK(small.capacity() == 4096);
        CHECK_THROWS_AS(pool.acquire(8192), std::bad_alloc);
        CHECK_FALSE(pool.try_acquire(8192));
        CHECK(ledger.total() == 4096); // the failed acquire charged nothing
    }
    CHECK(pool.stats().classes[1].misses == 0);
    buffer again = pool.acquire(4096); // the pool still works
    CHECK(again.capacity() == 4096);
    CHECK(ledger.total() == 4096);
}

TEST_CASE("buffer_pool: try_acquire never allocates", "[buffer_pool]") {
    buffer_pool pool;
    buffer none = pool.try_acquire(100);
    CHECK_FALSE(none);
    auto s = pool.stats();
    CHECK(s.classes[0].failed_try_acquires == 1);
    CHECK(s.classes[0].misses == 0);
    CHECK(s.classes[0].acquisitions == 0);
    { buffer b = pool.acquire(100); }
    buffer reused = pool.try_acquire(4096);
    REQUIRE(reused);
    CHECK(reused.capacity() == 4096);
    s = pool.stats();
    CHECK(s.classes[0].misses == 1);
    CHECK(s.classes[0].thread_cache_hits == 1);
}

TEST_CASE("buffer_pool: release from another thread is counted remote and reused", "[buffer_pool]") {
    buffer_pool pool;
    buffer b = pool.acquire(5000);
    std::byte* const addr = b.data();
    std::thread t{[&] {
        b.reset();
        // The releasing thread's cache took it: its next acquire gets the same memory.
        buffer again = pool.acquire(5000);
        CHECK(again.data() == addr);
    }};
    t.join();
    auto s = pool.stats();
    CHECK(s.classes[1].remote_releases == 1);
    CHECK(s.classes[1].local_releases == 1);
    CHECK(s.classes[1].thread_cache_hits == 1);
    // The thread exited: its cache went back to the depot.
    CHECK(s.thread_cache_bytes == 0);
    CHECK(s.depot_bytes == 16384);
    CHECK(s.thread_caches == 1); // only this thread's cache is owned now
    buffer from_depot = pool.acquire(16000);
    CHECK(from_depot.data() == addr);
}

TEST_CASE("buffer_pool: a thread that exits gives its cache back", "[buffer_pool]") {
    memgov::ledger l;
    buffer_pool pool{{}, &l};
    std::thread t{[&] {
        std::vector<buffer> bs;
        for (int i = 0; i < 3; ++i) bs.push_back(pool.acquire(64 * KiB));
        bs.clear();
        CHECK(pool.thread_cache_bytes() == 3 * 64 * KiB);
        CHECK(pool.idle_bytes() == 0);
    }};
    t.join();
    CHECK(pool.thread_cache_bytes() == 0);
    CHECK(pool.idle_bytes() == 3 * 64 * KiB);
    CHECK(l.bytes(category::pool_idle) == static_cast<std::int64_t>(3 * 64 * KiB));
    CHECK(pool.stats().thread_caches == 0);
    CHECK(pool.trim(0) == 3 * 64 * KiB);
    CHECK(l.total() == 0);
}

// A thread that used the pool may still be alive, holding buffers in its cache, when the pool
// is destroyed: the destructor frees that cache too and un-charges it, so the ledger is back to
// zero and the upstream holds nothing once ~buffer_pool returns; the thread's later exit
// touches neither (both are destroyed by then; the ledger on the heap, for ASan).
TEST_CASE("buffer_pool: destroying the pool frees a live thread's cache and its charges", "[buffer_pool]") {
    watched_resource upstream;
    auto l = std::make_unique<memgov::ledger>();
    buffer_pool_config c;
    c.upstream = &upstream;
    auto pool = std::make_unique<buffer_pool>(c, l.get());
    { buffer mine = pool->acquire(100); } // this thread's cache holds one too
    std::latch cached{1};
    std::latch destroyed{1};
    std::thread t{[&] {
        {
            std::vector<buffer> bs;
            for (int i = 0; i < 3; ++i) bs.push_back(pool->acquire(16 * KiB));
            bs.push_back(pool->acquire(64 * KiB));
        }
        cached.count_down();
        destroyed.wait(); // parked, its cache full, while the pool is destroyed
    }};
    cached.wait();
    const std::size_t idle = 4 * KiB + 3 * 16 * KiB + 64 * KiB;
    CHECK(pool->thread_cache_bytes() == idle);
    CHECK(pool->idle_bytes() == 0);
    CHECK(l->total() == static_cast<std::int64_t>(idle));
    CHECK(upstream.outstanding() == static_cast<std::int64_t>(idle));

    pool.reset();
    CHECK(l->total() == 0);
    CHECK(l->bytes(category::pool_idle) == 0);
    CHECK(l->bytes(category::pool_in_use) == 0);
    CHECK(upstream.outstanding() == 0);

    l.reset();
    upstream.close();
    destroyed.count_down();
    t.join();
    CHECK(upstream.late_calls() == 0);
}

TEST_CASE("buffer_pool: thread caches are bounded", "[buffer_pool]") {
    memgov_test::counting_resource upstream;
    buffer_pool_config cfg; // defaults: 8 buffers or 4 MiB per class per thread
    cfg.upstream = &upstream;
    buffer_pool pool{cfg};
    CHECK(pool.thread_cache_cap(0) == 8);
    CHECK(pool.thread_cache_cap(3) == 8);
    CHECK(pool.thread_cache_cap(4) == 4);
    CHECK(pool.thread_cache_bound_bytes() == 8 * 4 * KiB + 8 * 16 * KiB + 8 * 64 * KiB + 8 * 256 * KiB + 4 * MiB);
    pool.set_pressure(pressure_level::elevated);
    CHECK(pool.thread_cache_bound_bytes() == 4 * 4 * KiB + 4 * 16 * KiB + 4 * 64 * KiB + 4 * 256 * KiB + 2 * MiB);
    pool.set_pressure(pressure_level::high);
    CHECK(pool.thread_cache_bound_bytes() == 2 * (4 + 16 + 64 + 256) * KiB + 1 * MiB);
    pool.set_pressure(pressure_level::critical);
    CHECK(pool.thread_cache_bound_bytes() == 0);
    pool.set_pressure(pressure_level::normal);
    std::vector<buffer> bs;
    for (std::size_t c = 0; c < pool.size_class_count(); ++c) {
        for (int i = 0; i < 12; ++i) bs.push_back(pool.acquire(pool.size_class(c)));
    }
    bs.clear();
    CHECK(pool.thread_cache_bytes() <= pool.thread_cache_bound_bytes());
    const auto s = pool.stats();
    // Nothing was freed (the default depots hold it all): every byte allocated is idle, in a
    // depot or this thread's cache.
    CHECK(upstream.outstanding_bytes() == 12 * (4 + 16 + 64 + 256 + 1024) * KiB);
    CHECK(s.idle_bytes == upstream.outstanding_bytes());
    CHECK(s.depot_bytes == pool.idle_bytes());
    CHECK(s.thread_cache_bytes == pool.thread_cache_bytes());
    CHECK(s.depot_bytes + s.thread_cache_bytes == upstream.outstanding_bytes());
}

TEST_CASE("buffer_pool: trim frees the oldest idle buffers first", "[buffer_pool]") {
    memgov::manual_clock clock;
    buffer_pool pool{depot_only(), nullptr, clock};
    // Idle since t0: a 64 KiB buffer; since t1: a 4 KiB buffer; since t2: a 16 KiB buffer.
    buffer a = pool.acquire(64 * KiB);
    buffer b = pool.acquire(4 * KiB);
    buffer c = pool.acquire(16 * KiB);
    std::byte* const c_addr = c.data();
    a.reset();
    clock.advance(std::chrono::seconds{1});
    b.reset();
    clock.advance(std::chrono::seconds{1});
    c.reset();
    REQUIRE(pool.idle_bytes() == (64 + 4 + 16) * KiB);

    // Asking for at most 20 KiB idle frees the oldest (64 KiB) first; that is enough.
    CHECK(pool.trim(20 * KiB) == 64 * KiB);
    CHECK(pool.idle_bytes() == 20 * KiB);
    // Asking for at most 16 KiB frees the next oldest: the 4 KiB one, not the newer 16 KiB.
    CHECK(pool.trim(16 * KiB) == 4 * KiB);
    CHECK(pool.idle_bytes() == 16 * KiB);
    buffer still = pool.try_acquire(16 * KiB);
    CHECK(still.data() == c_addr);
    CHECK_FALSE(pool.try_acquire(4 * KiB));

    SECTION("within one class, too, the oldest goes first") {
        still.reset();
        std::vector<buffer> bs;
        for (int i = 0; i < 4; ++i) bs.push_back(pool.acquire(16 * KiB));
        std::vector<std::byte*> order;
        for (auto& x : bs) {
            order.push_back(x.data());
            clock.advance(std::chrono::seconds{1});
            x.reset();
        }
        CHECK(pool.trim(2 * 16 * KiB) == 2 * 16 * KiB);
        std::set<std::byte*> left;
        for (int i = 0; i < 2; ++i) {
            buffer x = pool.try_acquire(16 * KiB);
            REQUIRE(x);
            left.insert(x.data());
            bs.push_back(std::move(x));
        }
        CHECK(left == std::set<std::byte*>{order[2], order[3]});
    }
}

TEST_CASE("buffer_pool: trim empties the caller's thread cache and asks others to flush", "[buffer_pool]") {
    buffer_pool pool;
    { buffer mine = pool.acquire(100); }
    REQUIRE(pool.thread_cache_bytes() == 4096);
    std::latch cached{1};
    std::latch trimmed{1};
    std::latch operated{1};
    std::thread t{[&] {
        { buffer b = pool.acquire(64 * KiB); }
        cached.count_down();
        trimmed.wait();
        buffer other = pool.acquire(100); // any operation applies the flush request
        operated.count_down();
    }};
    cached.wait();
    CHECK(pool.thread_cache_bytes() == 4096 + 64 * KiB);
    CHECK(pool.trim(0) == 4096); // the caller's own cache is reachable at once
    CHECK(pool.thread_cache_bytes() == 64 * KiB);
    trimmed.count_down();
    operated.wait();
    // The other thread flushed its cache into the depot on its next operation.
    CHECK(pool.idle_bytes() >= 64 * KiB);
    CHECK(pool.trim(0) >= 64 * KiB);
    t.join();
    pool.trim(0);
    CHECK(pool.stats().idle_bytes == 0);
}

TEST_CASE("buffer_pool: depot and thread-cache caps follow pressure", "[buffer_pool]") {
    buffer_pool_config c;
    c.depot_bytes = 1 * MiB;
    buffer_pool pool{c};
    const std::size_t k64 = pool.size_class_for(64 * KiB);
    CHECK(pool.pressure() == pressure_level::normal);
    CHECK(pool.depot_cap_bytes(k64) == 1 * MiB);
    CHECK(pool.thread_cache_cap(k64) == 8);

    // Fill the 64 KiB depot to its cap.
    std::vector<buffer> bs;
    for (int i = 0; i < 24; ++i) bs.push_back(pool.acquire(64 * KiB));
    bs.clear();
    pool.flush_thread_cache();
    CHECK(pool.idle_bytes() == 1 * MiB); // 16 kept, 8 freed as overflow
    CHECK(pool.stats().classes[k64].overflow_frees == 8);

    pool.set_pressure(pressure_level::elevated);
    CHECK(pool.depot_cap_bytes(k64) == 512 * KiB);
    CHECK(pool.thread_cache_cap(k64) == 4);
    CHECK(pool.idle_bytes() == 512 * KiB); // the excess was freed at once

    pool.set_pressure(pressure_level::high);
    CHECK(pool.depot_cap_bytes(k64) == 256 * KiB);
    CHECK(pool.thread_cache_cap(k64) == 2);
    CHECK(pool.idle_bytes() == 256 * KiB);

    pool.set_pressure(pressure_level::critical);
    CHECK(pool.depot_cap_bytes(k64) == 0);
    CHECK(pool.thread_cache_cap(k64) == 0);
    CHECK(pool.idle_bytes() == 0);
    CHECK(pool.stats().classes[k64].trimmed_buffers == 16);
    { buffer x = pool.acquire(64 * KiB); }
    // Nothing is kept at critical pressure: the buffer was freed, not cached.
    CHECK(pool.thread_cache_bytes() == 0);
    CHECK(pool.idle_bytes() == 0);

    pool.set_pressure(pressure_level::emergency);
    CHECK(pool.depot_cap_bytes(k64) == 0);

    pool.set_pressure(pressure_level::normal); // caps grow back
    CHECK(pool.depot_cap_bytes(k64) == 1 * MiB);
    CHECK(pool.thread_cache_cap(k64) == 8);
    for (int i = 0; i < 24; ++i) bs.push_back(pool.acquire(64 * KiB));
    bs.clear();
    pool.flush_thread_cache();
    CHECK(pool.idle_bytes() == 1 * MiB);
    CHECK(pool.stats().pressure == pressure_level::normal);
}

TEST_CASE("buffer_pool: custom pressure factors", "[buffer_pool]") {
    buffer_pool_config c = depot_only(4 * MiB);
    c.pressure_factors = {1.0, 1.0, 0.5, 0.5, 0.125};
    buffer_pool pool{c};
    pool.set_pressure(pressure_level::elevated);
    CHECK(pool.depot_cap_bytes(0) == 4 * MiB);
    pool.set_pressure(pressure_level::critical);
    CHECK(pool.depot_cap_bytes(0) == 2 * MiB);
    pool.set_pressure(pressure_level::emergency);
    CHECK(pool.depot_cap_bytes(0) == 512 * KiB);
}

// The upstream keeps every freed block mapped and resident (as an allocator that caches freed
// memory would), so RSS can only drop through the pool's own page release: these cases fail if
// `release_pages` does nothing, whatever glibc would do with blocks of these sizes.
TEST_CASE("buffer_pool: trim gives memory back to the kernel (RSS from /proc/self/statm)", "[buffer_pool]") {
    const bool release_pages = GENERATE(true, false);
    INFO("release_pages " << release_pages);
    const std::size_t count = 64;
    memgov_test::counting_resource upstream{/*keeps_pages=*/true};
    buffer_pool_config c;
    c.depot_bytes = 128 * MiB;
    c.upstream = &upstream;
    c.release_pages = release_pages;
    buffer_pool pool{c};
    {
        std::vector<buffer> bs;
        for (std::size_t i = 0; i < count; ++i) {
            bs.push_back(pool.acquire(1 * MiB));
            memgov_test::touch_pages(bs.back().data(), bs.back().capacity());
        }
    }
    REQUIRE(pool.stats().idle_bytes == count * MiB);
    const std::size_t before = memgov_test::resident_bytes();
    REQUIRE(before > 0);
    CHECK(pool.trim(0) == count * MiB);
    CHECK(upstream.counts(MiB).deallocations == count); // given back, but still mapped
    const std::size_t after = memgov_test::resident_bytes();
    INFO("RSS before trim " << before / KiB << " KiB, after " << after / KiB << " KiB");
    const std::size_t dropped = before > after ? before - after : 0;
    if (release_pages) {
        // At least three quarters of what was idle left the process.
        CHECK(dropped >= count * MiB * 3 / 4);
    } else {
        // Nothing told the kernel: the upstream keeps the pages, so they stay resident.
        CHECK(dropped < count * MiB / 4);
    }
}

TEST_CASE("buffer_pool: oversize release gives memory back to the kernel", "[buffer_pool]") {
    const bool release_pages = GENERATE(true, false);
    INFO("release_pages " << release_pages);
    memgov_test::counting_resource upstream{/*keeps_pages=*/true};
    buffer_pool_config c;
    c.upstream = &upstream;
    c.release_pages = release_pages;
    buffer_pool pool{c};
    std::size_t before = 0;
    {
        buffer b = pool.acquire(48 * MiB);
        memgov_test::touch_pages(b.data(), b.size());
        before = memgov_test::resident_bytes();
    }
    CHECK(upstream.counts(48 * MiB).deallocations == 1);
    const std::size_t after = memgov_test::resident_bytes();
    INFO("RSS with buffer " << before / KiB << " KiB, after " << after / KiB << " KiB");
    const std::size_t dropped = before > after ? before - after : 0;
    if (release_pages) {
        CHECK(dropped >= 36 * MiB);
    } else {
        CHECK(dropped < 12 * MiB);
    }
}

TEST_CASE("buffer_pool: the ledger's total is exact at once, its split lags by a bounded batch", "[buffer_pool]") {
    memgov::ledger l;
    buffer_pool_config c;
    c.ledger_batch_bytes = 100 * KiB;
    buffer_pool pool{c, &l};
    buffer a = pool.acquire(64 * KiB); // a miss: charged at once
    CHECK(l.bytes(category::pool_in_use) == 64 * KiB);
    a.reset(); // into this thread's cache: the move is pending (64 KiB < 100 KiB)
    CHECK(l.total() == 64 * KiB);
    CHECK(l.bytes(category::pool_in_use) == 64 * KiB);
    buffer b = pool.acquire(64 * KiB); // back out: pending is 0 again
    b.reset();
    buffer d = pool.acquire(64 * KiB);
    CHECK(l.total() == 64 * KiB);
    std::vector<buffer> more;
    for (int i = 0; i < 3; ++i) more.push_back(pool.acquire(16 * KiB));
    more.clear(); // 48 KiB moved to idle, pending: the split lags, the total does not
    CHECK(l.total() == 64 * KiB + 48 * KiB);
    CHECK(l.bytes(category::pool_in_use) == 112 * KiB);
    d.reset(); // now 112 KiB are pending, past the batch: charged
    CHECK(l.bytes(category::pool_in_use) == 0);
    CHECK(l.bytes(category::pool_idle) == 112 * KiB);
    buffer e = pool.acquire(16 * KiB); // pending again
    CHECK(l.bytes(category::pool_in_use) == 0);
    pool.flush_thread_cache(); // a flush charges what is pending
    CHECK(l.bytes(category::pool_in_use) == 16 * KiB);
    CHECK(l.bytes(category::pool_idle) == 96 * KiB);
    e.reset();
    pool.trim(0); // trims the caller's cache: charged exactly
    CHECK(l.bytes(category::pool_in_use) == 0);
    CHECK(l.total() == 0);
}

TEST_CASE("buffer_pool: the ledger sees idle and in-use bytes as they move", "[buffer_pool]") {
    memgov::ledger l;
    {
        buffer_pool pool{depot_only(), &l};
        buffer a = pool.acquire(10 * KiB);
        CHECK(l.bytes(category::pool_in_use) == 16 * KiB);
        CHECK(l.bytes(category::pool_idle) == 0);
        a.reset();
        CHECK(l.bytes(category::pool_in_use) == 0);
        CHECK(l.bytes(category::pool_idle) == 16 * KiB);
        buffer b = pool.acquire(16 * KiB);
        CHECK(l.bytes(category::pool_in_use) == 16 * KiB);
        CHECK(l.bytes(category::pool_idle) == 0);
        b.reset();
        pool.set_pressure(pressure_level::critical);
        CHECK(l.total() == 0);
        pool.set_pressure(pressure_level::normal);
        { buffer c = pool.acquire(1); }
        CHECK(l.bytes(category::pool_idle) == 4 * KiB);
    }
    // Destroying the pool frees and un-charges whatever was idle.
    CHECK(l.total() == 0);
}

TEST_CASE("buffer_pool: works as a std::pmr::memory_resource", "[buffer_pool]") {
    memgov::ledger l;
    buffer_pool_config c;
    c.ledger_batch_bytes = 0;
    buffer_pool pool{c, &l};
    std::pmr::memory_resource& r = pool.resource();
    CHECK(r.is_equal(r));
    CHECK_FALSE(r.is_equal(*std::pmr::new_delete_resource()));
    {
        std::pmr::vector<int> v{&r};
        for (int i = 0; i < 10000; ++i) v.push_back(i);
        CHECK(v[9999] == 9999);
        void* big = r.allocate(2 * MiB, 64);
        void* aligned = r.allocate(100, 4096);
        CHECK(reinterpret_cast<std::uintptr_t>(aligned) % 4096 == 0);
        r.deallocate(aligned, 100, 4096);
        r.deallocate(big, 2 * MiB, 64);
    }
    const auto s = pool.stats();
    CHECK(s.in_use_bytes == 0);
    CHECK(s.oversize_acquisitions >= 2);
    CHECK(s.oversize_releases == s.oversize_acquisitions);
    CHECK(s.harmful_bytes == 0);
    CHECK(l.bytes(category::pool_in_use) == 0);
}

namespace {

// A depot-only pool holding, idle, `small` 4 KiB buffers (the oldest) and then `large` 1 MiB
// buffers, so that "oldest first" and "largest first" disagree.
void fill_idle(buffer_pool& pool, memgov::manual_clock& clock, std::size_t small, std::size_t large) {
    std::vector<buffer> bs;
    for (std::size_t i = 0; i < small; ++i) bs.push_back(pool.acquire(4 * KiB));
    bs.clear();
    clock.advance(std::chrono::seconds{1});
    for (std::size_t i = 0; i < large; ++i) bs.push_back(pool.acquire(1 * MiB));
    bs.clear();
}

memgov::reclaim_request trim_request(pressure_level level, std::size_t bytes_wanted, std::size_t budget) {
    memgov::reclaim_request req;
    req.action = memgov::reclaim_action::trim_pools;
    req.level = level;
    req.bytes_wanted = bytes_wanted;
    req.budget = budget;
    return req;
}

} // namespace

TEST_CASE("buffer_pool: the reclaimer frees at most budget buffers a step, largest first, and "
          "reports them",
          "[buffer_pool][reclaimers]") {
    memgov::manual_clock clock;
    buffer_pool pool{depot_only(), nullptr, clock};
    fill_idle(pool, clock, 10, 10);
    REQUIRE(pool.idle_bytes() == 10 * 4 * KiB + 10 * MiB);
    memgov::buffer_pool_reclaimer r{pool};

    SECTION("emergency wants everything, but one step frees at most `budget` buffers") {
        const auto got = r.reclaim(trim_request(pressure_level::emergency, 0, 3));
        CHECK(got.items == 3);
        CHECK(got.bytes == 3 * MiB);
        CHECK(pool.idle_bytes() == 10 * 4 * KiB + 7 * MiB);
        // Further steps continue where this one stopped.
        const auto next = r.reclaim(trim_request(pressure_level::emergency, 0, 9));
        CHECK(next.items == 9);
        CHECK(next.bytes == 7 * MiB + 2 * 4 * KiB);
        CHECK(pool.idle_bytes() == 8 * 4 * KiB);
    }
    SECTION("below emergency it frees what the step wants, from the largest class") {
        const auto got = r.reclaim(trim_request(pressure_level::high, MiB + MiB / 2, 100));
        CHECK(got.items == 2);
        CHECK(got.bytes == 2 * MiB);
        CHECK(pool.idle_bytes() == 10 * 4 * KiB + 8 * MiB);
    }
    SECTION("the budget counts buffers, whatever their size") {
        std::vector<buffer> held; // out of the depot: only the 4 KiB buffers are idle
        for (int i = 0; i < 10; ++i) held.push_back(pool.acquire(MiB));
        REQUIRE(pool.idle_bytes() == 10 * 4 * KiB);
        const auto got = r.reclaim(trim_request(pressure_level::high, MiB, 4));
        CHECK(got.items == 4);
        CHECK(got.bytes == 4 * 4 * KiB);
        CHECK(pool.idle_bytes() == 6 * 4 * KiB);
    }
    SECTION("other actions are not the pool's") {
        auto req = trim_request(pressure_level::emergency, 0, 100);
        req.action = memgov::reclaim_action::evict_lru;
        const auto got = r.reclaim(req);
        CHECK(got.items == 0);
        CHECK(got.bytes == 0);
        CHECK(pool.idle_bytes() == 10 * 4 * KiB + 10 * MiB);
    }
}

TEST_CASE("buffer_pool: a bounded trim frees at most max_buffers, largest class first", "[buffer_pool]") {
    STATIC_REQUIRE(noexcept(std::declval<buffer_pool&>().trim(0, 1)));
    memgov::manual_clock clock;
    memgov::ledger l;
    memgov_test::counting_resource upstream;
    buffer_pool_config c = depot_only();
    c.upstream = &upstream;
    buffer_pool pool{c, &l, clock};
    fill_idle(pool, clock, 10, 10); // the 4 KiB buffers are the oldest
    const std::size_t all = 10 * 4 * KiB + 10 * MiB;
    REQUIRE(pool.idle_bytes() == all);

    SECTION("the bound stops it before the target") {
        const memgov::buffer_pool_trim_result r = pool.trim(0, 12);
        CHECK(r.buffers == 12);
        CHECK(r.bytes == 10 * MiB + 2 * 4 * KiB);
        CHECK(pool.idle_bytes() == 8 * 4 * KiB);
        CHECK(upstream.counts(MiB).deallocations == 10);
        CHECK(upstream.counts(4 * KiB).deallocations == 2);
        CHECK(upstream.outstanding_bytes() == 8 * 4 * KiB);
        CHECK(l.total() == static_cast<std::int64_t>(8 * 4 * KiB));
        const auto s = pool.stats();
        CHECK(s.trim_calls == 1);
        CHECK(s.classes[4].trimmed_buffers == 10);
        CHECK(s.classes[0].trimmed_buffers == 2);
    }
    SECTION("the target stops it before the bound; within a class the oldest goes first") {
        std::vector<buffer> bs;
        for (int i = 0; i < 10; ++i) bs.push_back(pool.acquire(MiB));
        std::vector<std::byte*> order;
        for (auto& x : bs) {
            order.push_back(x.data());
            clock.advance(std::chrono::seconds{1});
            x.reset();
        }
        const auto r = pool.trim(all - 2 * MiB - 1, 100);
        CHECK(r.buffers == 3); // 2 MiB + 1 byte over the target: three 1 MiB buffers
        CHECK(r.bytes == 3 * MiB);
        CHECK(pool.idle_bytes() == all - 3 * MiB);
        std::set<std::byte*> left;
        for (int i = 0; i < 7; ++i) {
            buffer x = pool.try_acquire(MiB);
            REQUIRE(x);
            left.insert(x.data());
            bs.push_back(std::move(x));
        }
        CHECK(left == std::set<std::byte*>(order.begin() + 3, order.end()));
    }
    SECTION("a target already met and a zero bound free nothing") {
        CHECK(pool.trim(all, 100).buffers == 0);
        const auto r = pool.trim(0, 0);
        CHECK(r.buffers == 0);
        CHECK(r.bytes == 0);
        CHECK(pool.idle_bytes() == all);
        CHECK(upstream.counts(MiB).deallocations == 0);
    }
    SECTION("with no bound it frees everything, like trim(0)") {
        const auto r = pool.trim(0, std::numeric_limits<std::size_t>::max());
        CHECK(r.buffers == 20);
        CHECK(r.bytes == all);
        CHECK(upstream.outstanding_bytes() == 0);
        CHECK(l.total() == 0);
    }
}

TEST_CASE("buffer_pool: a bounded trim empties the caller's cache first", "[buffer_pool]") {
    buffer_pool pool; // thread caches on
    { buffer b = pool.acquire(MiB); }
    REQUIRE(pool.thread_cache_bytes() == MiB);
    REQUIRE(pool.idle_bytes() == 0);
    const auto r = pool.trim(0, 1);
    CHECK(r.buffers == 1);
    CHECK(r.bytes == MiB);
    CHECK(pool.thread_cache_bytes() == 0);
    CHECK(pool.stats().idle_bytes == 0);
}
