// SPDX-License-Identifier: MIT
// The lookup table behind session_map, checked against a model: two-choice buckets, cuckoo
// moves when both are full, growth by a quarter, and shrinking.
#include <memgov/detail/session_map_index.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

using memgov::detail::session_index;
using memgov::detail::session_nil;

namespace {

// Every stored entry sits in one of its two buckets or on the overflow list, and the size is
// the number stored.
void check_invariants(const session_index& t) {
    const std::uint32_t cap = t.capacity();
    const std::uint32_t buckets = cap / session_index::bucket_slots;
    std::uint32_t count = 0;
    for (std::uint32_t pos = 0; pos < t.positions(); ++pos) {
        const auto& s = t.slot(pos);
        if (s.idx == session_nil) continue;
        ++count;
        if (pos >= cap) continue; // on the overflow list
        const auto [a, b] = session_index::buckets_of(s.fp, buckets);
        const std::uint32_t in = pos / session_index::bucket_slots;
        REQUIRE((in == a || in == b));
    }
    REQUIRE(count == t.size());
}

} // namespace

TEST_CASE("session_map index: random inserts and erasures match a model", "[session_map]") {
    std::mt19937_64 rng{7};
    session_index t;
    std::unordered_map<std::uint32_t, std::uint32_t> model; // idx -> fp
    std::vector<std::uint32_t> live;
    std::uint32_t next_idx = 0;
    // Hash bits from a small set in part of the rounds, so buckets fill up, fingerprints repeat
    // and insertions need chains of moves.
    auto fp_of = [&] {
        if (rng() % 2 == 0) return static_cast<std::uint32_t>(rng());
        return static_cast<std::uint32_t>(rng() % 509) * 8'438'303U;
    };

    for (int round = 0; round < 20'000; ++round) {
        const bool grow = live.size() < 40 || (live.size() < 3000 && rng() % 3 != 0);
        if (grow) {
            const std::uint32_t fp = fp_of();
            t.reserve_one(fp);
            t.insert(fp, next_idx);
            model[next_idx] = fp;
            live.push_back(next_idx);
            ++next_idx;
        } else {
            const auto k = static_cast<std::size_t>(rng() % live.size());
            const std::uint32_t idx = live[k];
            const std::uint32_t pos = t.find_index(model[idx], idx);
            REQUIRE(pos != session_nil);
            t.erase_at(pos);
            model.erase(idx);
            live[k] = live.back();
            live.pop_back();
        }
        if (round % 97 == 0) {
            check_invariants(t);
            for (const auto& [idx, fp] : model) REQUIRE(t.find_index(fp, idx) != session_nil);
            // Absent entries are not found, whether their hash bits are in use or not.
            REQUIRE(t.find_index(fp_of(), next_idx + 1) == session_nil);
        }
    }
    // Drain: the table shrinks as it empties and stays consistent.
    const std::uint32_t peak = t.capacity();
    while (!live.empty()) {
        const std::uint32_t idx = live.back();
        live.pop_back();
        t.erase_at(t.find_index(model[idx], idx));
        model.erase(idx);
    }
    check_invariants(t);
    CHECK(t.size() == 0);
    CHECK(t.capacity() < peak);
    CHECK(t.capacity() >= session_index::min_capacity);
}

TEST_CASE("session_map index: growth keeps the load factor high", "[session_map]") {
    session_index t;
    std::mt19937 rng{3};
    double lowest = 1.0;
    double highest = 0.0;
    for (std::uint32_t i = 0; i < 200'000; ++i) {
        const auto fp = static_cast<std::uint32_t>(rng());
        t.reserve_one(fp);
        t.insert(fp, i);
        if (t.capacity() >= 1024) {
            const double load = static_cast<double>(t.size()) / t.capacity();
            lowest = std::min(lowest, load);
            highest = std::max(highest, load);
        }
    }
    // Past the first doublings the table grows by a quarter, at 90% full.
    CHECK(highest <= 0.9);
    CHECK(highest >= 0.89);
    CHECK(lowest >= 0.7);
    check_invariants(t);
}

TEST_CASE("session_map index: keys with the same hash bits overflow instead of stalling", "[session_map]") {
    // Only sixteen entries fit in the two buckets one hash value maps to; the rest go to the
    // overflow list, whatever the table's size.
    session_index t;
    for (std::uint32_t i = 0; i < 100; ++i) {
        t.reserve_one(12345U);
        t.insert(12345U, i);
    }
    check_invariants(t);
    CHECK(t.size() == 100);
    CHECK(t.positions() - t.capacity() == 100 - 2 * session_index::bucket_slots);
    CHECK(t.capacity() <= 8 * session_index::bucket_slots); // no growth chasing the collisions
    for (std::uint32_t i = 0; i < 100; ++i) CHECK(t.find_index(12345U, i) != session_nil);
    CHECK(t.find(12345U, [](std::uint32_t) { return false; }) == session_nil);
    // Ordinary keys still go to buckets beside them, and everything can be erased.
    for (std::uint32_t i = 100; i < 1100; ++i) {
        const std::uint32_t fp = i * 2'654'435'761U;
        t.reserve_one(fp);
        t.insert(fp, i);
    }
    check_invariants(t);
    for (std::uint32_t i = 0; i < 100; ++i) t.erase_at(t.find_index(12345U, i));
    for (std::uint32_t i = 100; i < 1100; ++i) t.erase_at(t.find_index(i * 2'654'435'761U, i));
    CHECK(t.size() == 0);
    CHECK(t.positions() == t.capacity());
}
