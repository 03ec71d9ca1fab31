#include <memgov/sliding_window.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory_resource>
#include <new>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <vector>

using memgov::buffer_pool;
using memgov::category;
using memgov::grant_result;
using memgov::sliding_window;
using memgov::sliding_window_config;
using memgov::take_mode;
using memgov::window_chunk;
using memgov::window_quota;

namespace {

constexpr std::size_t KiB = 1024;

std::vector<std::byte> pattern(std::size_t n, std::uint64_t start) {
    std::vector<std::byte> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((start + i) % 251);
    return v;
}

std::vector<std::byte> contents(const sliding_window& w) {
    std::vector<std::byte> out(w.size());
    CHECK(w.peek(out) == w.size());
    return out;
}

// The rule the window promises, written the obvious way.
struct model {
    std::size_t cap;
    double fraction;
    std::deque<std::byte> bytes;
    std::uint64_t dropped = 0;
    std::uint64_t events = 0;

    void append(const std::vector<std::byte>& d) {
        std::vector<std::byte> data = d;
        if (data.size() >= cap) {
            const std::size_t skip = data.size() - cap;
            if (!bytes.empty() || skip > 0) {
                dropped += bytes.size() + skip;
                ++events;
                bytes.clear();
            }
            data.erase(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(skip));
        } else if (bytes.size() + data.size() > cap) {
            const std::size_t need = bytes.size() + data.size() - cap;
            const auto frac = static_cast<std::size_t>(std::ceil(static_cast<double>(cap) * fraction));
            const std::size_t n = std::min(std::max(need, frac), bytes.size());
            dropped += n;
            ++events;
            bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
        }
        bytes.insert(bytes.end(), data.begin(), data.end());
    }
};

// An upstream that serves `budget` more allocations, then throws std::bad_alloc.
class failing_resource final : public std::pmr::memory_resource {
public:
    std::size_t budget = std::numeric_limits<std::size_t>::max();

private:
    void* do_allocate(std::size_t n, std::size_t align) override {
        if (budget == 0) throw std::bad_alloc{};
        --budget;
        return std::pmr::new_delete_resource()->allocate(n, align);
    }
    void do_deallocate(void* p, std::size_t n, std::size_t align) override {
        std::pmr::new_delete_resource()->deallocate(p, n, align);
    }
    [[nodiscard]] bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
};

bool identity_holds(const memgov::sliding_window_stats& s) {
    return s.appended_bytes == s.size_bytes + s.dropped_bytes + s.consumed_bytes + s.taken_bytes;
}

} // namespace

TEST_CASE("sliding_window: guarantees are noexcept where the style requires", "[sliding_window]") {
    STATIC_REQUIRE(std::is_nothrow_move_constructible_v<sliding_window>);
    STATIC_REQUIRE(std::is_nothrow_move_assignable_v<sliding_window>);
    STATIC_REQUIRE(std::is_nothrow_destructible_v<sliding_window>);
    STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<sliding_window>);
    STATIC_REQUIRE(std::is_nothrow_move_constructible_v<window_chunk>);
    STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<window_chunk>);
    STATIC_REQUIRE(noexcept(std::declval<sliding_window&>().take_chunks({})));
    STATIC_REQUIRE(noexcept(std::declval<sliding_window&>().consume(1)));
    STATIC_REQUIRE(noexcept(std::declval<sliding_window&>().clear()));
    STATIC_REQUIRE(noexcept(std::declval<const sliding_window&>().peek({})));
    STATIC_REQUIRE(noexcept(std::declval<sliding_window&>().return_grant()));
    STATIC_REQUIRE(noexcept(std::declval<sliding_window&>().grant(std::declval<window_quota&>(), 1)));
    STATIC_REQUIRE(noexcept(std::declval<const sliding_window&>().stats()));
    STATIC_REQUIRE_FALSE(noexcept(std::declval<sliding_window&>().append({})));
}

