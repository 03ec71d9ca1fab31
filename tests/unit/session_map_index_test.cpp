// SPDX-License-Identifier: MIT
// The lookup table behind session_map, checked against a model: Robin Hood placement,
// backward-shift deletion, wrap-around at the end of a table whose capacity is not a power of
// two, growth by a quarter and shrinking.
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

// Every stored entry sits at or after its home, and no entry is farther from its home than the
// one before it plus one (the Robin Hood invariant that lets a miss stop early).
void check_invariants(const session_index& t) {
    const std::uint32_t cap = t.capacity();
    std::uint32_t count = 0;
    for (std::uint32_t pos = 0; pos < cap; ++pos) {
        const auto& s = t.slot(pos);
        if (s.idx == session_nil) continue;
        ++count;
        const std::uint32_t d = session_index::distance(pos, s.fp, cap);
        const std::uint32_t prev = pos == 0 ? cap - 1 : pos - 1;
        const auto& p = t.slot(prev);
        if (d > 0) {
            REQUIRE(p.idx != session_nil);
            REQUIRE(session_index::distance(prev, p.fp, cap) + 1 >= d);
        }
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
    // Few distinct hash values, so runs collide, share fingerprints and wrap around the end.
    auto fp_of = [&] {
        return static_cast<std::uint32_t>(rng() % 64) * 0x04000000U + (rng() % 2 == 0 ? 0U : 0x03FFFFFFU);
    };

    for (int round = 0; round < 20'000; ++round) {
        const bool grow = live.size() < 40 || (live.size() < 3000 && rng() % 3 != 0);
        if (grow) {
            const std::uint32_t fp = fp_of();
            t.reserve_one();
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
    for (std::uint32_t i = 0; i < 200'000; ++i) {
        t.reserve_one();
        t.insert(static_cast<std::uint32_t>(rng()), i);
        if (t.capacity() >= 1024) {
            const double load = static_cast<double>(t.size()) / t.capacity();
            lowest = std::min(lowest, load);
            REQUIRE(load <= 0.875);
        }
    }
    // Past the first doublings the table grows by a quarter: never less than 0.875 / 1.25 full.
    CHECK(lowest >= 0.69);
}
