// SPDX-License-Identifier: MIT
#pragma once

/// \file
/// Entry storage of one `session_map` shard: chunks of nodes addressed by 32-bit indices, so
/// links and table slots are 4 bytes instead of 8 and there is no per-entry malloc header.
/// Chunks double from 8 to 256 nodes and then stay at 256, so a small shard wastes little
/// and a large one allocates rarely. Nodes never move (a pinned entry keeps its address).
///
/// Freeing: under the shard lock a node goes straight onto the free list; a thread finishing
/// an eviction outside the lock pushes it onto a lock-free stack instead (push-only, drained
/// whole by `exchange`, so there is no ABA), which the next allocation drains.
/// Chunks are kept until the map is destroyed: the steady-state cost of a map is its peak
/// entry count times the node size.

#include <memgov/config.hpp>
#include <memgov/detail/session_map_index.hpp>
#include <memgov/detail/session_map_wheel.hpp>

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

MEMGOV_NAMESPACE_BEGIN
namespace detail {

// Node must be default-constructible and expose `std::uint32_t& free_link() noexcept`.
template <class Node>
class session_slab {
    // `new Node[n]` then allocates exactly `n * sizeof(Node)` (no array cookie), which is what
    // `memory_bytes` reports.
    static_assert(std::is_trivially_destructible_v<Node>);

public:
    static constexpr std::uint32_t first_bits = 3;
    static constexpr std::uint32_t last_bits = 8;
    static constexpr std::uint32_t growing_chunks = last_bits - first_bits + 1;
    static constexpr std::uint32_t growing_total =
        (std::uint32_t{1} << (last_bits + 1)) - (std::uint32_t{1} << first_bits);
    static constexpr std::uint32_t big_chunk = std::uint32_t{1} << last_bits;

    session_slab() = default;
    session_slab(const session_slab&) = delete;
    session_slab& operator=(const session_slab&) = delete;
    ~session_slab() = default;

    [[nodiscard]] Node& at(std::uint32_t idx) noexcept {
        std::uint32_t chunk;
        std::uint32_t offset;
        if (idx < growing_total) {
            chunk = static_cast<std::uint32_t>(std::bit_width((idx >> first_bits) + 1U)) - 1U;
            offset = idx - (((std::uint32_t{1} << chunk) - 1U) << first_bits);
        } else {
            const std::uint32_t rest = idx - growing_total;
            chunk = growing_chunks + rest / big_chunk;
            offset = rest % big_chunk;
        }
        return m_chunks[chunk][offset];
    }

    // A free node index. Throws std::bad_alloc when a new chunk cannot be had.
    std::uint32_t allocate() {
        if (m_free == session_nil) m_free = m_pending.exchange(session_nil, std::memory_order_acquire);
        if (m_free == session_nil) grow();
        const std::uint32_t idx = m_free;
        m_free = at(idx).free_link();
        return idx;
    }

    // Under the shard lock.
    void free_locked(std::uint32_t idx) noexcept {
        at(idx).free_link() = m_free;
        m_free = idx;
    }

    // From any thread, without the shard lock. `node` is `at(idx)`, looked up by the caller
    // while it still could.
    void free_unlocked(std::uint32_t idx, Node& node) noexcept {
        std::uint32_t head = m_pending.load(std::memory_order_relaxed);
        do {
            node.free_link() = head;
        } while (!m_pending.compare_exchange_weak(head, idx, std::memory_order_release, std::memory_order_relaxed));
    }

    // Pushes the chain first → ... → last (already linked through `free_link`) in one step.
    void free_chain_unlocked(std::uint32_t first, Node& last) noexcept {
        std::uint32_t head = m_pending.load(std::memory_order_relaxed);
        do {
            last.free_link() = head;
        } while (!m_pending.compare_exchange_weak(head, first, std::memory_order_release, std::memory_order_relaxed));
    }

    // Every byte the slab allocated: its chunks of nodes and the vector that holds them.
    [[nodiscard]] std::size_t memory_bytes() const noexcept {
        return static_cast<std::size_t>(m_capacity) * sizeof(Node) +
               m_chunks.capacity() * sizeof(std::unique_ptr<Node[]>);
    }

private:
    void grow() {
        const auto chunk = static_cast<std::uint32_t>(m_chunks.size());
        const std::uint32_t n = chunk < growing_chunks ? (std::uint32_t{1} << (first_bits + chunk)) : big_chunk;
        if (static_cast<std::uint64_t>(m_capacity) + n > session_max_index) throw std::bad_alloc{};
        m_chunks.reserve(m_chunks.size() + 1);
        m_chunks.emplace_back(new Node[n]);
        const std::uint32_t base = m_capacity;
        m_capacity += n;
        // Thread the new nodes onto the free list, lowest index first.
        for (std::uint32_t i = n; i-- > 0;) free_locked(base + i);
    }

    std::vector<std::unique_ptr<Node[]>> m_chunks;
    std::uint32_t m_capacity = 0;
    std::uint32_t m_free = session_nil;
    std::atomic<std::uint32_t> m_pending{session_nil};
};

} // namespace detail
MEMGOV_NAMESPACE_END