TEST_CASE("sliding_window: a bad configuration names the field", "[sliding_window]") {
    buffer_pool pool;
    using Catch::Contains;
    CHECK_THROWS_WITH((sliding_window{pool, {.chunk_size = 0}}), Contains("memgov::sliding_window_config::chunk_size"));
    CHECK_THROWS_WITH((sliding_window{pool, {.chunk_size = 2 << 20}}),
                      Contains("chunk_size: must be > 0 and at most the pool's largest"));
    CHECK_THROWS_WITH((sliding_window{pool, {.cap_bytes = 0}}),
                      Contains("memgov::sliding_window_config::cap_bytes: must be > 0"));
    CHECK_THROWS_WITH((sliding_window{pool, {.drop_fraction = 0.0}}), Contains("drop_fraction: must be in (0, 1]"));
    CHECK_THROWS_AS((sliding_window{pool, {.drop_fraction = 1.5}}), std::invalid_argument);
    CHECK_THROWS_WITH(window_quota{{.total_bytes = 0}},
                      Contains("memgov::window_quota_config::total_bytes: must be > 0"));
    CHECK_THROWS_WITH((window_quota{{.total_bytes = 10, .max_grant_bytes = 11}}), Contains("max_grant_bytes"));
}

TEST_CASE("sliding_window: defaults", "[sliding_window]") {
    buffer_pool pool;
    sliding_window w{pool};
    CHECK(w.chunk_size() == 64 * KiB);
    CHECK(w.cap_bytes() == 10 * 1024 * KiB);
    CHECK(w.drop_bytes() == 10 * 1024 * KiB / 4);
    CHECK(w.empty());
    CHECK(w.held_bytes() == 0);
}

TEST_CASE("sliding_window: bytes come back in order across chunk boundaries", "[sliding_window]") {
    memgov::ledger l;
    buffer_pool pool;
    sliding_window w{pool, {.chunk_size = 4096, .cap_bytes = 1 << 20}, &l};
    const auto a = pattern(3000, 0);
    const auto b = pattern(6000, 3000);
    w.append(a);
    w.append(b);
    CHECK(w.size() == 9000);
    CHECK(w.chunk_count() == 3);
    CHECK(w.held_bytes() == 3 * 4096);
    CHECK(l.bytes(category::windows) == 3 * 4096);
    CHECK(contents(w) == pattern(9000, 0));

    std::vector<std::byte> mid(100);
    CHECK(w.peek(mid, 4050) == 100);
    CHECK(mid == pattern(100, 4050));
    std::vector<std::byte> tail(500);
    CHECK(w.peek(tail, 8800) == 200);

    std::size_t segments = 0;
    std::size_t total = 0;
    w.for_each_segment([&](std::span<const std::byte> s) {
        ++segments;
        total += s.size();
    });
    CHECK(segments == 3);
    CHECK(total == 9000);

    std::vector<std::byte> first(5000);
    CHECK(w.read(first) == 5000);
    CHECK(first == pattern(5000, 0));
    CHECK(w.size() == 4000);
    CHECK(w.chunk_count() == 2); // the first chunk went back to the pool
    CHECK(contents(w) == pattern(4000, 5000));
    CHECK(w.consume(10000) == 4000);
    CHECK(w.empty());
    CHECK(w.chunk_count() == 0);
    CHECK(l.bytes(category::windows) == 0);
    const auto s = w.stats();
    CHECK(s.appended_bytes == 9000);
    CHECK(s.consumed_bytes == 9000);
    CHECK(s.dropped_bytes == 0);
}

