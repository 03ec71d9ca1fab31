// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Removal batches and the LRU sampler of `session_map`. A shard unlinks the entries it removes
/// into a `session_victims` batch under its lock and runs their `on_evict` after releasing it;
/// `session_lru_sampler` chooses the entry `evict_lru_until` removes from a shard. Neither is
/// thread-safe: both are used under the shard lock (the sampler also under the eviction turn).

#include <memgov/config.hpp>
#include <memgov/detail/session_map_index.hpp>
#include <memgov/detail/session_map_node.hpp>
#include <memgov/detail/session_map_slab.hpp>
#include <memgov/session_rules.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

// Entries unlinked under a shard lock whose callbacks run after it is released. A batch holds
// at most `capacity` entries, which bounds the removals made under one hold of a shard lock.
template <class Node>
struct session_victims {
    struct victim {
        std::uint32_t idx;
        Node* n;
        evict_reason reason;
    };
    static constexpr std::size_t capacity = 32;
    std::array<victim, capacity> items;
    std::size_t count = 0;
    std::int64_t last_bytes = 0;   // the cost of the entry unlinked last
    std::int64_t removed_cost = 0; // taken off the shard total when the batch is disposed of
    [[nodiscard]] bool full() const noexcept { return count == capacity; }
    void add(std::uint32_t idx, Node& n, evict_reason reason) noexcept { items[count++] = victim{idx, &n, reason}; }
};

// Approximate LRU, as Redis does it: samples `samples` entries of one shard (all of them when
// it holds no more) and returns the evictable one to go first, or `session_nil`: an ended entry
// before any other, then the least recently active. `no_evict` entries are never chosen.
// Every entry examined adds one to `work`; sampling stops once `work` reaches `budget`.
class session_lru_sampler {
public:
    explicit session_lru_sampler(std::uint64_t seed = 1) noexcept : m_state{seed | 1U} {}

    template <class Node>
    [[nodiscard]] std::uint32_t pick(const session_index& index, session_slab<Node>& slab, std::size_t samples,
                                     std::size_t budget, std::size_t& work) noexcept {
        const std::uint32_t cap = index.positions();
        const std::uint32_t size = index.size();
        if (size == 0) return session_nil;
        std::uint32_t best = session_nil;
        std::int64_t best_t = std::numeric_limits<std::int64_t>::max();
        bool best_ended = false;
        auto consider = [&](std::uint32_t idx) noexcept {
            ++work;
            const Node& n = slab.at(idx);
            const std::uint64_t w = n.cost.load(std::memory_order_relaxed);
            if ((w & session_no_evict_bit) != 0) return;
            const bool e = (w & session_ended_bit) != 0;
            const std::int64_t t = n.last_active.load(std::memory_order_relaxed);
            if (best == session_nil || (e && !best_ended) || (e == best_ended && t < best_t)) {
                best_t = t;
                best_ended = e;
                best = idx;
            }
        };
        if (size <= samples) {
            for (std::uint32_t p = 0; p < cap && work < budget; ++p) {
                const std::uint32_t idx = index.slot(p).idx;
                if (idx != session_nil) consider(idx);
            }
            return best;
        }
        for (std::size_t k = 0; k < samples && work < budget; ++k) {
            std::uint32_t p = session_index::scale(static_cast<std::uint32_t>(next_random()), cap);
            while (index.slot(p).idx == session_nil) p = index.next(p);
            consider(index.slot(p).idx);
        }
        return best;
    }

private:
    // xorshift64.
    std::uint64_t next_random() noexcept {
        m_state ^= m_state << 13;
        m_state ^= m_state >> 7;
        m_state ^= m_state << 17;
        return m_state;
    }

    std::uint64_t m_state;
};

} // namespace detail
MEMGOV_NAMESPACE_END