TEST_CASE("sliding_window: drop-oldest is exact", "[sliding_window]") {
    buffer_pool pool;
    const std::size_t cap = 10000;
    sliding_window w{pool, {.chunk_size = 4096, .cap_bytes = cap, .drop_fraction = 0.25}};
    REQUIRE(w.drop_bytes() == 2500);

    SECTION("a write that would pass the cap drops the oldest quarter first") {
        w.append(pattern(9000, 0));
        w.append(pattern(2000, 9000)); // 11000 > 10000: drop max(1000, 2500) = 2500
        CHECK(w.size() == 8500);
        CHECK(contents(w) == pattern(8500, 2500));
        auto s = w.stats();
        CHECK(s.dropped_bytes == 2500);
        CHECK(s.drop_events == 1);
        w.append(pattern(1500, 11000)); // exactly at the cap: no drop
        CHECK(w.size() == cap);
        CHECK(w.stats().drop_events == 1);
        w.append(pattern(1, 12500)); // one byte over: drops 2500
        CHECK(w.size() == 7501);
        CHECK(contents(w) == pattern(7501, 5000));
        s = w.stats();
        CHECK(s.dropped_bytes == 5000);
        CHECK(s.drop_events == 2);
    }
    SECTION("a write larger than the cap keeps only its newest bytes") {
        w.append(pattern(500, 0));
        w.append(pattern(25000, 500));
        CHECK(w.size() == cap);
        CHECK(contents(w) == pattern(cap, 500 + 15000));
        const auto s = w.stats();
        CHECK(s.dropped_bytes == 500 + 15000);
        CHECK(s.drop_events == 1);
        CHECK(s.held_bytes <= cap + 2 * 4096);
    }
    SECTION("random writes match the model, byte for byte") {
        const auto seed = std::random_device{}();
        INFO("seed " << seed);
        std::mt19937_64 rng{seed};
        model m{cap, 0.25, {}, 0, 0};
        std::uint64_t next = 0;
        for (int i = 0; i < 400; ++i) {
            const std::size_t n = (i % 50 == 49) ? rng() % 30000 : rng() % 3000;
            const auto d = pattern(n, next);
            next += n;
            w.append(d);
            m.append(d);
            REQUIRE(w.size() == m.bytes.size());
            REQUIRE(w.size() <= cap);
            REQUIRE(w.held_bytes() <= cap + 2 * 4096);
            if (i % 7 == 0 && !m.bytes.empty()) {
                const std::size_t c = rng() % (m.bytes.size() + 1);
                CHECK(w.consume(c) == c);
                m.bytes.erase(m.bytes.begin(), m.bytes.begin() + static_cast<std::ptrdiff_t>(c));
            }
        }
        CHECK(contents(w) == std::vector<std::byte>(m.bytes.begin(), m.bytes.end()));
        const auto s = w.stats();
        CHECK(s.dropped_bytes == m.dropped);
        CHECK(s.drop_events == m.events);
        CHECK(s.appended_bytes == next);
        CHECK(s.appended_bytes == s.size_bytes + s.dropped_bytes + s.consumed_bytes);
    }
}

TEST_CASE("sliding_window: take_chunks hands out the pool's buffers without copying", "[sliding_window]") {
    memgov::ledger l;
    buffer_pool pool{{}, &l};
    sliding_window w{pool, {.chunk_size = 4096, .cap_bytes = 1 << 20}, &l};
    w.append(pattern(3 * 4096 + 100, 0));
    w.consume(10); // the head chunk now starts 10 bytes in
    std::vector<const std::byte*> addrs;
    w.for_each_segment([&](std::span<const std::byte> s) { addrs.push_back(s.data()); });
    REQUIRE(addrs.size() == 4);

    std::vector<window_chunk> out(8);
    CHECK(w.take_chunks(out) == 3); // whole chunks only: the partial fourth stays
    CHECK(out[0].offset == 10);
    CHECK(out[0].bytes().data() == addrs[0]);
    CHECK(out[1].bytes().data() == addrs[1]);
    CHECK(out[2].bytes().data() == addrs[2]);
    CHECK(out[0].size() == 4096 - 10);
    CHECK(std::vector<std::byte>(out[1].bytes().begin(), out[1].bytes().end()) == pattern(4096, 4096));
    CHECK(w.size() == 100);
    CHECK(w.chunk_count() == 1);
    CHECK(l.bytes(category::windows) == 4096);
    auto s = w.stats();
    CHECK(s.taken_chunks == 3);
    CHECK(s.taken_bytes == 3 * 4096 - 10);
    CHECK(s.appended_bytes == s.size_bytes + s.taken_bytes + s.consumed_bytes);

    CHECK(w.take_chunks(std::span{out}.subspan(3), take_mode::include_partial) == 1);
    CHECK(out[3].bytes().data() == addrs[3]);
    CHECK(out[3].size() == 100);
    CHECK(w.empty());
    CHECK(l.bytes(category::windows) == 0);
    // The chunks are still the pool's, in use until the producer lets go of them.
    CHECK(pool.stats().in_use_bytes == 4 * 4096);
    out.clear();
    CHECK(pool.stats().in_use_bytes == 0);

    // Appending after a take starts a new chunk.
    w.append(pattern(10, 0));
    CHECK(w.chunk_count() == 1);
    CHECK(contents(w) == pattern(10, 0));
}

TEST_CASE("sliding_window: quota grants are bounded and accounted exactly", "[sliding_window]") {
    buffer_pool pool;
    window_quota q{{.total_bytes = 100 * KiB, .max_grant_bytes = 60 * KiB}};
    const sliding_window_config cfg{.chunk_size = 4096, .cap_bytes = 20 * KiB};
    sliding_window a{pool, cfg};
    {
        sliding_window b{pool, cfg};
        CHECK(a.grant(q, 50 * KiB) == grant_result::granted);
        CHECK(a.cap_bytes() == 70 * KiB);
        CHECK(a.granted_bytes() == 50 * KiB);
        CHECK(q.granted_bytes() == 50 * KiB);
        CHECK(b.grant(q, 60 * KiB) == grant_result::quota_exhausted);
        CHECK(b.cap_bytes() == 20 * KiB);
        CHECK(b.grant(q, 50 * KiB) == grant_result::granted);
        CHECK(q.available_bytes() == 0);
        CHECK(a.grant(q, 20 * KiB) == grant_result::over_window_limit);
        window_quota other{{.total_bytes = 1 << 20, .max_grant_bytes = 1 << 20}};
        CHECK(a.grant(other, 1) == grant_result::other_quota);
        CHECK(other.granted_bytes() == 0);
        const auto s = q.stats();
        CHECK(s.grants == 2);
        CHECK(s.refusals == 2);
        CHECK(s.granted_bytes == 100 * KiB);
        CHECK(s.peak_granted_bytes == 100 * KiB);
        // b is destroyed holding its grant: it goes back.
    }
    CHECK(q.granted_bytes() == 50 * KiB);
    CHECK(q.stats().returns == 1);

    // a uses its extension, then returns it: the oldest bytes above the base cap go.
    a.append(pattern(60 * KiB, 0));
    CHECK(a.size() == 60 * KiB);
    CHECK(a.stats().drop_events == 0);
    CHECK(a.return_grant() == 50 * KiB);
    CHECK(a.cap_bytes() == 20 * KiB);
    CHECK(a.size() == 20 * KiB);
    CHECK(contents(a) == pattern(20 * KiB, 40 * KiB));
    CHECK(a.stats().dropped_bytes == 40 * KiB);
    CHECK(a.stats().drop_events == 1);
    CHECK(q.granted_bytes() == 0);
    CHECK(a.return_grant() == 0);
    CHECK(q.stats().returns == 2);
    // A refused grant changes nothing.
    CHECK(a.grant(q, 61 * KiB) == grant_result::over_window_limit);
    CHECK(a.cap_bytes() == 20 * KiB);
    CHECK(q.granted_bytes() == 0);
    CHECK(to_string(grant_result::quota_exhausted) == "quota_exhausted");
}

TEST_CASE("sliding_window: moves carry data, grant and charge", "[sliding_window]") {
    memgov::ledger l;
    buffer_pool pool;
    window_quota q;
    sliding_window a{pool, {.chunk_size = 4096, .cap_bytes = 8192}, &l};
    CHECK(a.grant(q, 4096) == grant_result::granted);
    a.append(pattern(10000, 0));
    sliding_window b{std::move(a)};
    CHECK(a.empty()); // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    CHECK(a.granted_bytes() == 0);
    CHECK(b.size() == 10000);
    CHECK(b.granted_bytes() == 4096);
    CHECK(contents(b) == pattern(10000, 0));
    sliding_window c{pool, {.chunk_size = 4096}, &l};
    c.append(pattern(5, 0));
    c = std::move(b);
    CHECK(c.size() == 10000);
    CHECK(l.bytes(category::windows) == 3 * 4096);
    CHECK(q.granted_bytes() == 4096);
    a.append(pattern(3, 0)); // a moved-from window is usable
    CHECK(a.size() == 3);
}

TEST_CASE("sliding_window: a moved-from window reports zero statistics", "[sliding_window]") {
    buffer_pool pool;
    sliding_window a{pool, {.chunk_size = 4096, .cap_bytes = 8192}};
    a.append(pattern(10000, 0)); // 10000 > 8192: 1808 of the write are dropped
    CHECK(a.consume(100) == 100);
    const auto before = a.stats();
    REQUIRE(before.appended_bytes == 10000);
    REQUIRE(identity_holds(before));

    sliding_window b{std::move(a)};
    auto moved = a.stats(); // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    CHECK(moved.appended_bytes == 0);
    CHECK(moved.dropped_bytes == 0);
    CHECK(moved.drop_events == 0);
    CHECK(moved.consumed_bytes == 0);
    CHECK(moved.taken_bytes == 0);
    CHECK(moved.taken_chunks == 0);
    CHECK(moved.size_bytes == 0);
    CHECK(moved.held_bytes == 0);
    CHECK(identity_holds(moved));
    const auto got = b.stats();
    CHECK(got.appended_bytes == before.appended_bytes);
    CHECK(got.dropped_bytes == before.dropped_bytes);
    CHECK(got.consumed_bytes == 100);
    CHECK(identity_holds(got));

    // Move assignment: the target's own history is replaced, the source's zeroed.
    sliding_window c{pool, {.chunk_size = 4096}};
    c.append(pattern(5, 0));
    c = std::move(b);
    moved = b.stats(); // NOLINT(bugprone-use-after-move)
    CHECK(moved.appended_bytes == 0);
    CHECK(moved.consumed_bytes == 0);
    CHECK(identity_holds(moved));
    CHECK(c.stats().appended_bytes == before.appended_bytes);
    CHECK(identity_holds(c.stats()));
    // A moved-from window counts afresh.
    a.append(pattern(3, 0));
    CHECK(a.stats().appended_bytes == 3);
    CHECK(identity_holds(a.stats()));
}

TEST_CASE("sliding_window: an append that runs out of memory counts only what it wrote", "[sliding_window]") {
    failing_resource upstream;
    memgov::buffer_pool_config pc;
    pc.upstream = &upstream;
    memgov::ledger l;
    buffer_pool pool{pc};
    sliding_window w{pool, {.chunk_size = 4096, .cap_bytes = 10000}, &l};

    SECTION("a write that needs more chunks than the pool can get") {
        upstream.budget = 2;
        CHECK_THROWS_AS(w.append(pattern(9000, 0)), std::bad_alloc); // the third chunk fails
        CHECK(w.size() == 8192);
        CHECK(contents(w) == pattern(8192, 0)); // a prefix of the write, in order
        auto s = w.stats();
        CHECK(s.appended_bytes == 8192);
        CHECK(identity_holds(s));
        CHECK(l.bytes(category::windows) == 2 * 4096);

        upstream.budget = 100; // memory is back: the window carries on
        w.append(pattern(1000, 8192));
        CHECK(contents(w) == pattern(9192, 0));
        s = w.stats();
        CHECK(s.appended_bytes == 9192);
        CHECK(identity_holds(s));
    }
    SECTION("a write larger than the cap, after dropping everything held") {
        upstream.budget = 100;
        w.append(pattern(100, 0)); // one chunk
        upstream.budget = 1;
        // Keeps the newest 10000 of 12000 bytes: drops the 100 held and the write's first
        // 2000, then needs three chunks: the one just freed (from this thread's cache), one
        // new, and a third that fails.
        CHECK_THROWS_AS(w.append(pattern(12000, 100)), std::bad_alloc);
        CHECK(w.size() == 2 * 4096);
        CHECK(contents(w) == pattern(2 * 4096, 100 + 2000));
        const auto s = w.stats();
        CHECK(s.dropped_bytes == 100 + 2000);
        CHECK(s.drop_events == 1);
        CHECK(s.appended_bytes == 100 + 2000 + 2 * 4096);
        CHECK(identity_holds(s));
    }
    SECTION("a fast-path-sized write into a new chunk") {
        upstream.budget = 0;
        CHECK_THROWS_AS(w.append(pattern(10, 0)), std::bad_alloc);
        CHECK(w.empty());
        CHECK(w.stats().appended_bytes == 0);
        CHECK(identity_holds(w.stats()));
    }
}

TEST_CASE("sliding_window: append reports the bytes it dropped", "[sliding_window]") {
    buffer_pool pool;
    const std::size_t cap = 10000;
    sliding_window w{pool, {.chunk_size = 4096, .cap_bytes = cap, .drop_fraction = 0.25}};

    SECTION("the return value is this call's share of dropped_bytes") {
        CHECK(w.append(pattern(9000, 0)) == 0);
        CHECK(w.append(pattern(2000, 9000)) == 2500);          // drops max(1000, 2500), oldest first
        CHECK(w.append(pattern(1500, 11000)) == 0);            // exactly at the cap
        CHECK(w.append(pattern(25000, 12500)) == cap + 15000); // all held, and the write's head
        CHECK(contents(w) == pattern(cap, 12500 + 15000));
        CHECK(w.stats().dropped_bytes == 2500 + cap + 15000);
    }
    SECTION("the out-parameter form also says what was appended") {
        memgov::append_result r{7, 7};
        w.append(pattern(9000, 0), r);
        CHECK(r.appended_bytes == 9000);
        CHECK(r.dropped_bytes == 0);
        w.append(pattern(2000, 9000), r);
        CHECK(r.appended_bytes == 2000);
        CHECK(r.dropped_bytes == 2500);
    }
    SECTION("random writes: the reports add up to the model's drops") {
        const auto seed = std::random_device{}();
        INFO("seed " << seed);
        std::mt19937_64 rng{seed};
        model m{cap, 0.25, {}};
        std::uniform_int_distribution<std::size_t> len{0, 3 * cap / 2};
        std::uint64_t offset = 0;
        for (int i = 0; i < 300; ++i) {
            const auto d = pattern(len(rng), offset);
            offset += d.size();
            const std::uint64_t before = m.dropped;
            m.append(d);
            REQUIRE(w.append(d) == m.dropped - before);
        }
        CHECK(w.stats().dropped_bytes == m.dropped);
    }
}

TEST_CASE("sliding_window: an append that runs out of memory still reports what it did", "[sliding_window]") {
    failing_resource upstream;
    memgov::buffer_pool_config pc;
    pc.upstream = &upstream;
    buffer_pool pool{pc};
    sliding_window w{pool, {.chunk_size = 4096, .cap_bytes = 10000}};
    w.append(pattern(100, 0)); // one chunk
    upstream.budget = 1;
    memgov::append_result r;
    // Drops the 100 held and the write's first 2000, then writes two chunks and fails.
    CHECK_THROWS_AS(w.append(pattern(12000, 100), r), std::bad_alloc);
    CHECK(r.dropped_bytes == 100 + 2000);
    CHECK(r.appended_bytes == 2000 + 2 * 4096);
    CHECK(w.stats().appended_bytes == 100 + r.appended_bytes);
    CHECK(identity_holds(w.stats()));
}

TEST_CASE("sliding_window: a chunk_size between classes uses the whole class", "[sliding_window]") {
    memgov::ledger l;
    buffer_pool pool{{}, &l}; // classes 4, 16, 64, 256 KiB and 1 MiB
    const std::size_t cap = 100 * KiB;
    {
        sliding_window w{pool, {.chunk_size = 5000, .cap_bytes = cap}, &l};
        CHECK(w.chunk_size() == 16 * KiB); // rounded up to the class that holds 5000
        const auto frame = pattern(700, 0);
        std::size_t max_held = 0;
        for (int i = 0; i < 2000; ++i) {
            w.append(frame);
            max_held = std::max(max_held, w.held_bytes());
            // What the pool really has out for the window is what the window says it holds.
            REQUIRE(pool.stats().in_use_bytes == w.held_bytes());
        }
        // The documented bound: the cap plus two partly used chunks.
        CHECK(max_held < cap + 2 * w.chunk_size());
        CHECK(w.chunk_count() <= cap / (16 * KiB) + 2);
        const auto s = w.stats();
        CHECK(identity_holds(s));
        CHECK(pool.stats().harmful_bytes == 0); // each chunk is filled to its capacity
        CHECK(l.bytes(category::windows) == static_cast<std::int64_t>(w.held_bytes()));

        // Whole chunks are full class-size chunks.
        std::vector<window_chunk> out(2);
        REQUIRE(w.take_chunks(out) == 2);
        CHECK(out[1].size() == 16 * KiB);
    }
    CHECK(l.bytes(category::windows) == 0);
}

TEST_CASE("sliding_window: caps near SIZE_MAX saturate instead of wrapping", "[sliding_window]") {
    constexpr std::size_t max = std::numeric_limits<std::size_t>::max();
    buffer_pool pool;
    // cap × drop_fraction rounds up to 2^64 as a double: the drop size saturates at the cap.
    sliding_window all{pool, {.chunk_size = 4096, .cap_bytes = max, .drop_fraction = 1.0}};
    CHECK(all.drop_bytes() == max);
    sliding_window half{pool, {.chunk_size = 4096, .cap_bytes = max, .drop_fraction = 0.5}};
    CHECK(half.drop_bytes() == std::size_t{1} << 63);

    // A grant on top of a cap near SIZE_MAX saturates instead of wrapping to a tiny cap.
    window_quota q{{.total_bytes = 1 << 20, .max_grant_bytes = 1 << 20}};
    sliding_window w{pool, {.chunk_size = 4096, .cap_bytes = max - 10}};
    w.append(pattern(5000, 0));
    CHECK(w.grant(q, 4096) == grant_result::granted);
    CHECK(w.cap_bytes() == max);
    CHECK(w.granted_bytes() == 4096);
    w.append(pattern(5000, 5000)); // nothing dropped: far below the cap
    CHECK(w.size() == 10000);
    CHECK(w.stats().drop_events == 0);
    CHECK(w.return_grant() == 4096);
    CHECK(w.cap_bytes() == max - 10);
    CHECK(contents(w) == pattern(10000, 0));
    CHECK(identity_holds(w.stats()));
}

TEST_CASE("sliding_window: memory stays bounded under a long stream", "[sliding_window]") {
    memgov::ledger l;
    buffer_pool pool{{}, &l};
    const std::size_t cap = 1 << 20;
    {
        sliding_window w{pool, {.cap_bytes = cap}, &l};
        const auto frame = pattern(640, 0);
        std::size_t max_held = 0;
        for (int i = 0; i < 20000; ++i) {
            w.append(frame);
            max_held = std::max(max_held, w.held_bytes());
        }
        CHECK(max_held <= cap + 2 * w.chunk_size());
        const auto s = w.stats();
        CHECK(s.appended_bytes == 20000u * 640u);
        CHECK(s.appended_bytes == s.size_bytes + s.dropped_bytes);
        CHECK(s.drop_events > 0);
        CHECK(l.bytes(category::windows) == static_cast<std::int64_t>(w.held_bytes()));
    }
    CHECK(l.bytes(category::windows) == 0);
    CHECK(pool.stats().in_use_bytes == 0);
}
